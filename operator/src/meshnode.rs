//! Endorses agents' keys. An agent publishes its ML-DSA-65 public key in its MeshNode record;
//! the API server has already checked (RBAC plus the admission policy in the chart) that the
//! writer's service-account token is bound to a pod on `spec.nodeName`. The operator then signs
//! the key with the mesh authority, for one rotation interval plus the overlap window, and
//! renews the endorsement when half of it has run out.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use x0tta6bl4_api::mesh_node::EndorsementStatus;
use x0tta6bl4_api::{MeshNetwork, MeshNode};
use x0tta6bl4_crypto::VerifyingKey;
use x0tta6bl4_crypto::endorsement::Endorsement;

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};
use crate::mesh::authority;

const KIND: &str = "MeshNode";
/// Clock skew tolerated between the operator and the agents.
pub const SKEW: u64 = 60;

/// The SPIFFE ID of an agent.
pub fn spiffe_id(trust_domain: &str, namespace: &str, mesh: &str, node: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/mesh/{mesh}/node/{node}")
}

/// What to do about a record's endorsement, decided from the record alone (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// No key published yet.
    NoKey,
    /// The published key cannot be an ML-DSA-65 key.
    InvalidKey(String),
    /// The published key's epoch is revoked (spec.identity.revokedKeys or a keyRevocation
    /// experiment): never endorsed; the agent makes a new key.
    Revoked { epoch: u32, through: u32 },
    /// The current endorsement covers this key and epoch until `renew_at` (Unix seconds).
    Current { renew_at: u64 },
    /// A new endorsement is due.
    Endorse {
        key: VerifyingKey,
        epoch: u32,
        spiffe_id: String,
    },
}

pub fn decide(
    node: &MeshNode,
    trust_domain: &str,
    namespace: &str,
    validity: Duration,
    revoked_through: Option<u32>,
    now_unix: u64,
) -> Decision {
    if node.spec.public_key.is_empty() {
        return Decision::NoKey;
    }
    let key = match STANDARD
        .decode(&node.spec.public_key)
        .map_err(|e| e.to_string())
        .and_then(|bytes| VerifyingKey::from_bytes(&bytes).map_err(|e| e.to_string()))
    {
        Ok(key) => key,
        Err(reason) => return Decision::InvalidKey(format!("spec.publicKey: {reason}")),
    };
    let Ok(epoch) = u32::try_from(node.spec.key_epoch) else {
        return Decision::InvalidKey(format!("spec.keyEpoch: {} is out of range", node.spec.key_epoch));
    };
    if let Some(through) = revoked_through.filter(|through| epoch <= *through) {
        return Decision::Revoked { epoch, through };
    }
    let spiffe_id = spiffe_id(
        trust_domain,
        namespace,
        &node.spec.mesh_name,
        &node.spec.node_name,
    );
    let current = node
        .status
        .as_ref()
        .filter(|s| !s.endorsement.is_empty())
        .and_then(|s| STANDARD.decode(&s.endorsement).ok())
        .and_then(|bytes| Endorsement::decode(&bytes).ok());
    if let Some(current) = current
        && current.public_key == key
        && current.key_epoch == epoch
        && current.spiffe_id == spiffe_id
    {
        let renew_at = current.not_after.saturating_sub(validity.as_secs() / 2);
        if now_unix < renew_at {
            return Decision::Current { renew_at };
        }
    }
    Decision::Endorse {
        key,
        epoch,
        spiffe_id,
    }
}

