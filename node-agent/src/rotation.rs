//! Key rotation: every `keyRotationInterval` the agent makes a new ML-DSA-65 key (next
//! epoch), saves it (0600) before anything else so a crash cannot lose it, publishes the
//! public key and waits for its endorsement (the operator in a cluster, the endorsement file
//! standalone), then hands the new identity to the mesh actor, which announces the
//! endorsement to every neighbour before it signs anything with the new key.
//!
//! Sessions are not touched: TLS keys do not depend on the node key, and each session's
//! binding was checked once, at its start. The previous key's endorsement stays valid at the
//! peers until it runs out (the operator endorses for the rotation interval plus the overlap),
//! so advertisements signed just before the switch still verify.
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_crypto::keyfile::{self, StoredKey};
use x0tta6bl4_session::binding::Identity;

use crate::clock::unix_seconds;
use crate::identity::{self, IdentityRequest, IdentitySource, NODE_KEY_FILE, NODE_PUBLIC_KEY_FILE};
use crate::mesh::MeshHandle;
use crate::metrics::Metrics;

/// Which key is current: its epoch and when it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyVersion {
    pub epoch: u32,
    pub created_unix: u64,
}

/// When the key created at `created_unix` is due for replacement (Unix seconds).
pub fn rotation_due(created_unix: u64, interval: Duration) -> u64 {
    created_unix.saturating_add(interval.as_secs().max(1))
}

/// When the key created at `created_unix` is due for replacement, from now.
pub fn due_in(created_unix: u64, interval: Duration, now_unix: u64) -> Duration {
    Duration::from_secs(rotation_due(created_unix, interval).saturating_sub(now_unix))
}

/// What the rotation task needs.
pub struct Rotation<S> {
    pub interval: Duration,
    pub state_dir: PathBuf,
    pub source: Arc<S>,
    pub spiffe_id: String,
    pub node_name: String,
    pub trust: Arc<RwLock<TrustStore>>,
    pub mesh: MeshHandle,
    pub metrics: Arc<Metrics>,
    /// Woken when the mesh authority revoked the key in use: the next key is made at once.
    pub rotate_now: Arc<tokio::sync::Notify>,
}

impl<S: IdentitySource + 'static> Rotation<S> {
    /// Rotates on schedule until shutdown, starting from the key the agent started with.
    pub async fn run(self, mut current: KeyVersion, shutdown: CancellationToken) {
        loop {
            // The mesh has recorded the endorsement of the key in use (at start, on rotation).
            self.metrics
                .key_due(rotation_due(current.created_unix, self.interval));
            let wait = due_in(current.created_unix, self.interval, unix_seconds());
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
                () = self.rotate_now.notified() => {
                    tracing::warn!(epoch = current.epoch, "rotating now: the key in use is revoked");
                }
            }
            let rotated = tokio::select! {
                () = shutdown.cancelled() => return,
                rotated = self.rotate(&current) => rotated,
            };
            match rotated {
                Ok(next) => current = next,
                Err(error) => {
                    self.metrics.key_rotations.with_label_values(&["failed"]).inc();
                    tracing::error!(%error, "key rotation failed; the current key stays in use, retrying in a minute");
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_secs(60)) => {}
                    }
                }
            }
        }
    }

    async fn rotate(&self, current: &KeyVersion) -> anyhow::Result<KeyVersion> {
        let epoch = current.epoch.wrapping_add(1);
        let next = StoredKey {
            key: SigningKey::generate()?,
            epoch,
            created_unix: unix_seconds(),
        };
        // Saved first: after a crash the agent starts with the new key and asks for its
        // endorsement again, instead of losing a key that may already be endorsed.
        keyfile::save(&self.state_dir.join(NODE_KEY_FILE), &next)?;
        identity::write_public_key(
            &self.state_dir.join(NODE_PUBLIC_KEY_FILE),
            next.key.verifying_key(),
        )?;
        tracing::info!(epoch, "new node key saved; waiting for its endorsement");
        let request = IdentityRequest {
            spiffe_id: &self.spiffe_id,
            node_name: &self.node_name,
            public_key: next.key.verifying_key(),
            key_epoch: epoch,
        };
        let material = self.source.renew(request).await?;
        self.trust
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(&material.endorsement, unix_seconds())?;
        let version = KeyVersion {
            epoch,
            created_unix: next.created_unix,
        };
        let identity = Identity {
            key: next.key,
            endorsement: material.endorsement,
        };
        if !self.mesh.rotate(identity).await {
            anyhow::bail!("the mesh stopped before the new key was in use");
        }
        self.metrics.key_rotations.with_label_values(&["done"]).inc();
        tracing::info!(epoch, "node key rotated");
        Ok(version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_due_one_interval_after_its_creation() {
        let day = Duration::from_secs(86_400);
        assert_eq!(due_in(1_000, day, 1_000), day);
        assert_eq!(due_in(1_000, day, 1_000 + 86_000), Duration::from_secs(400));
        assert_eq!(due_in(1_000, day, 1_000 + 90_000), Duration::ZERO, "overdue: now");
    }

    #[test]
    fn the_key_expiry_is_its_rotation_unless_its_endorsement_ends_sooner() {
        let day = Duration::from_secs(86_400);
        let metrics = Metrics::new();
        metrics.key_due(rotation_due(1_000, day));
        assert_eq!(
            metrics.key_expiry.get(),
            87_400.0,
            "no endorsement recorded yet: the rotation time"
        );
        metrics.endorsement_valid_until(1_000 + 86_400 + 3_600);
        metrics.key_due(rotation_due(1_000, day));
        assert_eq!(metrics.key_expiry.get(), 87_400.0);
        assert_eq!(metrics.endorsement_expiry.get(), 91_000.0);
        // An endorsement shorter than the rotation interval: the key is due when it ends.
        metrics.endorsement_valid_until(50_000);
        metrics.key_due(rotation_due(1_000, day));
        assert_eq!(metrics.key_expiry.get(), 50_000.0);
    }
}
