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

/// Hello timestamps earlier than this (2020-01-01) are not wall-clock times: an agent that
/// stamped its hellos with its own uptime.
const WALL_CLOCK_FLOOR_US: u64 = 1_577_836_800_000_000;

/// A neighbour's clock against this agent's, from its last hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClockOffset {
    /// The neighbour's clock minus this agent's, estimated, in microseconds.
    pub estimate_us: i64,
    /// The most the two clocks can differ by: |estimate| plus half the round trip.
    pub bound_us: u64,
}

/// The offset from one hello: stamped `sent_at_us` by the neighbour's wall clock as it left,
/// received at `received_at_us` by ours after a one-way delay between 0 and the round-trip
/// time. So the neighbour's clock minus ours lies in `[sent - received, sent - received + rtt]`
/// (as NTP reasons, without assuming the two directions are equally fast).
pub fn offset_from_hello(sent_at_us: u64, received_at_us: u64, rtt: Duration) -> Option<ClockOffset> {
    if sent_at_us < WALL_CLOCK_FLOOR_US || received_at_us < WALL_CLOCK_FLOOR_US {
        return None;
    }
    let rtt_us = i64::try_from(rtt.as_micros()).ok()?;
    let lower = i64::try_from(sent_at_us).ok()? - i64::try_from(received_at_us).ok()?;
    let estimate_us = lower + rtt_us / 2;
    let bound_us = lower.unsigned_abs().max((lower + rtt_us).unsigned_abs());
    Some(ClockOffset {
        estimate_us,
        bound_us,
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_800_000_000_000_000;

    #[test]
    fn a_hello_bounds_the_offset_by_where_its_one_way_delay_may_lie() {
        // Sent at T by the neighbour, received 300 µs later by ours, round trip 400 µs: the
        // neighbour's clock is between 300 µs behind and 100 µs ahead of ours.
        let offset = offset_from_hello(T, T + 300, Duration::from_micros(400)).unwrap();
        assert_eq!(
            offset,
            ClockOffset {
                estimate_us: -100,
                bound_us: 300
            }
        );
        let ahead = offset_from_hello(T + 5_000, T, Duration::from_micros(400)).unwrap();
        assert_eq!(
            ahead,
            ClockOffset {
                estimate_us: 5_200,
                bound_us: 5_400
            }
        );
    }

    #[test]
    fn an_uptime_stamp_is_no_clock_reading() {
        assert_eq!(offset_from_hello(123_456, T, Duration::from_micros(400)), None);
    }
}
