//! One reconcile of a MeshNetwork.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::condition::{self, CONVERGED};
use x0tta6bl4_api::{MeshNetwork, MeshNode};

use super::apply::apply_child;
use super::authority;
use super::build;
use super::status::{self, Observed};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::status_write::apply_status;

const KIND: &str = "MeshNetwork";
/// Resync of a settled mesh: it reads, and writes only if something drifted.
const RESYNC: Duration = Duration::from_secs(300);

/// An invalid spec: a condition with the reason and every field's problem, and no retry (the
/// next edit, a new generation, reconciles again).
async fn refuse_spec(
    ctx: &Context,
    mesh: &MeshNetwork,
    errors: &[x0tta6bl4_api::FieldError],
    now: &Time,
) -> Result<Action> {
    let message = x0tta6bl4_api::join_field_errors(errors);
    tracing::warn!(namespace = ?mesh.namespace(), name = %mesh.name_any(), %message, "invalid spec");
    let generation = mesh.meta().generation;
    let (new_status, transitions) = status::invalid(mesh.status.as_ref(), generation, message, now);
    if status::changed(mesh.status.as_ref(), &new_status) {
        apply_status(ctx, mesh, &new_status).await?;
    }
    ctx.publish_transitions(&mesh.object_ref(&()), &transitions).await;
    ctx.reset_backoff(&ObjectRef::from_obj(mesh));
    Ok(Action::await_change())
}

pub async fn reconcile(mesh: Arc<MeshNetwork>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile_started(KIND);
    if mesh.meta().deletion_timestamp.is_some() {
        // Children carry owner references; the garbage collector removes them.
        return Ok(Action::await_change());
    }
    let namespace = mesh
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = mesh.name_any();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let generation = mesh.meta().generation;
    let reference = mesh.object_ref(&());

    if let Err(errors) = mesh.spec.validate() {
        return refuse_spec(&ctx, &mesh, &errors, &now).await;
    }
    let authority = authority::ensure(&ctx, &mesh).await?;
    let children = match build::build(
        &mesh,
        &ctx.build_options,
        &authority::public_key_base64(&authority),
    ) {
        Ok(children) => children,
        Err(error) => return refuse_spec(&ctx, &mesh, &[error], &now).await,
    };
    apply_child(&ctx, &children.service_account).await?;
    apply_child(&ctx, &children.role).await?;
    apply_child(&ctx, &children.role_binding).await?;
    apply_child(&ctx, &children.config_map).await?;
    apply_child(&ctx, &children.service).await?;
    let daemon_set = apply_child(&ctx, &children.daemon_set).await?.object;

    let (agents, peering_members) = mesh_node_reports(&ctx, &namespace, &name, &now).await?;
    let observed = Observed {
        daemon_set_current: daemon_set_current(&daemon_set),
        daemon_set: daemon_set.status.clone(),
        agents,
        peering_members,
        peering: mesh.spec.routing.peering.rule(),
        config_hash: children.config_hash.clone(),
        post_quantum: mesh.spec.post_quantum_summary(),
    };
    let (new_status, transitions) = status::compute(mesh.status.as_ref(), generation, &observed, &now);
    if status::changed(mesh.status.as_ref(), &new_status) {
        apply_status(&ctx, mesh.as_ref(), &new_status).await?;
    }
    ctx.publish_transitions(&reference, &transitions).await;
    ctx.metrics
        .mesh_ready_nodes
        .with_label_values(&[&namespace, &name])
        .set(new_status.ready_nodes.into());
    ctx.metrics
        .mesh_desired_nodes
        .with_label_values(&[&namespace, &name])
        .set(new_status.desired_nodes.into());
    let converged = condition::find(&new_status.conditions, CONVERGED).is_some_and(|c| c.status == "True");
    ctx.metrics
        .mesh_converged
        .with_label_values(&[&namespace, &name])
        .set(converged.into());
    ctx.reset_backoff(&ObjectRef::from_obj(mesh.as_ref()));
    // While agents report, look again soon enough to notice one that goes silent.
    if new_status.reporting_nodes > 0 {
        return Ok(Action::requeue(crate::agent_report::STALE_AFTER / 3));
    }
    Ok(Action::requeue(RESYNC))
}

