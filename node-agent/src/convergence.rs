//! What happened to the topology and how long the routes took to settle (sans IO: wall-clock
//! microseconds are passed in).
//!
//! An *episode* starts with a topology event this agent saw (a neighbour came or went) or,
//! when the change happened elsewhere, with the first route change it caused here; every
//! route change within `quiet` of the previous activity belongs to it. Its duration is from
//! the start to the last route change: for a neighbour's death, the time this agent took to
//! reroute after detecting it.
use std::collections::VecDeque;

use serde::Serialize;

/// Events kept for /status.
const EVENT_CAPACITY: usize = 128;

/// One thing that happened, with its wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub at_unix_us: u64,
    /// `session_up`, `neighbour_lost`, `route_changed`, ...
    pub kind: &'static str,
    /// The neighbour concerned (hex node id), or the destination of a route change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A burst of route changes and what started it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Episode {
    pub trigger: Event,
    pub started_at_unix_us: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_change_at_unix_us: Option<u64>,
    pub route_changes: u32,
    /// No route change for `quiet` since the last one.
    pub settled: bool,
    /// From the start to the last route change (0 without a route change).
    pub duration_ms: f64,
}

impl Episode {
    fn start(trigger: Event) -> Self {
        Episode {
            started_at_unix_us: trigger.at_unix_us,
            trigger,
            last_change_at_unix_us: None,
            route_changes: 0,
            settled: false,
            duration_ms: 0.0,
        }
    }

    fn last_activity(&self) -> u64 {
        self.last_change_at_unix_us.unwrap_or(self.started_at_unix_us)
    }
}

#[derive(Debug)]
pub struct Convergence {
    quiet_us: u64,
    current: Option<Episode>,
    last_settled: Option<Episode>,
    last_topology: Option<Event>,
    events: VecDeque<Event>,
}

impl Convergence {
    /// `quiet_us`: how long without a route change ends an episode.
    pub fn new(quiet_us: u64) -> Self {
        Convergence {
            quiet_us,
            current: None,
            last_settled: None,
            last_topology: None,
            events: VecDeque::with_capacity(EVENT_CAPACITY),
        }
    }

    fn record(&mut self, event: Event) {
        if self.events.len() >= EVENT_CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    /// Something a neighbour sent was refused (a forged or replayed advertisement): kept
    /// with the other events, but no change of topology or routes.
    pub fn on_refusal(&mut self, event: Event) {
        self.record(event);
    }

    /// A neighbour came or went: starts an episode unless one is under way.
    pub fn on_topology(&mut self, event: Event) -> Option<Episode> {
        let settled = self.settle(event.at_unix_us);
        self.last_topology = Some(event.clone());
        self.record(event.clone());
        if self.current.is_none() {
            self.current = Some(Episode::start(event));
        }
        settled
    }

    /// A next hop changed: part of the episode under way, or the start of one.
    pub fn on_route_change(&mut self, event: Event) -> Option<Episode> {
        let settled = self.settle(event.at_unix_us);
        let at = event.at_unix_us;
        self.record(event.clone());
        let episode = self.current.get_or_insert_with(|| Episode::start(event));
        episode.route_changes = episode.route_changes.saturating_add(1);
        episode.last_change_at_unix_us = Some(at);
        episode.duration_ms = at.saturating_sub(episode.started_at_unix_us) as f64 / 1000.0;
        settled
    }

    /// Ends the episode under way if it has been quiet long enough; returns it once.
    pub fn settle(&mut self, now_unix_us: u64) -> Option<Episode> {
        let quiet = self
            .current
            .as_ref()
            .is_some_and(|episode| episode.last_activity().saturating_add(self.quiet_us) <= now_unix_us);
        if !quiet {
            return None;
        }
        let mut episode = self.current.take()?;
        episode.settled = true;
        self.last_settled = Some(episode.clone());
        Some(episode)
    }

    /// The episode under way, else the last settled one.
    pub fn latest(&self) -> Option<&Episode> {
        self.current.as_ref().or(self.last_settled.as_ref())
    }

    pub fn last_settled(&self) -> Option<&Episode> {
        self.last_settled.as_ref()
    }

    pub fn last_topology(&self) -> Option<&Event> {
        self.last_topology.as_ref()
    }

    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_event(at_unix_us: u64, kind: &'static str) -> Event {
        Event {
            at_unix_us,
            kind,
            node: Some("ab".to_owned()),
            detail: None,
        }
    }

    #[test]
    fn a_neighbour_death_and_the_route_changes_it_causes_are_one_episode() {
        let mut convergence = Convergence::new(1_000_000);
        convergence.on_topology(mk_event(10_000_000, "neighbour_lost"));
        convergence.on_route_change(mk_event(10_004_000, "route_changed"));
        convergence.on_route_change(mk_event(10_025_000, "route_changed"));
        let latest = convergence.latest().unwrap();
        assert_eq!(latest.trigger.kind, "neighbour_lost");
        assert_eq!(latest.route_changes, 2);
        assert!((latest.duration_ms - 25.0).abs() < 1e-9);
        assert!(!latest.settled);
        let settled = convergence.settle(11_025_000).unwrap();
        assert!(settled.settled);
        assert_eq!(convergence.last_settled(), Some(&settled));
        assert!(convergence.settle(12_000_000).is_none(), "reported once");
    }

    #[test]
    fn a_remote_change_starts_its_episode_at_its_first_route_change() {
        let mut convergence = Convergence::new(1_000_000);
        convergence.on_route_change(mk_event(5_000_000, "route_changed"));
        let latest = convergence.latest().unwrap();
        assert_eq!(latest.trigger.kind, "route_changed");
        assert_eq!(latest.duration_ms, 0.0);
        // A later unrelated event after the quiet period starts a new episode.
        let settled = convergence.on_topology(mk_event(7_000_000, "session_up"));
        assert!(settled.is_some());
        assert_eq!(convergence.latest().unwrap().trigger.kind, "session_up");
        assert_eq!(convergence.events().count(), 2);
    }
}
