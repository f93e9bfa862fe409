//! The mesh's revocation list: the node keys spec.identity.revokedKeys names and, while their
//! window is open, the keys of keyRevocation experiments, signed with the mesh authority
//! (ML-DSA-65) into status.revocation, where every agent of the mesh reads it.
//!
//! Written under a field manager of its own, so that the mesh reconciler's status writes and
//! this one never overwrite each other. The list is rewritten (serial + 1) only when the keys
//! change; agents never go back to a lower serial.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use x0tta6bl4_api::chaos::{ActionType, phase};
use x0tta6bl4_api::mesh_network::{RevocationStatus, RevokedKeySource};
use x0tta6bl4_api::{ChaosExperiment, MeshNetwork};
use x0tta6bl4_crypto::revocation::{RevocationList, RevokedKey};

use super::authority;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::meshnode::spiffe_id;

const KIND: &str = "MeshNetwork/revocation";
/// The field manager of status.revocation.
pub const FIELD_MANAGER: &str = "x0tta6bl4-operator-revocations";
/// Where the keys of spec.identity.revokedKeys come from, in status.revocation.keys.
pub const FROM_SPEC: &str = "spec.identity.revokedKeys";

/// The keys the list must revoke now, sorted, and the earliest deadline of the experiments
/// among them (when the list must change again). Pure.
pub fn wanted(
    mesh: &MeshNetwork,
    experiments: &[ChaosExperiment],
    now: Timestamp,
) -> (Vec<RevokedKeySource>, Option<Timestamp>) {
    let mut keys: Vec<RevokedKeySource> = mesh
        .spec
        .identity
        .revoked_keys
        .iter()
        .map(|key| RevokedKeySource {
            node_name: key.node_name.clone(),
            through_key_epoch: key.through_key_epoch,
            source: FROM_SPEC.to_owned(),
        })
        .collect();
    let mut next_change: Option<Timestamp> = None;
    // The kill switch ends every experiment's fault, this one included.
    if !mesh.spec.chaos.paused {
        for experiment in experiments {
            let status = experiment.status.clone().unwrap_or_default();
            let deadline = status.deadline.as_ref().map(|t| t.0);
            let open = experiment.spec.action.type_ == ActionType::KeyRevocation
                && status.mesh == mesh.name_any()
                && status.phase == phase::INJECTING
                && experiment.metadata.deletion_timestamp.is_none()
                && !experiment.spec.suspend
                && !experiment.spec.dry_run
                && deadline.is_some_and(|deadline| now < deadline);
            if !open {
                continue;
            }
            next_change = next_change.min(deadline).or(deadline);
            keys.extend(status.revoked_keys.iter().map(|key| RevokedKeySource {
                node_name: key.node_name.clone(),
                through_key_epoch: key.through_key_epoch,
                source: format!("ChaosExperiment/{}", experiment.name_any()),
            }));
        }
    }
    keys.sort_by(|a, b| {
        (&a.node_name, a.through_key_epoch, &a.source).cmp(&(&b.node_name, b.through_key_epoch, &b.source))
    });
    keys.dedup();
    (keys, next_change)
}

/// The signed entries: one per node, its highest revoked epoch.
fn entries(mesh: &MeshNetwork, namespace: &str, keys: &[RevokedKeySource]) -> Vec<RevokedKey> {
    let mut highest: std::collections::BTreeMap<&str, u32> = std::collections::BTreeMap::new();
    for key in keys {
        let epoch = u32::try_from(key.through_key_epoch).unwrap_or(u32::MAX);
        let held = highest.entry(key.node_name.as_str()).or_insert(epoch);
        *held = (*held).max(epoch);
    }
    highest
        .into_iter()
        .map(|(node, through_epoch)| RevokedKey {
            spiffe_id: spiffe_id(
                &mesh.spec.identity.trust_domain,
                namespace,
                &mesh.name_any(),
                node,
            ),
            through_epoch,
        })
        .collect()
}

