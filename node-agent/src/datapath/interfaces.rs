//! Which interfaces carry the mesh: those the kernel routes the peers' addresses through,
//! looked up again when the peer set changes and every few seconds.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use x0tta6bl4_datapath::{Datapath, route_interface};

use super::endpoint::Shared;
use super::metrics::DatapathMetrics;
use super::state::DatapathState;
use crate::mesh::MeshHandle;
use crate::peers::PeerEndpoint;

/// How often the peers' routes are looked up again without a change of the peer set (routes
/// move, sessions arrive from peers the agent does not dial). One rtnetlink round trip per
/// distinct peer address: a few milliseconds for a thousand peers.
const RESCAN_EVERY: Duration = Duration::from_secs(5);

/// The peer addresses whose routes decide the interfaces: the endpoints dialled (IP literals;
/// a host name is resolved by the dialer at each dial, and its sessions cover it) and the
/// remote addresses of the sessions up.
pub fn peer_addresses(endpoints: &BTreeSet<PeerEndpoint>, sessions: &[IpAddr]) -> BTreeSet<IpAddr> {
    endpoints
        .iter()
        .filter_map(|endpoint| endpoint.address.parse::<SocketAddr>().ok())
        .map(|address| address.ip())
        .chain(sessions.iter().copied())
        .map(|address| address.to_canonical())
        .collect()
}

/// Attaches the datapath to the interfaces the peers are routed through, as they become known.
pub struct AutoInterfaces {
    peers: watch::Receiver<BTreeSet<PeerEndpoint>>,
    last_scan: Option<Instant>,
    /// Interfaces that failed to attach, so each failure is logged once, not every scan.
    failed: BTreeSet<String>,
}

impl AutoInterfaces {
    pub fn new(peers: watch::Receiver<BTreeSet<PeerEndpoint>>) -> Self {
        AutoInterfaces {
            peers,
            last_scan: None,
            failed: BTreeSet::new(),
        }
    }

    /// Looks the routes up if the peers changed or a rescan is due; true if an interface was
    /// attached.
    pub async fn refresh(&mut self, datapath: &Shared<Datapath>, mesh: &MeshHandle) -> bool {
        let peers_changed = self.peers.has_changed().unwrap_or(false);
        let due = self.last_scan.is_none_or(|at| at.elapsed() >= RESCAN_EVERY);
        if !peers_changed && !due {
            return false;
        }
        self.last_scan = Some(Instant::now());
        let endpoints = self.peers.borrow_and_update().clone();
        let sessions: Vec<IpAddr> = match mesh.status().await {
            Some(report) => report
                .neighbours
                .iter()
                .filter_map(|n| n.remote_address.as_deref()?.parse::<SocketAddr>().ok())
                .map(|address| address.ip())
                .collect(),
            None => Vec::new(),
        };
        let mut wanted: BTreeMap<String, IpAddr> = BTreeMap::new();
        for peer in peer_addresses(&endpoints, &sessions) {
            match route_interface(peer) {
                Ok(Some(interface)) => {
                    wanted.entry(interface).or_insert(peer);
                }
                // No route (yet), or a local address: nothing to instrument for it.
                Ok(None) => {}
                Err(error) => tracing::debug!(%peer, %error, "route lookup failed"),
            }
        }
        let mut attached = false;
        let mut datapath = datapath.lock().unwrap_or_else(PoisonError::into_inner);
        for (interface, peer) in wanted {
            match datapath.attach_interface(&interface) {
                Ok(true) => {
                    tracing::info!(%interface, %peer, "eBPF datapath attached (the route to this peer leaves here)");
                    self.failed.remove(&interface);
                    attached = true;
                }
                Ok(false) => {}
                Err(error) => {
                    if self.failed.insert(interface.clone()) {
                        tracing::warn!(%interface, %peer, %error, "cannot attach the eBPF datapath to the interface of this peer's route");
                    }
                }
            }
        }
        attached
    }
}

/// Publishes the attached interfaces: /datapath, the gauge and the condition's message.
pub fn publish_interfaces(interfaces: Vec<String>, metrics: &DatapathMetrics, state: &DatapathState) {
    metrics
        .interfaces
        .set(i64::try_from(interfaces.len()).unwrap_or(i64::MAX));
    let message = if interfaces.is_empty() {
        "loaded; attached to no interface yet (none routes to a peer so far)".to_owned()
    } else {
        format!("tc classifiers attached to {}", interfaces.join(", "))
    };
    state.set_availability(false, "Loaded", message);
    state.set_interfaces(interfaces);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interfaces_follow_the_dialled_ip_endpoints_and_the_sessions() {
        let endpoints: BTreeSet<PeerEndpoint> = [
            "198.18.251.2:7946",
            "[::ffff:198.18.251.3]:7946",
            "[2001:db8::5]:7946",
            "agent-4.example:7946",
            "198.18.251.2:7947",
        ]
        .into_iter()
        .map(PeerEndpoint::address)
        .collect();
        let sessions = ["198.18.251.9".parse().unwrap(), "198.18.251.2".parse().unwrap()];
        let addresses: Vec<String> = peer_addresses(&endpoints, &sessions)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            addresses,
            ["198.18.251.2", "198.18.251.3", "198.18.251.9", "2001:db8::5"],
            "IPv4-mapped as IPv4, one entry per address, host names left to their sessions"
        );
    }
}
