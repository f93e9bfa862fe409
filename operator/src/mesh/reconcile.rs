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
use super::build::{self, MESH_LABEL};
use super::status::{self, Observed};
use crate::context::Context;
use crate::error::{Error, Result};

const KIND: &str = "MeshNetwork";
/// Resync of a settled mesh: it reads, and writes only if something drifted.
const RESYNC: Duration = Duration::from_secs(300);

pub async fn reconcile(mesh: Arc<MeshNetwork>, ctx: Arc<Context>) -> Result<Action> {
    ctx.metrics.reconciles.with_label_values(&[KIND]).inc();
    let _timer = ctx
        .metrics
        .reconcile_duration
        .with_label_values(&[KIND])
        .start_timer();
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

    let children = build::build(&mesh, &ctx.build_options);
    apply_child(&ctx, &children.service_account).await?;
    apply_child(&ctx, &children.role).await?;
    apply_child(&ctx, &children.role_binding).await?;
    apply_child(&ctx, &children.config_map).await?;
    apply_child(&ctx, &children.service).await?;
    let daemon_set = apply_child(&ctx, &children.daemon_set).await?.object;

    let observed = Observed {
        daemon_set_current: daemon_set_current(&daemon_set),
        daemon_set: daemon_set.status.clone(),
        reporting_nodes: count_mesh_nodes(&ctx, &namespace, &name).await?,
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
    Ok(Action::requeue(RESYNC))
}

/// The DaemonSet controller has seen the latest spec of the DaemonSet.
fn daemon_set_current(daemon_set: &DaemonSet) -> bool {
    let observed = daemon_set.status.as_ref().and_then(|s| s.observed_generation);
    matches!((observed, daemon_set.metadata.generation), (Some(o), Some(g)) if o >= g)
}

async fn count_mesh_nodes(ctx: &Context, namespace: &str, mesh: &str) -> Result<i32> {
    let api: Api<MeshNode> = Api::namespaced(ctx.client.clone(), namespace);
    let list = api
        .list_metadata(&ListParams::default().labels(&format!("{MESH_LABEL}={mesh}")))
        .await
        .map_err(Error::kube(format!("listing MeshNodes of {namespace}/{mesh}")))?;
    Ok(i32::try_from(list.items.len()).unwrap_or(i32::MAX))
}
