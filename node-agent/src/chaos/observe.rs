//! What this agent saw of a fault, from its own /status report and its own clock (pure).
//!
//! - Detection: the first event at or after the window opened that concerns a target: the
//!   target lost as a neighbour, a route withdrawn from it or moved off it as next hop, a
//!   forged or replayed advertisement it sent refused, its key revoked by the mesh authority,
//!   or a self-healing incident about it.
//! - Rejoin (keyRevocation, keyExpiry): the first session with a target after its key was
//!   revoked or ran out here, which the target can only have made with a new, endorsed key.
//! - Avoidance: how many untargeted agents this one reaches through an untargeted next hop.
//!   When every untargeted agent reaches every other one that way, following next hops from
//!   any of them never enters a target: every pair has a path that avoids the targets.
use std::collections::{BTreeMap, BTreeSet};

use crate::status::StatusReport;

/// The targets by their node IDs (full hex, as events and incidents name nodes).
pub type TargetIds = BTreeMap<String, String>;

/// How many leading hex digits of a node ID the route-change details carry.
const SHORT_ID: usize = 16;

/// The earliest detection at or after `since_us`: its time (Unix µs) and what it was.
pub fn detection(report: &StatusReport, targets: &TargetIds, since_us: u64) -> Option<(u64, String)> {
    detections(report, targets, since_us)
        .into_values()
        .min_by_key(|(at, _)| *at)
}

/// The earliest detection of each target at or after `since_us`, by target name.
pub fn detections(
    report: &StatusReport,
    targets: &TargetIds,
    since_us: u64,
) -> BTreeMap<String, (u64, String)> {
    let short: BTreeMap<String, &String> = targets
        .iter()
        .map(|(id, name)| (id.chars().take(SHORT_ID).collect(), name))
        .collect();
    let mut found: Vec<(&String, u64, String)> = Vec::new();
    for event in report.events.iter().filter(|e| e.at_unix_us >= since_us) {
        let node = event.node.as_deref().unwrap_or_default();
        match event.kind {
            "neighbour_lost" => {
                if let Some(name) = targets.get(node) {
                    let cause = event.detail.as_deref().unwrap_or("lost");
                    found.push((name, event.at_unix_us, format!("neighbour {name} lost ({cause})")));
                }
            }
            "route_changed" => {
                let detail = event.detail.as_deref().unwrap_or_default();
                let (old, new) = detail.split_once(" -> ").unwrap_or((detail, ""));
                if let Some(name) = targets.get(node)
                    && new == "none"
                {
                    found.push((name, event.at_unix_us, format!("route to {name} withdrawn")));
                } else if let Some(name) = short.get(old)
                    && new != old
                {
                    found.push((name, event.at_unix_us, format!("route moved off next hop {name}")));
                }
            }
            "key_revoked" | "key_expired" => {
                if let Some(name) = targets.get(node) {
                    let which = event.detail.as_deref().unwrap_or("its key");
                    let how = if event.kind == "key_revoked" {
                        "revoked"
                    } else {
                        "expired"
                    };
                    found.push((name, event.at_unix_us, format!("{name} {how} ({which})")));
                }
            }
            "advertisement_refused" => {
                if let Some(name) = targets.get(node) {
                    let why = event.detail.as_deref().unwrap_or("refused");
                    found.push((
                        name,
                        event.at_unix_us,
                        format!("advertisement from {name} refused ({why})"),
                    ));
                }
            }
            _ => {}
        }
    }
    for incident in report.incidents.iter().filter(|i| i.at_unix_us >= since_us) {
        if let Some(name) = targets.get(&incident.node_id) {
            found.push((
                name,
                incident.at_unix_us,
                format!("{} on the link to {name}", incident.finding),
            ));
        }
    }
    let mut earliest: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (name, at, what) in found {
        match earliest.get(name) {
            Some((held, _)) if *held <= at => {}
            _ => {
                earliest.insert(name.clone(), (at, what));
            }
        }
    }
    earliest
}

