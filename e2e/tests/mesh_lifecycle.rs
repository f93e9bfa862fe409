//! MeshNetwork lifecycle against the real control plane: create → children and agent pods on
//! the fake nodes → Ready with node counts → spec change rolls out and observedGeneration
//! follows → an idle reconcile writes nothing → delete garbage-collects every child.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use x0tta6bl4_api::MeshNetwork;
use x0tta6bl4_api::condition::{self, READY};
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn ready_mesh(api: &Api<MeshNetwork>, name: &str, generation: i64) -> MeshNetwork {
    let nodes = node_count();
    wait_until(
        &format!("MeshNetwork {name} Ready at generation {generation} with {nodes} nodes"),
        TIMEOUT,
        || async { get_opt(api, name).await },
        |mesh| {
            mesh.as_ref().and_then(|m| m.status.as_ref()).is_some_and(|s| {
                s.observed_generation == Some(generation)
                    && condition::is_true(&s.conditions, READY)
                    && s.ready_nodes == nodes
                    && s.desired_nodes == nodes
            })
        },
    )
    .await
    .expect("mesh exists")
}

#[tokio::test]
async fn a_mesh_network_lives_its_whole_lifecycle() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-lifecycle").await;
    let operator = Operator::start("lifecycle", "x0-e2e-lifecycle").await.unwrap();
    operator.wait_ready(TIMEOUT).await;

    let example = repo_root().join("examples/meshnetwork.yaml");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]);
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    let mesh = ready_mesh(&meshes, "demo", 1).await;
    let status = mesh.status.clone().unwrap();
    assert_eq!(status.ready_nodes_text, format!("{0}/{0}", node_count()));
    assert_eq!(status.post_quantum, "required:X25519MLKEM768/ML-DSA-65");

    // Every child exists, owned by the mesh.
    let uid = mesh.metadata.uid.clone().unwrap();
    let owned_by_mesh =
        |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.as_ref()
                .is_some_and(|r| r.iter().any(|o| o.uid == uid && o.controller == Some(true)))
        };
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .get("demo-agent")
        .await
        .unwrap();
    assert!(owned_by_mesh(&sa.metadata.owner_references));
    let role = Api::<Role>::namespaced(client.clone(), &ns.name)
        .get("demo-agent")
        .await
        .unwrap();
    assert!(owned_by_mesh(&role.metadata.owner_references));
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &ns.name)
        .get("demo-agent")
        .await
        .unwrap();
    assert!(owned_by_mesh(&binding.metadata.owner_references));
    let cm_api = Api::<ConfigMap>::namespaced(client.clone(), &ns.name);
    let config = cm_api.get("demo-agent-config").await.unwrap();
    assert!(owned_by_mesh(&config.metadata.owner_references));
    assert!(config.data.unwrap()["agent.yaml"].contains("\"helloInterval\": \"100ms\""));
    let svc = Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("demo-agent")
        .await
        .unwrap();
    assert!(owned_by_mesh(&svc.metadata.owner_references));
    let ds_api = Api::<DaemonSet>::namespaced(client.clone(), &ns.name);
    let ds = ds_api.get("demo-agent").await.unwrap();
    assert!(owned_by_mesh(&ds.metadata.owner_references));
    let pod_spec = ds.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod_spec.host_network, Some(true));

    // One agent pod per fake node, running there.
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await
        .unwrap();
    let mut nodes: Vec<_> = pods
        .items
        .iter()
        .filter_map(|p| p.spec.as_ref()?.node_name.clone())
        .collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        node_count() as usize,
        "one agent per node: {nodes:?}"
    );

    // An idle reconcile (triggered by touching an owned child) makes no mutating call.
    let writes_before = operator.metric("x0_api_writes_total").await;
    let reconciles_before = operator
        .metric_with("x0_reconciles_total", "kind=\"MeshNetwork\"")
        .await;
    ds_api
        .patch(
            "demo-agent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"e2e/touch": "1"}}})),
        )
        .await
        .unwrap();
    wait_until(
        "a reconcile after touching the DaemonSet",
        TIMEOUT,
        || async {
            operator
                .metric_with("x0_reconciles_total", "kind=\"MeshNetwork\"")
                .await
        },
        |count| *count > reconciles_before,
    )
    .await;
    assert_eq!(
        operator.metric("x0_api_writes_total").await,
        writes_before,
        "an unchanged mesh was written to"
    );

    // A spec change rolls the DaemonSet (new config hash) and observedGeneration follows.
    let old_hash = status.config_hash.clone();
    meshes
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"routing": {"helloInterval": "200ms", "neighbourTimeout": "600ms"}}})),
        )
        .await
        .unwrap();
    let mesh = ready_mesh(&meshes, "demo", 2).await;
    let new_hash = mesh.status.unwrap().config_hash;
    assert_ne!(new_hash, old_hash);
    let ds = ds_api.get("demo-agent").await.unwrap();
    let annotations = ds.spec.unwrap().template.metadata.unwrap().annotations.unwrap();
    assert_eq!(annotations["x0tta6bl4.io/config-hash"], new_hash);
    assert!(
        cm_api.get("demo-agent-config").await.unwrap().data.unwrap()["agent.yaml"]
            .contains("\"helloInterval\": \"200ms\"")
    );

    // Deleting the mesh garbage-collects every child, and its series leave the operator's
    // metrics (no alert for a mesh that is gone).
    let series = format!("namespace=\"{}\"", ns.name);
    let desired = operator.metric_with("x0_mesh_desired_nodes", &series).await;
    assert!(desired > 0.0, "x0_mesh_desired_nodes of the live mesh: {desired}");
    meshes.delete("demo", &DeleteParams::background()).await.unwrap();
    wait_until(
        "every child of demo garbage-collected",
        TIMEOUT,
        || async {
            (
                get_opt(&ds_api, "demo-agent").await.is_some(),
                get_opt(&cm_api, "demo-agent-config").await.is_some(),
                get_opt(
                    &Api::<ServiceAccount>::namespaced(client.clone(), &ns.name),
                    "demo-agent",
                )
                .await
                .is_some(),
                get_opt(&Api::<Role>::namespaced(client.clone(), &ns.name), "demo-agent")
                    .await
                    .is_some(),
                get_opt(
                    &Api::<RoleBinding>::namespaced(client.clone(), &ns.name),
                    "demo-agent",
                )
                .await
                .is_some(),
                get_opt(
                    &Api::<Service>::namespaced(client.clone(), &ns.name),
                    "demo-agent",
                )
                .await
                .is_some(),
            )
        },
        |left| *left == (false, false, false, false, false, false),
    )
    .await;
    wait_until(
        "the deleted mesh's series gone from the operator's /metrics",
        TIMEOUT,
        || async {
            operator.metric_with("x0_mesh_desired_nodes", &series).await
                + operator.metric_with("x0_mesh_ready_nodes", &series).await
        },
        |left| *left == 0.0,
    )
    .await;
    ns.delete_and_wait().await;
}
