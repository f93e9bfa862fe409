//! Wires the reconcilers to watches. Runs only on the leader.
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::{ChaosExperiment, FLTrainingRound, MeshNetwork, MeshNode};
use x0tta6bl4_telemetry::Readiness;

use crate::admission_only::{self, Reconciled};
use crate::context::{Context, error_policy};
use crate::mesh;
use crate::mesh::build::MANAGED_BY;

/// Runs every controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    readiness: Readiness,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let boxed: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(shutdown);
    let shutdown: Shutdown = futures::future::FutureExt::shared(boxed);

    // Status writes bump resourceVersion but not generation: filtering on generation keeps our
    // own status patches from triggering another reconcile.
    let (mesh_reader, mesh_writer) = reflector::store();
    let meshes = watcher(
        Api::<MeshNetwork>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(mesh_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let children =
        || watcher::Config::default().labels(&format!("app.kubernetes.io/managed-by={MANAGED_BY}"));
    // Agents' heartbeats arrive as MeshNode events; debouncing folds a burst of them into one
    // reconcile of their mesh.
    let mesh_controller = Controller::for_stream(meshes, mesh_reader.clone())
        .with_config(kube::runtime::controller::Config::default().debounce(std::time::Duration::from_secs(1)))
        .owns(Api::<DaemonSet>::all(client.clone()), children())
        .owns(Api::<ConfigMap>::all(client.clone()), children())
        .owns(Api::<ServiceAccount>::all(client.clone()), children())
        .owns(Api::<Service>::all(client.clone()), children())
        .owns(Api::<Role>::all(client.clone()), children())
        .owns(Api::<RoleBinding>::all(client.clone()), children())
        .watches(
            Api::<MeshNode>::all(client.clone()),
            watcher::Config::default(),
            |node: MeshNode| {
                let namespace = node.namespace()?;
                Some(ObjectRef::<MeshNetwork>::new(&node.spec.mesh_name).within(&namespace))
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(mesh::reconcile::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome);

    // Endorsements: every MeshNode change (a new key, an epoch) is looked at; the status the
    // operator writes changes no generation, so it does not come back here.
    let (node_reader, node_writer) = reflector::store();
    let nodes = watcher(Api::<MeshNode>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let node_controller = Controller::for_stream(nodes, node_reader.clone())
        .graceful_shutdown_on(shutdown.clone())
        .run(crate::meshnode::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome);

    // Federated jobs: woken by their own spec changes and by the aggregator's round
    // ConfigMaps (labelled with the job's name), so each round is sealed as it lands.
    let (round_reader, round_writer) = reflector::store();
    let rounds = watcher(
        Api::<FLTrainingRound>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(round_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let round_future = Controller::for_stream(rounds, round_reader.clone())
        .watches(
            Api::<ConfigMap>::all(client.clone()),
            watcher::Config::default().labels(x0tta6bl4_api::fl_protocol::JOB_LABEL),
            |map: ConfigMap| {
                let namespace = map.namespace()?;
                let job = map.labels().get(x0tta6bl4_api::fl_protocol::JOB_LABEL)?.clone();
                Some(ObjectRef::<FLTrainingRound>::new(&job).within(&namespace))
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(crate::flround::reconcile::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome);
    let (chaos_future, chaos_reader) = validated_controller::<ChaosExperiment>(ctx.clone(), shutdown.clone());

    let ready = async move {
        mesh_reader.wait_until_ready().await.ok();
        node_reader.wait_until_ready().await.ok();
        round_reader.wait_until_ready().await.ok();
        chaos_reader.wait_until_ready().await.ok();
        tracing::info!("caches synced");
        readiness.set_ready().await;
    };
    tokio::join!(
        mesh_controller,
        node_controller,
        round_future,
        chaos_future,
        ready
    );
}

type Shutdown = futures::future::Shared<std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;

/// A controller for a kind that, in this release, is validated and reported on only.
fn validated_controller<K>(
    ctx: Arc<Context>,
    shutdown: Shutdown,
) -> (impl Future<Output = ()>, reflector::Store<K>)
where
    K: Reconciled + Resource<DynamicType = ()>,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(Api::<K>::all(ctx.client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .predicate_filter(predicates::generation, Default::default());
    let future = Controller::for_stream(stream, reader.clone())
        .graceful_shutdown_on(shutdown)
        .run(admission_only::reconcile::<K>, error_policy, ctx)
        .for_each(log_outcome);
    (future, reader)
}

async fn log_outcome<T: std::fmt::Debug, E: std::fmt::Display>(outcome: Result<T, E>) {
    match outcome {
        Ok(object) => tracing::debug!(?object, "reconciled"),
        Err(error) => tracing::debug!(%error, "reconcile outcome"),
    }
}
