//! The operator killed mid-reconcile and restarted leaves no orphan, no duplicate and no
//! stuck finalizer; with two replicas only the leader writes, and the standby takes over.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use x0tta6bl4_api::MeshNetwork;
use x0tta6bl4_api::condition::{self, READY};
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn wait_ready(api: &Api<MeshNetwork>, name: &str, generation: i64) {
    wait_until(
        &format!("{name} Ready at generation {generation}"),
        TIMEOUT,
        || async { get_opt(api, name).await.and_then(|m| m.status) },
        |s| {
            s.as_ref().is_some_and(|s| {
                s.observed_generation == Some(generation) && condition::is_true(&s.conditions, READY)
            })
        },
    )
    .await;
}

#[tokio::test]
async fn a_killed_operator_restarts_without_orphans_or_duplicates() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-restart").await;
    let mut operator = Operator::start("restart-1", "x0-e2e-restart").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let example = repo_root().join("examples/meshnetwork.yaml");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]);
    // Kill it as soon as it has written its first child: the reconcile is mid-way.
    wait_until(
        "the first child write",
        TIMEOUT,
        || async { operator.metric("x0_api_writes_total").await },
        |writes| *writes >= 1.0,
    )
    .await;
    operator.kill();

    let operator = Operator::start("restart-2", "x0-e2e-restart").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    wait_ready(&meshes, "demo", 1).await;
    let by_mesh = ListParams::default().labels("x0tta6bl4.io/mesh=demo");
    assert_eq!(
        Api::<DaemonSet>::namespaced(client.clone(), &ns.name)
            .list(&by_mesh)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
            .list(&by_mesh)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(
        Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
            .list(&by_mesh)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    let mesh = meshes.get("demo").await.unwrap();
    assert!(
        mesh.metadata.finalizers.unwrap_or_default().is_empty(),
        "no finalizer is left on the mesh"
    );

    // Deletion is not blocked by anything the killed operator left.
    meshes.delete("demo", &DeleteParams::background()).await.unwrap();
    wait_until(
        "demo deleted",
        TIMEOUT,
        || async { get_opt(&meshes, "demo").await.is_none() },
        |gone| *gone,
    )
    .await;
    ns.delete_and_wait().await;
}

#[tokio::test]
async fn with_two_replicas_only_the_leader_writes_and_the_standby_takes_over() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-leader").await;
    let lease = "x0-e2e-leader";
    let mut first = Operator::start("leader-a", lease).await.unwrap();
    first.wait_ready(TIMEOUT).await;
    let second = Operator::start("leader-b", lease).await.unwrap();
    assert_eq!(first.metric("x0_operator_leader").await, 1.0);

    let example = repo_root().join("examples/meshnetwork.yaml");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]);
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    wait_ready(&meshes, "demo", 1).await;
    assert!(first.metric("x0_api_writes_total").await > 0.0);
    assert_eq!(second.metric("x0_operator_leader").await, 0.0);
    assert_eq!(
        second.metric("x0_api_writes_total").await,
        0.0,
        "the standby wrote"
    );
    assert_eq!(
        second.metric("x0_reconciles_total").await,
        0.0,
        "the standby reconciled"
    );

    // The leader dies without releasing the lease; the standby takes over once it expires.
    first.kill();
    wait_until(
        "the standby to take the lease",
        Duration::from_secs(45),
        || async { second.metric("x0_operator_leader").await },
        |leader| *leader == 1.0,
    )
    .await;
    second.wait_ready(TIMEOUT).await;
    meshes
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"routing": {"maxHops": 8}}})),
        )
        .await
        .unwrap();
    wait_ready(&meshes, "demo", 2).await;
    assert!(second.metric("x0_api_writes_total").await > 0.0);
    ns.delete_and_wait().await;
}
