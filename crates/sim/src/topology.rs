//! The graphs the simulated agents are wired along: random geometric (nodes uniform in the unit
//! square, a link between any two closer than a radius), a 4-neighbour grid, and the graph the
//! agents of a cluster form by their bounded-peering rule (`x0tta6bl4_api::peering`).

use std::collections::VecDeque;
use std::fmt;

use crate::rng::Rng;

/// Which kind of graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopologyKind {
    /// Random geometric graph with a target mean degree.
    Geometric,
    /// Rows of `ceil(sqrt(n))` nodes, each linked to its 4 neighbours (the last row may be
    /// partial).
    Grid,
    /// The agents' bounded-peering rule with the MeshNetwork's defaults, over nodes named
    /// `node-0`..: the sessions a cluster's agents open.
    Peering,
}

impl fmt::Display for TopologyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TopologyKind::Geometric => "geometric",
            TopologyKind::Grid => "grid",
            TopologyKind::Peering => "peering",
        })
    }
}

impl std::str::FromStr for TopologyKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "geometric" | "rgg" => Ok(TopologyKind::Geometric),
            "grid" => Ok(TopologyKind::Grid),
            "peering" => Ok(TopologyKind::Peering),
            other => Err(format!("unknown topology {other:?} (geometric, grid or peering)")),
        }
    }
}

/// An undirected, connected graph over nodes `0..n`.
#[derive(Debug, Clone)]
pub struct Topology {
    pub kind: TopologyKind,
    /// Each link once, `(a, b)` with `a < b`.
    pub edges: Vec<(u32, u32)>,
    /// Neighbours of each node, ascending.
    pub adjacency: Vec<Vec<u32>>,
    /// The link radius of a geometric graph.
    pub radius: Option<f64>,
    /// How many random graphs were drawn before one was connected.
    pub attempts: u32,
}

/// How many disconnected geometric graphs are drawn before the target degree grows by 5%.
const ATTEMPTS_PER_RADIUS: u32 = 20;

impl Topology {
    fn from_edges(kind: TopologyKind, n: usize, mut edges: Vec<(u32, u32)>) -> Self {
        edges.sort_unstable();
        edges.dedup();
        let mut adjacency = vec![Vec::new(); n];
        for &(a, b) in &edges {
            adjacency[a as usize].push(b);
            adjacency[b as usize].push(a);
        }
        for list in &mut adjacency {
            list.sort_unstable();
        }
        Topology {
            kind,
            edges,
            adjacency,
            radius: None,
            attempts: 1,
        }
    }

    /// `n` nodes uniform in the unit square, linked when closer than a radius `r`, with `r`
    /// chosen in each draw so that the mean degree is `degree` (the `n·degree/2`-th shortest
    /// distance; the textbook `n π r² = degree` undershoots by the border's share, about 15% at
    /// 100 nodes). Disconnected draws are discarded (the seed and the attempt number pick each
    /// draw, so the result depends on `seed` only); after every 20 failures the target degree
    /// grows by 5%.
    pub fn geometric(n: usize, degree: f64, seed: u64) -> Self {
        let mut target = degree;
        let mut attempt = 0u32;
        loop {
            let mut rng = Rng::new(seed, 0x7090_0000 + u64::from(attempt));
            let points: Vec<(f64, f64)> = (0..n).map(|_| (rng.next_f64(), rng.next_f64())).collect();
            let mut pairs: Vec<(f64, u32, u32)> = Vec::with_capacity(n * n.saturating_sub(1) / 2);
            for (i, a) in points.iter().enumerate() {
                for (j, b) in points.iter().enumerate().skip(i + 1) {
                    let (dx, dy) = (a.0 - b.0, a.1 - b.1);
                    pairs.push((dx * dx + dy * dy, i as u32, j as u32));
                }
            }
            let links = ((n as f64 * target / 2.0).round() as usize).min(pairs.len());
            if links > 0 && links < pairs.len() {
                pairs.select_nth_unstable_by(links - 1, |a, b| a.0.total_cmp(&b.0));
            }
            let radius = pairs
                .get(..links)
                .and_then(|shortest| shortest.iter().map(|p| p.0).max_by(f64::total_cmp))
                .map_or(0.0, f64::sqrt);
            let edges = pairs.iter().take(links).map(|&(_, a, b)| (a, b)).collect();
            let mut topology = Topology::from_edges(TopologyKind::Geometric, n, edges);
            attempt += 1;
            if topology.is_connected() {
                topology.radius = Some(radius);
                topology.attempts = attempt;
                return topology;
            }
            if attempt.is_multiple_of(ATTEMPTS_PER_RADIUS) {
                target *= 1.05;
            }
        }
    }

    /// Rows of `ceil(sqrt(n))` nodes in row-major order, each linked right and down.
    pub fn grid(n: usize) -> Self {
        let width = (n as f64).sqrt().ceil().max(1.0) as usize;
        let mut edges = Vec::new();
        for i in 0..n {
            let col = i % width;
            if col + 1 < width && i + 1 < n {
                edges.push((i as u32, (i + 1) as u32));
            }
            if i + width < n {
                edges.push((i as u32, (i + width) as u32));
            }
        }
        Topology::from_edges(TopologyKind::Grid, n, edges)
    }

