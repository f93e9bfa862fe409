//! Three agents with the eBPF datapath on (`ebpfMode: tc`), in a ring of network namespaces
//! laid out like the demo's: each agent advertises an address on `lo` and reaches its two
//! neighbours over two different veths, so no single interface carries its mesh traffic. The
//! agents must pick both veths themselves (the routes to their peers), count each neighbour's
//! traffic there, and a 30% loss injected by hand through the fault endpoint must raise that
//! neighbour's link cost in /status; deleting the fault must bring it back down.
//!
//! Needs root and `X0_NETNS_TESTS=1` (`make netns`); otherwise it passes without running. The
//! fault endpoint listens on the namespace's loopback only, so it is reached with
//! `ip netns exec <ns> curl` (curl is needed, as by the demo). Every wait polls with a deadline.
mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::{Agent, AgentSpec, NodeFiles, Scratch, counter, get, ip, netns_enabled, wait_for};

const NODES: usize = 3;
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const FAULT_API: &str = "127.0.0.1:47190";

/// The namespaces of one run, removed on drop (with them the veths, and the filters on them).
///
/// Addresses (out of the way of netns_ring.rs, which uses .1-.22 of the same /24s):
/// node i's own address 198.18.<tag>.<240+i>/32 on `lo`; link i (node i "right" to node i+1
/// "left") 198.18.<tag>.<128+4i>/30; management 198.19.<tag>.<128+4i>/30 (host .1, node .2).
struct Ring {
    tag: u32,
    namespaces: Vec<String>,
}

impl Ring {
    fn own(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 240 + i)
    }

    fn right(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 128 + 4 * i + 1)
    }

    fn left_of_next(&self, i: usize) -> String {
        format!("198.18.{}.{}", self.tag, 128 + 4 * i + 2)
    }

    fn management(&self, i: usize) -> SocketAddr {
        format!("198.19.{}.{}:9090", self.tag, 128 + 4 * i + 2)
            .parse()
            .unwrap()
    }

    fn create() -> Ring {
        let tag = std::process::id() % 250 + 1;
        let namespaces: Vec<String> = (0..NODES).map(|i| format!("x0ebpf{tag}n{i}")).collect();
        for namespace in &namespaces {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
        let ring = Ring { tag, namespaces };
        for (i, namespace) in ring.namespaces.iter().enumerate() {
            ip(&["netns", "add", namespace]);
            ip(&["-n", namespace, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{}/32", ring.own(i)),
                "dev",
                "lo",
            ]);
            let host_end = format!("x0e{tag}m{i}");
            let _ = Command::new("ip").args(["link", "del", &host_end]).output();
            ip(&[
                "link", "add", &host_end, "type", "veth", "peer", "name", "mgmt", "netns", namespace,
            ]);
            let management = ring.management(i).ip().to_string();
            let host = format!("198.19.{tag}.{}", 128 + 4 * i + 1);
            ip(&["addr", "add", &format!("{host}/30"), "dev", &host_end]);
            ip(&[
                "-n",
                namespace,
                "addr",
                "add",
                &format!("{management}/30"),
                "dev",
                "mgmt",
            ]);
            ip(&["link", "set", &host_end, "up"]);
            ip(&["-n", namespace, "link", "set", "mgmt", "up"]);
        }
        for i in 0..NODES {
            let next = (i + 1) % NODES;
            let (here, there) = (&ring.namespaces[i], &ring.namespaces[next]);
            ip(&[
                "-n", here, "link", "add", "right", "type", "veth", "peer", "name", "left", "netns", there,
            ]);
            ip(&[
                "-n",
                here,
                "addr",
                "add",
                &format!("{}/30", ring.right(i)),
                "dev",
                "right",
            ]);
            ip(&[
                "-n",
                there,
                "addr",
                "add",
                &format!("{}/30", ring.left_of_next(i)),
                "dev",
                "left",
            ]);
            ip(&["-n", here, "link", "set", "right", "up"]);
            ip(&["-n", there, "link", "set", "left", "up"]);
            // One hop to the neighbour's own address, from our own: sessions run between the
            // advertised addresses, which live on `lo`, not on the veths they cross.
            let (own_here, own_there) = (ring.own(i), ring.own(next));
            ip(&[
                "-n",
                here,
                "route",
                "add",
                &format!("{own_there}/32"),
                "via",
                &ring.left_of_next(i),
                "dev",
                "right",
                "src",
                &own_here,
            ]);
            ip(&[
                "-n",
                there,
                "route",
                "add",
                &format!("{own_here}/32"),
                "via",
                &ring.right(i),
                "dev",
                "left",
                "src",
                &own_there,
            ]);
        }
        ring
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        for namespace in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", namespace]).output();
        }
    }
}

