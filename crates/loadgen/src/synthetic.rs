//! The synthetic mesh around the agent under test: one endorsed ML-DSA-65 identity per
//! synthetic node, a topology (who neighbours whom, and how far every node is from each of the
//! agent's neighbours), and the signed originator messages of every round.
use std::collections::{BTreeSet, VecDeque};

use anyhow::Context as _;
use x0tta6bl4_crypto::endorsement::Endorsement;
use x0tta6bl4_crypto::{SigningContext, SigningKey};
use x0tta6bl4_wire::{Envelope, NodeId, Originator, OriginatorBody};

pub const TRUST_DOMAIN: &str = "x0.load";
pub const NAMESPACE: &str = "load";
pub const MESH: &str = "load";
/// The agent's node name (its SPIFFE ID, hence its NodeId, follows from it).
pub const AGENT_NAME: &str = "agent";
/// The cost every synthetic link claims: the base cost of a clean link (no loss, RTT ≈ 0), so
/// the paths the agent computes are hop counts scaled by it.
pub const LINK_COST: u32 = 256;
/// Endorsements hold this long; a run lasts minutes.
const VALIDITY_SECS: u64 = 2 * 3600;
/// Endorsements start this far back, like the agent's own `endorse` does for clock skew.
const SKEW_SECS: u64 = 300;

/// `spiffe://<trust domain>/ns/<namespace>/mesh/<mesh>/node/<name>`, the agent's format.
pub fn spiffe_id(name: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{NAMESPACE}/mesh/{MESH}/node/{name}")
}

/// The mesh NodeId of a node name: SHA-256 of its SPIFFE ID, as the agent derives it.
pub fn node_id(name: &str) -> NodeId {
    x0tta6bl4_crypto::node_id_for(&spiffe_id(name))
}

/// An endorsement of `key` for `name` by `authority`, valid from a little before `now_unix`.
pub fn endorse(
    authority: &SigningKey,
    name: &str,
    key: &SigningKey,
    now_unix: u64,
) -> anyhow::Result<Endorsement> {
    Endorsement::issue(
        authority,
        &spiffe_id(name),
        1,
        key.verifying_key(),
        now_unix.saturating_sub(SKEW_SECS),
        now_unix.saturating_add(VALIDITY_SECS),
    )
    .context("endorsing a synthetic node key")
}

/// One synthetic node: its own key, endorsed by the mesh authority.
pub struct Node {
    pub name: String,
    pub id: NodeId,
    pub key: SigningKey,
    pub endorsement: Endorsement,
    /// What an EndorsementAnnounce carries.
    pub endorsement_bytes: Vec<u8>,
}

/// `count` synthetic nodes `n0001`, `n0002`, ... (key generation and endorsement split over
/// `threads`: about 0.5 ms of ML-DSA work each).
pub fn generate_nodes(
    count: usize,
    authority: &SigningKey,
    now_unix: u64,
    threads: usize,
) -> anyhow::Result<Vec<Node>> {
    let make = |index: usize| -> anyhow::Result<Node> {
        let name = format!("n{:04}", index + 1);
        let key = SigningKey::generate().context("generating a synthetic node key")?;
        let endorsement = endorse(authority, &name, &key, now_unix)?;
        let endorsement_bytes = endorsement.encode().context("encoding an endorsement")?;
        Ok(Node {
            id: node_id(&name),
            name,
            key,
            endorsement,
            endorsement_bytes,
        })
    };
    parallel_map(count, threads, make)
}

/// `f(0..count)` over `threads` scoped threads, results in index order.
fn parallel_map<T: Send>(
    count: usize,
    threads: usize,
    f: impl Fn(usize) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<Vec<T>> {
    let threads = threads.clamp(1, count.max(1));
    let chunk = count.div_ceil(threads);
    let parts: Vec<anyhow::Result<Vec<T>>> = std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = (t * chunk).min(count)..((t + 1) * chunk).min(count);
                scope.spawn(move || range.map(f).collect::<anyhow::Result<Vec<T>>>())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))
            })
            .collect()
    });
    let mut out = Vec::with_capacity(count);
    for part in parts {
        out.extend(part?);
    }
    Ok(out)
}

/// SplitMix64: a reproducible topology from a seed, without a dependency.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0; the modulo bias is irrelevant here).
    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(bound).unwrap_or(u64::MAX)).unwrap_or(0)
    }
}

/// A small-world mesh of `n` nodes, node 0 being the agent and node `i ≥ 1` synthetic node
/// `i - 1`: a ring lattice (each node linked to the `k` nearest on each side, so it is connected
/// and stays so without the agent) plus random chords (each synthetic node gets one with
/// probability 1/2), which keeps the diameter logarithmic as in a real mesh. Average degree
/// ≈ 2k + 1; the agent has exactly `degree` neighbours.
pub struct Topology {
    pub adjacency: Vec<BTreeSet<usize>>,
    /// The agent's neighbours (node indices), in session order.
    pub neighbours: Vec<usize>,
    /// `distance[s][o]`: hops from neighbour `neighbours[s]` to node `o` without crossing the
    /// agent (`u32::MAX` if unreachable).
    pub distance: Vec<Vec<u32>>,
}

