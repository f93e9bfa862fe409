//! The operator's side of a federated job against the real API server: it selects the live
//! agents of the mesh as participants and one as the aggregator, refuses a job the mesh cannot
//! staff, seals each round the aggregator writes into the hash chain, completes the job, and
//! `x0tta6bl4-operator verify-chain` checks the chain (and catches a tampered record). The
//! aggregator's round ConfigMaps are written here by hand, exactly as fl_protocol specifies,
//! so this test pins the contract the agents implement.
#![cfg(feature = "e2e")]

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use x0tta6bl4_api::condition::{self, READY};
use x0tta6bl4_api::fl_protocol::{
    ERROR_KEY, JOB_LABEL, RECORD_KEY, ROUND_LABEL, SEALED_KEY, round_config_map,
};
use x0tta6bl4_api::fl_record::{Rejection, RoundRecord};
use x0tta6bl4_api::{FLTrainingRound, MeshNode};
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(90);

fn job(name: &str, minimum: i32) -> FLTrainingRound {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "FLTrainingRound", "metadata": {"name": name},
        "spec": {
            "meshRef": {"name": "demo"},
            "model": {"kind": "logisticRegression", "inputDim": 64, "classes": 10, "dataset": "digits"},
            "rounds": 2,
            "participants": {"minimum": minimum},
            "aggregation": {"rule": "median", "byzantine": 1}
        }
    }))
    .unwrap()
}

fn verify_chain(namespace: &str, name: &str) -> (bool, String) {
    operator_command(&["verify-chain", "-n", namespace, name])
}