/// The DaemonSet controller has seen the latest spec of the DaemonSet.
fn daemon_set_current(daemon_set: &DaemonSet) -> bool {
    let observed = daemon_set.status.as_ref().and_then(|s| s.observed_generation);
    matches!((observed, daemon_set.metadata.generation), (Some(o), Some(g)) if o >= g)
}

/// The live agents' reports, and the peering members: the node names of the records with an
/// endpoint, exactly what every agent applies the peering rule to.
async fn mesh_node_reports(
    ctx: &Context,
    namespace: &str,
    mesh: &str,
    now: &Time,
) -> Result<(Vec<crate::agent_report::AgentReport>, Vec<String>)> {
    let api: Api<MeshNode> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api
        .list(&ListParams::default().fields(&format!("spec.meshName={mesh}")))
        .await
        .map_err(Error::kube(format!("listing MeshNodes of {namespace}/{mesh}")))?;
    let reports = list
        .items
        .iter()
        .filter_map(|record| crate::agent_report::AgentReport::from_record(record, now))
        .collect();
    let members = list
        .items
        .iter()
        .filter(|record| record.status.as_ref().is_some_and(|s| !s.endpoint.is_empty()))
        .map(|record| record.spec.node_name.clone())
        .collect();
    Ok((reports, members))
}

#[cfg(test)]
mod tests {
    //! One reconcile step against a mock API server that records every request. The real
    //! behaviour against kube-apiserver is covered by the e2e suite.
    use kube::runtime::controller::Action;
    use x0tta6bl4_api::MeshNetwork;

    use super::*;
    use crate::mesh::build::{BuildOptions, build};
    use crate::testing::{self, MockApi};

    const MESH: &str = r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: MeshNetwork
metadata: {name: demo, namespace: ns, uid: 0b5c9a4e-0000-4000-8000-000000000001, generation: 3}
spec:
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
"#;

    /// Serves the children exactly as the operator would have applied them, with a rolled-out
    /// DaemonSet, the mesh authority and no MeshNode records.
    fn mock_api(mesh: &MeshNetwork, authority: &x0tta6bl4_crypto::SigningKey) -> (kube::Client, MockApi) {
        let secret = k8s_openapi::api::core::v1::Secret {
            data: Some(std::collections::BTreeMap::from([
                (
                    "authority.pub".to_owned(),
                    k8s_openapi::ByteString(authority.verifying_key().as_bytes().to_vec()),
                ),
                (
                    "authority.key".to_owned(),
                    k8s_openapi::ByteString(authority.secret_bytes().to_vec()),
                ),
            ])),
            ..Default::default()
        };
        let children = build(
            mesh,
            &BuildOptions::default(),
            &authority::public_key_base64(authority),
        )
        .unwrap();
        let mut daemon_set = children.daemon_set.clone();
        daemon_set.metadata.generation = Some(2);
        daemon_set.status = Some(k8s_openapi::api::apps::v1::DaemonSetStatus {
            desired_number_scheduled: 3,
            number_ready: 3,
            updated_number_scheduled: Some(3),
            number_available: Some(3),
            number_unavailable: Some(0),
            observed_generation: Some(2),
            ..Default::default()
        });
        fn json(object: &impl serde::Serialize) -> serde_json::Value {
            serde_json::to_value(object).unwrap()
        }
        let by_collection = std::collections::BTreeMap::from([
            ("serviceaccounts", json(&children.service_account)),
            ("secrets", json(&secret)),
            ("roles", json(&children.role)),
            ("rolebindings", json(&children.role_binding)),
            ("configmaps", json(&children.config_map)),
            ("services", json(&children.service)),
            ("daemonsets", json(&daemon_set)),
        ]);
        let mesh = json(mesh);
        let records = testing::list::<MeshNode>("x0tta6bl4.io/v1alpha1", "MeshNodeList", &[]);
        MockApi::serve(move |path| match path.rsplit('/').nth(1).unwrap_or_default() {
            _ if path.ends_with("/meshnetworks/demo/status") => Some(mesh.clone()),
            _ if path.ends_with("/meshnodes") => Some(records.clone()),
            collection => by_collection.get(collection).cloned(),
        })
    }

