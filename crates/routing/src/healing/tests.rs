use std::time::Duration;

use super::*;
use crate::testkit::*;
use crate::{Route, RouterConfig};

const SECOND: Duration = Duration::from_secs(1);

/// A diamond 1–2–4 / 1–3–4; node 3 lies (claims 44% of what it measures) if `liar`.
/// Every link has a 10 ms latency, so an honest link costs 256 + 16 × 20 ms RTT = 576, and the
/// liar claims 253, about one bare hop.
fn diamond(liar: bool) -> Net {
    let mut net = Net::new_with(4, &[(1, 2), (2, 4), (1, 3), (3, 4)], |i| RouterConfig {
        false_metric_percent: (liar && i == 3).then_some(44),
        ..mk_config()
    });
    net.latency = Duration::from_millis(10);
    net
}

fn healing(enabled: bool) -> SelfHealing {
    SelfHealing::new(
        HealingConfig {
            enabled,
            quarantine_duration: Duration::from_secs(20),
            ..HealingConfig::default()
        },
        Duration::ZERO,
    )
}

/// Runs the net and node 1's loop (each time it is due) until `until`.
fn run(net: &mut Net, loop_of_1: &mut SelfHealing, until: Duration) -> Vec<Incident> {
    let mut incidents = Vec::new();
    while net.now < until {
        let next = loop_of_1.next_due().min(until);
        net.run_until(next);
        if net.now >= loop_of_1.next_due() {
            let now = net.now;
            let cycle = loop_of_1.run(net.router(1), now);
            net.handle(mk_id(1), cycle.outputs);
            incidents.extend(cycle.incidents);
        }
    }
    incidents
}

fn route_to_4(net: &mut Net) -> Option<Route> {
    net.router(1).route(&mk_id(4))
}

#[test]
fn a_peer_that_lies_about_its_link_cost_is_detected_and_quarantined_and_traffic_leaves_it() {
    let mut net = diamond(true);
    let mut watch = healing(true);
    net.run_until(3 * SECOND);
    // The lie works: node 3 looks like the cheaper way to 4.
    assert_eq!(route_to_4(&mut net).map(|r| r.next_hop), Some(mk_id(3)));

    let incidents = run(&mut net, &mut watch, 15 * SECOND);
    let contradictions: Vec<&Incident> = incidents
        .iter()
        .filter(|i| matches!(i.finding, Finding::Contradiction { .. }))
        .collect();
    assert!(contradictions.len() >= 3, "{incidents:#?}");
    assert!(
        contradictions.iter().all(|i| i.peer == mk_id(3)),
        "only the liar is accused"
    );
    let Finding::Contradiction { claimed, floor, .. } = contradictions[0].finding else {
        unreachable!()
    };
    assert!((560..=600).contains(&floor), "floor {floor}");
    assert!(
        (240..=270).contains(&claimed),
        "44% of the liar's own ~576: {claimed}"
    );
    let quarantines: Vec<&Incident> = incidents
        .iter()
        .filter(|i| matches!(i.action, Some(Action::Quarantine { .. })))
        .collect();
    assert_eq!(quarantines.len(), 1, "quarantined once, not on every run");
    assert!(quarantines[0].executed);
    assert_eq!(watch.knowledge().actions_total().get("quarantine"), Some(&1));

    // The liar is still a live, measured neighbour, but carries no route and is not advertised.
    let liar = net
        .router(1)
        .neighbours()
        .into_iter()
        .find(|n| n.peer == mk_id(3))
        .expect("still a neighbour");
    assert!(liar.alive && liar.quarantined);
    assert_eq!(route_to_4(&mut net).map(|r| r.next_hop), Some(mk_id(2)));
    assert_eq!(net.router(1).route(&mk_id(3)).map(|r| r.next_hop), Some(mk_id(2)));
    let quarantined: Vec<NodeId> = watch.quarantined().map(|q| q.peer).collect();
    assert_eq!(quarantined, vec![mk_id(3)]);
}

#[test]
fn honest_peers_on_the_same_links_are_never_accused() {
    let mut net = diamond(false);
    let mut watch = healing(true);
    let incidents = run(&mut net, &mut watch, 20 * SECOND);
    assert_nobody_accused(&incidents, &watch);
}

fn assert_nobody_accused(incidents: &[Incident], watch: &SelfHealing) {
    assert!(
        incidents
            .iter()
            .all(|i| !matches!(i.finding, Finding::Contradiction { .. })),
        "{incidents:#?}"
    );
    assert_eq!(watch.quarantined().count(), 0);
}

#[test]
fn honest_peers_are_not_accused_when_retransmissions_swell_their_round_trips() {
    // One frame in eleven held 400 ms, as TCP's retransmission timer holds one under loss: each
    // end's smoothed RTT swells at its own moments, but the path's least round trip does not.
    let mut net = diamond(false);
    net.straggler = Some((11, 400 * MS));
    let mut watch = healing(true);
    let incidents = run(&mut net, &mut watch, 30 * SECOND);
    assert_nobody_accused(&incidents, &watch);
}

#[test]
fn report_only_mode_records_the_quarantine_without_enforcing_it() {
    let mut net = diamond(true);
    let mut watch = healing(false);
    let incidents = run(&mut net, &mut watch, 15 * SECOND);
    let quarantine = incidents
        .iter()
        .find(|i| matches!(i.action, Some(Action::Quarantine { .. })))
        .expect("planned");
    assert!(!quarantine.executed);
    assert!(watch.quarantined().all(|q| !q.enforced));
    assert_eq!(route_to_4(&mut net).map(|r| r.next_hop), Some(mk_id(3)));
    assert!(watch.knowledge().actions_total().is_empty());
}

#[test]
fn a_quarantine_ends_after_its_duration_and_a_liar_still_lying_is_caught_again() {
    let mut net = diamond(true);
    let mut watch = healing(true);
    let incidents = run(&mut net, &mut watch, 45 * SECOND);
    let kinds: Vec<&str> = incidents
        .iter()
        .filter_map(|i| i.action.as_ref().map(Action::kind))
        .filter(|kind| *kind != "reroute")
        .collect();
    assert_eq!(
        kinds,
        vec!["quarantine", "release", "quarantine"],
        "{incidents:#?}"
    );
}

#[test]
fn a_link_that_degrades_is_found_and_routes_are_reselected() {
    let mut net = diamond(false);
    net.latency = Duration::from_millis(2);
    let mut watch = healing(true);
    let before = run(&mut net, &mut watch, 10 * SECOND);
    assert!(before.is_empty(), "{before:#?}");
    // Every link slows down from 4 ms to 60 ms of RTT: past its own history and the ceiling.
    net.latency = Duration::from_millis(30);
    let after = run(&mut net, &mut watch, 15 * SECOND);
    let degraded: Vec<&Incident> = after
        .iter()
        .filter(|i| matches!(i.finding, Finding::Degraded { .. }))
        .collect();
    assert_eq!(
        degraded.len(),
        2,
        "each link reported once while it stays degraded: {after:#?}"
    );
    assert!(
        degraded
            .iter()
            .all(|i| i.action == Some(Action::Reroute) && i.executed)
    );
    let Finding::Degraded { cost, limit, .. } = degraded[0].finding else {
        unreachable!()
    };
    assert!(cost > limit);
}
