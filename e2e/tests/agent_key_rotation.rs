//! Key rotation in a cluster: with `keyRotationInterval: 1m`, every agent makes a new key,
//! publishes it in its MeshNode record, the operator endorses the new epoch, and the agent
//! announces it and signs with it, while the mesh stays converged and no session restarts.
#![cfg(feature = "e2e")]

use std::io::{Read as _, Write as _};
use std::time::Duration;

use kube::api::{Api, ListParams};
use x0tta6bl4_api::condition::{self, CONVERGED};
use x0tta6bl4_api::{MeshNetwork, MeshNode};
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(90);
/// One rotation interval (the schema's minimum), the endorsement, and slack.
const ROTATION_TIMEOUT: Duration = Duration::from_secs(180);

const MESH: &str = r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: MeshNetwork
metadata:
  name: demo
spec:
  nodeSelector: {type: kwok}
  tolerations: [{key: kwok.x-k8s.io/node, operator: Exists, effect: NoSchedule}]
  crypto: {requirePostQuantum: true, keyRotationInterval: 1m, keyOverlap: 30s}
  ebpf: {mode: "off"}
"#;

/// Sum of a counter family in an agent's /metrics.
fn agent_metric(ip: &str, name: &str) -> f64 {
    let Ok(mut stream) = std::net::TcpStream::connect((ip, 47102)) else {
        return f64::NAN;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = "GET /metrics HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n";
    let mut body = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut body).is_err() {
        return f64::NAN;
    }
    metric_sum(&body, name)
}

async fn converged(meshes: &Api<MeshNetwork>) -> Option<(String, i32)> {
    let status = get_opt(meshes, "demo").await?.status?;
    let c = condition::find(&status.conditions, CONVERGED)?;
    Some((c.status.clone(), status.pq_sessions))
}

/// Per record: (node, spec.keyEpoch, status.endorsedEpoch).
async fn epochs(records: &Api<MeshNode>) -> Vec<(String, i64, i64)> {
    let mut epochs: Vec<(String, i64, i64)> = records
        .list(&ListParams::default())
        .await
        .map(|list| {
            list.items
                .iter()
                .map(|r| {
                    (
                        r.spec.node_name.clone(),
                        r.spec.key_epoch,
                        r.status.as_ref().and_then(|s| s.endorsed_epoch).unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    epochs.sort();
    epochs
}

#[tokio::test]
async fn agents_rotate_their_keys_through_the_operator_without_losing_a_session() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-rotation").await;
    let operator = Operator::start("rotation", "x0-e2e-rotation").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let manifest = std::env::temp_dir().join(format!("x0-e2e-rotation-{}.yaml", ns.name));
    std::fs::write(&manifest, MESH).unwrap();
    kubectl_ok(&["apply", "-n", &ns.name, "-f", manifest.to_str().unwrap()]);
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    let records: Api<MeshNode> = Api::namespaced(client.clone(), &ns.name);
    let nodes = node_count();
    let DemoAgents { agents, ips, .. } = start_demo_agents(&client, &ns.name, "127.0.2", TIMEOUT).await;

    let full = nodes * (nodes - 1);
    wait_until(
        "Converged=True with every session post-quantum",
        TIMEOUT,
        || async { converged(&meshes).await },
        |c| {
            c.as_ref()
                .is_some_and(|(status, pq)| status == "True" && *pq == full)
        },
    )
    .await;
    let before = epochs(&records).await;
    println!("before: {before:?}");
    assert!(
        before
            .iter()
            .all(|(_, spec, endorsed)| *spec == 1 && *endorsed == 1)
    );
    let sessions_before: Vec<f64> = ips
        .iter()
        .map(|ip| agent_metric(ip, "x0_agent_sessions_established_total"))
        .collect();

    let after = wait_until(
        "every agent's key rotated and endorsed at epoch 2",
        ROTATION_TIMEOUT,
        || async { epochs(&records).await },
        |epochs| {
            epochs.len() == nodes as usize
                && epochs
                    .iter()
                    .all(|(_, spec, endorsed)| *spec >= 2 && *endorsed >= 2)
        },
    )
    .await;
    println!("after: {after:?}");
    // The new keys are in use: each agent counts its rotation, and the mesh still converges.
    wait_until(
        "every agent to sign with its rotated key",
        TIMEOUT,
        || async {
            ips.iter()
                .map(|ip| agent_metric(ip, "x0_agent_key_rotations_total"))
                .collect::<Vec<_>>()
        },
        |done| done.iter().all(|n| *n >= 1.0),
    )
    .await;
    let state = wait_until(
        "Converged=True after the rotation",
        TIMEOUT,
        || async { converged(&meshes).await },
        |c| {
            c.as_ref()
                .is_some_and(|(status, pq)| status == "True" && *pq == full)
        },
    )
    .await;
    println!("converged after the rotation: {state:?}");
    for (ip, before) in ips.iter().zip(&sessions_before) {
        assert_eq!(
            agent_metric(ip, "x0_agent_sessions_established_total"),
            *before,
            "the agent at {ip} opened no new session"
        );
        assert_eq!(
            agent_metric(ip, "x0_agent_routing_rejections_total{reason=\"unendorsed_key\"}"),
            0.0,
            "the agent at {ip} never saw a rotated key before its endorsement"
        );
    }
    for agent in &agents {
        assert!(!agent.log_tail().contains("panicked"), "{}", agent.log_tail());
    }
    drop(agents);
    ns.delete_and_wait().await;
}
