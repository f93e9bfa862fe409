//! The self-healing loop with real agents on loopback: in a diamond a–b–d / a–c–d, agent c
//! lies about its link costs (claims 1, below what any link can cost) so that a and d send
//! their traffic through it. Both detect the contradiction with what they measure themselves,
//! quarantine c, and route through b; c stays a measured neighbour. Security test of the
//! node-agent issue: "a peer that lies about its link metric is detected and quarantined".
mod common;

use std::time::Duration;

use common::{TestConfig, counter, ping, routes, scratch, start_on_loopback, wait_for};
use serde_json::Value;

/// This file's number in the loopback addresses.
const TEST: u8 = 7;

const DEADLINE: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(100);

fn next_hop_to(status: &Value, destination: &str) -> Option<String> {
    routes(status)
        .into_iter()
        .find(|(to, _, _)| to == destination)
        .map(|(_, via, _)| via)
}

fn quarantined(status: &Value) -> Vec<(String, bool, String)> {
    status["quarantined"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|q| {
                    (
                        q["node_name"].as_str().unwrap_or("?").to_owned(),
                        q["enforced"].as_bool().unwrap_or(false),
                        q["reason"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_peer_lying_about_its_link_cost_is_detected_quarantined_and_routed_around() {
    let scratch = scratch("healing");
    let authority = scratch.authority("authority");
    let config = scratch.write_config(&TestConfig::new("healing").self_healing(true));
    let names = ["a", "b", "c", "d"];
    let nodes: Vec<_> = names
        .iter()
        .map(|name| scratch.node(&authority, "healing", name))
        .collect();
    // a(0) – b(1) – d(3) and a(0) – c(2) – d(3); c misreports its link costs.
    let peers: [&[usize]; 4] = [&[1, 2], &[3], &[3], &[]];
    let agents = start_on_loopback(&scratch, TEST, &nodes, &config, &peers, |i| {
        if i == 2 {
            vec!["--test-fault", "falseMetric=1"]
        } else {
            Vec::new()
        }
    });
    let (a, d) = (&agents[0], &agents[3]);

    wait_for(
        "a and d to quarantine c and route through b",
        DEADLINE,
        POLL,
        || {
            let a_status = a.status().ok_or("a has no status yet")?;
            let d_status = d.status().ok_or("d has no status yet")?;
            let settled = quarantined(&a_status)
                .iter()
                .any(|(name, enforced, _)| name == "c" && *enforced)
                && quarantined(&d_status)
                    .iter()
                    .any(|(name, enforced, _)| name == "c" && *enforced)
                && next_hop_to(&a_status, "d").as_deref() == Some("b")
                && next_hop_to(&d_status, "a").as_deref() == Some("b");
            settled.then_some(()).ok_or_else(|| {
                format!(
                    "a: quarantined {:?} routes {:?}; d: quarantined {:?} routes {:?}",
                    quarantined(&a_status),
                    routes(&a_status),
                    quarantined(&d_status),
                    routes(&d_status)
                )
            })
        },
    );

    let a_status = a.status().unwrap();
    let (_, _, reason) = quarantined(&a_status)
        .into_iter()
        .find(|(name, _, _)| name == "c")
        .unwrap();
    // c claims 1% of what it measures, far below what a's own round trips to it cost: "claims
    // link cost {claimed}, below the {floor} its round trip alone costs (tolerance ...)".
    let number_after = |marker: &str| -> Option<u32> {
        let rest = reason.split(marker).nth(1)?;
        rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
    };
    let (claimed, floor) = number_after("claims link cost ")
        .zip(number_after("below the "))
        .unwrap_or_else(|| panic!("the reason names the lie: {reason}"));
    assert!(claimed * 20 < floor, "the reason names the lie: {reason}");
    assert!(counter(&a_status, "x0_agent_healing_findings_total", "kind=contradiction") >= 3.0);
    assert_eq!(
        counter(
            &a_status,
            "x0_agent_healing_actions_total",
            "action=quarantine,executed=true"
        ),
        1.0
    );
    let incidents = a_status["incidents"].as_array().unwrap();
    assert!(
        incidents
            .iter()
            .all(|i| i["finding"] != "contradiction" || i["node_name"] == "c"),
        "only the liar is accused: {incidents:?}"
    );
    // c is still a live, measured neighbour of a, just not used.
    let c_as_neighbour = a_status["neighbours"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node_name"] == "c")
        .expect("c is still a neighbour");
    assert_eq!(c_as_neighbour["alive"], true);
    assert_eq!(c_as_neighbour["quarantined"], true);
    // Traffic flows around the liar.
    let answered = ping(a.metrics, "d", 3);
    assert_eq!(answered.len(), 3, "pings across b answered: {answered:?}");
    // b never contradicts what a or d measure.
    let b_status = agents[1].status().unwrap();
    assert!(quarantined(&b_status).is_empty(), "{:?}", quarantined(&b_status));
}
