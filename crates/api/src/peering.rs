//! Bounded peering: which members of a mesh keep sessions with each other. The agents apply
//! this rule to their mesh's MeshNode records, and the simulator to its nodes, so every agent
//! computes the same graph from the same member list without asking anyone, and no agent ever
//! dials the whole mesh.
//!
//! - **Near peers**: the members sit on a ring, ordered by a hash of their names; each keeps
//!   the `near_peers` members before it and after it. The ring keeps the graph connected
//!   whatever the hash gives, and a member joining or leaving moves the ring links of only
//!   `2 × near_peers` others.
//! - **Long links**: a pair that is not on the ring is also linked when a hash of the pair
//!   falls below a threshold set so that each member has `long_links` of them on average
//!   (binomially distributed): random shortcuts across the ring, which keep the number of
//!   hops between any two members small (a small world), as in Watts–Strogatz or Kleinberg.
//!
//! Both rules are symmetric: `b` is among `a`'s peers exactly when `a` is among `b`'s. Each
//! side dials the peers it computes and closes a session with anyone else, and both agree.
//! A mesh of at most `2 × near_peers + 1` members is a full mesh.
//!
//! The hash is FNV-1a with a SplitMix64 finaliser: stable across versions and platforms
//! (every agent must compute the same graph), and cheap enough to test every pair of a
//! 10,000-member mesh. It is not a security boundary: node names are chosen by the cluster's
//! administrators, and a peer's identity is proven by its endorsed key, not by its place here.
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// The rule's two numbers (`MeshNetwork.spec.routing.peering`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Peering {
    /// Ring neighbours on each side.
    pub near_peers: u32,
    /// Long links per member, on average.
    pub long_links: u32,
}

/// Near peers on each side by default: 6 ring neighbours.
pub const DEFAULT_NEAR_PEERS: u32 = 3;
/// Long links by default: 8 peers per member on average.
pub const DEFAULT_LONG_LINKS: u32 = 2;

impl Default for Peering {
    fn default() -> Self {
        Peering {
            near_peers: DEFAULT_NEAR_PEERS,
            long_links: DEFAULT_LONG_LINKS,
        }
    }
}

impl Peering {
    pub fn is_default(&self) -> bool {
        *self == Peering::default()
    }

    /// The peers of `own` among `members` (node names; `own` may be among them or not, and
    /// duplicates count once). O(members).
    pub fn peers_of<'a>(&self, own: &'a str, members: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut ring: Vec<(u64, &str)> = members
            .into_iter()
            .chain(std::iter::once(own))
            .map(|name| (name_hash(name), name))
            .collect();
        ring.sort_unstable();
        ring.dedup();
        let Some(index) = ring.iter().position(|(_, name)| *name == own) else {
            return BTreeSet::new();
        };
        let near = self.near_of(ring.len(), index);
        let threshold = self.long_threshold(ring.len());
        let own_hash = ring[index].0;
        ring.iter()
            .enumerate()
            .filter(|(i, (hash, _))| {
                *i != index && (near.contains(i) || pair_hash(own_hash, *hash) < threshold)
            })
            .map(|(_, (_, name))| (*name).to_owned())
            .collect()
    }

    /// The whole graph of `members` (distinct names): for each member, by its index in
    /// `members`, the indices of its peers. O(members²) for the long links: for the
    /// simulator and for checking the rule, not for an agent.
    pub fn graph(&self, members: &[&str]) -> Vec<BTreeSet<usize>> {
        let mut ring: Vec<(u64, usize)> = members
            .iter()
            .enumerate()
            .map(|(i, name)| (name_hash(name), i))
            .collect();
        ring.sort_unstable_by(|a, b| (a.0, members[a.1]).cmp(&(b.0, members[b.1])));
        let mut peers = vec![BTreeSet::new(); members.len()];
        for position in 0..ring.len() {
            let member = ring[position].1;
            for other in self.near_of(ring.len(), position) {
                peers[member].insert(ring[other].1);
            }
        }
        let threshold = self.long_threshold(ring.len());
        for a in 0..ring.len() {
            for b in a + 1..ring.len() {
                if pair_hash(ring[a].0, ring[b].0) < threshold {
                    let (x, y) = (ring[a].1, ring[b].1);
                    peers[x].insert(y);
                    peers[y].insert(x);
                }
            }
        }
        peers
    }

    /// Ring positions within `near_peers` of `index`, either way.
    fn near_of(&self, n: usize, index: usize) -> BTreeSet<usize> {
        let reach = (self.near_peers as usize).min(n / 2);
        (1..=reach)
            .flat_map(|k| [(index + k) % n, (index + n - k) % n])
            .filter(|&i| i != index)
            .collect()
    }

    /// Pairs whose hash falls below this are long links: `long_links` per member on average
    /// among the members not on its ring (none when the ring already reaches everyone).
    fn long_threshold(&self, members: usize) -> u64 {
        let candidates = members.saturating_sub(1 + 2 * self.near_peers as usize);
        if candidates == 0 || self.long_links == 0 {
            return 0;
        }
        let share = (f64::from(self.long_links) / candidates as f64).min(1.0);
        (share * u64::MAX as f64) as u64
    }
}

