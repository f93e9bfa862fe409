//! Bounded peering, the mesh's side: a session with a node outside the set the peering rule
//! gives this agent (the endpoints of a peer source that bounds sessions,
//! `crate::peers::PeerSource::bounds_sessions`) is closed once it has stayed outside for
//! [`GRACE`]. The dialer already dials only the set; this closes what the other side opened,
//! and what a join or leave moved off the ring, so the number of sessions stays bounded as
//! the mesh churns. The grace absorbs the moments when two agents' views of the records
//! differ (one has seen a join, the other not yet).
use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;
use x0tta6bl4_wire::NodeId;

use super::{Mesh, short};

/// How long a session may stay outside the wanted set before it is closed.
pub(super) const GRACE: Duration = Duration::from_secs(10);

impl Mesh {
    pub(super) fn prune_unwanted(&mut self, now: Instant) {
        let Some(peering) = &self.peering else {
            return;
        };
        let wanted: BTreeSet<NodeId> = peering.borrow().iter().filter_map(|peer| peer.node).collect();
        self.metrics
            .peers_wanted
            .set(i64::try_from(wanted.len()).unwrap_or(i64::MAX));
        let sessions = &self.sessions;
        self.unwanted_since
            .retain(|peer, _| sessions.contains_key(peer) && !wanted.contains(peer));
        for peer in sessions.keys().filter(|peer| !wanted.contains(peer)) {
            self.unwanted_since.entry(*peer).or_insert(now);
        }
        let closing: Vec<NodeId> = self
            .unwanted_since
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= GRACE)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in closing {
            tracing::info!(peer = %short(&peer), "closing a session outside this agent's peering set");
            self.unwanted_since.remove(&peer);
            self.sessions.remove(&peer);
            self.neighbour_lost(peer, "not_a_peer");
        }
    }
}
