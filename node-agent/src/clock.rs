//! Time, as the sans-IO crates want it: the router counts a `Duration` since the agent's start
//! (monotonic); endorsements, sequence floors and reported events use the wall clock.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Microseconds since the Unix epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| {
        u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
    })
}

/// The router's clock: time since the agent started.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    epoch: Instant,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            epoch: Instant::now(),
        }
    }

    /// Now, as the router counts.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// The instant of a router time, for timers.
    pub fn instant(&self, at: Duration) -> Instant {
        self.epoch + at
    }
}
