//! Federated jobs trained by seven real agents in the cluster (kube mode: each authenticates as
//! its DaemonSet pod, the operator selects and seals, the aggregator agent runs the rounds over
//! the post-quantum mesh):
//! - an honest FedAvg run; then a ChaosExperiment (byzantineUpdate, roundRef) makes two
//!   participants poison their updates to a Multi-Krum job of the same seed, without a restart:
//!   the experiment records the attacked rounds, the poisoned updates the rule rejected and the
//!   accuracy against the honest run, passes, and the two train honestly again afterwards;
//! - the same job (same `spec.seed`: same initial model and shards)
//!   with two agents restarted as sign-flippers under Multi-Krum (f = 2): both are rejected
//!   every round with their Krum score, and the accuracy stays within 5 points of the honest
//!   run; an unsigned and a tampered update injected by hand are rejected and listed;
//! - a hierarchical job (median inside each zone, run by a zone aggregator agent per zone,
//!   FedAvg across zones by the job's aggregator) completes with the zones in its status;
//! - deleting a running job stops its aggregator and removes its round ConfigMaps;
//! - killing a job's aggregator mid-job: the operator hands the job to another participant,
//!   which resumes after the last round written, and the job completes.
//!
//! The seven nodes are made for this test (their own label, so other tests' meshes do not
//! see them) and removed at its end.
#![cfg(feature = "e2e")]

use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use x0tta6bl4_api::condition::{self, CONVERGED};
use x0tta6bl4_api::fl_protocol::JOB_LABEL;
use x0tta6bl4_api::fl_record::RoundRecord;
use x0tta6bl4_api::{ChaosExperiment, FLTrainingRound, FLTrainingRoundStatus, MeshNetwork};
use x0tta6bl4_e2e::*;

const MESH: &str = "fl7";
const NODES: usize = 7;
/// The label that keeps these nodes apart from the cluster's own.
const NODE_LABEL: &str = "x0tta6bl4.io/e2e-fl";
/// The label of the nodes the byzantineUpdate experiment chooses (the BYZANTINE ones).
const POISONER_LABEL: &str = "x0tta6bl4.io/e2e-poisoner";
const SUBNET: &str = "127.0.4";
const BYZANTINE: [&str; 2] = ["x0-fl-2", "x0-fl-5"];
/// Serves POST /chaos/forged-update (the fault endpoint).
const INJECTOR: &str = "x0-fl-1";
const ADMIN_PORT: u16 = 47103;
const TIMEOUT: Duration = Duration::from_secs(120);
const JOB_TIMEOUT: Duration = Duration::from_secs(300);
const ROUNDS: i32 = 5;
const SEED: i64 = 20261122;

fn node_name(i: usize) -> String {
    format!("x0-fl-{i}")
}

fn mesh() -> MeshNetwork {
    fake_node_mesh(MESH, NODE_LABEL, serde_json::json!({}))
}

fn job(name: &str, rounds: i32, aggregation: serde_json::Value) -> FLTrainingRound {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "FLTrainingRound", "metadata": {"name": name},
        "spec": {
            "meshRef": {"name": MESH},
            "model": {"kind": "logisticRegression", "inputDim": 64, "classes": 10, "dataset": "digits"},
            "rounds": rounds,
            "localEpochs": 3,
            "learningRate": "0.5",
            "participants": {"minimum": NODES},
            "aggregation": aggregation,
            "quorumTimeout": "30s",
            "seed": SEED
        }
    }))
    .unwrap()
}

async fn converged(meshes: &Api<MeshNetwork>) -> Option<(String, i32)> {
    let status = get_opt(meshes, MESH).await?.status?;
    let c = condition::find(&status.conditions, CONVERGED)?;
    Some((c.status.clone(), status.pq_sessions))
}

async fn wait_converged(meshes: &Api<MeshNetwork>, what: &str) {
    let full = (NODES * (NODES - 1)) as i32;
    wait_until(
        what,
        TIMEOUT,
        || async { converged(meshes).await },
        |c| c.as_ref().is_some_and(|(s, pq)| s == "True" && *pq == full),
    )
    .await;
}

/// Runs `job` to Completed and returns its status.
async fn complete(
    jobs: &Api<FLTrainingRound>,
    namespace: &str,
    job: FLTrainingRound,
) -> FLTrainingRoundStatus {
    let name = job.metadata.name.clone().unwrap();
    jobs.create(&PostParams::default(), &job).await.unwrap();
    wait_completed(jobs, namespace, &name).await
}

