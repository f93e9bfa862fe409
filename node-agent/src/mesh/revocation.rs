//! Keys the mesh authority revoked: each newly revoked key is recorded as an event (what the
//! chaos observer reports as a detection), and every session whose peer bound it with a key
//! the trust store now revokes is closed. The trust store already refuses the key's
//! endorsements, advertisements and model updates; the peer can only come back with a new key.
use std::sync::PoisonError;

use x0tta6bl4_wire::NodeId;

use super::{Mesh, short};
use crate::clock::unix_micros;
use crate::convergence::Event;

impl Mesh {
    pub(super) fn revoked(&mut self, keys: &[(NodeId, u32)]) {
        let now = unix_micros();
        for (node, through) in keys {
            tracing::warn!(node = %short(node), through_epoch = through, "node key revoked by the mesh authority");
            self.convergence.on_topology(Event {
                at_unix_us: now,
                kind: "key_revoked",
                node: Some(node.to_string()),
                detail: Some(format!("key epochs up to {through}")),
            });
        }
        let closing: Vec<NodeId> = {
            let trust = self.trust.read().unwrap_or_else(PoisonError::into_inner);
            self.sessions
                .iter()
                .filter(|(peer, session)| trust.is_revoked(peer, session.key_epoch))
                .map(|(peer, _)| *peer)
                .collect()
        };
        for peer in closing {
            self.sessions.remove(&peer);
            self.neighbour_lost(peer, "revoked_key");
        }
    }
}
