//! Loopback addresses of their own (127.<run>.<test>.<10 + agent>): the second octet is taken
//! from the process id, the third is the test's own number, so tests, test files and concurrent
//! runs never share an address or a port; and agents started on them.
use std::net::SocketAddr;
use std::path::Path;

use crate::config::{METRICS_PORT, SESSION_PORT};
use crate::identity::NodeFiles;
use crate::process::Agent;
use crate::scratch::Scratch;

/// The second octet of this process's loopback addresses (20 to 219).
pub fn run_octet() -> u8 {
    u8::try_from(std::process::id() % 200).unwrap_or(0) + 20
}

/// The address of agent `agent` of test `test` (each test picks its own number).
pub fn loopback(test: u8, agent: usize) -> String {
    format!("127.{}.{test}.{}", run_octet(), agent + 10)
}

/// Where that agent serves /status and /metrics.
pub fn loopback_metrics(test: u8, agent: usize) -> SocketAddr {
    format!("{}:{METRICS_PORT}", loopback(test, agent))
        .parse()
        .expect("a socket address")
}

/// Where that agent takes neighbour sessions.
pub fn loopback_sessions(test: u8, agent: usize) -> SocketAddr {
    format!("{}:{SESSION_PORT}", loopback(test, agent))
        .parse()
        .expect("a socket address")
}

/// Starts one agent per node of `nodes`, in order, each on its own loopback address of test
/// `test` (advertised as such, /status on [`loopback_metrics`]), dialling the agents whose
/// indices `peers[i]` lists, with the extra arguments `extra(i)`.
pub fn start_on_loopback<'e>(
    scratch: &Scratch,
    test: u8,
    nodes: &[NodeFiles],
    config: &Path,
    peers: &[&[usize]],
    extra: impl Fn(usize) -> Vec<&'e str>,
) -> Vec<Agent> {
    assert_eq!(peers.len(), nodes.len(), "one peer list per node");
    nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            scratch
                .agent(node, config)
                .on(loopback_sessions(test, i).ip())
                .peers(peers[i].iter().map(|&j| loopback_sessions(test, j).to_string()))
                .args(extra(i))
                .start()
        })
        .collect()
}