/// Waits for job `name` to complete (a Failed job fails the test with its message) and prints
/// `kubectl get flrounds` as a user would see it.
async fn wait_completed(jobs: &Api<FLTrainingRound>, namespace: &str, name: &str) -> FLTrainingRoundStatus {
    let status = wait_until(
        &format!("FLTrainingRound {name} Completed"),
        JOB_TIMEOUT,
        || async { get_opt(jobs, name).await.and_then(|j| j.status) },
        |s| {
            let phase = s.as_ref().map(|s| s.phase.as_str());
            assert_ne!(phase, Some("Failed"), "{name} failed: {s:?}");
            phase == Some("Completed")
        },
    )
    .await
    .unwrap();
    println!("{}", kubectl_ok(&["get", "flrounds", "-n", namespace]));
    status
}

/// Waits until job `name` has completed `rounds` rounds and returns its status then.
async fn wait_rounds(jobs: &Api<FLTrainingRound>, name: &str, rounds: i32) -> Option<FLTrainingRoundStatus> {
    wait_until(
        &format!("{name} to complete {rounds} round(s)"),
        JOB_TIMEOUT,
        || async { get_opt(jobs, name).await.and_then(|j| j.status) },
        |s| s.as_ref().is_some_and(|s| s.completed_rounds >= rounds),
    )
    .await
}

fn accuracy(status: &FLTrainingRoundStatus) -> f64 {
    status.accuracy.trim_end_matches('%').parse().unwrap()
}

fn rejected_for<'a>(record: &'a RoundRecord, participant: &str) -> Vec<&'a str> {
    record
        .rejected
        .iter()
        .filter(|r| r.participant == participant)
        .map(|r| r.reason.as_str())
        .collect()
}

async fn wait_routes_everywhere(ips: &[String], what: &str) {
    wait_until(
        what,
        TIMEOUT,
        || async { route_counts(ips).await },
        |counts| counts.iter().all(|c| *c == Some(NODES - 1)),
    )
    .await;
}

async fn agent_metric(ip: &str, name: &str) -> Option<f64> {
    let body = http_request(ip, 47102, "GET", "/metrics").await.ok()?;
    Some(metric_sum(&body, name))
}

