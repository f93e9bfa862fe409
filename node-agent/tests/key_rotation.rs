//! Key rotation under traffic loses no session (security test of the node-agent issue).
//! Three agents in a line a–b–c rotate their node keys every 4 s while a pings c across b
//! without pause; this test plays the authority's part (`endorse`, as the operator does in a
//! cluster) for each new key it sees. Every agent goes through two rotations; afterwards
//! every session is the one it started with, no ping was lost, and no advertisement was
//! refused for an unknown key.
mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::identity::spiffe_id;
use common::{
    Admin, NodeFiles, TestConfig, counter, get, metric_sum, ping, routes, scratch, start_on_loopback,
    wait_for,
};
use serde_json::Value;

/// This file's number in the loopback addresses.
const TEST: u8 = 8;

const DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

/// Endorses a node's current public key as `epoch`, replacing its endorsement file at once
/// (written aside, then renamed, so the agent never reads half a file).
fn endorse(admin: &Admin, authority: &Path, node: &NodeFiles, spiffe_id: &str, epoch: u32) {
    let aside = node.endorsement.with_extension("next");
    admin.endorse(
        authority,
        &node.state_dir.join("node.pub"),
        spiffe_id,
        epoch,
        &aside,
    );
    std::fs::rename(&aside, &node.endorsement).unwrap();
}

/// The key and endorsement expiry timestamps on an agent's /metrics.
fn expiries(metrics: std::net::SocketAddr) -> (f64, f64) {
    let (_, body) = get(metrics, "/metrics").expect("/metrics answers");
    (
        metric_sum(&body, "x0_agent_key_expiry_timestamp_seconds"),
        metric_sum(&body, "x0_agent_endorsement_expiry_timestamp_seconds"),
    )
}