    /// The sessions agents named `node-0`..`node-{n-1}` open under the default peering rule
    /// (the seed does not enter: the rule is a function of the names).
    pub fn peering(n: usize) -> Self {
        let names: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
        let members: Vec<&str> = names.iter().map(String::as_str).collect();
        let graph = x0tta6bl4_api::peering::Peering::default().graph(&members);
        let edges = graph
            .iter()
            .enumerate()
            .flat_map(|(a, peers)| {
                peers
                    .iter()
                    .filter(move |&&b| a < b)
                    .map(move |&b| (a as u32, b as u32))
            })
            .collect();
        Topology::from_edges(TopologyKind::Peering, n, edges)
    }

    pub fn build(kind: TopologyKind, n: usize, degree: f64, seed: u64) -> Self {
        match kind {
            TopologyKind::Geometric => Topology::geometric(n, degree, seed),
            TopologyKind::Grid => Topology::grid(n),
            TopologyKind::Peering => Topology::peering(n),
        }
    }

    pub fn len(&self) -> usize {
        self.adjacency.len()
    }

    pub fn is_empty(&self) -> bool {
        self.adjacency.is_empty()
    }

    pub fn mean_degree(&self) -> f64 {
        2.0 * self.edges.len() as f64 / self.len().max(1) as f64
    }

    /// Hop distances from `source` over the nodes not in `removed` (`u32::MAX`: unreachable).
    pub fn distances(&self, source: usize, removed: &[bool]) -> Vec<u32> {
        let mut distance = vec![u32::MAX; self.len()];
        if removed.get(source).copied().unwrap_or(false) {
            return distance;
        }
        let mut queue = VecDeque::from([source]);
        distance[source] = 0;
        while let Some(node) = queue.pop_front() {
            for &next in &self.adjacency[node] {
                let next = next as usize;
                if distance[next] == u32::MAX && !removed.get(next).copied().unwrap_or(false) {
                    distance[next] = distance[node] + 1;
                    queue.push_back(next);
                }
            }
        }
        distance
    }

    pub fn is_connected(&self) -> bool {
        self.is_connected_without(&vec![false; self.len()])
    }

    /// Whether the nodes not in `removed` still form one connected graph.
    pub fn is_connected_without(&self, removed: &[bool]) -> bool {
        let Some(start) = (0..self.len()).find(|&i| !removed[i]) else {
            return true;
        };
        self.distances(start, removed)
            .iter()
            .zip(removed)
            .all(|(distance, removed)| *removed || *distance != u32::MAX)
    }

    /// The longest shortest path, in hops (one breadth-first search per node).
    pub fn diameter(&self) -> u32 {
        let none = vec![false; self.len()];
        (0..self.len())
            .map(|i| {
                self.distances(i, &none)
                    .into_iter()
                    .filter(|d| *d != u32::MAX)
                    .max()
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    /// Mean hop distance over all ordered pairs.
    pub fn mean_distance(&self) -> f64 {
        let none = vec![false; self.len()];
        let (mut sum, mut count) = (0u64, 0u64);
        for i in 0..self.len() {
            for d in self.distances(i, &none) {
                if d != 0 && d != u32::MAX {
                    sum += u64::from(d);
                    count += 1;
                }
            }
        }
        sum as f64 / count.max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_graphs_are_connected_near_the_target_degree_and_reproducible() {
        for n in [50, 300] {
            let topology = Topology::geometric(n, 7.0, 1);
            assert!(topology.is_connected());
            assert_eq!(topology.len(), n);
            assert!(
                (topology.mean_degree() - 7.0).abs() < 0.01,
                "{}",
                topology.mean_degree()
            );
            assert_eq!(Topology::geometric(n, 7.0, 1).edges, topology.edges);
        }
        assert_ne!(
            Topology::geometric(300, 7.0, 1).edges,
            Topology::geometric(300, 7.0, 2).edges
        );
    }

    #[test]
    fn a_sparse_target_still_ends_connected_by_growing_the_degree() {
        let topology = Topology::geometric(200, 2.0, 3);
        assert!(topology.is_connected());
        assert!(topology.attempts > 1);
    }

    #[test]
    fn grids_have_four_neighbours_inside_and_a_partial_last_row_stays_connected() {
        let square = Topology::grid(100);
        assert_eq!(square.edges.len(), 2 * 10 * 9);
        assert_eq!(square.adjacency[55].len(), 4);
        assert_eq!(square.diameter(), 18);
        let partial = Topology::grid(23); // 5 columns, the last row holds 3 nodes
        assert!(partial.is_connected());
        assert_eq!(partial.adjacency[22], vec![17, 21]);
    }

    #[test]
    fn the_peering_rule_gives_a_connected_bounded_small_world() {
        let topology = Topology::peering(1000);
        assert!(topology.is_connected());
        assert!(
            (7.5..8.5).contains(&topology.mean_degree()),
            "{}",
            topology.mean_degree()
        );
        assert!(topology.adjacency.iter().all(|peers| peers.len() >= 6));
        assert!(topology.diameter() <= 10, "{}", topology.diameter());
    }

    #[test]
    fn removing_a_cut_vertex_disconnects() {
        let line = Topology::grid(1);
        assert!(line.is_connected());
        let grid = Topology::grid(4); // a 2×2 square: no single cut vertex
        assert!(grid.is_connected_without(&[true, false, false, false]));
        assert!(!grid.is_connected_without(&[true, false, false, true]));
    }
}
