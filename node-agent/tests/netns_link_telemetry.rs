//! The linkTelemetry dataset end to end: three agents with the eBPF datapath in a ring of
//! network namespaces record their links every second; a 10% loss is injected on the link
//! node-0 — node-1 (in both ends' fault maps, so both label it) for a while, with clean time
//! before and after; then a federated job on `dataset: linkTelemetry` trains a logistic
//! regression on those windows, each agent on its own, and the aggregator (node-0) scores it
//! on its own held-out windows. The model must beat the majority-class baseline of those
//! windows (the share of the commoner label), which the aggregator logs with their counts.
//!
//! Needs root and `X0_NETNS_TESTS=1`; otherwise it is ignored (listed with that reason). About three
//! minutes: the recording is real time. Every wait polls a condition with a deadline.
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::ebpf_ring::{Ring, ebpf_config, fault_api};
use common::{Agent, NodeFiles, alive_neighbours, neighbour_cost as cost, require_netns, scratch, wait_for};
use x0tta6bl4_api::fl_record::RoundRecord;
use x0tta6bl4_node_agent::links as telemetry;

const NODES: usize = 3;
const MESH: &str = "links";
const POLL: Duration = Duration::from_millis(250);
const DEADLINE: Duration = Duration::from_secs(45);
/// Recording before the fault, during it (the fault expires by itself) and after it.
const CLEAN_BEFORE: Duration = Duration::from_secs(30);
const FAULT_SECONDS: u64 = 40;
/// Drop probability at each end: enough to slow the link's TCP session (retransmissions show
/// in its RTT) without silencing it past the neighbour timeout, which would take the link out
/// of the recording (only live links are sampled).
const DROP: f64 = 0.1;
const CLEAN_AFTER: Duration = Duration::from_secs(25);
const ROUNDS: u32 = 8;
const ROUND_DONE: Duration = Duration::from_secs(90);

fn name(i: usize) -> String {
    format!("node-{i}")
}

fn job_yaml(names: &[String]) -> String {
    format!(
        r#"apiVersion: x0tta6bl4.io/v1alpha1
kind: FLTrainingRound
metadata: {{name: links, namespace: it, uid: 11nk-7e1e-0001}}
spec:
  meshRef: {{name: {MESH}}}
  model: {{kind: logisticRegression, inputDim: {features}, classes: {classes}, dataset: linkTelemetry}}
  rounds: {ROUNDS}
  localEpochs: 5
  learningRate: "0.5"
  participants: {{minimum: {n}}}
  aggregation: {{rule: fedavg, byzantine: 0}}
  quorumTimeout: 20s
status:
  phase: Running
  participants: [{list}]
  aggregator: {aggregator}
"#,
        features = telemetry::FEATURES,
        classes = telemetry::CLASSES,
        n = names.len(),
        list = names.join(", "),
        aggregator = names[0],
    )
}

fn wait_record(results: &Path, round: u32, agents: &[Agent]) -> RoundRecord {
    let dir = results.join("links");
    wait_for(&format!("round {round}'s record"), ROUND_DONE, POLL, || {
        if let Ok(error) = std::fs::read_to_string(dir.join(format!("round-{round}.error"))) {
            panic!("round {round} failed: {error}\n{}", agents[0].log_tail());
        }
        let text = std::fs::read_to_string(dir.join(format!("round-{round}.json")))
            .map_err(|_| format!("no record yet\n{}", agents[0].log_tail()))?;
        serde_json::from_str(&text).map_err(|e| e.to_string())
    })
}

