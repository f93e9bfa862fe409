//! Status conditions in the Kubernetes convention: PascalCase types, one-word CamelCase reasons,
//! a `lastTransitionTime` that moves only when the status flips, and the generation observed.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const CONVERGED: &str = "Converged";

/// Condition status values, as the API spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }

    pub fn from_bool(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// What a reconciler wants a condition to say; the timestamp is decided by [`set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: Status,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: Status,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// Sets `desired` in `conditions`, keeping `lastTransitionTime` unless the status flips.
///
/// Returns whether the status flipped (or the condition is new), which is when an Event is due.
pub fn set(conditions: &mut Vec<Condition>, desired: Desired, generation: Option<i64>, now: &Time) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let flipped = existing.status != desired.status.as_str();
            if flipped {
                existing.last_transition_time = now.clone();
                existing.status = desired.status.as_str().to_owned();
            }
            existing.reason = desired.reason.to_owned();
            existing.message = desired.message;
            existing.observed_generation = generation;
            flipped
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_owned(),
                status: desired.status.as_str().to_owned(),
                reason: desired.reason.to_owned(),
                message: desired.message,
                last_transition_time: now.clone(),
                observed_generation: generation,
            });
            true
        }
    }
}

/// Sets every condition of `desired` and returns those that flipped (or are new), for Events.
pub fn set_all(
    conditions: &mut Vec<Condition>,
    desired: impl IntoIterator<Item = Desired>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Desired> {
    let mut flipped = Vec::new();
    for one in desired {
        if set(conditions, one.clone(), generation, now) {
            flipped.push(one);
        }
    }
    flipped
}

/// Looks a condition up by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition of this type exists with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn ready(status: Status, reason: &'static str) -> Desired {
        Desired::new(READY, status, reason, format!("{reason} message"))
    }

    #[test]
    fn a_new_condition_takes_the_current_time_and_counts_as_a_transition() {
        let mut conditions = vec![];
        assert!(set(
            &mut conditions,
            ready(Status::False, "Pending"),
            Some(1),
            &at(10)
        ));
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].observed_generation, Some(1));
    }

    #[test]
    fn an_unchanged_status_keeps_its_transition_time_but_updates_reason_and_generation() {
        let mut conditions = vec![];
        set(&mut conditions, ready(Status::False, "Pending"), Some(1), &at(10));
        let flipped = set(&mut conditions, ready(Status::False, "Rolling"), Some(2), &at(20));
        assert!(!flipped);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "Rolling");
        assert_eq!(conditions[0].observed_generation, Some(2));
    }

    #[test]
    fn a_flip_moves_the_transition_time() {
        let mut conditions = vec![];
        set(&mut conditions, ready(Status::False, "Pending"), Some(1), &at(10));
        assert!(set(
            &mut conditions,
            ready(Status::True, "AllNodesReady"),
            Some(1),
            &at(30)
        ));
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert!(is_true(&conditions, READY));
        assert_eq!(conditions.len(), 1);
    }
}
