//! The node key rotated: its endorsement admitted here and announced on every session, then
//! every advertisement signed with the new key.
use std::sync::PoisonError;

use x0tta6bl4_routing::Output;
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_wire::{EndorsementAnnounce, Message, NodeId};

use super::Mesh;
use crate::clock::{unix_micros, unix_seconds};

impl Mesh {
    /// Announces the rotated key's endorsement on every session, then signs with the new key
    /// at once: frames leave each session in order, so a neighbour admits the key before the
    /// first advertisement signed with it arrives.
    pub(super) fn rotate(&mut self, identity: Identity) {
        let epoch = identity.endorsement.key_epoch;
        self.present(identity);
        self.key_since_unix_us = unix_micros();
        self.dispatch(vec![Output::OriginateDue]);
        tracing::info!(epoch, "signing with the rotated key");
    }

    /// Uses `identity` from now on, its endorsement recorded and announced on every session
    /// first (a rotation, or keyExpiry's short endorsement of the key in use).
    pub(super) fn present(&mut self, identity: Identity) {
        match identity.endorsement.encode() {
            Ok(bytes) => {
                {
                    let mut trust = self.trust.write().unwrap_or_else(PoisonError::into_inner);
                    let _ = self.book.offer(&bytes, &mut trust, unix_seconds());
                }
                let message = Message::EndorsementAnnounce(EndorsementAnnounce { endorsement: bytes });
                let peers: Vec<NodeId> = self.sessions.keys().copied().collect();
                for peer in peers {
                    let _ = self.send(peer, &message);
                }
            }
            Err(error) => tracing::error!(%error, "the endorsement in use does not encode"),
        }
        self.metrics
            .endorsement_valid_until(identity.endorsement.not_after);
        self.signer.identity.replace(identity);
    }
}
