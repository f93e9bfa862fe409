//! Failure injection and what follows it: killing agents ([`Mesh::kill`]), and tracking, for
//! every pair of survivors whose path went through a victim, when it is rerouted around them.

use std::time::Duration;

use x0tta6bl4_routing::NodeId;

use super::Mesh;
use super::paths::PathEnd;

/// One `(source, destination)` pair whose route went through a killed agent.
#[derive(Debug, Clone, Copy)]
pub struct PairState {
    pub source: u32,
    pub valid: bool,
    /// First time its path reached the destination avoiding every dead agent.
    pub first_valid: Option<Duration>,
    /// Since when it has done so without interruption.
    pub valid_since: Option<Duration>,
    /// How often a valid path broke again.
    pub flaps: u32,
}

/// Follows the forwarding paths of the affected pairs after a kill, at most once per
/// millisecond of simulated time (the resolution of the reroute times). A pair's path is walked
/// again only when an agent on its last walked path changed its next hop towards the pair's
/// destination: nothing else can change where that path goes.
pub(super) struct RerouteTracker {
    dead: Vec<bool>,
    /// Per destination, its affected pairs, and the path each took at its last walk.
    pairs: Vec<Vec<PairState>>,
    paths: Vec<Vec<Vec<u32>>>,
    /// Per destination, the agents whose next hop to it changed since the last check.
    changed: Vec<Vec<u32>>,
    dirty_list: Vec<u32>,
    /// Scratch: agents in `changed` of the destination being checked.
    mark: Vec<bool>,
    last_check: Duration,
    invalid: usize,
    loops: u64,
}

/// How often (in simulated time) the affected paths are re-checked at most.
pub const REROUTE_RESOLUTION: Duration = Duration::from_millis(1);

impl Mesh {
    /// Kills `victims` silently (a crash: no session ends, their neighbours only notice that
    /// the hellos stop). Messages already on the wire still arrive. Before that, every
    /// `(source, destination)` pair of surviving agents whose forwarding path goes through a
    /// victim is recorded, and followed from then on. Returns how many pairs that is.
    pub fn kill(&mut self, victims: &[usize]) -> usize {
        let n = self.agents.len();
        let mut dead = vec![false; n];
        for &victim in victims {
            dead[victim] = true;
        }
        let mut pairs: Vec<Vec<PairState>> = vec![Vec::new(); n];
        let mut paths: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        let mut affected = 0;
        let mut path = Vec::new();
        for destination in 0..n {
            if dead[destination] || !self.agents[destination].alive {
                continue;
            }
            for source in 0..n {
                if source == destination || dead[source] || !self.agents[source].alive {
                    continue;
                }
                if self.follow(source, destination, &dead) == PathEnd::Dead {
                    pairs[destination].push(PairState {
                        source: source as u32,
                        valid: false,
                        first_valid: None,
                        valid_since: None,
                        flaps: 0,
                    });
                    affected += 1;
                }
            }
            self.clear_memo();
            for pair in &pairs[destination] {
                self.walk(pair.source as usize, destination, &dead, &mut path);
                paths[destination].push(path.clone());
            }
        }
        for &victim in victims {
            self.agents[victim].alive = false;
        }
        self.tracker = Some(RerouteTracker {
            dead,
            pairs,
            paths,
            changed: vec![Vec::new(); n],
            dirty_list: Vec::new(),
            mark: vec![false; n],
            last_check: self.now,
            invalid: affected,
            loops: 0,
        });
        affected
    }

    /// Time moves on from the current instant: checks the affected paths if some may have
    /// changed and the last check is at least [`REROUTE_RESOLUTION`] old.
    pub(super) fn check_reroutes_if_due(&mut self) {
        let due = self.tracker.as_ref().is_some_and(|tracker| {
            !tracker.dirty_list.is_empty() && self.now >= tracker.last_check + REROUTE_RESOLUTION
        });
        if due {
            self.check_reroutes();
        }
    }

    /// `agent` changed its next hop towards `destination`: the affected paths through it are
    /// walked again at the next check.
    pub(super) fn note_next_hop_change(&mut self, agent: usize, destination: &NodeId) {
        if let Some(tracker) = &mut self.tracker
            && let Some(&destination) = self.index.get(destination)
        {
            let changed = &mut tracker.changed[destination as usize];
            if changed.is_empty() {
                tracker.dirty_list.push(destination);
            }
            changed.push(agent as u32);
        }
    }