pub async fn reconcile(mesh: Arc<MeshNetwork>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if mesh.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = mesh
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = mesh.name_any();
    let experiments = Api::<ChaosExperiment>::namespaced(ctx.client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(Error::kube(format!("listing ChaosExperiments of {namespace}")))?;
    let now = Timestamp::now();
    let (keys, next_change) = wanted(&mesh, &experiments.items, now);
    let again = next_change.map(|at| {
        Action::requeue(
            Duration::try_from(at.duration_since(now)).unwrap_or_default() + Duration::from_millis(50),
        )
    });
    let current = mesh.status.as_ref().and_then(|s| s.revocation.as_ref());
    let unchanged = match current {
        Some(current) => current.keys == keys && !current.list.is_empty(),
        None => keys.is_empty(),
    };
    if unchanged {
        return Ok(again.unwrap_or_else(Action::await_change));
    }
    let authority = authority::ensure(&ctx, &mesh).await?;
    let serial = current.map_or(0, |c| c.serial).saturating_add(1);
    let issued_ms = u64::try_from(now.as_millisecond()).unwrap_or(0);
    let list = RevocationList::issue(
        &authority,
        &format!("{namespace}/{name}"),
        u64::try_from(serial).unwrap_or(0),
        issued_ms,
        entries(&mesh, &namespace, &keys),
    )
    .and_then(|list| list.encode())
    .map_err(|e| Error::Authority(e.to_string()))?;
    let revocation = RevocationStatus {
        list: STANDARD.encode(list),
        serial,
        issued_at: Some(MicroTime(now)),
        keys,
    };
    let body = serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1",
        "kind": "MeshNetwork",
        "status": { "revocation": revocation },
    });
    Api::<MeshNetwork>::namespaced(ctx.client.clone(), &namespace)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(format!(
            "writing the revocation list of MeshNetwork {namespace}/{name}"
        )))?;
    ctx.metrics
        .api_writes
        .with_label_values(&["MeshNetwork/status"])
        .inc();
    tracing::info!(%namespace, mesh = %name, serial, keys = revocation.keys.len(), "revocation list signed");
    Ok(again.unwrap_or_else(Action::await_change))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_api::mesh_network::RevokedKey as SpecKey;

    fn mk_mesh(paused: bool, revoked: &[(&str, i64)]) -> MeshNetwork {
        let mut mesh: MeshNetwork = serde_norway::from_str(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNetwork\nmetadata: {name: demo, namespace: ns}\nspec: {}\n",
        )
        .unwrap();
        mesh.spec.chaos.paused = paused;
        mesh.spec.identity.revoked_keys = revoked
            .iter()
            .map(|(node, epoch)| SpecKey {
                node_name: (*node).to_owned(),
                through_key_epoch: *epoch,
                reason: String::new(),
            })
            .collect();
        mesh
    }

    fn mk_experiment(
        name: &str,
        phase: &str,
        deadline: Timestamp,
        node: &str,
        epoch: i64,
    ) -> ChaosExperiment {
        let mut experiment: ChaosExperiment = serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {{name: {name}, namespace: ns}}\nspec:\n  target: {{meshRef: {{name: demo}}}}\n  action: {{type: keyRevocation}}\n  duration: 30s\n"
        ))
        .unwrap();
        experiment.status = Some(x0tta6bl4_api::ChaosExperimentStatus {
            phase: phase.to_owned(),
            mesh: "demo".into(),
            deadline: Some(MicroTime(deadline)),
            revoked_keys: vec![SpecKey {
                node_name: node.to_owned(),
                through_key_epoch: epoch,
                reason: String::new(),
            }],
            ..Default::default()
        });
        experiment
    }

    #[test]
    fn the_list_holds_the_spec_keys_and_the_open_windows_keys_until_their_deadline() {
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let later: Timestamp = "2026-12-07T12:00:30Z".parse().unwrap();
        let past: Timestamp = "2026-12-07T11:59:00Z".parse().unwrap();
        let mesh = mk_mesh(false, &[("n1", 2)]);
        let experiments = [
            mk_experiment("open", phase::INJECTING, later, "n3", 1),
            mk_experiment("over", phase::INJECTING, past, "n4", 1),
            mk_experiment("recovering", phase::RECOVERING, later, "n5", 1),
        ];
        let (keys, next) = wanted(&mesh, &experiments, now);
        let listed: Vec<(&str, i64, &str)> = keys
            .iter()
            .map(|k| (k.node_name.as_str(), k.through_key_epoch, k.source.as_str()))
            .collect();
        assert_eq!(listed, [("n1", 2, FROM_SPEC), ("n3", 1, "ChaosExperiment/open")]);
        assert_eq!(
            next,
            Some(later),
            "the list changes again when the open window closes"
        );
        let (paused, _) = wanted(&mk_mesh(true, &[("n1", 2)]), &experiments, now);
        assert_eq!(
            paused.len(),
            1,
            "the kill switch withdraws the experiments' revocations only"
        );
    }

    #[test]
    fn each_node_is_signed_once_with_its_highest_revoked_epoch() {
        let mesh = mk_mesh(false, &[("n1", 2)]);
        let keys = [
            RevokedKeySource {
                node_name: "n1".into(),
                through_key_epoch: 2,
                source: FROM_SPEC.into(),
            },
            RevokedKeySource {
                node_name: "n1".into(),
                through_key_epoch: 5,
                source: "ChaosExperiment/x".into(),
            },
        ];
        let signed = entries(&mesh, "ns", &keys);
        assert_eq!(signed.len(), 1);
        assert_eq!(signed[0].through_epoch, 5);
        assert_eq!(
            signed[0].spiffe_id,
            "spiffe://x0tta6bl4.local/ns/ns/mesh/demo/node/n1"
        );
    }
}