/// The first log event of `agent` with this message, as JSON (the agents log flattened JSON).
fn logged(agent: &Agent, message: &str) -> Option<Value> {
    std::fs::read_to_string(&agent.log)
        .ok()?
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["message"] == message)
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make netns`"]
fn agents_learn_to_tell_faulty_link_windows_from_their_own_telemetry() {
    require_netns();
    let scratch = scratch(MESH);
    let ring = Ring::create("x0lt", "x0lt", NODES);
    let authority = scratch.authority("authority");
    // The datapath on (the faults, and the packet rates).
    let config = ebpf_config(&scratch, MESH);
    let names: Vec<String> = (0..NODES).map(name).collect();
    let nodes: Vec<NodeFiles> = names.iter().map(|n| scratch.node(&authority, MESH, n)).collect();
    let job_file = scratch.dir.join("job.yaml");
    let results = scratch.dir.join("results");
    let (job_arg, results_arg) = (
        job_file.to_str().unwrap().to_owned(),
        results.to_str().unwrap().to_owned(),
    );
    let extra = ["--fl-job", &job_arg, "--fl-results", &results_arg];
    let agents: Vec<Agent> = (0..NODES)
        .map(|i| ring.start_agent(&scratch, i, &nodes[i], &config, &extra))
        .collect();
    for (i, agent) in agents.iter().enumerate() {
        wait_for(
            &format!("{} to see both neighbours", agent.name),
            DEADLINE,
            POLL,
            || {
                let status = agent
                    .status()
                    .ok_or_else(|| format!("no status: {}", agent.log_tail()))?;
                let alive = alive_neighbours(&status);
                (alive.len() == NODES - 1)
                    .then_some(())
                    .ok_or(format!("node-{i} sees {alive:?}"))
            },
        );
    }

    // 1. Clean recording.
    let started = Instant::now();
    wait_for(
        "clean recording with both of node-0's links up",
        CLEAN_BEFORE + DEADLINE,
        POLL,
        || {
            let status = agents[0].status().ok_or("no status")?;
            (started.elapsed() >= CLEAN_BEFORE && alive_neighbours(&status).len() == NODES - 1)
                .then_some(())
                .ok_or(format!("{:.0} s recorded", started.elapsed().as_secs_f64()))
        },
    );

    // 2. 30% loss on node-0 <-> node-1, in both ends' fault maps, expiring by itself.
    for (here, there) in [(0, 1), (1, 0)] {
        fault_api(
            &ring.namespaces[here],
            "POST",
            &format!(
                "/chaos/faults?peer={}&action=loss&percent={}&seconds={FAULT_SECONDS}",
                ring.own(there),
                (DROP * 100.0).round()
            ),
        )
        .expect("inject the loss");
    }
    let injected = Instant::now();
    // While the faults last: node-0's highest cost to node-1, and how often it was not live.
    let (mut raised, mut polls, mut down) = (0u64, 0u32, 0u32);
    let expired = wait_for(
        "both faults to expire",
        Duration::from_secs(FAULT_SECONDS) + DEADLINE,
        POLL,
        || {
            if let Some(status) = agents[0].status() {
                polls += 1;
                match cost(&status, &name(1)) {
                    Some(now) => raised = raised.max(now),
                    None => down += 1,
                }
            }
            for here in [0, 1] {
                let shown: Value =
                    serde_json::from_str(&fault_api(&ring.namespaces[here], "GET", "/datapath")?)
                        .map_err(|e| e.to_string())?;
                if shown["faults"] != serde_json::json!([]) {
                    return Err(format!("node-{here} faults {}", shown["faults"]));
                }
            }
            Ok(injected.elapsed())
        },
    );
    // A clean link costs 256 plus a little RTT; the fault's retransmissions add to the RTT.
    assert!(
        raised >= 320,
        "the fault did not slow the link: highest cost {raised}"
    );

    // 3. Clean recording again, once the link has recovered.
    let recovered_at = Instant::now();
    wait_for(
        "clean recording after the fault",
        CLEAN_AFTER + DEADLINE,
        POLL,
        || {
            let status = agents[0].status().ok_or("no status")?;
            let now = cost(&status, &name(1)).ok_or("node-1 is not alive")?;
            (recovered_at.elapsed() >= CLEAN_AFTER && now < 512)
                .then_some(())
                .ok_or(format!(
                    "cost {now}, {:.0} s",
                    recovered_at.elapsed().as_secs_f64()
                ))
        },
    );
    let recorded_for = started.elapsed();

    // 4. The job: each agent trains on its own windows; node-0 scores on its held-out ones.
    std::fs::write(&job_file, job_yaml(&names)).unwrap();
    let records: Vec<RoundRecord> = (1..=ROUNDS)
        .map(|round| wait_record(&results, round, &agents))
        .collect();
    for record in &records {
        assert_eq!(record.accepted, names, "every participant trained: {record:?}");
    }
    let held_out = logged(&agents[0], "evaluating on this agent's held-out link telemetry")
        .expect("the aggregator logs its held-out windows");
    let (windows, faulty) = (
        held_out["windows"].as_u64().unwrap(),
        held_out["faulty"].as_u64().unwrap(),
    );
    let baseline = 100.0 * faulty.max(windows - faulty) as f64 / windows as f64;
    let training: Vec<String> = agents
        .iter()
        .map(|agent| {
            let event = logged(agent, "training on this agent's link telemetry").expect("training logged");
            format!(
                "{}: {} windows, {} faulty",
                agent.name, event["windows"], event["faulty"]
            )
        })
        .collect();
    let accuracy: Vec<f64> = records.iter().map(|r| r.accuracy.parse().unwrap()).collect();
    let last = *accuracy.last().unwrap();
    println!(
        "\n== linkTelemetry in a ring of {NODES} agents (198.18.{}.0/24) ==",
        ring.tag
    );
    println!(
        "recorded {:.0} s: {:.0} s clean, {:.0}% loss at each end of node-0 <-> node-1 for {FAULT_SECONDS} s \
         (cost to node-1 up to {raised}, not live at {down} of {polls} polls; faults gone after {:.0} s), then clean",
        recorded_for.as_secs_f64(),
        CLEAN_BEFORE.as_secs_f64(),
        DROP * 100.0,
        expired.as_secs_f64()
    );
    println!("round 1 training sets: {}", training.join("; "));
    println!("node-0 held out {windows} windows ({faulty} faulty): majority baseline {baseline:.1}%");
    println!(
        "accuracy per round on them: {accuracy:?}; loss per round: {:?}",
        records.iter().map(|r| r.loss.clone()).collect::<Vec<_>>()
    );
    assert!(
        faulty > 0 && faulty < windows,
        "both classes held out: {faulty} of {windows}"
    );
    // Records carry one decimal: the baseline is compared at that precision.
    assert!(
        last > (baseline * 10.0).round() / 10.0,
        "the model ({last}%) beats always answering the commoner label ({baseline:.1}%)"
    );
}
