//! The shape of each topology without simulating it (`x0tta6bl4-sim --graph-only`): for
//! meshes larger than the simulator holds here, what bounds the control traffic and the
//! number of sessions per agent (the degree), how far routes go (hops), and, for the agents'
//! bounded-peering rule, how many agents' peer sets one join moves.
use std::collections::BTreeSet;
use std::time::Instant;

use crate::topology::{Topology, TopologyKind};

/// One topology at one size.
#[derive(Debug, Clone, PartialEq)]
pub struct Shape {
    pub kind: TopologyKind,
    pub nodes: usize,
    pub connected: bool,
    pub mean_degree: f64,
    pub min_degree: usize,
    pub max_degree: usize,
    pub diameter: u32,
    pub mean_hops: f64,
    /// Peering only: agents other than the joiner whose peer set changes when one agent joins.
    pub moved_by_a_join: Option<usize>,
    pub build_seconds: f64,
}

pub fn measure(kind: TopologyKind, nodes: usize, degree: f64, seed: u64) -> Shape {
    let started = Instant::now();
    let topology = Topology::build(kind, nodes, degree, seed);
    let build_seconds = started.elapsed().as_secs_f64();
    let degrees: Vec<usize> = topology.adjacency.iter().map(Vec::len).collect();
    let moved_by_a_join = (kind == TopologyKind::Peering).then(|| {
        let grown = Topology::peering(nodes + 1);
        (0..nodes)
            .filter(|&i| {
                let before: BTreeSet<u32> = topology.adjacency[i].iter().copied().collect();
                let after: BTreeSet<u32> = grown.adjacency[i].iter().copied().collect();
                before != after
            })
            .count()
    });
    Shape {
        kind,
        nodes,
        connected: topology.is_connected(),
        mean_degree: topology.mean_degree(),
        min_degree: degrees.iter().copied().min().unwrap_or(0),
        max_degree: degrees.iter().copied().max().unwrap_or(0),
        diameter: topology.diameter(),
        mean_hops: topology.mean_distance(),
        moved_by_a_join,
        build_seconds,
    }
}

/// The shapes as a Markdown table.
pub fn table(shapes: &[Shape]) -> String {
    let mut out = String::from(
        "| topology | N | connected | degree mean (min–max) | diameter (hops) | mean hops | agents whose peers a join moves | graph built in (s) |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for s in shapes {
        out.push_str(&format!(
            "| {} | {} | {} | {:.2} ({}–{}) | {} | {:.2} | {} | {:.2} |\n",
            s.kind,
            s.nodes,
            if s.connected { "yes" } else { "no" },
            s.mean_degree,
            s.min_degree,
            s.max_degree,
            s.diameter,
            s.mean_hops,
            s.moved_by_a_join.map_or("-".to_owned(), |n| n.to_string()),
            s.build_seconds
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peering_graph_is_measured_with_what_a_join_moves() {
        let shape = measure(TopologyKind::Peering, 300, 7.0, 1);
        assert!(shape.connected);
        assert_eq!(shape.min_degree, 6);
        let moved = shape.moved_by_a_join.unwrap();
        assert!((1..=20).contains(&moved), "{moved}");
        let grid = measure(TopologyKind::Grid, 100, 7.0, 1);
        assert_eq!((grid.diameter, grid.moved_by_a_join), (18, None));
        assert!(table(&[shape, grid]).contains("| peering | 300 | yes | "));
    }
}