/// The agents' poisoned training runs (x0_agent_fl_trained_total{outcome="poisoned"}), by node.
async fn poisoned_counts(agents: &[Agent], ips: &[String]) -> Vec<(String, f64)> {
    let mut counts = Vec::new();
    for (agent, ip) in agents.iter().zip(ips) {
        let body = http_request(ip, 47102, "GET", "/metrics")
            .await
            .unwrap_or_default();
        let poisoned = body
            .lines()
            .filter(|l| l.starts_with("x0_agent_fl_trained_total{") && l.contains("outcome=\"poisoned\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        counts.push((agent.node.clone(), poisoned));
    }
    counts
}

async fn poisoned_by_an_experiment(
    client: &kube::Client,
    namespace: &str,
    jobs: &Api<FLTrainingRound>,
    agents: &[Agent],
    ips: &[String],
) {
    let experiments: Api<ChaosExperiment> = Api::namespaced(client.clone(), namespace);
    let experiment: ChaosExperiment = serde_json::from_value(serde_json::json!({
        "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "ChaosExperiment", "metadata": {"name": "poison"},
        "spec": {
            "target": {"roundRef": {"name": "poisoned"}, "nodeSelector": {POISONER_LABEL: "true"}, "mode": "all"},
            "action": {"type": "byzantineUpdate", "byzantine": {"attack": "signFlip"}},
            "duration": "5m",
            "expectations": {"maxAccuracyDropPercent": 5}
        }
    }))
    .unwrap();
    // The experiment first, so that it waits for the job and opens its window as the job starts.
    experiments
        .create(&PostParams::default(), &experiment)
        .await
        .unwrap();
    // More rounds than the others: the window opens a moment after the job starts.
    let poisoned = job(
        "poisoned",
        8,
        serde_json::json!({"rule": "multiKrum", "byzantine": 2}),
    );
    let job_status = complete(jobs, namespace, poisoned).await;
    let done = wait_until(
        "ChaosExperiment poison Completed",
        TIMEOUT,
        || async { get_opt(&experiments, "poison").await.and_then(|e| e.status) },
        |s| s.as_ref().is_some_and(|s| s.phase == "Completed"),
    )
    .await
    .unwrap();
    println!("{}", kubectl_ok(&["get", "chaos", "-n", namespace, "-o", "wide"]));
    let mut targets = done.targets.clone();
    targets.sort();
    assert_eq!(targets, BYZANTINE, "{done:?}");
    assert_eq!(done.mesh, MESH);
    assert_eq!(
        done.revert_cause, "roundEnded",
        "the window closed with the job: {done:?}"
    );
    let attacked = done.byzantine.clone().expect("status.byzantine");
    println!(
        "byzantineUpdate experiment: verdict {}: {}",
        done.verdict, done.verdict_message
    );
    assert_eq!(done.verdict, "Passed", "{done:?}");
    assert_eq!(attacked.reference_round, "honest", "{attacked:?}");
    assert!(!attacked.attacked_rounds.is_empty(), "{attacked:?}");
    // Each attacked round after the first (whose updates may have been trained before the
    // agents switched) rejected both poisoners' updates.
    for record in job_status
        .records
        .iter()
        .filter(|r| attacked.attacked_rounds.iter().skip(1).any(|n| *n == r.round))
    {
        for attacker in BYZANTINE {
            assert!(
                !rejected_for(record, attacker).is_empty(),
                "{attacker}'s poisoned update accepted in round {}: {record:?}",
                record.round
            );
        }
    }
    assert!(
        attacked.rejected >= 2 * (attacked.attacked_rounds.len() as i32 - 1),
        "{attacked:?}"
    );
    let during = poisoned_counts(agents, ips).await;
    for (node, count) in &during {
        let target = BYZANTINE.contains(&node.as_str());
        assert_eq!(*count > 0.0, target, "poisoned training runs of {node}: {count}");
    }
    // Honest again without a restart: a job after the window gets no poisoned update.
    complete(
        jobs,
        namespace,
        job("after-poison", 2, serde_json::json!({"rule": "fedavg"})),
    )
    .await;
    assert_eq!(poisoned_counts(agents, ips).await, during);
}

#[tokio::test]
async fn seven_agents_train_two_sign_flippers_are_rejected_and_a_deleted_job_stops() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-flagents").await;
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let _nodes = FakeNodes::create(NODE_LABEL, "fl", "10.2.0", &names, |i| {
        // Zone a holds x0-fl-0..3, zone b x0-fl-4..6: one sign-flipper in each.
        let zone = if i < 4 { "a" } else { "b" };
        let poisoner = BYZANTINE.contains(&node_name(i).as_str());
        vec![
            (POISONER_LABEL.to_owned(), poisoner.to_string()),
            ("topology.kubernetes.io/zone".to_owned(), format!("zone-{zone}")),
        ]
    });
    let operator = Operator::start("flagents", "x0-e2e-flagents").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    meshes.create(&PostParams::default(), &mesh()).await.unwrap();
    let injector_ip = format!("{SUBNET}.{}", 2);
    let admin = |node: &str| {
        if node == INJECTOR {
            vec!["--fault-api".to_owned(), format!("{injector_ip}:{ADMIN_PORT}")]
        } else {
            Vec::new()
        }
    };
    let DemoAgents {
        mut agents,
        ips,
        config,
        pods,
    } = start_mesh_agents(&client, &ns.name, MESH, NODES as i32, SUBNET, TIMEOUT, admin).await;
    let nodes: Vec<String> = agents.iter().map(|a| a.node.clone()).collect();
    assert_eq!(nodes, (0..NODES).map(node_name).collect::<Vec<_>>());
    assert_eq!(ips[1], injector_ip);
    wait_converged(&meshes, "seven honest agents converged").await;
    let jobs: Api<FLTrainingRound> = Api::namespaced(client.clone(), &ns.name);

    // 1. Every agent honest, FedAvg: the reference.
    let honest = complete(
        &jobs,
        &ns.name,
        job("honest", ROUNDS, serde_json::json!({"rule": "fedavg"})),
    )
    .await;
    assert_eq!(honest.participants, nodes);
    for record in &honest.records {
        assert_eq!(record.accepted, nodes, "{record:?}");
        assert!(record.rejected.is_empty(), "{record:?}");
    }
    let reference = accuracy(&honest);
    println!("honest FedAvg run: final accuracy {reference}%");

    // 1b. A ChaosExperiment makes the two BYZANTINE agents flip the sign of their updates to
    // one job, for as long as it runs; nobody restarts.
    poisoned_by_an_experiment(&client, &ns.name, &jobs, &agents, &ips).await;

    // 2. Two agents restart as sign-flippers (same keys and endorsements).
    for byzantine in BYZANTINE {
        let index = nodes.iter().position(|n| n == byzantine).unwrap();
        agents[index].kill();
        let pod = pods
            .iter()
            .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(byzantine))
            .unwrap();
        agents[index] = Agent::start_in_mesh(
            MESH,
            byzantine,
            pod.metadata.name.as_deref().unwrap(),
            &ns.name,
            &ips[index],
            &config,
            &["--test-fault".to_owned(), "byzantineUpdate=signFlip".to_owned()],
        )
        .unwrap();
    }
    // The MeshNetwork's status can still say Converged from before the restarts: wait on
    // the agents themselves, every one with a route to every other.
    wait_routes_everywhere(&ips, "every agent routes to the restarted sign-flippers").await;
    wait_converged(&meshes, "converged again with the two sign-flippers").await;
    let attacked = job(
        "byzantine",
        ROUNDS,
        serde_json::json!({"rule": "multiKrum", "byzantine": 2}),
    );
    jobs.create(&PostParams::default(), &attacked).await.unwrap();
    wait_rounds(&jobs, "byzantine", 1).await;
    // By hand, from x0-fl-1, for the last round (held by the aggregator until it starts): an
    // update without a signature and one changed after signing.
    for kind in ["unsigned", "tampered"] {
        let response = http_request(
            &injector_ip,
            ADMIN_PORT,
            "POST",
            &format!("/chaos/forged-update?job=byzantine&round={ROUNDS}&kind={kind}"),
        )
        .await
        .unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    }
    let status = wait_completed(&jobs, &ns.name, "byzantine").await;
    let honest_nodes: Vec<String> = nodes
        .iter()
        .filter(|n| !BYZANTINE.contains(&n.as_str()))
        .cloned()
        .collect();
    assert_eq!(status.records.len(), ROUNDS as usize);
    for record in &status.records {
        assert_eq!(record.accepted, honest_nodes, "{record:?}");
        for attacker in BYZANTINE {
            let reasons = rejected_for(record, attacker);
            assert!(
                reasons.iter().any(|r| r.starts_with("multiKrum: krum score")),
                "{attacker} rejected with its Krum score in round {}: {reasons:?}",
                record.round
            );
        }
    }
    let last = status.records.last().unwrap();
    let injected = rejected_for(last, INJECTOR);
    assert!(
        injected.iter().any(|r| r.starts_with("MissingSignature"))
            && injected.iter().any(|r| r.starts_with("BadSignature")),
        "the injected updates are listed: {last:?}"
    );
    let attacked_accuracy = accuracy(&status);
    println!(
        "2 of 7 sign-flipping, multiKrum f=2: final accuracy {attacked_accuracy}% (honest FedAvg {reference}%); round 5 rejected: {:?}",
        last.rejected
    );
    assert!(
        attacked_accuracy >= reference - 5.0,
        "{attacked_accuracy} vs honest {reference}"
    );
    let (verified, said) = operator_command(&["verify-chain", "-n", &ns.name, "byzantine"]);
    assert!(verified, "{said}");
    // The final model, fetched by its digest and checked against it: (64 + 1) x 10 parameters.
    let model_file = std::env::temp_dir().join(format!("x0-e2e-{}-model.f32", ns.name));
    let model_path = model_file.to_str().unwrap();
    let (fetched, said) = operator_command(&["get-model", "-n", &ns.name, "byzantine", "-o", model_path]);
    assert!(fetched, "{said}");
    assert!(said.contains(&status.model_digest), "{said}");
    assert_eq!(std::fs::metadata(&model_file).unwrap().len(), 650 * 4);
    println!("{}", said.trim());
    let zeros = "0".repeat(64);
    let (unknown, said) = operator_command(&[
        "get-model",
        "-n",
        &ns.name,
        "byzantine",
        "--digest",
        &zeros,
        "-o",
        model_path,
    ]);
    assert!(!unknown, "no round names that digest: {said}");

    // 3. Hierarchical: median inside zones a and b (one sign-flipper in each), FedAvg across.
    let zoned = complete(
        &jobs,
        &ns.name,
        job(
            "zoned",
            3,
            serde_json::json!({"rule": "median", "byzantine": 1,
                "hierarchical": {"zoneLabel": "topology.kubernetes.io/zone", "globalRule": "fedavg"}}),
        ),
    )
    .await;
    assert_eq!(zoned.zones.len(), NODES, "{:?}", zoned.zones);
    assert_eq!(zoned.zones["x0-fl-3"], "zone-a");
    assert_eq!(zoned.zones["x0-fl-4"], "zone-b");
    assert_eq!(zoned.zone_aggregators.len(), 2, "{:?}", zoned.zone_aggregators);
    for (zone, aggregator) in &zoned.zone_aggregators {
        assert_eq!(
            &zoned.zones[aggregator], zone,
            "a zone's aggregator is one of its members"
        );
    }
    // Chance is 10%; an unfiltered sign-flipper at 4x would drive FedAvg down, not up.
    println!(
        "hierarchical job: accuracy per round {:?}",
        zoned
            .records
            .iter()
            .map(|r| r.accuracy.clone())
            .collect::<Vec<_>>()
    );
    assert!(accuracy(&zoned) > 50.0, "{zoned:?}");

    // 4. A long job deleted while it runs: its aggregator stops and its ConfigMaps go.
    let long = jobs
        .create(
            &PostParams::default(),
            &job(
                "deleted",
                1000,
                serde_json::json!({"rule": "multiKrum", "byzantine": 2}),
            ),
        )
        .await
        .unwrap();
    let running = wait_rounds(&jobs, "deleted", 2).await.unwrap();
    let aggregator_ip = ips[nodes.iter().position(|n| *n == running.aggregator).unwrap()].clone();
    assert_eq!(
        agent_metric(&aggregator_ip, "x0_agent_fl_jobs_aggregating").await,
        Some(1.0)
    );
    jobs.delete("deleted", &DeleteParams::foreground()).await.unwrap();
    wait_until(
        "the aggregator to stop the deleted job",
        TIMEOUT,
        || async { agent_metric(&aggregator_ip, "x0_agent_fl_jobs_aggregating").await },
        |n| *n == Some(0.0),
    )
    .await;
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let selector = format!("{JOB_LABEL}=deleted");
    wait_until(
        "the deleted job's round ConfigMaps to be gone",
        TIMEOUT,
        || async {
            maps.list(&ListParams::default().labels(&selector))
                .await
                .map(|l| l.items.len())
                .ok()
        },
        |n| *n == Some(0),
    )
    .await;
    wait_until(
        "the deleted job to be gone",
        TIMEOUT,
        || async { get_opt(&jobs, "deleted").await.is_none() },
        |gone| *gone,
    )
    .await;
    let aggregator = agents.iter().find(|a| a.node == running.aggregator).unwrap();
    let log = std::fs::read_to_string(aggregator.log_path()).unwrap_or_default();
    assert!(
        log.contains("federated job stopped here") && log.contains(long.metadata.uid.as_deref().unwrap()),
        "{}",
        aggregator.log_tail()
    );

    // 5. The aggregator dies mid-job: once its reports go stale the operator hands the job to
    // the next live participant, which resumes after the last round written. Six of seven
    // updates make a round (quorumPercent 85), so the dead agent holds no round to its timeout.
    let mut failover = job(
        "failover",
        6,
        serde_json::json!({"rule": "median", "byzantine": 2}),
    );
    failover.spec.quorum_percent = 85;
    jobs.create(&PostParams::default(), &failover).await.unwrap();
    let before = wait_rounds(&jobs, "failover", 2).await.unwrap();
    let dead = before.aggregator.clone();
    let index = nodes.iter().position(|n| *n == dead).unwrap();
    agents[index].kill();
    let killed_at = std::time::Instant::now();
    let done = wait_completed(&jobs, &ns.name, "failover").await;
    assert_ne!(done.aggregator, dead, "{done:?}");
    assert_eq!(done.records.len(), 6, "{done:?}");
    let (verified, said) = operator_command(&["verify-chain", "-n", &ns.name, "failover"]);
    assert!(verified, "{said}");
    println!(
        "aggregator {dead} killed after round {}; {} took over and completed the job {:.0} s later, accuracy {}",
        before.completed_rounds,
        done.aggregator,
        killed_at.elapsed().as_secs_f64(),
        done.accuracy
    );

    for agent in &agents {
        let log = std::fs::read_to_string(agent.log_path()).unwrap_or_default();
        assert!(!log.contains("panicked"), "{}: {}", agent.node, agent.log_tail());
    }
    assert_eq!(
        operator.metric("x0_reconcile_errors_total").await,
        0.0,
        "{}",
        operator.log_tail()
    );
    drop(agents);
    ns.delete_and_wait().await;
}