/// Each neighbour's session start, by name.
fn sessions(status: &Value) -> Vec<(String, u64)> {
    let mut sessions: Vec<(String, u64)> = status["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["node_name"].as_str().unwrap_or("?").to_owned(),
                n["session_since_unix_us"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    sessions.sort();
    sessions
}

/// Post-quantum sessions established so far, both directions.
fn established(status: &Value) -> f64 {
    ["inbound", "outbound"]
        .iter()
        .map(|direction| {
            counter(
                status,
                "x0_agent_sessions_established_total",
                &format!("direction={direction},key_exchange=X25519MLKEM768"),
            )
        })
        .sum()
}

#[test]
fn key_rotation_under_traffic_loses_no_session() {
    let scratch = scratch("rotation");
    let authority = scratch.authority("authority");
    let config = scratch.write_config(
        &TestConfig::new("rotation").key_rotation(Duration::from_secs(4), Duration::from_secs(2)),
    );
    let names = ["a", "b", "c"];
    let nodes: Vec<NodeFiles> = names
        .iter()
        .map(|name| scratch.node(&authority, "rotation", name))
        .collect();
    // A line: a dials b, b dials c.
    let peers: [&[usize]; 3] = [&[1], &[2], &[]];
    let agents = start_on_loopback(&scratch, TEST, &nodes, &config, &peers, |_| Vec::new());

    wait_for("a to route to c through b", DEADLINE, POLL, || {
        let a = agents[0].status().ok_or("no status yet")?;
        let b = agents[1].status().ok_or("no status yet")?;
        let c = agents[2].status().ok_or("no status yet")?;
        let ready = routes(&a).contains(&("c".to_owned(), "b".to_owned(), 2))
            && routes(&c).contains(&("a".to_owned(), "b".to_owned(), 2))
            && sessions(&b).len() == 2;
        ready.then_some(()).ok_or_else(|| format!("a: {:?}", routes(&a)))
    });
    let before: Vec<Vec<(String, u64)>> = agents.iter().map(|a| sessions(&a.status().unwrap())).collect();
    let established_before: Vec<f64> = agents.iter().map(|a| established(&a.status().unwrap())).collect();
    let expiries_before = expiries(agents[1].metrics);

    // Traffic: a pings c in bursts until the rotations are over.
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, answered) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let pinger = {
        let (stop, sent, answered) = (Arc::clone(&stop), Arc::clone(&sent), Arc::clone(&answered));
        let from = agents[0].metrics;
        std::thread::spawn(move || {
            // Bounded in count and in time; the stop flag ends it first.
            let started = std::time::Instant::now();
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) || started.elapsed() > 2 * DEADLINE {
                    break;
                }
                sent.fetch_add(5, Ordering::Relaxed);
                answered.fetch_add(ping(from, "c", 5).len() as u64, Ordering::Relaxed);
            }
        })
    };

    // The authority's part: endorse each new key as the next epoch, until every agent has
    // rotated twice (epoch 3).
    let mut endorsed_epoch = [1u32; 3];
    let mut endorsed_key: Vec<Vec<u8>> = nodes
        .iter()
        .map(|n| std::fs::read(n.state_dir.join("node.pub")).unwrap())
        .collect();
    wait_for("every agent to rotate its key twice", DEADLINE, POLL, || {
        for (i, node) in nodes.iter().enumerate() {
            let key = std::fs::read(node.state_dir.join("node.pub")).unwrap_or_default();
            if !key.is_empty() && key != endorsed_key[i] {
                endorsed_epoch[i] += 1;
                endorse(
                    &scratch.admin,
                    &authority,
                    node,
                    &spiffe_id("rotation", names[i]),
                    endorsed_epoch[i],
                );
                endorsed_key[i] = key;
            }
        }
        let epochs: Vec<u64> = agents
            .iter()
            .map(|a| a.status().map_or(0, |s| s["key_epoch"].as_u64().unwrap_or(0)))
            .collect();
        epochs
            .iter()
            .all(|epoch| *epoch >= 3)
            .then_some(())
            .ok_or_else(|| format!("key epochs {epochs:?}"))
    });
    // Traffic goes on across the last switch: one more advertisement round at least.
    let settled_at = answered.load(Ordering::Relaxed);
    wait_for("pings after the last rotation", DEADLINE, POLL, || {
        (answered.load(Ordering::Relaxed) >= settled_at + 20)
            .then_some(())
            .ok_or("waiting for pings".to_owned())
    });
    stop.store(true, Ordering::Relaxed);
    pinger.join().unwrap();

    // b's key is due later with each rotation, and its endorsement ends later: both gauges
    // moved on with the key in use.
    let (key_after, endorsement_after) = expiries(agents[1].metrics);
    let (key_before, endorsement_before) = expiries_before;
    assert!(
        key_after > key_before && endorsement_after > endorsement_before && key_after <= endorsement_after,
        "b's key expiry {key_before} -> {key_after}, endorsement expiry {endorsement_before} -> {endorsement_after}"
    );

    let (sent, answered) = (sent.load(Ordering::Relaxed), answered.load(Ordering::Relaxed));
    eprintln!("rotation under traffic: {sent} pings sent, {answered} answered");
    assert!(sent >= 40, "traffic flowed throughout ({sent} pings)");
    assert_eq!(answered, sent, "no ping lost across the rotations");
    for (i, agent) in agents.iter().enumerate() {
        let status = agent.status().unwrap();
        assert_eq!(
            sessions(&status),
            before[i],
            "{}: every session is the one it started with",
            agent.name
        );
        assert_eq!(
            established(&status),
            established_before[i],
            "{}: no new session",
            agent.name
        );
        assert_eq!(
            counter(
                &status,
                "x0_agent_routing_rejections_total",
                "reason=unendorsed_key"
            ),
            0.0,
            "{}: every rotated key was known before it signed anything",
            agent.name
        );
        assert!(counter(&status, "x0_agent_key_rotations_total", "result=done") >= 2.0);
    }
    // The routes still carry the newest advertisements, signed with the rotated keys.
    let a = agents[0].status().unwrap();
    assert!(routes(&a).contains(&("c".to_owned(), "b".to_owned(), 2)));
}