fn name_hash(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in name.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    splitmix(hash)
}

/// Symmetric in its arguments.
fn pair_hash(a: u64, b: u64) -> u64 {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    splitmix(low ^ splitmix(high))
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What the operator reports of a peering graph (`MeshNetwork.status.peering`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GraphSummary {
    pub members: usize,
    /// Pairs with a session wanted (each counted once).
    pub links: usize,
    pub min_peers: usize,
    pub max_peers: usize,
    pub connected: bool,
    /// The longest shortest path in hops, computed (by a walk from every member) only for
    /// graphs of at most [`DIAMETER_MAX_MEMBERS`] members.
    pub diameter: Option<usize>,
}

/// Above this many members the diameter is not computed: a walk from every member is
/// O(members × links), about 10 ms at 1000 members and seconds at 10,000 (the simulator's
/// `--graph-only` reports it there).
pub const DIAMETER_MAX_MEMBERS: usize = 1000;

/// Summarises `graph` (as [`Peering::graph`] returns it).
pub fn summarise(graph: &[BTreeSet<usize>]) -> GraphSummary {
    let degrees = graph.iter().map(BTreeSet::len);
    let (reached, _) = reach_from(graph, 0);
    let connected = reached == graph.len();
    let diameter = (connected && graph.len() <= DIAMETER_MAX_MEMBERS).then(|| {
        (0..graph.len())
            .map(|start| reach_from(graph, start).1)
            .max()
            .unwrap_or(0)
    });
    GraphSummary {
        members: graph.len(),
        links: degrees.clone().sum::<usize>() / 2,
        min_peers: degrees.clone().min().unwrap_or(0),
        max_peers: degrees.max().unwrap_or(0),
        connected,
        diameter,
    }
}

/// Members a breadth-first walk from member `start` reaches (itself included), and the
/// longest shortest path it found (hops): the graph is connected when the first equals the
/// member count.
pub fn reach_from(graph: &[BTreeSet<usize>], start: usize) -> (usize, usize) {
    let mut depth = vec![usize::MAX; graph.len()];
    let mut queue = std::collections::VecDeque::new();
    if start >= graph.len() {
        return (0, 0);
    }
    depth[start] = 0;
    queue.push_back(start);
    let (mut reached, mut deepest) = (1, 0);
    while let Some(member) = queue.pop_front() {
        for &peer in &graph[member] {
            if depth[peer] == usize::MAX {
                depth[peer] = depth[member] + 1;
                deepest = deepest.max(depth[peer]);
                reached += 1;
                queue.push_back(peer);
            }
        }
    }
    (reached, deepest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    fn refs(names: &[String]) -> Vec<&str> {
        names.iter().map(String::as_str).collect()
    }

    #[test]
    fn a_small_mesh_is_a_full_mesh() {
        let rule = Peering::default();
        for n in 1..=7 {
            let names = names(n);
            let graph = rule.graph(&refs(&names));
            for (i, peers) in graph.iter().enumerate() {
                assert_eq!(peers.len(), n - 1, "{n} members: member {i} has {peers:?}");
            }
        }
    }

    #[test]
    fn each_agents_own_view_agrees_with_the_graph_and_is_symmetric() {
        let names = names(300);
        let members = refs(&names);
        let rule = Peering::default();
        let graph = rule.graph(&members);
        for (i, own) in members.iter().enumerate() {
            let mine = rule.peers_of(own, members.iter().copied());
            let expected: BTreeSet<String> = graph[i].iter().map(|&j| members[j].to_owned()).collect();
            assert_eq!(mine, expected, "{own}");
            for &j in &graph[i] {
                assert!(graph[j].contains(&i), "{own} lists {} but not back", members[j]);
            }
        }
        // `own` not yet among the records (its own record not seen yet): the same answer.
        let others: Vec<&str> = members.iter().copied().filter(|m| *m != "node-7").collect();
        assert_eq!(
            rule.peers_of("node-7", others),
            rule.peers_of("node-7", members.iter().copied())
        );
    }

    #[test]
    fn the_graph_is_connected_bounded_and_a_small_world() {
        let rule = Peering::default();
        let names = names(2000);
        let graph = rule.graph(&refs(&names));
        let (reached, diameter_from_first) = reach_from(&graph, 0);
        assert_eq!(reached, 2000, "connected");
        let degrees: Vec<usize> = graph.iter().map(BTreeSet::len).collect();
        let mean = degrees.iter().sum::<usize>() as f64 / degrees.len() as f64;
        let max = *degrees.iter().max().unwrap();
        let min = *degrees.iter().min().unwrap();
        assert_eq!(min, 6, "every member has its 6 ring neighbours");
        assert!((7.5..8.5).contains(&mean), "mean degree {mean}");
        assert!(max <= 16, "busiest member {max} peers");
        // A ring of 2000 with 3 neighbours a side alone is ~333 hops across; the long links
        // bring it to a handful.
        assert!(
            diameter_from_first <= 10,
            "{diameter_from_first} hops from the first member"
        );
    }

    #[test]
    fn a_member_joining_moves_few_links() {
        let rule = Peering::default();
        let before = names(1000);
        let mut after = before.clone();
        after.push("node-new".to_owned());
        let (old, new) = (rule.graph(&refs(&before)), rule.graph(&refs(&after)));
        let changed = (0..before.len()).filter(|&i| old[i] != new[i]).count();
        let joiner = new[before.len()].len();
        // The joiner's own peers, plus the ring links it displaced on each side, plus a
        // long link or two whose pair hash sat right at the threshold that N moves.
        assert!(
            changed <= joiner + 2 * rule.near_peers as usize + 4,
            "{changed} members' peers changed for a joiner with {joiner} peers"
        );
    }

    #[test]
    fn no_long_links_is_a_ring() {
        let rule = Peering {
            near_peers: 1,
            long_links: 0,
        };
        let names = names(50);
        let graph = rule.graph(&refs(&names));
        assert!(graph.iter().all(|peers| peers.len() == 2));
        assert_eq!(reach_from(&graph, 0), (50, 25));
    }

    #[test]
    fn the_summary_counts_links_degrees_and_hops_across() {
        let names = names(40);
        let rule = Peering {
            near_peers: 1,
            long_links: 0,
        };
        // A ring of 40: 40 links, 2 peers each, 20 hops across.
        let ring = summarise(&rule.graph(&refs(&names)));
        assert_eq!(
            ring,
            GraphSummary {
                members: 40,
                links: 40,
                min_peers: 2,
                max_peers: 2,
                connected: true,
                diameter: Some(20),
            }
        );
        // Shortcuts shorten it.
        let small_world = summarise(&Peering::default().graph(&refs(&names)));
        assert!(small_world.diameter.unwrap() < 5, "{small_world:?}");
        // Two members with no link are not connected, and have no diameter.
        let apart = summarise(&[BTreeSet::new(), BTreeSet::new()]);
        assert!(!apart.connected);
        assert_eq!(apart.diameter, None);
        assert_eq!(summarise(&[]).members, 0);
    }
}