/// A request to the fault endpoint of the agent in `namespace` (loopback there only).
fn fault_api(namespace: &str, method: &str, path: &str) -> Result<String, String> {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "curl",
            "-sS",
            "--fail-with-body",
            "--max-time",
            "5",
        ])
        .args(["-X", method, &format!("http://{FAULT_API}{path}")])
        .output()
        .map_err(|error| format!("cannot run curl in {namespace}: {error}"))?;
    let body = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        Ok(body)
    } else {
        Err(format!(
            "{method} {path} in {namespace}: {body}{}",
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

/// A gauge's value from /metrics.
fn gauge(metrics: SocketAddr, name: &str) -> Option<f64> {
    let (200, body) = get(metrics, "/metrics")? else {
        return None;
    };
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Neighbour `name` of `status`, when alive.
fn neighbour<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["neighbours"]
        .as_array()?
        .iter()
        .find(|n| n["node_name"] == name && n["alive"] == true)
}

fn cost(status: &Value, name: &str) -> Option<u64> {
    neighbour(status, name)?["cost"].as_u64()
}

fn name(i: usize) -> String {
    format!("node-{i}")
}

#[test]
fn agents_count_each_neighbour_on_its_own_interface_and_injected_loss_raises_the_link_cost() {
    if !netns_enabled() {
        eprintln!("skipped: needs root and X0_NETNS_TESTS=1 (run `make netns`)");
        return;
    }
    let scratch = Scratch::new("ebpf");
    let ring = Ring::create();
    let authority = scratch.authority("authority");
    let config = scratch.config("ebpf", true);
    let text = std::fs::read_to_string(&config).expect("read the configuration");
    assert!(
        text.contains("ebpfMode: \"off\""),
        "the test configuration changed: {text}"
    );
    // A 300 ms silence timeout cannot outlast TCP's retransmissions under 30% loss (the
    // retransmission timer alone is at least 200 ms): the link would flap, each new session
    // starting from a perfect cost, instead of degrading. 1 s, as in the demo's MeshNetwork.
    let text = text
        .replace("ebpfMode: \"off\"", "ebpfMode: tc")
        .replace("neighbourTimeout: 300ms", "neighbourTimeout: 1s");
    std::fs::write(&config, text).expect("write the configuration");
    let nodes: Vec<NodeFiles> = (0..NODES)
        .map(|i| scratch.node(&authority, "ebpf", &name(i)))
        .collect();
    let agents: Vec<Agent> = (0..NODES)
        .map(|i| {
            let peers = (0..NODES)
                .filter(|&j| j != i)
                .map(|j| format!("{}:7946", ring.own(j)))
                .collect();
            let own = ring.own(i);
            Agent::start(&AgentSpec {
                node: &nodes[i],
                config: &config,
                listen: "0.0.0.0",
                metrics: ring.management(i),
                advertise: Some(&own),
                peers,
                // No --interface: the agent must find `left` and `right` from its peers' routes.
                extra: vec!["--fault-api", FAULT_API],
                netns: Some(&ring.namespaces[i]),
                log_dir: &scratch.dir,
            })
        })
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
                    let tx = counter(
                        &status,
                        "x0_agent_ebpf_packets_total",
                        &format!("direction=tx,peer={peer}"),
                    );
                    let rx = counter(
                        &status,
                        "x0_agent_ebpf_packets_total",
                        &format!("direction=rx,peer={peer}"),
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
        &format!("/datapath/faults?peer={faulty}&drop=0.3&seconds=120"),
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
                &format!("direction=tx,peer={faulty}"),
            ) + counter(
                &status,
                "x0_agent_ebpf_drops_total",
                &format!("direction=rx,peer={faulty}"),
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
        &format!("/datapath/faults?peer={faulty}"),
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
