//! Faults set by hand on one agent, for debugging and for tests without a cluster: a loopback
//! endpoint (`--fault-api 127.0.0.1:PORT`) that speaks the API's vocabulary (`ActionType`,
//! `FaultEntry`) and hands each fault to the executor as a one-peer experiment. The same plan,
//! mechanisms and kernel expiry carry it as an experiment's; in a cluster it is reported on the
//! MeshNode record as experiment `by-hand` and obeys the mesh's kill switch.
//!
//! - `POST /chaos/faults?peer=IP&action=partition|loss|corrupt|latency&seconds=S`, with
//!   `percent=P` (loss, corrupt), `delay=D&jitter=J` (latency, durations such as `100ms`) and
//!   `direction=to|from|both` (default both). Answers once the fault is carried, or why not.
//! - `DELETE /chaos/faults?peer=IP`: removes it, answering once it is gone.
//! - `GET /chaos/faults`: the faults set by hand.
//!
//! The kernel's own fault map and counters are at `GET /datapath` on the same address.
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::watch;
use x0tta6bl4_api::chaos::{ActionType, FaultEntry};
use x0tta6bl4_api::duration;

use super::DatapathAck;
use super::desired::{Active, ExperimentView, Inactive, Planned};
use super::plan::{FaultPlan, Mechanism, mechanism};
use crate::clock::unix_micros;

/// The longest a fault set by hand may last.
pub const MAX_SECONDS: u64 = 3600;
/// How long a request waits for the executor and the datapath to carry it out.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);
/// How long an expired fault stays listed (and reported), as an experiment's report does.
const FORGET_AFTER_US: u64 = 300_000_000;
/// The experiment name faults set by hand are reported under.
pub const EXPERIMENT: &str = "by-hand";

/// One fault set by hand, on the traffic with one peer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HandFault {
    #[serde(serialize_with = "serialize_action")]
    pub action: ActionType,
    pub entry: FaultEntry,
    /// Unix microseconds.
    pub set_at_us: u64,
    pub deadline_us: u64,
}

fn serialize_action<S: serde::Serializer>(action: &ActionType, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(action.as_str())
}

/// The faults set by hand, by peer address.
pub type HandFaults = BTreeMap<IpAddr, HandFault>;

/// The UID a fault set by hand on `peer` is carried and reported under.
pub fn uid(peer: IpAddr) -> String {
    format!("{EXPERIMENT}-{peer}")
}

fn percent(key: &str, value: &str) -> Result<i32, String> {
    match value.parse::<i32>() {
        Ok(percent) if (1..=100).contains(&percent) => Ok(percent),
        _ => Err(format!(
            "{key}={value:?} must be a whole percentage from 1 to 100"
        )),
    }
}

fn millis(key: &str, value: &str) -> Result<i64, String> {
    let parsed = duration::parse(value).map_err(|error| format!("{key}={value:?}: {error}"))?;
    i64::try_from(parsed.as_millis()).map_err(|_| format!("{key}={value:?} is too long"))
}