    fn check_reroutes(&mut self) {
        let Some(mut tracker) = self.tracker.take() else {
            return;
        };
        tracker.last_check = self.now;
        let dirty = std::mem::take(&mut tracker.dirty_list);
        let mut path = Vec::new();
        for &destination in &dirty {
            let d = destination as usize;
            let changed = std::mem::take(&mut tracker.changed[d]);
            for &agent in &changed {
                tracker.mark[agent as usize] = true;
            }
            let mut pairs = std::mem::take(&mut tracker.pairs[d]);
            let mut paths = std::mem::take(&mut tracker.paths[d]);
            for (pair, last_path) in pairs.iter_mut().zip(paths.iter_mut()) {
                if !last_path.iter().any(|&agent| tracker.mark[agent as usize]) {
                    continue;
                }
                let end = self.walk(pair.source as usize, d, &tracker.dead, &mut path);
                std::mem::swap(last_path, &mut path);
                if end == PathEnd::Loop {
                    tracker.loops += 1;
                }
                let valid = end == PathEnd::Reached;
                if valid && !pair.valid {
                    pair.valid = true;
                    pair.valid_since = Some(self.now);
                    pair.first_valid.get_or_insert(self.now);
                    tracker.invalid -= 1;
                } else if !valid && pair.valid {
                    pair.valid = false;
                    pair.valid_since = None;
                    pair.flaps += 1;
                    tracker.invalid += 1;
                }
            }
            for &agent in &changed {
                tracker.mark[agent as usize] = false;
            }
            tracker.pairs[d] = pairs;
            tracker.paths[d] = paths;
            // Keep the allocation for the next changes.
            tracker.changed[d] = changed;
            tracker.changed[d].clear();
        }
        tracker.dirty_list = dirty;
        tracker.dirty_list.clear();
        self.tracker = Some(tracker);
    }

    /// Affected pairs whose path does not (yet) avoid the dead agents, as of the last check.
    pub fn unrerouted_pairs(&self) -> usize {
        self.tracker.as_ref().map_or(0, |tracker| tracker.invalid)
    }

    /// Checks the affected paths now, whatever the resolution.
    pub fn flush_reroute_checks(&mut self) {
        if self
            .tracker
            .as_ref()
            .is_some_and(|tracker| !tracker.dirty_list.is_empty())
        {
            self.check_reroutes();
        }
    }

    /// Every affected pair, and how many forwarding loops the checks met.
    pub fn reroute_pairs(&self) -> (Vec<PairState>, u64) {
        self.tracker.as_ref().map_or((Vec::new(), 0), |tracker| {
            (tracker.pairs.iter().flatten().copied().collect(), tracker.loops)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::mesh::testing::mk_mesh;
    use crate::topology::Topology;

    #[test]
    fn killing_the_centre_of_a_grid_is_detected_by_its_four_neighbours_and_routed_around() {
        let topology = Topology::grid(9); // the centre, 4, is on every path between 1 and 7
        let mut mesh = mk_mesh(&topology, Duration::ZERO);
        assert!(mesh.run_until(Duration::from_secs(3)));
        let kill_at = mesh.now();
        let affected = mesh.kill(&[4]);
        assert!(affected >= 2, "1→7 and 7→1 at least, got {affected}");
        assert!(mesh.run_until(kill_at + Duration::from_secs(3)));
        mesh.flush_reroute_checks();
        let mut detectors: Vec<u32> = mesh
            .deaths
            .iter()
            .filter(|(when, _, peer)| *when > kill_at && *peer == 4)
            .map(|(_, at, _)| *at)
            .collect();
        detectors.sort_unstable();
        assert_eq!(detectors, [1, 3, 5, 7]);
        for (when, _, _) in &mesh.deaths {
            let detection = *when - kill_at;
            assert!(detection <= Duration::from_millis(310), "{detection:?}");
        }
        let (pairs, loops) = mesh.reroute_pairs();
        assert_eq!(loops, 0);
        assert!(pairs.iter().all(|pair| pair.valid), "{pairs:?}");
        assert_eq!(mesh.unrerouted_pairs(), 0);
    }
}