#[tokio::test]
async fn the_operator_staffs_a_job_seals_its_rounds_and_the_chain_verifies() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-fl").await;
    let operator = Operator::start("fl", "x0-e2e-fl").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let example = repo_root().join("examples/meshnetwork.yaml");
    kubectl_ok(&["apply", "-n", &ns.name, "-f", example.to_str().unwrap()]);

    // Three live, endorsed agents: their records as the agents write them.
    let records: Api<MeshNode> = Api::namespaced(client.clone(), &ns.name);
    let nodes = ["x0-node-0", "x0-node-1", "x0-node-2"];
    for node in nodes {
        let key = SigningKey::generate().unwrap();
        let record: MeshNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNode",
            "metadata": {"name": format!("demo-{node}")},
            "spec": {"meshName": "demo", "nodeName": node, "publicKey": STANDARD.encode(key.verifying_key().as_bytes()), "keyEpoch": 1}
        }))
        .unwrap();
        records.create(&PostParams::default(), &record).await.unwrap();
    }
    let heartbeat = || async {
        for node in nodes {
            let now = k8s_openapi::jiff::Timestamp::now().to_string();
            let status = serde_json::json!({"status": {"lastReportTime": now, "routeCount": 2}});
            records
                .patch_status(
                    &format!("demo-{node}"),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
                .unwrap();
        }
    };
    heartbeat().await;
    wait_until(
        "the operator to endorse the three keys",
        TIMEOUT,
        || async {
            let list = records.list(&Default::default()).await.unwrap();
            list.items
                .iter()
                .filter(|r| r.status.as_ref().is_some_and(|s| !s.endorsement.is_empty()))
                .count()
        },
        |endorsed| *endorsed == 3,
    )
    .await;
    heartbeat().await;

    // A job the mesh cannot staff waits, saying why.
    let jobs: Api<FLTrainingRound> = Api::namespaced(client.clone(), &ns.name);
    jobs.create(&PostParams::default(), &job("too-big", 5))
        .await
        .unwrap();
    let waiting = wait_until(
        "too-big to report InsufficientParticipants",
        TIMEOUT,
        || async { get_opt(&jobs, "too-big").await.and_then(|j| j.status) },
        |s| {
            s.as_ref().is_some_and(|s| {
                condition::find(&s.conditions, READY).is_some_and(|c| c.reason == "InsufficientParticipants")
            })
        },
    )
    .await
    .unwrap();
    let message = &condition::find(&waiting.conditions, READY).unwrap().message;
    assert_eq!(
        message,
        "3 live agents match spec.participants, spec.participants.minimum is 5"
    );
    assert_eq!(waiting.phase, "Pending");

    // A job it can: three participants, one of them aggregates.
    let created = jobs
        .create(&PostParams::default(), &job("fl-e2e", 3))
        .await
        .unwrap();
    let running = wait_until(
        "fl-e2e to start",
        TIMEOUT,
        || async { get_opt(&jobs, "fl-e2e").await.and_then(|j| j.status) },
        |s| s.as_ref().is_some_and(|s| s.phase == "Running"),
    )
    .await
    .unwrap();
    assert_eq!(running.participants, nodes.map(str::to_owned).to_vec());
    assert!(running.participants.contains(&running.aggregator));
    assert_eq!(running.round_text, "0/2");

    // The aggregator's part, by hand: one ConfigMap per round, owned by the job.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    for round in [1, 2] {
        let record = RoundRecord {
            round,
            participants: running.participants.clone(),
            accepted: running.participants[..2].to_vec(),
            rejected: vec![Rejection {
                participant: running.participants[2].clone(),
                reason: "bad signature".into(),
            }],
            down_weighted: Vec::new(),
            loss: "0.8".into(),
            accuracy: format!("{}.5", 70 + round),
            duration_ms: 1500,
            model_digest: format!("{round:064x}"),
            previous: String::new(),
            hash: String::new(),
        };
        let map: ConfigMap = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": round_config_map("fl-e2e", round),
                "labels": {JOB_LABEL: "fl-e2e", ROUND_LABEL: round.to_string()},
                "ownerReferences": [{"apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "FLTrainingRound",
                    "name": "fl-e2e", "uid": created.uid().unwrap()}]
            },
            "data": {RECORD_KEY: serde_json::to_string(&record).unwrap()}
        }))
        .unwrap();
        maps.create(&PostParams::default(), &map).await.unwrap();
    }
    let done = wait_until(
        "fl-e2e to complete",
        TIMEOUT,
        || async { get_opt(&jobs, "fl-e2e").await.and_then(|j| j.status) },
        |s| s.as_ref().is_some_and(|s| s.phase == "Completed"),
    )
    .await
    .unwrap();
    println!(
        "completed: {} {} accuracy {} head {}",
        done.round_text, done.model_config_map, done.accuracy, done.chain_head
    );
    assert_eq!((done.completed_rounds, done.accepted, done.rejected), (2, 2, 1));
    assert_eq!(done.accuracy, "72.5%");
    assert_eq!(done.records.len(), 2);
    assert_eq!(done.records[1].previous, done.records[0].hash);
    assert_eq!(done.model_config_map, "fl-e2e-round-2");
    kubectl_ok(&["get", "flrounds", "-n", &ns.name]);

    let (ok, text) = verify_chain(&ns.name, "fl-e2e");
    assert!(ok, "{text}");
    assert!(text.contains("2 rounds verified"), "{text}");

    // Someone edits a sealed record after the fact: the chain no longer verifies.
    let first = maps.get("fl-e2e-round-1").await.unwrap();
    let mut sealed: RoundRecord = serde_json::from_str(&first.data.unwrap()[SEALED_KEY]).unwrap();
    sealed.accuracy = "99.9".into();
    let patch = serde_json::json!({"data": {SEALED_KEY: serde_json::to_string(&sealed).unwrap()}});
    maps.patch("fl-e2e-round-1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let (ok, text) = verify_chain(&ns.name, "fl-e2e");
    assert!(!ok, "a tampered chain must not verify: {text}");
    assert!(text.contains("round 1"), "{text}");
    // A round the aggregator could not aggregate fails the job, with the aggregator's reason.
    let failing = jobs
        .create(&PostParams::default(), &job("fl-fail", 3))
        .await
        .unwrap();
    wait_until(
        "fl-fail to start",
        TIMEOUT,
        || async { get_opt(&jobs, "fl-fail").await.and_then(|j| j.status) },
        |s| s.as_ref().is_some_and(|s| s.phase == "Running"),
    )
    .await;
    let map: ConfigMap = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": round_config_map("fl-fail", 1),
            "labels": {JOB_LABEL: "fl-fail", ROUND_LABEL: "1"},
            "ownerReferences": [{"apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "FLTrainingRound",
                "name": "fl-fail", "uid": failing.uid().unwrap()}]
        },
        "data": {ERROR_KEY: "median needs more than 2f = 2 updates, 2 arrived"}
    }))
    .unwrap();
    maps.create(&PostParams::default(), &map).await.unwrap();
    let failed = wait_until(
        "fl-fail to fail",
        TIMEOUT,
        || async { get_opt(&jobs, "fl-fail").await.and_then(|j| j.status) },
        |s| s.as_ref().is_some_and(|s| s.phase == "Failed"),
    )
    .await
    .unwrap();
    let ready = condition::find(&failed.conditions, READY).unwrap();
    assert_eq!(ready.reason, "RoundFailed");
    assert!(
        ready.message.contains("round 1 failed: median needs"),
        "{}",
        ready.message
    );
    assert_eq!(
        operator.metric("x0_reconcile_errors_total").await,
        0.0,
        "{}",
        operator.log_tail()
    );
    ns.delete_and_wait().await;
}