/// Parses a POST's query into the peer and its fault, set at `now_us`.
pub fn parse(query: &str, now_us: u64) -> Result<(IpAddr, HandFault), String> {
    let (mut peer, mut action, mut seconds) = (None, None, None);
    let mut entry = FaultEntry::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "peer" => {
                let address = value
                    .parse::<IpAddr>()
                    .map_err(|_| format!("peer={value:?} is not an IP address"))?;
                peer = Some(address.to_canonical());
            }
            "action" => {
                let parsed: ActionType = serde_json::from_value(serde_json::json!(value))
                    .map_err(|_| format!("action={value:?} is not an action type"))?;
                if !parsed.is_link_fault() {
                    return Err(format!(
                        "action={value:?} cannot be set by hand: only partition, loss, corrupt and latency act on one link (use a ChaosExperiment)"
                    ));
                }
                action = Some(parsed);
            }
            "direction" => {
                entry.direction = serde_json::from_value(serde_json::json!(value))
                    .map_err(|_| format!("direction={value:?} must be to, from or both"))?;
            }
            "percent" => {
                let share = percent(key, value)?;
                (entry.drop_percent, entry.corrupt_percent) = (Some(share), Some(share));
            }
            "delay" => entry.delay_millis = Some(millis(key, value)?),
            "jitter" => entry.jitter_millis = Some(millis(key, value)?),
            "seconds" => {
                seconds = Some(
                    value
                        .parse::<u64>()
                        .ok()
                        .filter(|s| (1..=MAX_SECONDS).contains(s))
                        .ok_or_else(|| {
                            format!("seconds={value:?} must be a whole number from 1 to {MAX_SECONDS}")
                        })?,
                );
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let peer = peer.ok_or("peer=IP is required")?;
    let action = action.ok_or("action=partition|loss|corrupt|latency is required")?;
    let seconds = seconds.ok_or("seconds=S is required: every fault ends on its own")?;
    // Keep only what the action uses: the mechanisms read every field of the entry.
    let share = entry.drop_percent;
    (entry.drop_percent, entry.corrupt_percent) = (None, None);
    match action {
        ActionType::Partition => entry.partition = true,
        ActionType::Loss => entry.drop_percent = Some(share.ok_or("action loss needs percent=P")?),
        ActionType::Corrupt => entry.corrupt_percent = Some(share.ok_or("action corrupt needs percent=P")?),
        ActionType::Latency => {
            if entry.delay_millis.is_none() {
                return Err("action latency needs delay=D (for example 100ms)".into());
            }
        }
        _ => unreachable!("only link faults are accepted above"),
    }
    if action != ActionType::Latency && (entry.delay_millis.is_some() || entry.jitter_millis.is_some()) {
        return Err(format!(
            "delay and jitter are for latency, not {}",
            action.as_str()
        ));
    }
    entry.peer = peer.to_string();
    entry.address = peer.to_string();
    let fault = HandFault {
        action,
        entry,
        set_at_us: now_us,
        deadline_us: now_us.saturating_add(seconds.saturating_mul(1_000_000)),
    };
    Ok((peer, fault))
}

/// The executor's views of the faults set by hand on this agent (`node`) at `now_us`; the
/// mesh's kill switch (`paused`) holds them off as it does experiments.
pub fn views(faults: &HandFaults, node: &str, paused: bool, now_us: u64) -> Vec<ExperimentView> {
    faults
        .iter()
        .map(|(peer, fault)| {
            let state = if paused {
                Err(Inactive::KillSwitch)
            } else if now_us >= fault.deadline_us {
                Err(Inactive::Deadline)
            } else {
                Ok(Active {
                    behaviour: Default::default(),
                    deadline_us: fault.deadline_us,
                    entries: vec![Planned {
                        peer: peer.to_string(),
                        address: *peer,
                        entry: fault.entry.clone(),
                    }],
                })
            };
            ExperimentView {
                uid: uid(*peer),
                name: EXPERIMENT.to_owned(),
                action: fault.action.as_str(),
                targets: BTreeSet::from([node.to_owned()]),
                is_target: true,
                window_start_us: Some(fault.set_at_us),
                state,
                unusable: Vec::new(),
            }
        })
        .collect()
}

/// Drops the faults that ended long enough ago; true if any was dropped.
pub fn forget_expired(faults: &mut HandFaults, now_us: u64) -> bool {
    let before = faults.len();
    faults.retain(|_, fault| now_us < fault.deadline_us.saturating_add(FORGET_AFTER_US));
    faults.len() != before
}

/// What the endpoint's handlers share with the executor.
#[derive(Clone)]
pub struct Endpoint {
    pub faults: watch::Sender<HandFaults>,
    pub plan: watch::Receiver<FaultPlan>,
    pub ack: watch::Receiver<DatapathAck>,
}

/// Whether the mechanisms carry (`want`) or no longer carry the fault on `peer`; Err says
/// why they cannot.
fn carried(endpoint: &Endpoint, peer: IpAddr, action: ActionType) -> Result<bool, String> {
    let uid = uid(peer);
    match mechanism(action.as_str()) {
        Mechanism::SendPath => Ok(endpoint.plan.borrow().delays.contains_key(&peer)),
        Mechanism::Behaviour | Mechanism::Revocation => Err(format!(
            "{} is not a link fault: it cannot be set by hand",
            action.as_str()
        )),
        Mechanism::Ebpf => {
            let ack = endpoint.ack.borrow();
            if let Some(why) = &ack.unavailable {
                return Err(format!("the eBPF datapath is unavailable: {why}"));
            }
            if let Some(errors) = ack.errors.get(&uid) {
                return Err(errors.join("; "));
            }
            Ok(ack.installed.contains_key(&uid))
        }
    }
}

async fn wait_until(endpoint: &Endpoint, peer: IpAddr, action: ActionType, want: bool) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + ANSWER_WITHIN;
    let (mut plan, mut ack) = (endpoint.plan.clone(), endpoint.ack.clone());
    loop {
        match carried(endpoint, peer, action) {
            Ok(now) if now == want => return Ok(()),
            Err(why) if want => return Err(why),
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "not {} within {}s (an experiment may hold this peer: see the agent's log)",
                    if want { "carried" } else { "removed" },
                    ANSWER_WITHIN.as_secs()
                ));
            }
            _ = plan.changed() => {}
            _ = ack.changed() => {}
        }
    }
}

fn peer_of(query: &str) -> Result<IpAddr, String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("peer="))
        .ok_or("peer=IP is required")?;
    value
        .parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| format!("peer={value:?} is not an IP address"))
}