/// When this agent first had a session with a target again after it refused the target's key
/// (revoked or expired), at or after `since_us` (Unix µs); `None` before that, or where it
/// refused no target's key.
pub fn rejoined(report: &StatusReport, targets: &TargetIds, since_us: u64) -> Option<u64> {
    let mut revoked_at: BTreeMap<&str, u64> = BTreeMap::new();
    let mut events: Vec<_> = report
        .events
        .iter()
        .filter(|e| e.at_unix_us >= since_us)
        .collect();
    events.sort_by_key(|e| e.at_unix_us);
    for event in events {
        let Some(node) = event.node.as_deref().filter(|node| targets.contains_key(*node)) else {
            continue;
        };
        match event.kind {
            "key_revoked" | "key_expired" => {
                revoked_at.entry(node).or_insert(event.at_unix_us);
            }
            "session_up" | "session_replaced" if revoked_at.contains_key(node) => {
                return Some(event.at_unix_us);
            }
            _ => {}
        }
    }
    None
}

/// The nodes other than the targets that this agent accused of lying about their links (a
/// contradiction finding, which is what quarantines a peer) at or after `since_us`, by name
/// (or node ID where the name is unknown). An honest mesh accuses nobody but a liar.
pub fn accusations(report: &StatusReport, targets: &TargetIds, since_us: u64) -> BTreeSet<String> {
    report
        .incidents
        .iter()
        .filter(|incident| incident.at_unix_us >= since_us && incident.finding == "contradiction")
        .filter(|incident| !targets.contains_key(&incident.node_id))
        .map(|incident| {
            incident
                .node_name
                .clone()
                .unwrap_or_else(|| incident.node_id.clone())
        })
        .collect()
}

