//! Who the targets are and what each installs (pure): the mesh's agents from their MeshNode
//! records, the candidates among them, the seeded choice of targets, and each target's fault
//! entries.
use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use x0tta6bl4_api::chaos::{
    ActionSpec, ActionType, AgentChaosReport, FaultEntry, NodeAssignment, TargetMode, TargetSpec,
};
use x0tta6bl4_api::{MeshNode, duration};

use crate::agent_report::AgentReport;
use crate::ranking;

/// One agent of the mesh, as its MeshNode record shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agent {
    /// It reported within the staleness bound (see `AgentReport::from_record`).
    pub live: bool,
    /// The IP of its published endpoint.
    pub address: Option<IpAddr>,
    /// The nodes it has a live session with.
    pub neighbours: Vec<String>,
    /// The most each neighbour's clock can differ from its own, in microseconds (as it
    /// estimated from their hellos).
    pub clock_bounds: BTreeMap<String, u64>,
    /// Destinations it has a route to.
    pub route_count: i32,
    pub last_route_change: Option<Timestamp>,
    /// What it reports of this experiment (matched by UID).
    pub report: Option<AgentChaosReport>,
}

/// The agents of a mesh by node name, from their MeshNode records, with their reports on the
/// experiment of `uid`, and liveness at `now`.
pub fn agents(records: &[MeshNode], uid: &str, now: &Time) -> BTreeMap<String, Agent> {
    records
        .iter()
        .map(|record| {
            let status = record.status.clone().unwrap_or_default();
            let agent = Agent {
                live: AgentReport::from_record(record, now).is_some(),
                address: endpoint_address(&status.endpoint),
                neighbours: status.neighbours.iter().map(|n| n.node.clone()).collect(),
                clock_bounds: status
                    .neighbours
                    .iter()
                    .filter_map(|n| Some((n.node.clone(), u64::try_from(n.clock_bound_micros?).ok()?)))
                    .collect(),
                route_count: status.route_count,
                last_route_change: status.last_route_change_time.map(|t| t.0),
                report: status.chaos.into_iter().find(|r| r.uid == uid),
            };
            (record.spec.node_name.clone(), agent)
        })
        .collect()
}

/// The IP of a MeshNode endpoint: `198.18.251.2:7946`, `198.18.251.2:5000/5001`,
/// `[fd00::2]:5000/5001`, or a bare address.
pub fn endpoint_address(endpoint: &str) -> Option<IpAddr> {
    let endpoint = endpoint.trim();
    if let Some(rest) = endpoint.strip_prefix('[') {
        let (host, _) = rest.split_once(']')?;
        return host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    }
    if let Ok(ip) = endpoint.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, _) = endpoint.split_once(':')?;
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The live agents whose nodes carry every label of `target.nodeSelector`, by node name.
pub fn candidates(
    target: &TargetSpec,
    agents: &BTreeMap<String, Agent>,
    node_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    agents
        .iter()
        .filter(|(_, agent)| agent.live)
        .filter(|(node, _)| {
            target.node_selector.is_empty()
                || node_labels.get(*node).is_some_and(|labels| {
                    target
                        .node_selector
                        .iter()
                        .all(|(key, value)| labels.get(key) == Some(value))
                })
        })
        .map(|(node, _)| node.clone())
        .collect()
}

/// Chooses the targets among `candidates` by `target.mode`, in the order `seed` (the
/// experiment's UID) gives them, so that every plan of one experiment chooses the same nodes:
/// one; all; fixed (value nodes); fixedPercent (value% of the candidates, rounded down, at least
/// one); randomMaxPercent (a seeded count from one to value% of them). Sorted by name.
pub fn select_targets(target: &TargetSpec, candidates: &[String], seed: &str) -> Vec<String> {
    let n = candidates.len();
    let value = target
        .value
        .and_then(|v| usize::try_from(v).ok())
        .unwrap_or(1)
        .max(1);
    let share = |percent: usize| (n * percent.min(100) / 100).max(1);
    let count = match target.mode {
        TargetMode::One => 1,
        TargetMode::All => n,
        TargetMode::Fixed => value,
        TargetMode::FixedPercent => share(value),
        TargetMode::RandomMaxPercent => 1 + ranking::draw(seed, "randomMaxPercent", share(value)),
    }
    .min(n);
    let mut ordered = candidates.to_vec();
    ordered.sort_by_cached_key(|node| ranking::rank(seed, node));
    ordered.truncate(count);
    ordered.sort();
    ordered
}

/// The entries each target installs: one per other live agent of the mesh with a published
/// address (targets included), carrying the action's parameters.
pub fn assignments(
    action: &ActionSpec,
    targets: &[String],
    agents: &BTreeMap<String, Agent>,
) -> Vec<NodeAssignment> {
    if !action.type_.is_link_fault() {
        // A node fault is carried out by the operator (nodeKill deletes the agent's pod).
        return Vec::new();
    }
    let millis = |text: &str| {
        duration::parse(text)
            .ok()
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    };
    let latency = action.latency.as_ref();
    let percent = |of: ActionType| {
        if action.type_ == of {
            action.probability_percent
        } else {
            None
        }
    };
    let template = FaultEntry {
        peer: String::new(),
        address: String::new(),
        direction: action.direction,
        partition: action.type_ == ActionType::Partition,
        drop_percent: percent(ActionType::Loss),
        corrupt_percent: percent(ActionType::Corrupt),
        delay_millis: latency.and_then(|l| millis(&l.delay)),
        jitter_millis: latency.and_then(|l| l.jitter.as_deref()).and_then(millis),
    };
    targets
        .iter()
        .map(|target| NodeAssignment {
            node: target.clone(),
            entries: agents
                .iter()
                .filter(|(peer, agent)| *peer != target && agent.live)
                .filter_map(|(peer, agent)| {
                    Some(FaultEntry {
                        peer: peer.clone(),
                        address: agent.address?.to_string(),
                        ..template.clone()
                    })
                })
                .collect(),
        })
        .collect()
}

/// A cascade's chain of kills from `first`: each next node is a live neighbour of the one
/// before it (a link either side reports), the first of them in the order `seed` gives, never
/// a node already in the chain. In a mesh the traffic of a dead node moves to its neighbours,
/// so this is the node that inherited it. Shorter than `steps` when the chain runs out of
/// neighbours.
pub fn cascade_chain(first: &str, steps: usize, agents: &BTreeMap<String, Agent>, seed: &str) -> Vec<String> {
    let linked = |a: &str, b: &str| {
        agents.get(a).is_some_and(|x| x.neighbours.iter().any(|n| n == b))
            || agents.get(b).is_some_and(|y| y.neighbours.iter().any(|n| n == a))
    };
    let mut chain = vec![first.to_owned()];
    while chain.len() < steps {
        let last = chain.last().cloned().unwrap_or_default();
        let next = agents
            .iter()
            .filter(|(node, agent)| agent.live && !chain.contains(node) && linked(&last, node))
            .map(|(node, _)| node.clone())
            .min_by_key(|node| ranking::rank(seed, node));
        match next {
            Some(node) => chain.push(node),
            None => break,
        }
    }
    chain
}
