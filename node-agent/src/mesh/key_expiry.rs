//! Keys that run out. A peer whose session key has run out loses the session unless it holds a
//! valid key at least as new (a rotated-out key ending after its successor took over is
//! normal); a still valid *older* key does not keep it, because the peer no longer signs with
//! it. This agent's own endorsement running out wakes key rotation, which makes a new key for
//! the operator to endorse.
//!
//! A keyExpiry experiment brings this about on purpose: the operator issues the target a short
//! endorsement of the key it holds, and the target adopts it here, announcing it on every
//! session as it would a renewal, so that its key runs out at every peer within seconds.
use std::sync::PoisonError;

use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::endorsement::Endorsement;
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_wire::NodeId;

use super::{Mesh, short};
use crate::clock::{unix_micros, unix_seconds};
use crate::convergence::Event;

impl Mesh {
    /// Presents `bytes`, an endorsement of the key in use, from now on; refused (and logged)
    /// unless it names this node, its key and its epoch.
    pub(super) fn adopt_expiring(&mut self, bytes: &[u8]) {
        let current = self.signer.identity.get();
        let adopted = Endorsement::decode(bytes).ok().filter(|e| {
            e.node_id() == self.self_id
                && e.public_key == *current.key.verifying_key()
                && e.key_epoch == current.endorsement.key_epoch
        });
        let Some(endorsement) = adopted else {
            tracing::warn!(
                "chaos: keyExpiry endorsement refused: it does not endorse this agent's key in use"
            );
            return;
        };
        let key = match SigningKey::from_parts(
            current.key.verifying_key().as_bytes(),
            current.key.secret_bytes(),
        ) {
            Ok(key) => key,
            Err(error) => {
                tracing::error!(%error, "chaos: keyExpiry: the key in use does not copy");
                return;
            }
        };
        tracing::warn!(
            epoch = endorsement.key_epoch,
            not_after = endorsement.not_after,
            "chaos: keyExpiry: presenting an endorsement that runs out"
        );
        self.present(Identity { key, endorsement });
    }

    /// Closes the sessions of peers with no valid key left, and wakes key rotation once when
    /// this agent's own endorsement has run out.
    pub(super) fn expire_keys(&mut self) {
        let now = unix_seconds();
        let expired: Vec<(NodeId, u32)> = {
            let trust = self.trust.read().unwrap_or_else(PoisonError::into_inner);
            self.sessions
                .iter()
                .filter(|(peer, session)| {
                    !trust.is_revoked(peer, session.key_epoch)
                        && trust
                            .newest_key(peer, now)
                            .is_none_or(|(epoch, _)| epoch < session.key_epoch)
                })
                .map(|(peer, session)| (*peer, session.key_epoch))
                .collect()
        };
        for (peer, epoch) in expired {
            tracing::warn!(peer = %short(&peer), epoch, "the peer's key expired");
            self.convergence.on_topology(Event {
                at_unix_us: unix_micros(),
                kind: "key_expired",
                node: Some(peer.to_string()),
                detail: Some(format!("key epoch {epoch}")),
            });
            self.sessions.remove(&peer);
            self.neighbour_lost(peer, "expired_key");
        }
        let own = self.signer.identity.get();
        let (epoch, not_after) = (own.endorsement.key_epoch, own.endorsement.not_after);
        if not_after <= now && self.expiry_noted != Some(epoch) {
            self.expiry_noted = Some(epoch);
            tracing::warn!(epoch, "this agent's endorsement ran out: making a new key");
            self.rotate_now.notify_one();
        }
    }
}