    fn mesh_with_settled_status(authority: &x0tta6bl4_crypto::SigningKey) -> MeshNetwork {
        let mut mesh: MeshNetwork = serde_norway::from_str(MESH).unwrap();
        let children = build(
            &mesh,
            &BuildOptions::default(),
            &authority::public_key_base64(authority),
        )
        .unwrap();
        let observed = Observed {
            daemon_set: Some(k8s_openapi::api::apps::v1::DaemonSetStatus {
                desired_number_scheduled: 3,
                number_ready: 3,
                updated_number_scheduled: Some(3),
                number_available: Some(3),
                number_unavailable: Some(0),
                observed_generation: Some(2),
                ..Default::default()
            }),
            daemon_set_current: true,
            agents: vec![],
            peering_members: vec![],
            peering: mesh.spec.routing.peering.rule(),
            config_hash: children.config_hash,
            post_quantum: mesh.spec.post_quantum_summary(),
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        mesh.status = Some(status::compute(None, Some(3), &observed, &now).0);
        mesh
    }

    #[tokio::test]
    async fn reconciling_an_unchanged_mesh_makes_no_mutating_api_call() {
        let authority = x0tta6bl4_crypto::SigningKey::generate().unwrap();
        let mesh = mesh_with_settled_status(&authority);
        let (client, api) = mock_api(&mesh, &authority);
        let ctx = testing::context(client);
        let action = reconcile(Arc::new(mesh), ctx.clone())
            .await
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(RESYNC));
        assert_eq!(api.write_lines(), Vec::<String>::new());
        // One read of the authority, one of each child, one list of the agents' records.
        let reads = api.read_lines();
        assert_eq!(reads.len(), 8, "{reads:#?}");
        assert_eq!(
            reads.first().map(String::as_str),
            Some("GET /api/v1/namespaces/ns/secrets/demo-mesh-authority")
        );
        assert_eq!(
            reads.last().map(String::as_str),
            Some("GET /apis/x0tta6bl4.io/v1alpha1/namespaces/ns/meshnodes")
        );
        assert_eq!(ctx.metrics.api_writes.with_label_values(&["DaemonSet"]).get(), 0);
    }

    #[tokio::test]
    async fn a_changed_spec_reapplies_only_what_changed() {
        let authority = x0tta6bl4_crypto::SigningKey::generate().unwrap();
        let mut mesh = mesh_with_settled_status(&authority);
        let (client, api) = mock_api(&mesh, &authority);
        mesh.spec.routing.hello_interval = "50ms".into();
        mesh.spec.routing.neighbour_timeout = "150ms".into();
        reconcile(Arc::new(mesh), testing::context(client))
            .await
            .expect("reconcile succeeds");
        let writes = api.write_lines();
        assert!(
            writes
                .iter()
                .any(|w| w.starts_with("PATCH") && w.contains("/configmaps/demo-agent-config")),
            "{writes:?}"
        );
        assert!(
            writes
                .iter()
                .any(|w| w.starts_with("PATCH") && w.contains("/daemonsets/demo-agent")),
            "{writes:?}"
        );
        assert!(
            !writes
                .iter()
                .any(|w| w.contains("/serviceaccounts/") || w.contains("/roles/")),
            "{writes:?}"
        );
    }
}
