//! Wires the reconcilers to watches. Runs only on the leader.
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use x0tta6bl4_api::{ChaosExperiment, FLTrainingRound, MeshNetwork, MeshNode};
use x0tta6bl4_telemetry::Readiness;

use crate::chaos;
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
    let mesh_metrics = ctx.metrics.clone();
    let live_meshes = mesh_reader.clone();
    let meshes = watcher(
        Api::<MeshNetwork>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(mesh_writer)
    // The store has applied the event: a deleted mesh's series go with it.
    .inspect(move |_| {
        let live = live_meshes
            .state()
            .iter()
            .map(|mesh| (mesh.namespace().unwrap_or_default(), mesh.name_any()))
            .collect();
        mesh_metrics.forget_deleted_meshes(&live);
    })
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

    // Revocation lists: woken by a mesh's spec (spec.identity.revokedKeys) and by its
    // keyRevocation experiments (their windows open and close). Its own cache: a reconcile
    // must see the spec whose change woke it, which another watch's cache may not hold yet.
    let (revocation_reader, revocation_writer) = reflector::store();
    let revoked_meshes = watcher(
        Api::<MeshNetwork>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(revocation_writer)
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let revocation_controller = Controller::for_stream(revoked_meshes, revocation_reader)
        .watches(
            Api::<ChaosExperiment>::all(client.clone()),
            watcher::Config::default(),
            |experiment: ChaosExperiment| {
                let namespace = experiment.namespace()?;
                let mesh = experiment
                    .status
                    .as_ref()
                    .map(|s| s.mesh.clone())
                    .filter(|m| !m.is_empty())?;
                (experiment.spec.action.type_ == x0tta6bl4_api::chaos::ActionType::KeyRevocation)
                    .then(|| ObjectRef::<MeshNetwork>::new(&mesh).within(&namespace))
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(mesh::revocation::reconcile, error_policy, ctx.clone())
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
    let job_metrics = ctx.metrics.clone();
    let job_reader = round_reader.clone();
    let rounds = watcher(
        Api::<FLTrainingRound>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(round_writer)
    // The store has applied the event (status changes and deletions included): the per-job
    // gauges follow it.
    .inspect(move |_| {
        let all = job_reader.state();
        job_metrics.record_fl_jobs(all.iter().map(|job| job.as_ref()));
    })
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

    // Chaos experiments: woken by their own spec changes, by the reports of their mesh's
    // agents (MeshNode changes: measurement, liveness), by their MeshNetwork (the kill
    // switch, convergence) and, for a round's experiment, by its FLTrainingRound (its job
    // starts, seals rounds, ends). Experiments with nothing left to do are not woken by either.
    let (chaos_reader, chaos_writer) = reflector::store();
    let phase_metrics = ctx.metrics.clone();
    let phase_reader = chaos_reader.clone();
    let experiments = watcher(
        Api::<ChaosExperiment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(chaos_writer)
    // The store has applied the event by now: recount the phases (deletions included).
    .inspect(move |_| {
        let all = phase_reader.state();
        phase_metrics.count_chaos_phases(all.iter().map(|e| e.as_ref()));
    })
    .applied_objects()
    .predicate_filter(predicates::generation, Default::default());
    let by_node = chaos_reader.clone();
    let by_mesh = chaos_reader.clone();
    let by_round = chaos_reader.clone();
    let chaos_future = Controller::for_stream(experiments, chaos_reader.clone())
        .watches(
            Api::<MeshNode>::all(client.clone()),
            watcher::Config::default(),
            move |node: MeshNode| {
                let namespace = node.namespace().unwrap_or_default();
                experiments_on(&by_node, &namespace, &node.spec.mesh_name)
            },
        )
        .watches(
            Api::<MeshNetwork>::all(client.clone()),
            watcher::Config::default(),
            move |mesh: MeshNetwork| {
                let namespace = mesh.namespace().unwrap_or_default();
                experiments_on(&by_mesh, &namespace, &mesh.name_any())
            },
        )
        .watches(
            Api::<FLTrainingRound>::all(client.clone()),
            watcher::Config::default(),
            move |round: FLTrainingRound| {
                let namespace = round.namespace().unwrap_or_default();
                experiments_on_round(&by_round, &namespace, &round.name_any())
            },
        )
        .graceful_shutdown_on(shutdown.clone())
        .run(chaos::reconcile::reconcile, error_policy, ctx.clone())
        .for_each(log_outcome);

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
        revocation_controller,
        node_controller,
        round_future,
        chaos_future,
        ready
    );
}

type Shutdown = futures::future::Shared<std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;

/// The experiments of `namespace` that still have something to do and `concern` the changed
/// object, from the controller's cache.
fn unsettled_experiments(
    store: &reflector::Store<ChaosExperiment>,
    namespace: &str,
    concern: impl Fn(&ChaosExperiment) -> bool,
) -> Vec<ObjectRef<ChaosExperiment>> {
    store
        .state()
        .iter()
        .filter(|experiment| experiment.namespace().as_deref() == Some(namespace))
        .filter(|experiment| concern(experiment))
        .filter(|experiment| !chaos::plan::is_settled(experiment))
        .map(|experiment| ObjectRef::from_obj(experiment.as_ref()))
        .collect()
}

/// The experiments on mesh `mesh`; a round's experiment names its mesh in the status once its
/// window opened.
fn experiments_on(
    store: &reflector::Store<ChaosExperiment>,
    namespace: &str,
    mesh: &str,
) -> Vec<ObjectRef<ChaosExperiment>> {
    unsettled_experiments(store, namespace, |experiment| {
        let on = experiment.spec.target.mesh_ref.as_ref().map_or_else(
            || experiment.status.as_ref().map_or("", |s| s.mesh.as_str()),
            |r| r.name.as_str(),
        );
        on == mesh
    })
}

/// The experiments on FLTrainingRound `round`.
fn experiments_on_round(
    store: &reflector::Store<ChaosExperiment>,
    namespace: &str,
    round: &str,
) -> Vec<ObjectRef<ChaosExperiment>> {
    unsettled_experiments(store, namespace, |experiment| {
        experiment
            .spec
            .target
            .round_ref
            .as_ref()
            .is_some_and(|r| r.name == round)
    })
}

async fn log_outcome<T: std::fmt::Debug, E: std::fmt::Display>(outcome: Result<T, E>) {
    match outcome {
        Ok(object) => tracing::debug!(?object, "reconciled"),
        Err(error) => tracing::debug!(%error, "reconcile outcome"),
    }
}
