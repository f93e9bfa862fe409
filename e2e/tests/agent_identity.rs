//! Agent identity through the API server: an agent whose token is bound to its pod may publish
//! its key in its own node's MeshNode record and gets it endorsed by the mesh authority; it may
//! not publish for another node, and a token not bound to a pod on the node may publish nothing.
#![cfg(feature = "e2e")]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, PostParams};
use x0tta6bl4_api::agent_config::AgentConfig;
use x0tta6bl4_api::{MeshNetwork, MeshNode};
use x0tta6bl4_crypto::endorsement::{Endorsement, TrustStore};
use x0tta6bl4_crypto::{SigningKey, VerifyingKey};
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(90);

/// A client that authenticates with `token` instead of the admin certificate.
async fn client_with_token(token: &str) -> kube::Client {
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.to_owned().into()),
        ..Default::default()
    };
    kube::Client::try_from(config).unwrap()
}

fn mk_record(mesh: &str, node: &str, key: &SigningKey) -> MeshNode {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNode",
        "metadata": {"name": format!("{mesh}-{node}")},
        "spec": {"meshName": mesh, "nodeName": node, "publicKey": STANDARD.encode(key.verifying_key().as_bytes()), "keyEpoch": 1}
    }))
    .unwrap()
}

#[tokio::test]
async fn an_agent_key_is_endorsed_only_for_the_node_its_token_is_bound_to() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-identity").await;
    let operator = Operator::start("identity", "x0-e2e-identity").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let example = repo_root().join("examples/meshnetwork.yaml");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]);
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    wait_until(
        "demo Ready",
        TIMEOUT,
        || async {
            get_opt(&meshes, "demo")
                .await
                .and_then(|m| m.status)
                .map(|s| s.ready_nodes)
        },
        |ready| *ready == Some(node_count()),
    )
    .await;

    // The agent pod on x0-node-0, and a token bound to it (as the kubelet would project).
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=demo"))
        .await
        .unwrap();
    let pod = pods
        .items
        .iter()
        .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("x0-node-0"))
        .expect("an agent pod on x0-node-0");
    let pod_name = pod.metadata.name.clone().unwrap();
    let bound = kubectl_ok(&[
        "create",
        "token",
        "demo-agent",
        "-n",
        &ns.name,
        "--bound-object-kind",
        "Pod",
        "--bound-object-name",
        &pod_name,
        "--duration",
        "10m",
    ]);
    let agent = client_with_token(bound.trim()).await;
    let records: Api<MeshNode> = Api::namespaced(agent.clone(), &ns.name);

    // Its own node: accepted, then endorsed by the operator.
    let key = SigningKey::generate().unwrap();
    records
        .create(&PostParams::default(), &mk_record("demo", "x0-node-0", &key))
        .await
        .expect("own record accepted");
    let admin_records: Api<MeshNode> = Api::namespaced(client.clone(), &ns.name);
    let record = wait_until(
        "the operator to endorse x0-node-0's key",
        TIMEOUT,
        || async { get_opt(&admin_records, "demo-x0-node-0").await },
        |r| {
            r.as_ref()
                .and_then(|r| r.status.as_ref())
                .is_some_and(|s| !s.endorsement.is_empty())
        },
    )
    .await
    .unwrap();
    let endorsement =
        Endorsement::decode(&STANDARD.decode(record.status.unwrap().endorsement).unwrap()).unwrap();
    assert_eq!(&endorsement.public_key, key.verifying_key());
    assert!(
        endorsement
            .spiffe_id
            .ends_with(&format!("/ns/{}/mesh/demo/node/x0-node-0", ns.name)),
        "{}",
        endorsement.spiffe_id
    );

    // The endorsement verifies against the trust anchor the agents are configured with.
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .get("demo-agent-config")
        .await
        .unwrap();
    let config = AgentConfig::parse(&config_map.data.unwrap()["agent.yaml"]).unwrap();
    let anchor = VerifyingKey::from_bytes(&STANDARD.decode(&config.authority_public_key).unwrap()).unwrap();
    let mut trust = TrustStore::new(&config.trust_domain, vec![anchor]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    trust
        .admit(&endorsement, now)
        .expect("endorsed by the mesh authority");

    // Another node's record: refused by the API server, naming the field.
    let err = records
        .create(&PostParams::default(), &mk_record("demo", "x0-node-1", &key))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("spec.nodeName: an agent may write only the MeshNode of the node its pod runs on"),
        "{err}"
    );

    // A token of the same service account that is not bound to a pod: no node, no record.
    let unbound = kubectl_ok(&[
        "create",
        "token",
        "demo-agent",
        "-n",
        &ns.name,
        "--duration",
        "10m",
    ]);
    let stray: Api<MeshNode> = Api::namespaced(client_with_token(unbound.trim()).await, &ns.name);
    let err = stray
        .create(&PostParams::default(), &mk_record("demo", "x0-node-2", &key))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("token bound to node none"), "{err}");
    ns.delete_and_wait().await;
}
