//! What the agent reports about itself (`/status`, and from it the MeshNode record): identity,
//! neighbours with link quality, routes, counters, convergence, self-healing.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::convergence::{Episode, Event};

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub node_id: String,
    pub spiffe_id: String,
    pub node_name: String,
    pub mesh: String,
    pub namespace: String,
    pub endpoint: String,
    pub require_post_quantum: bool,
    pub key_epoch: u32,
    /// When the current node key was made (its age is reported in the MeshNode).
    pub key_since_unix_us: u64,
    pub now_unix_us: u64,
    pub started_unix_us: u64,
    pub sessions: usize,
    pub post_quantum_sessions: usize,
    /// Nodes whose endorsement this agent holds (itself included).
    pub known_nodes: usize,
    pub neighbours: Vec<NeighbourReport>,
    pub routes: Vec<RouteReport>,
    /// Every counter, by metric name and label set.
    pub counters: BTreeMap<String, BTreeMap<String, f64>>,
    pub last_topology_event: Option<Event>,
    /// The convergence episode under way, else the last settled one.
    pub last_convergence: Option<Episode>,
    pub last_settled_convergence: Option<Episode>,
    pub events: Vec<Event>,
    /// Peers the self-healing loop excluded from routing.
    pub quarantined: Vec<QuarantineReport>,
    /// The newest findings of the self-healing loop and what was done, newest first.
    pub incidents: Vec<IncidentReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuarantineReport {
    pub node_id: String,
    pub node_name: Option<String>,
    pub reason: String,
    /// `false` when self-healing only reports.
    pub enforced: bool,
    pub remaining_s: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentReport {
    pub at_unix_us: u64,
    pub node_id: String,
    pub node_name: Option<String>,
    pub finding: &'static str,
    pub detail: String,
    pub action: Option<&'static str>,
    pub executed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NeighbourReport {
    pub node_id: String,
    pub node_name: Option<String>,
    pub spiffe_id: Option<String>,
    pub alive: bool,
    pub quarantined: bool,
    pub cost: u32,
    pub loss_percent: u32,
    pub rtt_ms: Option<f64>,
    pub key_exchange: Option<String>,
    pub post_quantum: bool,
    pub direction: Option<&'static str>,
    pub remote_address: Option<String>,
    pub session_since_unix_us: Option<u64>,
    /// The neighbour's clock against ours, from its last hello.
    pub clock_offset: Option<crate::clock::ClockOffset>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteReport {
    pub destination: String,
    pub destination_name: Option<String>,
    pub next_hop: String,
    pub next_hop_name: Option<String>,
    pub metric: u32,
    pub hop_count: u8,
    pub seq: u64,
    /// When the next hop last changed (absent if it has not changed since this agent started
    /// tracking it).
    pub since_unix_us: Option<u64>,
}
