//! Waiting on a condition: look, and if it does not hold yet, look again after the poll interval
//! until the deadline, then fail with what was awaited and the last thing seen. The poll
//! interval is the only sleep: nothing is synchronised by sleeping a fixed time.
use std::fmt;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

/// How often [`wait_until`] looks.
pub const POLL: Duration = Duration::from_millis(200);

/// A condition that did not hold within its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedOut {
    pub what: String,
    pub timeout: Duration,
    /// Why the condition did not hold the last time it was looked at.
    pub last: String,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}; last seen: {}",
            self.timeout, self.what, self.last
        )
    }
}

impl std::error::Error for TimedOut {}

/// One wait: the deadline, and the verdict on each look.
struct Wait<'a> {
    what: &'a str,
    timeout: Duration,
    deadline: Instant,
}

impl<'a> Wait<'a> {
    fn new(what: &'a str, timeout: Duration) -> Self {
        Wait {
            what,
            timeout,
            deadline: Instant::now() + timeout,
        }
    }

    /// Stops on success, or with [`TimedOut`] once the deadline has passed; otherwise goes on.
    fn judge<T>(&self, look: Result<T, String>) -> ControlFlow<Result<T, TimedOut>> {
        match look {
            Ok(value) => ControlFlow::Break(Ok(value)),
            Err(last) if Instant::now() >= self.deadline => ControlFlow::Break(Err(TimedOut {
                what: self.what.to_owned(),
                timeout: self.timeout,
                last,
            })),
            Err(_) => ControlFlow::Continue(()),
        }
    }
}

/// Calls `check` every `poll` until it returns `Ok`, or fails once `timeout` has passed with the
/// last `Err` (the diagnosis). `check` runs at least once.
pub fn try_wait_for<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, TimedOut> {
    let wait = Wait::new(what, timeout);
    loop {
        if let ControlFlow::Break(result) = wait.judge(check()) {
            return result;
        }
        std::thread::sleep(poll);
    }
}

/// [`try_wait_for`], panicking on timeout with `what` and the last diagnosis (at the caller's
/// location).
#[track_caller]
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    check: impl FnMut() -> Result<T, String>,
) -> T {
    match try_wait_for(what, timeout, poll, check) {
        Ok(value) => value,
        Err(timed_out) => panic!("{timed_out}"),
    }
}

/// The async [`try_wait_for`]: awaits `check` every `poll` until it returns `Ok`.
pub async fn try_wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let wait = Wait::new(what, timeout);
    loop {
        if let ControlFlow::Break(result) = wait.judge(check().await) {
            return result;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Awaits `fetch` every [`POLL`] until `done` holds for its value, and returns that value; on
/// timeout panics with `what` and the last value seen, so a timeout explains itself.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut fetch: F,
    done: impl Fn(&T) -> bool,
) -> T
where
    T: fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let done = &done;
    let look = || {
        let value = fetch();
        async move {
            let value = value.await;
            if done(&value) {
                Ok(value)
            } else {
                Err(format!("{value:#?}"))
            }
        }
    };
    try_wait_until(what, timeout, POLL, look)
        .await
        .unwrap_or_else(|timed_out| panic!("{timed_out}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_comes_true_is_returned_and_one_that_never_does_names_itself() {
        let mut looks = 0;
        let value = wait_for(
            "three looks",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                looks += 1;
                if looks == 3 {
                    Ok(looks)
                } else {
                    Err(format!("look {looks}"))
                }
            },
        );
        assert_eq!(value, 3);

        let timed_out = try_wait_for::<()>(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            || Err("still no".into()),
        )
        .unwrap_err();
        assert_eq!(timed_out.last, "still no");
        assert_eq!(
            timed_out.to_string(),
            "timed out after 20ms waiting for never; last seen: still no"
        );
    }

    #[test]
    fn the_check_runs_at_least_once_even_with_no_time_at_all() {
        assert_eq!(
            try_wait_for("now", Duration::ZERO, Duration::from_secs(60), || Ok(7)),
            Ok(7)
        );
    }

    #[tokio::test]
    async fn the_async_wait_returns_the_value_that_satisfied_it_and_panics_with_the_last_one() {
        let mut count = 0;
        let seen = wait_until(
            "the count to reach 2",
            Duration::from_secs(5),
            || {
                count += 1;
                std::future::ready(count)
            },
            |n| *n >= 2,
        )
        .await;
        assert_eq!(seen, 2);

        let outcome = tokio::spawn(async {
            wait_until(
                "forever",
                Duration::from_millis(10),
                || async { 41 },
                |n| *n == 42,
            )
            .await
        })
        .await
        .unwrap_err();
        let message = outcome.into_panic();
        let message = message.downcast_ref::<String>().unwrap();
        assert_eq!(message, "timed out after 10ms waiting for forever; last seen: 41");
    }
}