/// (untargeted agents reached through an untargeted next hop, untargeted agents other than
/// this one), among the `live` agents of the mesh.
pub fn reach(report: &StatusReport, live: &BTreeSet<String>, targets: &BTreeSet<String>) -> (usize, usize) {
    let peers: BTreeSet<&String> = live
        .iter()
        .filter(|name| !targets.contains(*name) && **name != report.node_name)
        .collect();
    let reached = report
        .routes
        .iter()
        .filter(|route| {
            let destination = route.destination_name.as_ref();
            let hop = route.next_hop_name.as_ref();
            destination.is_some_and(|d| peers.contains(d)) && hop.is_some_and(|h| !targets.contains(h))
        })
        .filter_map(|route| route.destination_name.as_ref())
        .collect::<BTreeSet<_>>()
        .len();
    (reached, peers.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convergence::Event;
    use crate::status::RouteReport;

    const T: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const D: &str = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd";

    fn mk_report(events: Vec<Event>, routes: Vec<(&str, &str)>) -> StatusReport {
        StatusReport {
            node_id: "self".into(),
            spiffe_id: String::new(),
            node_name: "node-0".into(),
            mesh: "demo".into(),
            namespace: "default".into(),
            endpoint: String::new(),
            require_post_quantum: true,
            key_epoch: 1,
            key_since_unix_us: 0,
            now_unix_us: 0,
            started_unix_us: 0,
            sessions: 0,
            post_quantum_sessions: 0,
            known_nodes: 0,
            neighbours: Vec::new(),
            routes: routes
                .into_iter()
                .map(|(destination, hop)| RouteReport {
                    destination: String::new(),
                    destination_name: Some(destination.into()),
                    next_hop: String::new(),
                    next_hop_name: Some(hop.into()),
                    metric: 256,
                    hop_count: 1,
                    seq: 1,
                    since_unix_us: None,
                })
                .collect(),
            counters: BTreeMap::new(),
            last_topology_event: None,
            last_convergence: None,
            last_settled_convergence: None,
            events,
            quarantined: Vec::new(),
            incidents: Vec::new(),
        }
    }

    fn mk_event(at: u64, kind: &'static str, node: &str, detail: &str) -> Event {
        Event {
            at_unix_us: at,
            kind,
            node: Some(node.into()),
            detail: Some(detail.into()),
        }
    }

    fn targets() -> TargetIds {
        BTreeMap::from([(T.to_owned(), "node-1".to_owned())])
    }

    #[test]
    fn a_revoked_or_expired_key_is_a_detection_and_the_next_session_with_the_target_a_rejoin() {
        let report = mk_report(
            vec![
                mk_event(50, "session_up", T, ""),
                mk_event(120, "key_revoked", T, "key epochs up to 3"),
                mk_event(130, "neighbour_lost", T, "revoked_key"),
                mk_event(140, "session_up", D, ""),
                mk_event(400, "session_up", T, ""),
            ],
            vec![],
        );
        let (at, what) = detection(&report, &targets(), 100).unwrap();
        assert_eq!((at, what.as_str()), (120, "node-1 revoked (key epochs up to 3)"));
        assert_eq!(
            rejoined(&report, &targets(), 100),
            Some(400),
            "the session before the revocation does not count"
        );
        let expired = mk_report(
            vec![
                mk_event(120, "key_expired", T, "key epoch 1"),
                mk_event(300, "session_replaced", T, ""),
            ],
            vec![],
        );
        assert_eq!(
            detection(&expired, &targets(), 100).unwrap().1,
            "node-1 expired (key epoch 1)"
        );
        assert_eq!(rejoined(&expired, &targets(), 100), Some(300));
        let never = mk_report(vec![mk_event(120, "key_revoked", T, "")], vec![]);
        assert_eq!(rejoined(&never, &targets(), 100), None);
    }

    #[test]
    fn the_first_event_about_a_target_after_the_window_opened_is_the_detection() {
        let report = mk_report(
            vec![
                mk_event(50, "neighbour_lost", T, "hello_timeout"),
                mk_event(
                    300,
                    "route_changed",
                    D,
                    &format!("{} -> eeeeeeeeeeeeeeee", &T[..16]),
                ),
                mk_event(200, "neighbour_lost", T, "hello_timeout"),
            ],
            vec![],
        );
        assert_eq!(
            detection(&report, &targets(), 100),
            Some((200, "neighbour node-1 lost (hello_timeout)".to_owned())),
            "the loss before the window is not this fault's"
        );
    }

    #[test]
    fn a_refused_advertisement_from_a_target_is_a_detection() {
        let report = mk_report(
            vec![
                mk_event(40, "advertisement_refused", D, "bad_signature"),
                mk_event(60, "advertisement_refused", T, "replayed"),
            ],
            vec![],
        );
        assert_eq!(
            detection(&report, &targets(), 0),
            Some((60, "advertisement from node-1 refused (replayed)".to_owned())),
            "only the targets' refusals count"
        );
    }

    #[test]
    fn a_route_moved_off_a_target_or_withdrawn_from_it_is_a_detection() {
        let moved = mk_report(
            vec![mk_event(
                300,
                "route_changed",
                D,
                &format!("{} -> eeeeeeeeeeeeeeee", &T[..16]),
            )],
            vec![],
        );
        assert_eq!(
            detection(&moved, &targets(), 0).unwrap().1,
            "route moved off next hop node-1"
        );
        let withdrawn = mk_report(vec![mk_event(9, "route_changed", T, "aaaa -> none")], vec![]);
        assert_eq!(
            detection(&withdrawn, &targets(), 0).unwrap().1,
            "route to node-1 withdrawn"
        );
        let unrelated = mk_report(vec![mk_event(9, "route_changed", D, "bbbb -> cccc")], vec![]);
        assert_eq!(detection(&unrelated, &targets(), 0), None);
    }

    #[test]
    fn reach_counts_untargeted_destinations_behind_untargeted_next_hops() {
        let live: BTreeSet<String> = ["node-0", "node-1", "node-2", "node-3", "node-4"]
            .map(String::from)
            .into();
        let targets = BTreeSet::from(["node-1".to_owned()]);
        let report = mk_report(
            vec![],
            vec![
                ("node-1", "node-1"),
                ("node-2", "node-1"),
                ("node-3", "node-4"),
                ("node-4", "node-4"),
            ],
        );
        assert_eq!(
            reach(&report, &live, &targets),
            (2, 3),
            "node-2 is still reached through the target"
        );
    }
}
