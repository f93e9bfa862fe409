//! Five agents in a ring of network namespaces joined by veth pairs (each link its own /30 in
//! 198.18.0.0/15): convergence, a ping across two hops, an agent killed with SIGKILL (time
//! until its neighbours declare it dead, time until every route avoids it, the ping now the
//! other way round), its restart and rejoin, and a cut link (hello-timeout detection).
//!
//! Needs root and `X0_NETNS_TESTS=1` (`make netns`); otherwise it is ignored (listed with that reason).
//! Every wait polls /status with a deadline; namespaces and agents are removed on exit, even
//! when an assertion fails.
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{
    Agent, Namespaces, NodeFiles, alive_neighbours, ip, management_veth, ping, require_netns, scratch,
    unix_micros, veth_link, wait_for,
};

const NODES: usize = 5;
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);

/// The namespaces and links of one run; removed on drop (deleting a namespace removes the
/// veth ends inside it, and so their peers).
struct Ring {
    tag: u32,
    namespaces: Namespaces,
}

impl Ring {
    /// Node `i`'s address on its link to node `i + 1` ("right") and to node `i - 1` ("left").
    fn right(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 4 * i + 1)
    }

    fn left(&self, i: usize) -> String {
        let previous = (i + NODES - 1) % NODES;
        format!("198.18.{}.{}", self.tag, 4 * previous + 2)
    }

    /// Where the test reaches node `i`'s /status: a management link into the namespace.
    fn management(&self, i: usize) -> SocketAddr {
        format!("198.19.{}.{}:9090", self.tag, 4 * i + 2).parse().unwrap()
    }

    fn create() -> Ring {
        let tag = std::process::id() % 250 + 1;
        let ring = Ring {
            tag,
            namespaces: Namespaces::create((0..NODES).map(|i| format!("x0ring{tag}n{i}")).collect()),
        };
        for i in 0..NODES {
            let next = (i + 1) % NODES;
            let (here, there) = (&ring.namespaces[i], &ring.namespaces[next]);
            veth_link(here, there, &ring.right(i), &ring.left(next));
            management_veth(
                &format!("x0r{tag}m{i}"),
                here,
                &format!("198.19.{tag}.{}", 4 * i + 1),
                &format!("198.19.{tag}.{}", 4 * i + 2),
            );
        }
        ring
    }

    fn set_link(&self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.namespaces[i], "link", "set", "right", state]);
    }
}

