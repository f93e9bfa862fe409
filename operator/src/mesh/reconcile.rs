//! One reconcile of a MeshNetwork.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::{MeshNetwork, MeshNode};

use super::apply::{apply_child, apply_status};
use super::authority;
use super::build;
use super::status::{self, Observed};
use crate::context::Context;
use crate::error::{Error, Result};

const KIND: &str = "MeshNetwork";
/// Resync of a settled mesh: it reads, and writes only if something drifted.
const RESYNC: Duration = Duration::from_secs(300);

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
        let message = x0tta6bl4_api::join_field_errors(&errors);
        tracing::warn!(%namespace, %name, %message, "invalid spec");
        let (new_status, transitions) = status::invalid(mesh.status.as_ref(), generation, message, &now);
        if mesh.status.as_ref() != Some(&new_status) {
            apply_status(&ctx, mesh.as_ref(), &new_status).await?;
        }
        ctx.publish_transitions(&reference, &transitions).await;
        ctx.reset_backoff(&ObjectRef::from_obj(mesh.as_ref()));
        // Retrying cannot fix a spec; the next edit (a new generation) triggers a reconcile.
        return Ok(Action::await_change());
    }

    let authority = authority::ensure(&ctx, &mesh).await?;
    let children = build::build(
        &mesh,
        &ctx.build_options,
        &authority::public_key_base64(&authority),
    );
    apply_child(&ctx, &children.service_account).await?;
    apply_child(&ctx, &children.role).await?;
    apply_child(&ctx, &children.role_binding).await?;
    apply_child(&ctx, &children.config_map).await?;
    apply_child(&ctx, &children.service).await?;
    let daemon_set = apply_child(&ctx, &children.daemon_set).await?.object;

    let observed = Observed {
        daemon_set_current: daemon_set_current(&daemon_set),
        daemon_set: daemon_set.status.clone(),
        agents: mesh_node_reports(&ctx, &namespace, &name, &now).await?,
        config_hash: children.config_hash.clone(),
        post_quantum: mesh.spec.post_quantum_summary(),
    };
    let (new_status, transitions) = status::compute(mesh.status.as_ref(), generation, &observed, &now);
    if mesh.status.as_ref() != Some(&new_status) {
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
    ctx.reset_backoff(&ObjectRef::from_obj(mesh.as_ref()));
    // While agents report, look again soon enough to notice one that goes silent.
    if new_status.reporting_nodes > 0 {
        return Ok(Action::requeue(status::STALE_AFTER / 3));
    }
    Ok(Action::requeue(RESYNC))
}

/// The DaemonSet controller has seen the latest spec of the DaemonSet.
fn daemon_set_current(daemon_set: &DaemonSet) -> bool {
    let observed = daemon_set.status.as_ref().and_then(|s| s.observed_generation);
    matches!((observed, daemon_set.metadata.generation), (Some(o), Some(g)) if o >= g)
}

async fn mesh_node_reports(
    ctx: &Context,
    namespace: &str,
    mesh: &str,
    now: &Time,
) -> Result<Vec<status::AgentReport>> {
    let api: Api<MeshNode> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api
        .list(&ListParams::default().fields(&format!("spec.meshName={mesh}")))
        .await
        .map_err(Error::kube(format!("listing MeshNodes of {namespace}/{mesh}")))?;
    Ok(list
        .items
        .iter()
        .filter_map(|record| status::AgentReport::from_record(record, now))
        .collect())
}

#[cfg(test)]
mod tests {
    //! One reconcile step against a mock API server that counts requests by verb. The real
    //! behaviour against kube-apiserver is covered by the e2e suite.
    use std::sync::{Arc, Mutex};

    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use kube::runtime::controller::Action;
    use x0tta6bl4_api::MeshNetwork;

    use super::*;
    use crate::mesh::build::{BuildOptions, build};
    use crate::metrics::Metrics;

    const MESH: &str = r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: MeshNetwork
metadata: {name: demo, namespace: ns, uid: 0b5c9a4e-0000-4000-8000-000000000001, generation: 3}
spec:
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
"#;

    /// Serves GETs of the children exactly as the operator would have applied them, with a
    /// rolled-out DaemonSet, and counts every request that is not a read.
    fn mock_api(
        mesh: &MeshNetwork,
        authority: &x0tta6bl4_crypto::SigningKey,
    ) -> (kube::Client, Arc<Mutex<Vec<String>>>, tokio::task::JoinHandle<()>) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let writes = Arc::new(Mutex::new(Vec::new()));
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
        );
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
        let recorded = writes.clone();
        let mesh_json = serde_json::to_vec(mesh).unwrap();
        let server = tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let path = request.uri().path().to_owned();
                if request.method() != Method::GET {
                    recorded
                        .lock()
                        .unwrap()
                        .push(format!("{} {path}", request.method()));
                }
                let body = match path.rsplit('/').nth(1).unwrap_or_default() {
                    _ if path.ends_with("/meshnetworks/demo/status") => Ok(mesh_json.clone()),
                    "serviceaccounts" => serde_json::to_vec(&children.service_account),
                    "secrets" => serde_json::to_vec(&secret),
                    "roles" => serde_json::to_vec(&children.role),
                    "rolebindings" => serde_json::to_vec(&children.role_binding),
                    "configmaps" => serde_json::to_vec(&children.config_map),
                    "services" => serde_json::to_vec(&children.service),
                    "daemonsets" => serde_json::to_vec(&daemon_set),
                    _ if path.ends_with("/meshnodes") => serde_json::to_vec(&serde_json::json!({
                        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNodeList",
                        "metadata": {}, "items": []
                    })),
                    _ => serde_json::to_vec(&serde_json::json!({"kind": "Status", "code": 404})),
                }
                .unwrap();
                respond.send_response(
                    Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(body))
                        .unwrap(),
                );
            }
        });
        (kube::Client::new(service, "default"), writes, server)
    }

    fn mesh_with_settled_status(authority: &x0tta6bl4_crypto::SigningKey) -> MeshNetwork {
        let mut mesh: MeshNetwork = serde_yaml::from_str(MESH).unwrap();
        let children = build(
            &mesh,
            &BuildOptions::default(),
            &authority::public_key_base64(authority),
        );
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
        let (client, writes, server) = mock_api(&mesh, &authority);
        let ctx = Arc::new(Context::new(
            client,
            Metrics::new(),
            "test",
            BuildOptions::default(),
        ));
        let action = reconcile(Arc::new(mesh), ctx.clone())
            .await
            .expect("reconcile succeeds");
        assert_eq!(action, Action::requeue(RESYNC));
        assert_eq!(*writes.lock().unwrap(), Vec::<String>::new());
        assert_eq!(ctx.metrics.api_writes.with_label_values(&["DaemonSet"]).get(), 0);
        server.abort();
    }

    #[tokio::test]
    async fn a_changed_spec_reapplies_only_what_changed() {
        let authority = x0tta6bl4_crypto::SigningKey::generate().unwrap();
        let mut mesh = mesh_with_settled_status(&authority);
        let (client, writes, server) = mock_api(&mesh, &authority);
        mesh.spec.routing.hello_interval = "50ms".into();
        mesh.spec.routing.neighbour_timeout = "150ms".into();
        let ctx = Arc::new(Context::new(
            client,
            Metrics::new(),
            "test",
            BuildOptions::default(),
        ));
        reconcile(Arc::new(mesh), ctx).await.expect("reconcile succeeds");
        let writes = writes.lock().unwrap().clone();
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
        server.abort();
    }
}
