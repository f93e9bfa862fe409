//! Bad input: the API server refuses schema-invalid objects with a message naming the field,
//! and a spec the schema admits but the operator cannot act on becomes Ready=False with reason
//! InvalidSpec, without a retry storm.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, PostParams};
use x0tta6bl4_api::condition::{self, READY};
use x0tta6bl4_api::{FLTrainingRound, MeshNetwork};
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn the_api_server_refuses_invalid_objects_naming_the_field() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-invalid").await;
    let cases = [
        ("examples/invalid/meshnetwork-bad-port.yaml", "spec.agent.udpPort"),
        (
            "examples/invalid/meshnetwork-bad-interval.yaml",
            "spec.routing.helloInterval",
        ),
        (
            "examples/invalid/flround-krum-too-few.yaml",
            "spec.aggregation.byzantine",
        ),
    ];
    for (file, field) in cases {
        let path = repo_root().join(file);
        let out = kubectl(&["apply", "-n", &ns.name, "-f", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        assert!(
            stderr.contains(field),
            "{file}: the error does not name {field}: {stderr}"
        );
    }
    // A cross-field rule across different sub-objects: neighbourTimeout vs helloInterval.
    let bad = r#"{"apiVersion":"x0tta6bl4.io/v1alpha1","kind":"MeshNetwork","metadata":{"name":"timers"},
        "spec":{"routing":{"helloInterval":"500ms","neighbourTimeout":"600ms"}}}"#;
    let mesh: MeshNetwork = serde_json::from_str(bad).unwrap();
    let err = Api::<MeshNetwork>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &mesh)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.routing.neighbourTimeout"), "{err}");
}

#[tokio::test]
async fn a_schema_valid_but_unusable_spec_becomes_invalid_spec_without_retries() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-invalidspec").await;
    let operator = Operator::start("invalidspec", "x0-e2e-invalidspec")
        .await
        .unwrap();
    operator.wait_ready(TIMEOUT).await;
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    let mesh: MeshNetwork = serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNetwork", "metadata": {"name": "bad-selector"},
        "spec": {"nodeSelector": {"not a/valid key": "x"}, "agent": {"image": "Not/Lower:Case"}}
    }))
    .unwrap();
    meshes.create(&PostParams::default(), &mesh).await.unwrap();
    let mesh = wait_until(
        "Ready=False InvalidSpec",
        TIMEOUT,
        || async { get_opt(&meshes, "bad-selector").await },
        |m| {
            m.as_ref()
                .and_then(|m| m.status.as_ref())
                .and_then(|s| condition::find(&s.conditions, READY))
                .is_some_and(|c| c.reason == "InvalidSpec")
        },
    )
    .await
    .unwrap();
    let ready = condition::find(&mesh.status.as_ref().unwrap().conditions, READY)
        .unwrap()
        .clone();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.nodeSelector[not a/valid key]"),
        "{}",
        ready.message
    );
    assert!(ready.message.contains("spec.agent.image"), "{}", ready.message);
    assert!(
        get_opt(
            &Api::<DaemonSet>::namespaced(client.clone(), &ns.name),
            "bad-selector-agent"
        )
        .await
        .is_none()
    );

    // Use a second, valid object as the clock: once it is handled, the invalid one has had
    // every chance to be retried. It must not have been: no error, no status rewrite.
    let version = mesh.metadata.resource_version.clone();
    let round: FLTrainingRound = serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "FLTrainingRound", "metadata": {"name": "clock"},
        "spec": {"meshRef": {"name": "bad-selector"}, "model": {"kind": "logisticRegression", "inputDim": 4, "classes": 3}}
    }))
    .unwrap();
    let rounds: Api<FLTrainingRound> = Api::namespaced(client.clone(), &ns.name);
    rounds.create(&PostParams::default(), &round).await.unwrap();
    wait_until(
        "the FLTrainingRound to be reported on",
        TIMEOUT,
        || async { get_opt(&rounds, "clock").await.and_then(|r| r.status) },
        |s| {
            s.as_ref().is_some_and(|s| {
                // A mesh without agents: the job waits for participants, and says so.
                condition::find(&s.conditions, READY).is_some_and(|c| c.reason == "InsufficientParticipants")
            })
        },
    )
    .await;
    assert_eq!(operator.metric("x0_reconcile_errors_total").await, 0.0);
    assert_eq!(
        get_opt(&meshes, "bad-selector")
            .await
            .unwrap()
            .metadata
            .resource_version,
        version
    );
}