/// The statuses of the agents in `alive`, by index.
fn statuses(agents: &[Option<Agent>], alive: &[usize]) -> Result<BTreeMap<usize, Value>, String> {
    alive
        .iter()
        .map(|&i| {
            let agent = agents[i].as_ref().ok_or(format!("node-{i} is not running"))?;
            agent
                .status()
                .map(|s| (i, s))
                .ok_or(format!("node-{i} has no status"))
        })
        .collect()
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

fn index_of(name: &str) -> Option<usize> {
    name.strip_prefix("node-")?.parse().ok()
}

/// The next hop of `status` towards node `to`.
fn next_hop(status: &Value, to: usize) -> Option<usize> {
    status["routes"]
        .as_array()?
        .iter()
        .find(|route| route["destination_name"] == name(to))
        .and_then(|route| index_of(route["next_hop_name"].as_str()?))
}

/// Every agent of `alive` routes to every other along next hops that stay inside `alive`, do
/// not loop, and arrive.
fn all_routes_within(statuses: &BTreeMap<usize, Value>, alive: &[usize]) -> Result<(), String> {
    for &from in alive {
        for &to in alive {
            if from == to {
                continue;
            }
            let (mut at, mut path) = (from, vec![from]);
            while at != to {
                let hop =
                    next_hop(&statuses[&at], to).ok_or(format!("node-{at} has no route to node-{to}"))?;
                if !alive.contains(&hop) || path.contains(&hop) || path.len() > NODES {
                    return Err(format!("node-{from} -> node-{to} goes {path:?} then node-{hop}"));
                }
                path.push(hop);
                at = hop;
            }
        }
    }
    Ok(())
}

/// The wall-clock time at which `status` recorded losing neighbour `node_id` after `since`.
fn lost_at(status: &Value, node_id: &str, since: u64) -> Option<u64> {
    status["events"]
        .as_array()?
        .iter()
        .filter(|event| event["kind"] == "neighbour_lost" && event["node"] == node_id)
        .filter_map(|event| event["at_unix_us"].as_u64())
        .find(|at| *at >= since)
}

/// The latest next-hop change after `since` over every route of the given statuses.
fn last_route_change(statuses: &BTreeMap<usize, Value>, since: u64) -> Option<u64> {
    statuses
        .values()
        .flat_map(|status| status["routes"].as_array().cloned().unwrap_or_default())
        .filter_map(|route| route["since_unix_us"].as_u64())
        .filter(|at| *at >= since)
        .max()
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make netns`"]
fn a_ring_of_five_agents_converges_reroutes_around_a_killed_agent_and_rejoins() {
    require_netns();
    let scratch = scratch("ring");
    let ring = Ring::create();
    let authority = scratch.authority("authority");
    let config = scratch.config("ring", true);
    let nodes: Vec<NodeFiles> = (0..NODES)
        .map(|i| scratch.node(&authority, "ring", &name(i)))
        .collect();
    let start = |i: usize| {
        // Every other node's addresses: only the two physical neighbours are reachable.
        let peers = (0..NODES)
            .filter(|&j| j != i)
            .flat_map(|j| [ring.right(j), ring.left(j)])
            .map(|address| format!("{address}:7946"));
        let advertise = ring.right(i);
        scratch
            .agent(&nodes[i], &config)
            .in_netns(&ring.namespaces[i], &advertise, ring.management(i))
            .peers(peers)
            .start()
    };
    let everyone: Vec<usize> = (0..NODES).collect();
    let mut report = Vec::new();

    // 1. Convergence from a cold start.
    let started = Instant::now();
    let mut agents: Vec<Option<Agent>> = (0..NODES).map(|i| Some(start(i))).collect();
    let converged = wait_for("every agent to route to every other", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &everyone)?;
        all_routes_within(&statuses, &everyone).map(|()| statuses)
    });
    let convergence = started.elapsed();
    report.push(format!(
        "cold start: every agent routes to every other after {:.0} ms (processes started at once)",
        convergence.as_secs_f64() * 1000.0
    ));
    let node_ids: Vec<String> = (0..NODES)
        .map(|i| converged[&i]["node_id"].as_str().unwrap().to_owned())
        .collect();
    for status in converged.values() {
        assert_eq!(
            status["sessions"], 2,
            "two sessions each in a ring: {}",
            status["node_name"]
        );
        assert_eq!(status["post_quantum_sessions"], 2);
    }

    // Steady state before any fault: every agent's convergence episode has settled (no route
    // change for one originator interval), so the next episode is the fault's alone.
    wait_for("every agent's routes to settle", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &everyone)?;
        let unsettled: Vec<&usize> = statuses
            .iter()
            .filter(|(_, s)| s["last_convergence"]["settled"] != true)
            .map(|(i, _)| i)
            .collect();
        unsettled
            .is_empty()
            .then_some(())
            .ok_or(format!("unsettled: {unsettled:?}"))
    });

    // 2. A ping across two hops: node-1 -> node-0 -> node-4.
    // The first route found may be the long way round (3 hops via node-2); the two-hop one via
    // node-0 replaces it once both directions' adverts are in.
    wait_for("node-1 to route to node-4 via node-0", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &everyone)?;
        let hop = next_hop(&statuses[&1], 4);
        (hop == Some(0)).then_some(()).ok_or(format!("next hop {hop:?}"))
    });
    let before = ping(ring.management(1), &name(4), 5);
    assert_eq!(before.len(), 5, "pings answered: {before:?}");
    assert!(
        before.iter().all(|r| r["hops_there"] == 2 && r["hops_back"] == 2),
        "{before:?}"
    );
    let rtt = |results: &[Value]| {
        results.iter().filter_map(|r| r["rtt_ms"].as_f64()).sum::<f64>() / results.len().max(1) as f64
    };
    report.push(format!(
        "ping node-1 -> node-4: {} hops each way (via node-0), mean RTT {:.2} ms",
        before[0]["hops_there"],
        rtt(&before)
    ));

    // 3. SIGKILL node-0.
    let victim = 0;
    let survivors: Vec<usize> = (1..NODES).collect();
    let killed_at = unix_micros();
    agents[victim].as_mut().unwrap().kill();
    let detected = wait_for("node-1 and node-4 to declare node-0 dead", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &[1, 4])?;
        let times: Option<Vec<u64>> = statuses
            .values()
            .map(|s| lost_at(s, &node_ids[victim], killed_at))
            .collect();
        times.ok_or_else(|| "not yet".to_owned())
    });
    let detection: Vec<f64> = detected.iter().map(|at| ms(at - killed_at)).collect();
    report.push(format!(
        "SIGKILL node-0: its neighbours declared it dead after {:.1} ms (node-1) and {:.1} ms (node-4) (session closed by the kernel)",
        detection[0], detection[1]
    ));
    let rerouted = wait_for("every remaining route to avoid node-0", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &survivors)?;
        all_routes_within(&statuses, &survivors).map(|()| statuses)
    });
    let reroute_at = last_route_change(&rerouted, killed_at).expect("routes changed after the kill");
    report.push(format!(
        "every remaining agent's routes avoid node-0 {:.1} ms after the kill (last next-hop change, as the agents timed it)",
        ms(reroute_at - killed_at)
    ));
    for (i, status) in &rerouted {
        let episode = &status["last_convergence"];
        report.push(format!(
            "  node-{i} reports: {} route changes, the last {:.1} ms after its trigger ({} {})",
            episode["route_changes"],
            episode["duration_ms"].as_f64().unwrap_or(0.0),
            episode["trigger"]["kind"].as_str().unwrap_or("?"),
            episode["trigger"]["detail"].as_str().unwrap_or(""),
        ));
    }
    // Whether the survivors needed seqno requests depends on which side detected the kill
    // first (the dead agent's neighbours advertise at once when they lose it): reported, not
    // asserted.
    for (i, status) in &rerouted {
        let outcomes = &status["counters"]["x0_agent_seqno_requests_total"];
        report.push(format!("  node-{i} seqno requests since start: {outcomes}"));
    }
    let withdrawn = wait_for(
        "routes to node-0 to be withdrawn everywhere",
        DEADLINE,
        POLL,
        || {
            let statuses = statuses(&agents, &survivors)?;
            let holders: Vec<usize> = statuses
                .iter()
                .filter(|(_, s)| next_hop(s, victim).is_some())
                .map(|(i, _)| *i)
                .collect();
            holders
                .is_empty()
                .then(unix_micros)
                .ok_or(format!("still routing to node-0: {holders:?}"))
        },
    );
    report.push(format!(
        "routes to node-0 withdrawn everywhere within {:.1} ms (polled)",
        ms(withdrawn - killed_at)
    ));
    assert_eq!(
        next_hop(&rerouted[&1], 4),
        Some(2),
        "node-1 now reaches node-4 the other way round"
    );
    let after = ping(ring.management(1), &name(4), 5);
    assert_eq!(after.len(), 5, "pings answered after the kill: {after:?}");
    assert!(
        after.iter().all(|r| r["hops_there"] == 3 && r["hops_back"] == 3),
        "{after:?}"
    );
    report.push(format!(
        "ping node-1 -> node-4 now: {} hops each way (via node-2, node-3), mean RTT {:.2} ms",
        after[0]["hops_there"],
        rtt(&after)
    ));

    // 4. Restart node-0 with the same key: it rejoins.
    let restarted_at = Instant::now();
    agents[victim] = Some(start(victim));
    wait_for("node-0 to rejoin", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &everyone)?;
        all_routes_within(&statuses, &everyone)
    });
    report.push(format!(
        "node-0 restarted: every agent routes to every other again after {:.0} ms (from process start)",
        restarted_at.elapsed().as_secs_f64() * 1000.0
    ));
    wait_for(
        "node-1 to take the short way to node-4 again",
        DEADLINE,
        POLL,
        || {
            let statuses = statuses(&agents, &[1])?;
            (next_hop(&statuses[&1], 4) == Some(0))
                .then_some(())
                .ok_or_else(|| format!("next hop {:?}", next_hop(&statuses[&1], 4)))
        },
    );

    // 5. Cut the link node-2 -- node-3 (no FIN: only missed hellos tell).
    let cut_at = unix_micros();
    ring.set_link(2, false);
    let detected = wait_for(
        "node-2 and node-3 to declare each other dead",
        DEADLINE,
        POLL,
        || {
            let statuses = statuses(&agents, &[2, 3])?;
            match (
                lost_at(&statuses[&2], &node_ids[3], cut_at),
                lost_at(&statuses[&3], &node_ids[2], cut_at),
            ) {
                (Some(a), Some(b)) => Ok((a, b)),
                _ => Err("not yet".to_owned()),
            }
        },
    );
    report.push(format!(
        "link node-2 -- node-3 cut: declared dead after {:.0} ms (node-2) and {:.0} ms (node-3) (hello timeout 300 ms)",
        ms(detected.0 - cut_at),
        ms(detected.1 - cut_at)
    ));
    let rerouted = wait_for("routes around the cut link", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &everyone)?;
        all_routes_within(&statuses, &everyone)?;
        if next_hop(&statuses[&2], 3) == Some(3) || next_hop(&statuses[&3], 2) == Some(2) {
            return Err("still routing over the cut link".to_owned());
        }
        Ok(statuses)
    });
    let reroute_at = last_route_change(&rerouted, cut_at).expect("routes changed after the cut");
    report.push(format!(
        "  every route avoids the cut link {:.0} ms after the cut",
        ms(reroute_at - cut_at)
    ));
    for (i, status) in &rerouted {
        let outcomes = &status["counters"]["x0_agent_seqno_requests_total"];
        report.push(format!("    node-{i} seqno requests since start: {outcomes}"));
    }
    let relinked_at = Instant::now();
    ring.set_link(2, true);
    wait_for("node-2 and node-3 to be neighbours again", DEADLINE, POLL, || {
        let statuses = statuses(&agents, &[2, 3])?;
        (alive_neighbours(&statuses[&2]).contains(&name(3))
            && alive_neighbours(&statuses[&3]).contains(&name(2)))
        .then_some(())
        .ok_or_else(|| "not yet".to_owned())
    });
    report.push(format!(
        "  link restored: session re-established after {:.0} ms (dial backoff at most 2 s)",
        relinked_at.elapsed().as_secs_f64() * 1000.0
    ));

    // 6. Clean shutdown.
    for agent in agents.iter_mut().flatten() {
        assert!(
            agent.terminate(Duration::from_secs(5)),
            "{} stops cleanly on SIGTERM",
            agent.name
        );
    }
    println!("\n== netns ring (5 agents, 198.18.{}.0/24 links) ==", ring.tag);
    for line in &report {
        println!("{line}");
    }
    println!();
}
