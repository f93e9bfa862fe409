//! Real node agents against the real API server: each authenticates as the agent pod of its
//! node, gets its key endorsed, finds its peers through the MeshNode records, opens
//! post-quantum sessions, and the MeshNetwork reports Converged; a killed agent breaks
//! convergence and its restart restores it.
#![cfg(feature = "e2e")]

use std::time::Duration;

use kube::api::Api;
use x0tta6bl4_api::MeshNetwork;
use x0tta6bl4_api::condition::{self, CONVERGED};
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn converged(meshes: &Api<MeshNetwork>) -> Option<(String, String, i32)> {
    let status = get_opt(meshes, "demo").await?.status?;
    let c = condition::find(&status.conditions, CONVERGED)?;
    Some((c.status.clone(), c.reason.clone(), status.pq_sessions))
}

#[tokio::test]
async fn agents_form_a_post_quantum_mesh_and_the_mesh_network_reports_convergence() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-agents").await;
    let operator = Operator::start("agents", "x0-e2e-agents").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let example = repo_root().join("examples/meshnetwork.yaml");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]);
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    let nodes = node_count();
    let DemoAgents {
        mut agents,
        config,
        pods,
        ..
    } = start_demo_agents(&client, &ns.name, "127.0.1", TIMEOUT).await;

    // Every agent pair on loopback can connect: n × (n − 1) session ends, all post-quantum.
    let full = nodes * (nodes - 1);
    let state = wait_until(
        "Converged=True with every session post-quantum",
        TIMEOUT,
        || async { converged(&meshes).await },
        |c| {
            c.as_ref()
                .is_some_and(|(status, _, pq)| status == "True" && *pq == full)
        },
    )
    .await;
    println!("converged: {state:?}");
    kubectl_ok(&["get", "meshnodes", "-n", &ns.name]);

    // One agent dies: the others lose their routes to it and the mesh is no longer converged.
    let mut victim = agents.remove(0);
    let log = victim.log_tail();
    victim.kill();
    wait_until(
        "Converged=False after an agent died",
        TIMEOUT,
        || async { converged(&meshes).await },
        |c| c.as_ref().is_some_and(|(status, _, _)| status == "False"),
    )
    .await;

    // It restarts (same key, same endorsement) and the mesh converges again.
    let pod = pods
        .iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&victim.node))
        .unwrap();
    let restarted = Agent::start(
        &victim.node,
        pod.metadata.name.as_deref().unwrap(),
        &ns.name,
        "127.0.1.1",
        &config,
    )
    .unwrap();
    wait_until(
        "Converged=True after the agent rejoined",
        TIMEOUT,
        || async { converged(&meshes).await },
        |c| {
            c.as_ref()
                .is_some_and(|(status, _, pq)| status == "True" && *pq == full)
        },
    )
    .await;
    assert!(!log.contains("panicked"), "{log}");
    drop(restarted);
    drop(agents);
    ns.delete_and_wait().await;
}
