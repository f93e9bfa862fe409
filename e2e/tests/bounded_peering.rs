//! Bounded peering with real agents and the real API server: ten agents of a mesh whose
//! `spec.routing.peering` is one ring neighbour a side and one long link on average. Each
//! agent keeps sessions with exactly the peers the rule gives it (computed here from the same
//! typed rule, `x0tta6bl4_api::peering`), never the whole mesh, and still routes to every
//! other agent over several hops; when one agent dies, the others route around it.
#![cfg(feature = "e2e")]

use std::collections::BTreeSet;
use std::time::Duration;

use kube::api::{Api, PostParams};
use x0tta6bl4_api::MeshNetwork;
use x0tta6bl4_api::peering::{Peering, reach_from, summarise};
use x0tta6bl4_e2e::*;

const MESH: &str = "peer10";
const NODES: usize = 10;
const NODE_LABEL: &str = "x0tta6bl4.io/e2e-peering";
const SUBNET: &str = "127.0.5";
const TIMEOUT: Duration = Duration::from_secs(120);
const RULE: Peering = Peering {
    near_peers: 1,
    long_links: 1,
};

fn node_name(i: usize) -> String {
    format!("x0-peer-{i}")
}

fn mesh() -> MeshNetwork {
    fake_node_mesh(
        MESH,
        NODE_LABEL,
        serde_json::json!({"peering": {"nearPeers": RULE.near_peers, "longLinks": RULE.long_links}}),
    )
}

/// Each agent's live neighbours by node name, and its longest route in hops.
async fn views(ips: &[String]) -> Vec<Option<(BTreeSet<String>, u64)>> {
    let mut views = Vec::new();
    for ip in ips {
        views.push(agent_status(ip).await.map(|status| {
            let neighbours = status["neighbours"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|n| n["alive"].as_bool() == Some(true))
                .filter_map(|n| n["node_name"].as_str().map(str::to_owned))
                .collect();
            let longest = status["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["hop_count"].as_u64())
                .max()
                .unwrap_or(0);
            (neighbours, longest)
        }));
    }
    views
}

#[tokio::test]
async fn ten_agents_keep_only_their_rule_peers_and_route_to_everyone_around_a_dead_one() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "e2e-peering").await;
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    let _nodes = FakeNodes::create(NODE_LABEL, "peering", "10.3.0", &names, |_| Vec::new());
    let operator = Operator::start("peering", "x0-e2e-peering").await.unwrap();
    operator.wait_ready(TIMEOUT).await;
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &ns.name);
    meshes.create(&PostParams::default(), &mesh()).await.unwrap();
    let DemoAgents { mut agents, ips, .. } =
        start_mesh_agents(&client, &ns.name, MESH, NODES as i32, SUBNET, TIMEOUT, |_| {
            Vec::new()
        })
        .await;
    assert_eq!(agents.iter().map(|a| a.node.clone()).collect::<Vec<_>>(), names);
    let members: Vec<&str> = names.iter().map(String::as_str).collect();
    let graph = RULE.graph(&members);
    let expected: Vec<BTreeSet<String>> = graph
        .iter()
        .map(|peers| peers.iter().map(|&j| names[j].clone()).collect())
        .collect();
    let (reached, _) = reach_from(&graph, 0);
    assert_eq!(reached, NODES, "the rule's graph is connected: {expected:?}");
    assert!(
        expected.iter().all(|peers| peers.len() < NODES - 1),
        "a bounded set, not a full mesh: {expected:?}"
    );

    // Each agent: exactly its rule peers as neighbours, and a route to every other agent.
    let settled = wait_until(
        "every agent has exactly its rule peers and routes to the other 9",
        TIMEOUT,
        || async { (views(&ips).await, route_counts(&ips).await) },
        |(views, routes)| {
            views
                .iter()
                .zip(&expected)
                .all(|(view, want)| view.as_ref().is_some_and(|(have, _)| have == want))
                && routes.iter().all(|r| *r == Some(NODES - 1))
        },
    )
    .await;
    let sessions: usize = expected.iter().map(BTreeSet::len).sum();
    let longest = settled
        .0
        .iter()
        .flatten()
        .map(|(_, hops)| *hops)
        .max()
        .unwrap_or(0);
    println!(
        "{NODES} agents, {} sessions (a full mesh has {}), longest route {longest} hops; peers: {expected:?}",
        sessions / 2,
        NODES * (NODES - 1) / 2
    );
    assert!(longest >= 2, "routes go over several hops: {settled:?}");
    for ip in &ips {
        let body = http_request(ip, AGENT_STATUS_PORT, "GET", "/metrics")
            .await
            .unwrap();
        let wanted = metric_sum(&body, "x0_agent_peers_wanted");
        assert!(
            wanted >= 2.0 && wanted < (NODES - 1) as f64,
            "{ip}: x0_agent_peers_wanted {wanted}"
        );
    }

    // The operator reports the same graph, and every wanted session up.
    let shape = summarise(&graph);
    let reported = wait_until(
        "the mesh's status to show the peering graph with every wanted session up",
        TIMEOUT,
        || async {
            meshes
                .get_status(MESH)
                .await
                .ok()
                .and_then(|mesh| mesh.status)
                .and_then(|status| status.peering)
        },
        |peering| {
            peering.as_ref().is_some_and(|p| {
                p.members == NODES as i32
                    && p.wanted_sessions == shape.links as i32
                    && p.sessions == p.wanted_sessions
            })
        },
    )
    .await
    .unwrap();
    assert!(reported.connected);
    assert_eq!(reported.diameter_hops, shape.diameter.map(|hops| hops as i32));
    assert_eq!(
        (reported.min_peers, reported.max_peers),
        (shape.min_peers as i32, shape.max_peers as i32)
    );
    println!(
        "MeshNetwork status.peering: {} sessions up of {} wanted, connected, {} hops across",
        reported.sessions,
        reported.wanted_sessions,
        reported.diameter_hops.unwrap_or(-1)
    );

    // The agent with the most peers dies: the others route around it.
    let victim = (0..NODES).max_by_key(|&i| expected[i].len()).unwrap();
    agents[victim].kill();
    let survivors: Vec<String> = ips
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != victim)
        .map(|(_, ip)| ip.clone())
        .collect();
    let mut remaining = graph.clone();
    remaining[victim].clear();
    for peers in &mut remaining {
        peers.remove(&victim);
    }
    // The dead agent's record stays, so the others keep the rule's graph without it.
    let connected_without = reach_from(&remaining, (victim + 1) % NODES).0 == NODES - 1;
    // A ring without one member is a line: still connected.
    assert!(connected_without, "{remaining:?}");
    let routes = wait_until(
        &format!("the 9 survivors route to each other around {}", names[victim]),
        TIMEOUT,
        || async { route_counts(&survivors).await },
        |routes| routes.iter().all(|r| *r == Some(NODES - 2)),
    )
    .await;
    println!(
        "{} killed: every survivor routes to the other 8 ({routes:?})",
        names[victim]
    );
    drop(agents);
    ns.delete_and_wait().await;
}