pub async fn reconcile(node: Arc<MeshNode>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    let namespace = node
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let meshes: Api<MeshNetwork> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(mesh) = meshes
        .get_opt(&node.spec.mesh_name)
        .await
        .map_err(Error::kube(format!(
            "reading MeshNetwork {namespace}/{}",
            node.spec.mesh_name
        )))?
    else {
        // A record of a mesh that does not exist (yet, or any more) is not endorsed.
        return Ok(Action::await_change());
    };
    let validity = endorsement_validity(&mesh)?;
    let now = unix_now();
    // The list the agents apply: what the revocation controller signed, spec and experiments.
    let revoked_through = mesh
        .status
        .as_ref()
        .and_then(|s| s.revocation.as_ref())
        .into_iter()
        .flat_map(|r| r.keys.iter())
        .filter(|key| key.node_name == node.spec.node_name)
        .filter_map(|key| u32::try_from(key.through_key_epoch).ok())
        .max();
    match decide(
        &node,
        &mesh.spec.identity.trust_domain,
        &namespace,
        validity,
        revoked_through,
        now,
    ) {
        Decision::NoKey => Ok(Action::await_change()),
        Decision::Revoked { epoch, through } => {
            tracing::info!(node = %node.spec.node_name, epoch, through, "not endorsing a revoked key");
            Ok(Action::await_change())
        }
        Decision::InvalidKey(reason) => {
            tracing::warn!(node = %node.name_any(), %reason, "not endorsing");
            ctx.metrics
                .reconcile_errors
                .with_label_values(&[KIND, "invalid_key"])
                .inc();
            Ok(Action::await_change())
        }
        Decision::Current { renew_at } => Ok(Action::requeue(Duration::from_secs(
            renew_at.saturating_sub(now).max(1),
        ))),
        Decision::Endorse {
            key,
            epoch,
            spiffe_id,
        } => {
            let authority = authority::ensure(&ctx, &mesh).await?;
            let not_after = now + validity.as_secs();
            let endorsement = Endorsement::issue(
                &authority,
                &spiffe_id,
                epoch,
                &key,
                now.saturating_sub(SKEW),
                not_after,
            )
            .map_err(|e| Error::Authority(e.to_string()))?;
            let encoded = STANDARD.encode(
                endorsement
                    .encode()
                    .map_err(|e| Error::Authority(e.to_string()))?,
            );
            let until = k8s_openapi::jiff::Timestamp::from_second(not_after as i64)
                .map(|t| t.to_string())
                .unwrap_or_default();
            let body = EndorsementStatus {
                endorsement: encoded,
                endorsed_epoch: i64::from(epoch),
                endorsed_until: until,
            }
            .apply_patch();
            Api::<MeshNode>::namespaced(ctx.client.clone(), &namespace)
                .patch_status(
                    &node.name_any(),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                )
                .await
                .map_err(Error::kube(format!(
                    "endorsing MeshNode {namespace}/{}",
                    node.name_any()
                )))?;
            ctx.metrics
                .api_writes
                .with_label_values(&["MeshNode/status"])
                .inc();
            tracing::info!(node = %node.spec.node_name, mesh = %node.spec.mesh_name, epoch, "endorsed agent key");
            ctx.reset_backoff(&ObjectRef::from_obj(node.as_ref()));
            Ok(Action::requeue(validity / 2))
        }
    }
}

