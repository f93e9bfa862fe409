//! Three agents with the eBPF datapath on (`ebpfMode: tc`), in a ring of network namespaces
//! laid out like the demo's: each agent advertises an address on `lo` and reaches its two
//! neighbours over two different veths, so no single interface carries its mesh traffic. The
//! agents must pick both veths themselves (the routes to their peers), count each neighbour's
//! traffic there, and a 30% loss injected by hand through the fault endpoint must raise that
//! neighbour's link cost in /status; deleting the fault must bring it back down.
//!
//! Needs root and `X0_NETNS_TESTS=1` (`make netns`); otherwise it is ignored (listed with that reason). The
//! fault endpoint listens on the namespace's loopback only, so it is reached with
//! `ip netns exec <ns> curl` (curl is needed, as by the demo). Every wait polls with a deadline.
mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::ebpf_ring::{Ring, ebpf_config, fault_api};
use common::{Agent, NodeFiles, counter, get, neighbour_cost as cost, require_netns, scratch, wait_for};

const NODES: usize = 3;
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// A gauge's value from /metrics.
fn gauge(metrics: SocketAddr, name: &str) -> Option<f64> {
    let (200, body) = get(metrics, "/metrics")? else {
        return None;
    };
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

#[test]
#[ignore = "needs root and X0_NETNS_TESTS=1: run with `make netns`"]
fn agents_count_each_neighbour_on_its_own_interface_and_injected_loss_raises_the_link_cost() {
    require_netns();
    let scratch = scratch("ebpf");
    let ring = Ring::create("x0ebpf", "x0e", NODES);
    let authority = scratch.authority("authority");
    let config = ebpf_config(&scratch, "ebpf");
    let nodes: Vec<NodeFiles> = (0..NODES)
        .map(|i| scratch.node(&authority, "ebpf", &name(i)))
        .collect();
    let agents: Vec<Agent> = (0..NODES)
        .map(|i| ring.start_agent(&scratch, i, &nodes[i], &config, &[]))
        .collect();
    let mut report = Vec::new();

    // 1. Every agent counts both neighbours' mesh traffic, both ways, on both veths.
    let counted = wait_for(
        "every agent to count both neighbours' traffic with eBPF",
        DEADLINE,
        POLL,
        || {
            let mut counted = Vec::new();
            for (i, agent) in agents.iter().enumerate() {
                let status = agent
                    .status()
                    .ok_or_else(|| format!("node-{i} has no status: {}", agent.log_tail()))?;
                for j in (0..NODES).filter(|&j| j != i) {
                    let peer = ring.own(j);
                    // Labelled with the neighbour's address and node name (peer_node).
                    let tx = counter(
                        &status,
                        "x0_agent_ebpf_packets_total",
                        &format!("direction=tx,peer={peer},peer_node={}", name(j)),
                    );
                    let rx = counter(
                        &status,
                        "x0_agent_ebpf_packets_total",
                        &format!("direction=rx,peer={peer},peer_node={}", name(j)),
                    );
                    if tx < 1.0 || rx < 1.0 {
                        return Err(format!(
                            "node-{i} counted {tx} to and {rx} from node-{j} ({peer})"
                        ));
                    }
                    counted.push(format!("node-{i} <-> node-{j}: {tx} tx, {rx} rx"));
                }
            }
            Ok(counted)
        },
    );
    report.push(format!("eBPF counters per neighbour: {}", counted.join("; ")));
    for (i, agent) in agents.iter().enumerate() {
        assert_eq!(
            gauge(agent.metrics, "x0_agent_ebpf_interfaces"),
            Some(2.0),
            "node-{i} attached to exactly its two ring links (not lo, not mgmt)"
        );
    }
    let shown: Value =
        serde_json::from_str(&fault_api(&ring.namespaces[0], "GET", "/datapath").unwrap()).unwrap();
    assert_eq!(
        shown["interfaces"],
        serde_json::json!(["left", "right"]),
        "{shown}"
    );
    report.push("node-0 attached its classifiers to left and right, found from its peers' routes".to_owned());

    // 2. The cost before the fault: node-0's link to node-1 once it has settled (the RTT part
    //    of the cost wobbles, more while the agents start): two seconds of readings all below
    //    two hops' cost, and the highest of them.
    const SETTLED: usize = 20;
    let (faulty, faulty_name, healthy_name) = (ring.own(1), name(1), name(2));
    let mut readings: Vec<(u64, u64)> = Vec::new();
    let settled = wait_for("node-0's link costs to settle", DEADLINE, POLL, || {
        let status = agents[0].status().ok_or("no status")?;
        match (cost(&status, &faulty_name), cost(&status, &healthy_name)) {
            (Some(to_faulty), Some(to_healthy)) if to_faulty < 512 => readings.push((to_faulty, to_healthy)),
            other => {
                readings.clear();
                return Err(format!("costs {other:?}"));
            }
        }
        let window = &readings[readings.len().saturating_sub(SETTLED)..];
        (window.len() == SETTLED)
            .then(|| window.to_vec())
            .ok_or("not two seconds yet".to_owned())
    });
    let before = settled.iter().map(|r| r.0).max().unwrap();
    let healthy_before = settled.iter().map(|r| r.1).max().unwrap();

    // 3. 30% loss both ways on node-0's link to node-1, by hand, through node-0's fault map.
    fault_api(
        &ring.namespaces[0],
        "POST",
        &format!("/chaos/faults?peer={faulty}&action=loss&percent=30&seconds=120"),
    )
    .expect("inject the loss");
    let threshold = before + 256;
    let (raised, drops) = wait_for(
        "node-0's cost to node-1 to rise by a hop or more, with packets dropped by eBPF",
        DEADLINE,
        POLL,
        || {
            let status = agents[0].status().ok_or("no status")?;
            let now = cost(&status, &faulty_name).ok_or("node-1 is not an alive neighbour now")?;
            let drops = counter(
                &status,
                "x0_agent_ebpf_drops_total",
                &format!("direction=tx,peer={faulty},peer_node={faulty_name}"),
            ) + counter(
                &status,
                "x0_agent_ebpf_drops_total",
                &format!("direction=rx,peer={faulty},peer_node={faulty_name}"),
            );
            (now >= threshold && drops > 0.0)
                .then_some((now, drops))
                .ok_or(format!("cost {now} (before {before}), {drops} packets dropped"))
        },
    );
    let healthy_during = cost(&agents[0].status().unwrap(), &healthy_name);
    report.push(format!(
        "30% loss towards node-1 injected on node-0: cost {before} -> {raised} ({drops} packets dropped by eBPF); \
         the link to node-2 stays at {healthy_during:?} (was {healthy_before})"
    ));

    // 4. The fault deleted: the cost comes back down.
    fault_api(
        &ring.namespaces[0],
        "DELETE",
        &format!("/chaos/faults?peer={faulty}"),
    )
    .expect("delete the fault");
    let shown: Value =
        serde_json::from_str(&fault_api(&ring.namespaces[0], "GET", "/datapath").unwrap()).unwrap();
    assert_eq!(shown["faults"], serde_json::json!([]), "{shown}");
    let deleted_at = std::time::Instant::now();
    let recovered = wait_for(
        "node-0's cost to node-1 to come back down to within half a hop of before",
        DEADLINE,
        POLL,
        || {
            let status = agents[0].status().ok_or("no status")?;
            let now = cost(&status, &faulty_name).ok_or("node-1 is not an alive neighbour now")?;
            (now <= before + 128)
                .then_some(now)
                .ok_or(format!("cost {now} (before {before})"))
        },
    );
    report.push(format!(
        "fault deleted: cost {raised} -> {recovered} after {:.1} s",
        deleted_at.elapsed().as_secs_f64()
    ));

    // 5. Clean shutdown detaches: no filter of ours is left on any veth.
    for mut agent in agents {
        assert!(
            agent.terminate(Duration::from_secs(5)),
            "{} stops cleanly",
            agent.name
        );
    }
    for (namespace, dev) in ring
        .namespaces
        .iter()
        .flat_map(|ns| [(ns, "left"), (ns, "right")])
    {
        let output = Command::new("ip")
            .args([
                "netns", "exec", namespace, "tc", "filter", "show", "dev", dev, "ingress",
            ])
            .output()
            .expect("run tc");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            !text.contains("x0_mesh_"),
            "{namespace} {dev} keeps a filter: {text}"
        );
    }
    println!(
        "\n== eBPF in a ring of {NODES} agents (198.18.{}.0/24) ==",
        ring.tag
    );
    for line in &report {
        println!("{line}");
    }
    println!();
}