async fn set(State(endpoint): State<Endpoint>, RawQuery(query): RawQuery) -> Response {
    let (peer, fault) = match parse(query.as_deref().unwrap_or(""), unix_micros()) {
        Ok(parsed) => parsed,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let action = fault.action;
    tracing::warn!(%peer, action = action.as_str(), deadline_us = fault.deadline_us, "chaos: fault set by hand");
    endpoint.faults.send_modify(|faults| {
        faults.insert(peer, fault);
    });
    match wait_until(&endpoint, peer, action, true).await {
        Ok(()) => (StatusCode::OK, format!("{} on {peer} carried\n", action.as_str())).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn clear(State(endpoint): State<Endpoint>, RawQuery(query): RawQuery) -> Response {
    let peer = match peer_of(query.as_deref().unwrap_or("")) {
        Ok(peer) => peer,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let mut removed = None;
    endpoint.faults.send_if_modified(|faults| {
        removed = faults.remove(&peer);
        removed.is_some()
    });
    let Some(fault) = removed else {
        return (StatusCode::NOT_FOUND, format!("no fault set by hand on {peer}\n")).into_response();
    };
    tracing::info!(%peer, "chaos: fault removed by hand");
    match wait_until(&endpoint, peer, fault.action, false).await {
        Ok(()) => (StatusCode::OK, format!("fault on {peer} removed\n")).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response(),
    }
}

async fn list(State(endpoint): State<Endpoint>) -> Response {
    let faults: Vec<serde_json::Value> = endpoint
        .faults
        .borrow()
        .iter()
        .map(|(peer, fault)| serde_json::json!({"peer": peer.to_string(), "fault": fault}))
        .collect();
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::Value::from(faults).to_string(),
    )
        .into_response()
}

/// `/chaos/faults` (GET, POST, DELETE).
pub fn routes(endpoint: Endpoint) -> Router {
    Router::new()
        .route("/chaos/faults", get(list).post(set).delete(clear))
        .with_state(endpoint)
}

#[cfg(test)]
mod tests {
    use x0tta6bl4_api::chaos::Direction;

    use super::*;

    const NOW: u64 = 1_800_000_000_000_000;

    #[test]
    fn a_loss_by_hand_is_an_entry_of_the_api_with_its_deadline() {
        let (peer, fault) = parse("peer=198.18.0.2&action=loss&percent=30&seconds=20", NOW).unwrap();
        assert_eq!(peer.to_string(), "198.18.0.2");
        assert_eq!(fault.action, ActionType::Loss);
        assert_eq!(
            (
                fault.entry.drop_percent,
                fault.entry.corrupt_percent,
                fault.entry.partition
            ),
            (Some(30), None, false)
        );
        assert_eq!(fault.entry.direction, Direction::Both);
        assert_eq!(fault.deadline_us, NOW + 20_000_000);
        let views = views(&HandFaults::from([(peer, fault)]), "node-0", false, NOW + 1);
        let Ok(active) = &views[0].state else {
            panic!("{views:?}")
        };
        assert_eq!(
            (views[0].uid.as_str(), views[0].action),
            ("by-hand-198.18.0.2", "loss")
        );
        assert_eq!(active.entries[0].address, peer);
    }

    #[test]
    fn latency_takes_durations_and_one_direction() {
        let (_, fault) = parse(
            "peer=198.18.0.2&action=latency&delay=100ms&jitter=5ms&direction=to&seconds=5",
            NOW,
        )
        .unwrap();
        assert_eq!(
            (fault.entry.delay_millis, fault.entry.jitter_millis),
            (Some(100), Some(5))
        );
        assert_eq!(fault.entry.direction, Direction::To);
    }

    #[test]
    fn bad_requests_name_what_is_wrong() {
        let error = |query: &str| parse(query, NOW).unwrap_err();
        assert!(error("action=loss&percent=3&seconds=5").contains("peer=IP"));
        assert!(error("peer=x&action=loss").contains("peer=\"x\""));
        assert!(error("peer=198.18.0.2&action=nodeKill&seconds=5").contains("cannot be set by hand"));
        assert!(error("peer=198.18.0.2&action=loss&seconds=5").contains("needs percent"));
        assert!(error("peer=198.18.0.2&action=loss&percent=101&seconds=5").contains("1 to 100"));
        assert!(error("peer=198.18.0.2&action=partition").contains("seconds=S is required"));
        assert!(error("peer=198.18.0.2&action=partition&seconds=7200").contains("1 to 3600"));
        assert!(error("peer=198.18.0.2&action=partition&delay=5ms&seconds=5").contains("for latency"));
        assert!(
            error("peer=198.18.0.2&action=partition&drop=0.3&seconds=5")
                .contains("unknown parameter \"drop\"")
        );
    }

    #[test]
    fn the_kill_switch_and_the_deadline_hold_a_fault_off_and_expired_ones_are_forgotten() {
        let (peer, fault) = parse("peer=198.18.0.2&action=partition&seconds=10", NOW).unwrap();
        let mut faults = HandFaults::from([(peer, fault)]);
        assert_eq!(views(&faults, "n", true, NOW)[0].state, Err(Inactive::KillSwitch));
        assert_eq!(
            views(&faults, "n", false, NOW + 10_000_000)[0].state,
            Err(Inactive::Deadline)
        );
        assert!(!forget_expired(&mut faults, NOW + 10_000_000));
        assert!(forget_expired(&mut faults, NOW + 10_000_000 + FORGET_AFTER_US));
        assert!(faults.is_empty());
    }
}
