//! The mesh's revoked keys, from the list the operator signs with the mesh authority and
//! publishes in the MeshNetwork's status (`status.revocation`).
//!
//! A list is used only when it verifies with the mesh authority of this agent's configuration,
//! names this mesh, and is newer (a higher serial) than the list in force: the API server is
//! trusted to deliver it, not to choose what it says. A list in force is applied to the trust
//! store (nothing signed with a revoked key verifies any more), then to the mesh (sessions
//! bound with a revoked key close) and, when this agent's own key is among them, to key
//! rotation: the agent makes a new key at once, and the operator endorses it.
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::api::Api;
use kube::runtime::watcher;
use prometheus::{IntCounterVec, IntGauge, Opts, Registry};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::MeshNetwork;
use x0tta6bl4_api::mesh_network::RevocationStatus;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_crypto::revocation::RevocationList;
use x0tta6bl4_crypto::{NodeId, VerifyingKey};

use crate::identity::CurrentIdentity;
use crate::mesh::MeshHandle;
use crate::watch_cache;

/// What became of the list a MeshNetwork showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The list in force already (or no list yet).
    Unchanged,
    /// Older than the list in force: never gone back to.
    Stale,
    /// Not usable, with a metric label.
    Refused(&'static str),
    /// In force from now: the keys newly revoked (node, through epoch) and every revoked key.
    Applied {
        serial: u64,
        newly: Vec<(NodeId, u32)>,
        revoked: HashMap<NodeId, u32>,
    },
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Refused(why) => why,
            Outcome::Applied { .. } => "applied",
        }
    }
}

/// The list in force (pure).
#[derive(Debug, Default)]
pub struct InForce {
    serial: Option<u64>,
    revoked: HashMap<NodeId, u32>,
}

impl InForce {
    pub fn serial(&self) -> Option<u64> {
        self.serial
    }

    /// Checks the list of a MeshNetwork status (`mesh` is "namespace/name") and takes it if it
    /// is newer than the one in force.
    pub fn offer(
        &mut self,
        status: Option<&RevocationStatus>,
        mesh: &str,
        authorities: &[VerifyingKey],
    ) -> Outcome {
        let Some(status) = status.filter(|s| !s.list.is_empty()) else {
            return Outcome::Unchanged;
        };
        let Ok(bytes) = STANDARD.decode(&status.list) else {
            return Outcome::Refused("malformed");
        };
        let Ok(list) = RevocationList::decode(&bytes) else {
            return Outcome::Refused("malformed");
        };
        if self.serial.is_some_and(|serial| list.serial == serial) {
            return Outcome::Unchanged;
        }
        if self.serial.is_some_and(|serial| list.serial < serial) {
            return Outcome::Stale;
        }
        if list.verify(mesh, authorities).is_err() {
            return Outcome::Refused("bad_signature");
        }
        let revoked: HashMap<NodeId, u32> = list
            .entries
            .iter()
            .map(|entry| (entry.node_id(), entry.through_epoch))
            .collect();
        let mut newly: Vec<(NodeId, u32)> = revoked
            .iter()
            .filter(|(node, through)| self.revoked.get(*node).is_none_or(|held| held < *through))
            .map(|(node, through)| (*node, *through))
            .collect();
        newly.sort();
        self.serial = Some(list.serial);
        self.revoked = revoked.clone();
        Outcome::Applied {
            serial: list.serial,
            newly,
            revoked,
        }
    }
}

/// The agent's revocation metrics.
#[derive(Clone)]
pub struct RevocationMetrics {
    lists: IntCounterVec,
    revoked_keys: IntGauge,
    serial: IntGauge,
}

