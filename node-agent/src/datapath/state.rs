//! What the agent knows of its datapath, shared with the MeshNode record writer and the fault
//! endpoint: whether it runs (and why not), the latest per-peer totals, the attached interfaces.
//! One value per agent, handed to whoever reads it (no process-global state: two agents in one
//! test process keep theirs apart).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock};

use serde::Serialize;
use x0tta6bl4_datapath::PeerTotals;

/// Whether the datapath runs, as the MeshNode record reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Availability {
    /// `EbpfUnavailable` is True.
    pub unavailable: bool,
    /// One CamelCase word: Loaded, Disabled, NotPermitted, KernelUnsupported, BrokenObject, ...
    pub reason: String,
    pub message: String,
    /// RFC 3339, when `unavailable` last changed.
    pub since: String,
}

#[derive(Default)]
struct Known {
    availability: Option<Availability>,
    /// Latest per-peer totals, for the record's neighbours.
    totals: BTreeMap<IpAddr, PeerTotals>,
    /// The interfaces the classifiers are attached to, for /datapath.
    interfaces: Vec<String>,
}

/// A handle on the datapath's state (cheap to clone; every clone sees the same state).
#[derive(Clone, Default)]
pub struct DatapathState(Arc<RwLock<Known>>);

impl DatapathState {
    fn read<T>(&self, f: impl FnOnce(&Known) -> T) -> T {
        f(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn write(&self, f: impl FnOnce(&mut Known)) {
        f(&mut self.0.write().unwrap_or_else(PoisonError::into_inner));
    }

    /// Records whether the datapath runs; the transition time moves only when that flips.
    pub fn set_availability(&self, unavailable: bool, reason: &str, message: String) {
        self.write(|known| {
            let since = match known.availability.as_ref() {
                Some(previous) if previous.unavailable == unavailable => previous.since.clone(),
                _ => k8s_openapi::jiff::Timestamp::now().to_string(),
            };
            known.availability = Some(Availability {
                unavailable,
                reason: reason.to_owned(),
                message,
                since,
            });
        });
    }

    /// The datapath's state, once the agent decided it.
    pub fn availability(&self) -> Option<Availability> {
        self.read(|known| known.availability.clone())
    }

    /// The condition for the MeshNode record, once decided.
    pub fn condition(&self) -> Option<x0tta6bl4_api::condition::Condition> {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
        let state = self.availability()?;
        let since = state
            .since
            .parse::<k8s_openapi::jiff::Timestamp>()
            .unwrap_or_else(|_| k8s_openapi::jiff::Timestamp::now());
        Some(x0tta6bl4_api::condition::Condition {
            type_: "EbpfUnavailable".to_owned(),
            status: if state.unavailable { "True" } else { "False" }.to_owned(),
            reason: state.reason,
            message: state.message,
            last_transition_time: Time(since),
            observed_generation: None,
        })
    }

    /// eBPF packet counts to and from `peer`, for the record (None without the datapath, or
    /// before it saw the peer's traffic).
    pub fn peer_totals(&self, peer: IpAddr) -> Option<PeerTotals> {
        self.read(|known| known.totals.get(&peer.to_canonical()).copied())
    }

    pub fn set_totals(&self, totals: BTreeMap<IpAddr, PeerTotals>) {
        self.write(|known| known.totals = totals);
    }

    pub fn interfaces(&self) -> Vec<String> {
        self.read(|known| known.interfaces.clone())
    }

    pub fn set_interfaces(&self, interfaces: Vec<String>) {
        self.write(|known| known.interfaces = interfaces);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_condition_keeps_its_transition_time_until_the_status_flips() {
        let state = DatapathState::default();
        state.set_availability(true, "NotPermitted", "no CAP_BPF".to_owned());
        let first = state.condition().unwrap();
        assert_eq!(first.status, "True");
        assert_eq!(first.reason, "NotPermitted");
        state.set_availability(true, "KernelUnsupported", "old kernel".to_owned());
        let second = state.condition().unwrap();
        assert_eq!(second.last_transition_time, first.last_transition_time);
        assert_eq!(second.reason, "KernelUnsupported");
    }

    #[test]
    fn each_agent_keeps_its_own_state() {
        let (one, other) = (DatapathState::default(), DatapathState::default());
        one.set_availability(false, "Loaded", "attached".to_owned());
        assert!(other.availability().is_none());
        assert_eq!(
            one.clone().availability().map(|a| a.reason),
            Some("Loaded".to_owned())
        );
    }
}