impl Topology {
    pub fn new(n: usize, degree: usize, seed: u64) -> anyhow::Result<Self> {
        let k = (degree / 2).clamp(1, 3);
        anyhow::ensure!(
            n >= 2 * k + 3,
            "a mesh of {n} nodes is too small for degree {degree}"
        );
        anyhow::ensure!(
            degree >= 2 * k && degree < n,
            "degree {degree} does not fit {n} nodes"
        );
        let mut rng = SplitMix(seed ^ u64::try_from(n).unwrap_or(0).wrapping_mul(0x1000_0000_01B3));
        let mut adjacency = vec![BTreeSet::new(); n];
        let link = |adjacency: &mut Vec<BTreeSet<usize>>, a: usize, b: usize| {
            adjacency[a].insert(b);
            adjacency[b].insert(a);
        };
        for i in 0..n {
            for d in 1..=k {
                link(&mut adjacency, i, (i + d) % n);
            }
        }
        // The agent's extra links, then the synthetic chords (never to the agent, whose degree
        // is fixed). Bounded: a few tries each.
        while adjacency[0].len() < degree {
            let j = 1 + rng.below(n - 1);
            if !adjacency[0].contains(&j) {
                link(&mut adjacency, 0, j);
            }
        }
        for i in 1..n {
            if rng.next() & 1 == 0 {
                continue;
            }
            for _ in 0..8 {
                let j = 1 + rng.below(n - 1);
                if j != i && !adjacency[i].contains(&j) {
                    link(&mut adjacency, i, j);
                    break;
                }
            }
        }
        let neighbours: Vec<usize> = adjacency[0].iter().copied().collect();
        let distance = neighbours
            .iter()
            .map(|&from| bfs_without_agent(&adjacency, from))
            .collect();
        Ok(Topology {
            adjacency,
            neighbours,
            distance,
        })
    }

    /// The envelope neighbour `session` puts on `origin`'s advertisement: the originator sends
    /// hop count 1 and path cost 0, each hop adds one hop and its link cost.
    pub fn envelope(&self, session: usize, origin: usize) -> Option<Envelope> {
        let hops = *self.distance.get(session)?.get(origin)?;
        if hops == u32::MAX {
            return None;
        }
        Some(Envelope {
            hop_count: u8::try_from(hops + 1).unwrap_or(u8::MAX),
            path_cost: hops.saturating_mul(LINK_COST),
        })
    }

    /// Longest distance from any of the agent's neighbours, in hops.
    pub fn eccentricity(&self) -> u32 {
        self.distance
            .iter()
            .flatten()
            .copied()
            .filter(|d| *d != u32::MAX)
            .max()
            .unwrap_or(0)
    }
}

fn bfs_without_agent(adjacency: &[BTreeSet<usize>], from: usize) -> Vec<u32> {
    let mut distance = vec![u32::MAX; adjacency.len()];
    distance[from] = 0;
    let mut queue = VecDeque::from([from]);
    while let Some(node) = queue.pop_front() {
        for &next in &adjacency[node] {
            if next != 0 && distance[next] == u32::MAX {
                distance[next] = distance[node] + 1;
                queue.push_back(next);
            }
        }
    }
    distance
}

/// Signs every synthetic node's advertisement for rounds `0..rounds` (seq = round + 1), once
/// each: the same signed bytes then go out on every session under per-session envelopes.
/// Returns `[round][node index - 1]`.
pub fn sign_rounds(
    nodes: &[Node],
    topology: &Topology,
    agent: NodeId,
    rounds: u32,
    threads: usize,
) -> anyhow::Result<Vec<Vec<Originator>>> {
    let count = topology.adjacency.len() - 1;
    let id_of = |index: usize| if index == 0 { agent } else { nodes[index - 1].id };
    (0..rounds)
        .map(|round| {
            parallel_map(count, threads, |i| {
                let origin = i + 1;
                let body = OriginatorBody {
                    originator: nodes[i].id,
                    seq: u64::from(round) + 1,
                    issued_at_micros: unix_micros(),
                    key_epoch: nodes[i].endorsement.key_epoch,
                    // Never dialled (the agent dials only its configured peers): a loopback
                    // address nothing listens on.
                    endpoint: format!("127.255.{}.{}:7946", origin / 256, origin % 256),
                    neighbours: topology.adjacency[origin]
                        .iter()
                        .map(|&n| (id_of(n), LINK_COST))
                        .collect(),
                };
                let signed = body.signed_bytes().context("encoding an originator body")?;
                let signature = nodes[i]
                    .key
                    .sign(SigningContext::Originator, &signed)
                    .context("signing an originator message")?;
                Originator::new(body, signature.0, Envelope::default())
                    .context("building an originator message")
            })
        })
        .collect()
}

pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub fn unix_seconds() -> u64 {
    unix_micros() / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topology_gives_the_agent_its_degree_and_reaches_every_node_from_each_neighbour() {
        for n in [20, 100, 1000] {
            let topology = Topology::new(n, 7, 1).unwrap();
            assert_eq!(topology.neighbours.len(), 7);
            assert!(!topology.neighbours.contains(&0));
            for distances in &topology.distance {
                assert!(distances.iter().skip(1).all(|d| *d != u32::MAX));
            }
            assert!(topology.eccentricity() < 16, "within maxHops");
            let edges: usize = topology.adjacency.iter().map(BTreeSet::len).sum();
            let average = edges as f64 / n as f64;
            assert!((6.0..8.5).contains(&average), "average degree {average}");
        }
    }

    #[test]
    fn a_neighbours_own_advertisement_leaves_it_with_one_hop_and_no_cost() {
        let topology = Topology::new(100, 7, 3).unwrap();
        let first = topology.neighbours[0];
        assert_eq!(
            topology.envelope(0, first),
            Some(Envelope {
                hop_count: 1,
                path_cost: 0
            })
        );
    }
}