impl RevocationMetrics {
    pub fn register(registry: &Registry) -> Self {
        let lists = IntCounterVec::new(
            Opts::new(
                "x0_agent_revocation_lists_total",
                "Revocation lists of the mesh seen, by outcome (applied, stale, malformed, bad_signature)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let revoked_keys = IntGauge::new(
            "x0_agent_revoked_keys",
            "Nodes with revoked keys in the list in force",
        )
        .expect("valid metric");
        let serial = IntGauge::new(
            "x0_agent_revocation_serial",
            "Serial of the revocation list in force (0 before the first)",
        )
        .expect("valid metric");
        for collector in [
            Box::new(lists.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(revoked_keys.clone()),
            Box::new(serial.clone()),
        ] {
            if let Err(error) = registry.register(collector) {
                tracing::error!(%error, "metric registration failed");
            }
        }
        Self {
            lists,
            revoked_keys,
            serial,
        }
    }
}

/// What the revocation follower acts on.
pub struct Follower {
    pub client: kube::Client,
    pub namespace: String,
    pub mesh: String,
    pub trust: Arc<RwLock<TrustStore>>,
    pub identity: CurrentIdentity,
    pub mesh_handle: MeshHandle,
    /// Woken when this agent's own key is revoked: key rotation makes a new one at once.
    pub rotate_now: Arc<Notify>,
    /// The serial in force, for the MeshNode record.
    pub serial: watch::Sender<Option<u64>>,
    pub metrics: RevocationMetrics,
}

impl Follower {
    /// Follows the MeshNetwork's revocation list until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let (meshes, mut changes) = watch_cache::reflect(
            "MeshNetwork revocations",
            Api::<MeshNetwork>::namespaced(self.client.clone(), &self.namespace),
            watcher::Config::default().fields(&format!("metadata.name={}", self.mesh)),
            shutdown.clone(),
        );
        let qualified = format!("{}/{}", self.namespace, self.mesh);
        let self_id = self.identity.get().endorsement.node_id();
        let mut in_force = InForce::default();
        loop {
            let status = meshes
                .state()
                .into_iter()
                .find(|mesh| mesh.metadata.name.as_deref() == Some(self.mesh.as_str()))
                .and_then(|mesh| mesh.status.clone())
                .and_then(|status| status.revocation);
            let authorities = self
                .trust
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .authorities()
                .to_vec();
            let outcome = in_force.offer(status.as_ref(), &qualified, &authorities);
            if outcome != Outcome::Unchanged {
                self.metrics.lists.with_label_values(&[outcome.label()]).inc();
            }
            match outcome {
                Outcome::Applied {
                    serial,
                    newly,
                    revoked,
                } => {
                    tracing::info!(
                        serial,
                        revoked = revoked.len(),
                        newly = newly.len(),
                        "revocation list in force"
                    );
                    let own_epoch = self.identity.get().endorsement.key_epoch;
                    let own_revoked = revoked.get(&self_id).is_some_and(|through| own_epoch <= *through);
                    self.metrics
                        .revoked_keys
                        .set(i64::try_from(revoked.len()).unwrap_or(i64::MAX));
                    self.metrics.serial.set(i64::try_from(serial).unwrap_or(i64::MAX));
                    self.trust
                        .write()
                        .unwrap_or_else(PoisonError::into_inner)
                        .set_revoked(revoked);
                    if !self.mesh_handle.revoked(newly).await {
                        return;
                    }
                    self.serial.send_replace(Some(serial));
                    if own_revoked {
                        tracing::warn!(epoch = own_epoch, "this agent's key is revoked: making a new one");
                        self.rotate_now.notify_one();
                    }
                }
                Outcome::Stale => {
                    tracing::warn!(in_force = ?in_force.serial(), "ignored a revocation list older than the one in force");
                }
                Outcome::Refused(why) => {
                    tracing::warn!(reason = why, "refused the mesh's revocation list");
                }
                Outcome::Unchanged => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_crypto::SigningKey;
    use x0tta6bl4_crypto::revocation::RevokedKey;

    const MESH: &str = "ns/demo";
    const N1: &str = "spiffe://x0.local/ns/ns/mesh/demo/node/n1";
    const N2: &str = "spiffe://x0.local/ns/ns/mesh/demo/node/n2";

    fn status(authority: &SigningKey, mesh: &str, serial: u64, entries: &[(&str, u32)]) -> RevocationStatus {
        let entries = entries
            .iter()
            .map(|(spiffe_id, through_epoch)| RevokedKey {
                spiffe_id: (*spiffe_id).to_owned(),
                through_epoch: *through_epoch,
            })
            .collect();
        let list = RevocationList::issue(authority, mesh, serial, 1_000, entries).unwrap();
        RevocationStatus {
            list: STANDARD.encode(list.encode().unwrap()),
            serial: i64::try_from(serial).unwrap(),
            ..RevocationStatus::default()
        }
    }

    #[test]
    fn a_newer_signed_list_is_applied_and_says_which_keys_are_newly_revoked() {
        let authority = SigningKey::generate().unwrap();
        let authorities = [authority.verifying_key().clone()];
        let mut in_force = InForce::default();
        assert_eq!(in_force.offer(None, MESH, &authorities), Outcome::Unchanged);
        let first = status(&authority, MESH, 1, &[(N1, 3)]);
        let Outcome::Applied { serial, newly, .. } = in_force.offer(Some(&first), MESH, &authorities) else {
            panic!("applied expected");
        };
        assert_eq!((serial, newly), (1, vec![(x0tta6bl4_crypto::node_id_for(N1), 3)]));
        assert_eq!(
            in_force.offer(Some(&first), MESH, &authorities),
            Outcome::Unchanged
        );
        // n1 unchanged, n2 added: only n2 is new.
        let second = status(&authority, MESH, 2, &[(N1, 3), (N2, 1)]);
        let Outcome::Applied { newly, revoked, .. } = in_force.offer(Some(&second), MESH, &authorities)
        else {
            panic!("applied expected");
        };
        assert_eq!(newly, vec![(x0tta6bl4_crypto::node_id_for(N2), 1)]);
        assert_eq!(revoked.len(), 2);
        // The API server showing the first list again does not bring back n2's key.
        assert_eq!(in_force.offer(Some(&first), MESH, &authorities), Outcome::Stale);
        assert_eq!(in_force.serial(), Some(2));
    }

    #[test]
    fn a_list_not_signed_by_the_authority_or_of_another_mesh_is_refused() {
        let authority = SigningKey::generate().unwrap();
        let impostor = SigningKey::generate().unwrap();
        let authorities = [authority.verifying_key().clone()];
        let mut in_force = InForce::default();
        let forged = status(&impostor, MESH, 5, &[(N1, 9)]);
        assert_eq!(
            in_force.offer(Some(&forged), MESH, &authorities),
            Outcome::Refused("bad_signature")
        );
        let other_mesh = status(&authority, "ns/other", 5, &[(N1, 9)]);
        assert_eq!(
            in_force.offer(Some(&other_mesh), MESH, &authorities),
            Outcome::Refused("bad_signature")
        );
        let garbage = RevocationStatus {
            list: "not base64!".into(),
            ..RevocationStatus::default()
        };
        assert_eq!(
            in_force.offer(Some(&garbage), MESH, &authorities),
            Outcome::Refused("malformed")
        );
        assert_eq!(in_force.serial(), None, "nothing refused is in force");
    }
}