/// One rotation interval plus the overlap window: a key stays endorsed while it may sign.
fn endorsement_validity(mesh: &MeshNetwork) -> Result<Duration> {
    let parse = |field: &str, text: &str| {
        x0tta6bl4_api::duration::parse(text)
            .map_err(|e| Error::InvalidSpec(vec![x0tta6bl4_api::FieldError::new(field, e.to_string())]))
    };
    Ok(parse(
        "spec.crypto.keyRotationInterval",
        &mesh.spec.crypto.key_rotation_interval,
    )? + parse("spec.crypto.keyOverlap", &mesh.spec.crypto.key_overlap)?)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, MockApi};
    use x0tta6bl4_crypto::SigningKey;

    const DAY: Duration = Duration::from_secs(86_400);

    fn mk_node(public_key: &str, epoch: i64, endorsement: Option<&Endorsement>) -> MeshNode {
        let mut node: MeshNode = serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNode\nmetadata: {{name: demo-n1, namespace: ns}}\n\
             spec: {{meshName: demo, nodeName: n1, publicKey: '{public_key}', keyEpoch: {epoch}}}"
        ))
        .unwrap();
        if let Some(endorsement) = endorsement {
            node.status = Some(x0tta6bl4_api::MeshNodeStatus {
                endorsement: STANDARD.encode(endorsement.encode().unwrap()),
                ..Default::default()
            });
        }
        node
    }

    #[test]
    fn a_new_key_is_endorsed_for_its_node_spiffe_id() {
        let key = SigningKey::generate().unwrap();
        let node = mk_node(&STANDARD.encode(key.verifying_key().as_bytes()), 1, None);
        match decide(&node, "td", "ns", DAY, None, 1_000) {
            Decision::Endorse { epoch, spiffe_id, .. } => {
                assert_eq!(epoch, 1);
                assert_eq!(spiffe_id, "spiffe://td/ns/ns/mesh/demo/node/n1");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_current_endorsement_is_renewed_only_after_half_its_life() {
        let authority = SigningKey::generate().unwrap();
        let key = SigningKey::generate().unwrap();
        let spiffe = "spiffe://td/ns/ns/mesh/demo/node/n1";
        let endorsement = Endorsement::issue(&authority, spiffe, 1, key.verifying_key(), 0, 86_400).unwrap();
        let node = mk_node(
            &STANDARD.encode(key.verifying_key().as_bytes()),
            1,
            Some(&endorsement),
        );
        assert_eq!(
            decide(&node, "td", "ns", DAY, None, 1_000),
            Decision::Current { renew_at: 43_200 }
        );
        assert!(matches!(
            decide(&node, "td", "ns", DAY, None, 50_000),
            Decision::Endorse { .. }
        ));
        // A rotated key (new epoch) needs a new endorsement at once.
        let rotated = mk_node(
            &STANDARD.encode(key.verifying_key().as_bytes()),
            2,
            Some(&endorsement),
        );
        assert!(matches!(
            decide(&rotated, "td", "ns", DAY, None, 1_000),
            Decision::Endorse { epoch: 2, .. }
        ));
    }

    #[test]
    fn a_revoked_epoch_is_never_endorsed_and_the_next_one_is() {
        let key = SigningKey::generate().unwrap();
        let public = STANDARD.encode(key.verifying_key().as_bytes());
        assert_eq!(
            decide(&mk_node(&public, 2, None), "td", "ns", DAY, Some(2), 1_000),
            Decision::Revoked { epoch: 2, through: 2 }
        );
        assert!(matches!(
            decide(&mk_node(&public, 3, None), "td", "ns", DAY, Some(2), 1_000),
            Decision::Endorse { epoch: 3, .. }
        ));
    }

    #[test]
    fn garbage_in_the_key_field_is_reported_with_the_field() {
        let node = mk_node("AAAA", 1, None);
        match decide(&node, "td", "ns", DAY, None, 0) {
            Decision::InvalidKey(reason) => assert!(reason.starts_with("spec.publicKey"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&mk_node("", 0, None), "td", "ns", DAY, None, 0),
            Decision::NoKey
        );
    }

    /// Serves the mesh "demo" of namespace "ns" (when `mesh` is true), its authority and the
    /// record `node`.
    fn mock_api(node: &MeshNode, mesh: bool, authority: &SigningKey) -> (kube::Client, MockApi) {
        let mesh = mesh.then(|| {
            serde_json::json!({"apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNetwork",
                "metadata": {"name": "demo", "namespace": "ns", "uid": "mesh-uid"}, "spec": {}})
        });
        let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "demo-mesh-authority", "namespace": "ns"},
        "data": {
            "authority.pub": STANDARD.encode(authority.verifying_key().as_bytes()),
            "authority.key": STANDARD.encode(authority.secret_bytes()),
        }});
        let mut routes = vec![
            ("/api/v1/namespaces/ns/secrets/demo-mesh-authority", secret),
            (
                "/apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnodes/demo-n1/status",
                serde_json::to_value(node).unwrap(),
            ),
        ];
        routes.extend(mesh.map(|mesh| {
            (
                "/apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnetworks/demo",
                mesh,
            )
        }));
        MockApi::serve_suffixes(routes)
    }

    /// A record of node n1 with its key, endorsed (when `endorsed`) from now for `validity`.
    fn mk_record(authority: &SigningKey, endorsed: bool, validity: Duration) -> MeshNode {
        let key = SigningKey::generate().unwrap();
        let endorsement = endorsed.then(|| {
            let now = unix_now();
            let spiffe = spiffe_id("x0tta6bl4.local", "ns", "demo", "n1");
            Endorsement::issue(
                authority,
                &spiffe,
                1,
                key.verifying_key(),
                now - SKEW,
                now + validity.as_secs(),
            )
            .unwrap()
        });
        mk_node(
            &STANDARD.encode(key.verifying_key().as_bytes()),
            1,
            endorsement.as_ref(),
        )
    }

    fn default_validity() -> Duration {
        let mesh: MeshNetwork = serde_norway::from_str(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNetwork\nmetadata: {name: demo}\nspec: {}",
        )
        .unwrap();
        assert_eq!(mesh.spec.identity.trust_domain, "x0tta6bl4.local");
        endorsement_validity(&mesh).unwrap()
    }

    #[tokio::test]
    async fn an_endorsed_record_is_read_against_its_mesh_and_never_written() {
        let authority = SigningKey::generate().unwrap();
        let validity = default_validity();
        let node = mk_record(&authority, true, validity);
        let (client, api) = mock_api(&node, true, &authority);
        let action = reconcile(Arc::new(node), testing::context(client))
            .await
            .expect("reconcile succeeds");
        // Looked at again when half the endorsement has run out (the clock may have ticked).
        let half = validity / 2;
        assert!(
            (0..3).any(|late| action == Action::requeue(half - Duration::from_secs(late))),
            "{action:?}"
        );
        assert_eq!(api.write_lines(), Vec::<String>::new());
        assert_eq!(
            api.read_lines(),
            ["GET /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnetworks/demo"]
        );
    }

    #[tokio::test]
    async fn a_record_without_a_key_or_without_its_mesh_is_read_and_left_alone() {
        let authority = SigningKey::generate().unwrap();
        let no_key = mk_node("", 0, None);
        let orphan = mk_record(&authority, false, default_validity());
        for (node, mesh) in [(no_key, true), (orphan, false)] {
            let (client, api) = mock_api(&node, mesh, &authority);
            let action = reconcile(Arc::new(node), testing::context(client))
                .await
                .expect("reconcile succeeds");
            assert_eq!(action, Action::await_change());
            assert_eq!(api.write_lines(), Vec::<String>::new());
            assert_eq!(
                api.read_lines(),
                ["GET /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnetworks/demo"]
            );
        }
    }

    #[tokio::test]
    async fn a_new_key_is_endorsed_with_one_status_write() {
        let authority = SigningKey::generate().unwrap();
        let node = mk_record(&authority, false, default_validity());
        let (client, api) = mock_api(&node, true, &authority);
        reconcile(Arc::new(node), testing::context(client))
            .await
            .expect("reconcile succeeds");
        assert_eq!(
            api.write_lines(),
            ["PATCH /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnodes/demo-n1/status"]
        );
        let written = &api.writes()[0].body["status"];
        let endorsement = STANDARD.decode(written["endorsement"].as_str().unwrap()).unwrap();
        let endorsement = Endorsement::decode(&endorsement).unwrap();
        assert_eq!(
            endorsement.spiffe_id,
            "spiffe://x0tta6bl4.local/ns/ns/mesh/demo/node/n1"
        );
        assert_eq!(written["endorsedEpoch"], 1);
    }
}
