//! What the agent's fault mechanisms must hold, from the experiments that are active on it
//! (pure). Three mechanisms:
//! - `ebpf`: partition, loss and corruption, one entry per peer address in the tc classifiers'
//!   fault map, with the experiment's deadline as the kernel expiry;
//! - `sendPath`: latency, frames to the peer held back in the agent before they are queued on
//!   the session (this kernel has neither `sch_fq` nor netem, which the eBPF delay needs);
//! - `behaviour`: adversarial faults the agent acts out in its own protocols (falseMetric,
//!   byzantineUpdate, forgedBeacon, replayedBeacon, signatureFailure, kemDowngrade),
//!   one entry per experiment. The agent holds one behaviour of each kind, so the experiment
//!   whose window opened first keeps it and a later one is refused, as for a contested peer.
//!
//! The kernel map holds one entry per peer address, so two experiments cannot both shape the
//! same peer's traffic on one agent. The rule: the experiment whose window opened first keeps
//! the peer; the other is reported as refused for that peer (the operator also keeps
//! experiments with overlapping targets Pending, so this only matters if it is bypassed).
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::behaviour::Behaviour;
use super::desired::{ExperimentView, directions};
pub use crate::mesh::send_delay::SendDelay;

/// How an experiment's entries are carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Ebpf,
    SendPath,
    Behaviour,
    /// keyRevocation: the operator revokes the targets' keys in the mesh's signed list; every
    /// agent applies it (see `crate::revocations`), the targets install nothing.
    Revocation,
}

impl Mechanism {
    pub fn label(self) -> &'static str {
        match self {
            Mechanism::Ebpf => "ebpf",
            Mechanism::SendPath => "sendPath",
            Mechanism::Behaviour => "behaviour",
            Mechanism::Revocation => "revocation",
        }
    }
}

/// The mechanism of an action (`ActionType::as_str`).
pub fn mechanism(action: &str) -> Mechanism {
    match action {
        "latency" => Mechanism::SendPath,
        "falseMetric" | "byzantineUpdate" | "forgedBeacon" | "replayedBeacon" | "signatureFailure"
        | "kemDowngrade" | "keyExpiry" => Mechanism::Behaviour,
        "keyRevocation" => Mechanism::Revocation,
        _ => Mechanism::Ebpf,
    }
}

/// One kernel fault entry, owned by an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelFault {
    pub uid: String,
    pub partition: bool,
    pub drop_probability: f64,
    pub corrupt_probability: f64,
    pub to_peer: bool,
    pub from_peer: bool,
    /// Unix microseconds: the experiment's deadline.
    pub deadline_us: u64,
}

/// Everything the mechanisms must hold now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    pub kernel: BTreeMap<IpAddr, KernelFault>,
    pub delays: BTreeMap<IpAddr, SendDelay>,
    /// What the experiments make this agent act out (honest when none does).
    pub behaviour: Behaviour,
}

/// The plan, and per experiment the peers it could not have.
#[derive(Debug, Default, PartialEq)]
pub struct Planned {
    pub plan: FaultPlan,
    /// Entries per experiment in the plan.
    pub entries: BTreeMap<String, usize>,
    /// Per experiment, why some of its entries are not in the plan.
    pub refused: BTreeMap<String, Vec<String>>,
}

fn percent(value: Option<i32>) -> f64 {
    f64::from(value.unwrap_or(0).clamp(0, 100)) / 100.0
}

fn millis(value: Option<i64>) -> Duration {
    Duration::from_millis(u64::try_from(value.unwrap_or(0)).unwrap_or(0))
}

/// Builds the plan from the experiments' views; the earliest window wins a contested peer.
pub fn plan(views: &[ExperimentView]) -> Planned {
    let mut active: Vec<&ExperimentView> = views.iter().filter(|v| v.state.is_ok()).collect();
    active.sort_by_key(|v| (v.window_start_us.unwrap_or(u64::MAX), v.uid.clone()));
    let mut planned = Planned::default();
    let mut owners: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut behaviour_owner: Option<&str> = None;
    for view in active {
        let Ok(state) = &view.state else { continue };
        let count = planned.entries.entry(view.uid.clone()).or_default();
        if !state.behaviour.is_honest() {
            match behaviour_owner {
                Some(owner) if planned.plan.behaviour.overlaps(&state.behaviour) => {
                    planned.refused.entry(view.uid.clone()).or_default().push(format!(
                        "this agent already acts out {} for experiment {owner}",
                        view.action
                    ));
                }
                _ => {
                    planned.plan.behaviour.merge(&state.behaviour);
                    *count += 1;
                }
            }
            behaviour_owner.get_or_insert(view.uid.as_str());
        }
        for planned_entry in &state.entries {
            let address = planned_entry.address;
            if let Some(owner) = owners.get(&address)
                && *owner != view.uid
            {
                planned.refused.entry(view.uid.clone()).or_default().push(format!(
                    "peer {} is already faulted by experiment {owner}",
                    planned_entry.peer
                ));
                continue;
            }
            owners.insert(address, view.uid.clone());
            let entry = &planned_entry.entry;
            let (to_peer, from_peer) = directions(entry);
            match mechanism(view.action) {
                Mechanism::SendPath => {
                    if !to_peer {
                        planned.refused.entry(view.uid.clone()).or_default().push(format!(
                            "peer {}: latency is added on this agent's send path, so only direction to or both",
                            planned_entry.peer
                        ));
                        continue;
                    }
                    planned.plan.delays.insert(
                        address,
                        SendDelay {
                            delay: millis(entry.delay_millis),
                            jitter: millis(entry.jitter_millis),
                            deadline_us: state.deadline_us,
                        },
                    );
                }
                // The operator assigns an adversarial experiment no entries.
                Mechanism::Behaviour | Mechanism::Revocation => continue,
                Mechanism::Ebpf => {
                    planned.plan.kernel.insert(
                        address,
                        KernelFault {
                            uid: view.uid.clone(),
                            partition: entry.partition,
                            drop_probability: percent(entry.drop_percent),
                            corrupt_probability: percent(entry.corrupt_percent),
                            to_peer,
                            from_peer,
                            deadline_us: state.deadline_us,
                        },
                    );
                }
            }
            *count += 1;
        }
    }
    planned
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use x0tta6bl4_api::chaos::{Direction, FaultEntry};

    use super::*;
    use crate::chaos::desired::{Active, Inactive, Planned as PlannedEntry};

    fn mk_view(
        uid: &str,
        action: &'static str,
        start: u64,
        entries: Vec<(&str, FaultEntry)>,
    ) -> ExperimentView {
        ExperimentView {
            uid: uid.to_owned(),
            name: uid.to_owned(),
            action,
            targets: BTreeSet::from(["node-1".to_owned()]),
            is_target: true,
            window_start_us: Some(start),
            state: Ok(Active {
                behaviour: Behaviour::default(),
                deadline_us: start + 60_000_000,
                entries: entries
                    .into_iter()
                    .map(|(address, entry)| PlannedEntry {
                        peer: entry.peer.clone(),
                        address: address.parse().unwrap(),
                        entry,
                    })
                    .collect(),
            }),
            unusable: Vec::new(),
        }
    }

    fn mk_entry(peer: &str, direction: Direction) -> FaultEntry {
        FaultEntry {
            peer: peer.to_owned(),
            address: String::new(),
            direction,
            ..FaultEntry::default()
        }
    }

    #[test]
    fn a_partition_becomes_kernel_entries_with_the_deadline() {
        let entry = FaultEntry {
            partition: true,
            ..mk_entry("node-0", Direction::Both)
        };
        let planned = plan(&[mk_view("a", "partition", 1_000, vec![("198.18.251.1", entry)])]);
        let fault = &planned.plan.kernel[&"198.18.251.1".parse::<IpAddr>().unwrap()];
        assert!(fault.partition && fault.to_peer && fault.from_peer);
        assert_eq!(fault.deadline_us, 60_001_000);
        assert_eq!(planned.entries["a"], 1);
    }

    #[test]
    fn latency_goes_to_the_send_path_and_refuses_the_receive_direction() {
        let to = FaultEntry {
            delay_millis: Some(80),
            jitter_millis: Some(10),
            ..mk_entry("node-0", Direction::Both)
        };
        let from = FaultEntry {
            delay_millis: Some(80),
            ..mk_entry("node-2", Direction::From)
        };
        let planned = plan(&[mk_view(
            "lat",
            "latency",
            0,
            vec![("198.18.251.1", to), ("198.18.251.3", from)],
        )]);
        assert!(planned.plan.kernel.is_empty());
        assert_eq!(
            planned.plan.delays[&"198.18.251.1".parse::<IpAddr>().unwrap()].delay,
            Duration::from_millis(80)
        );
        assert_eq!(planned.refused["lat"].len(), 1);
    }

    #[test]
    fn the_experiment_whose_window_opened_first_keeps_a_contested_peer() {
        let loss = FaultEntry {
            drop_percent: Some(30),
            ..mk_entry("node-0", Direction::Both)
        };
        let cut = FaultEntry {
            partition: true,
            ..mk_entry("node-0", Direction::Both)
        };
        let planned = plan(&[
            mk_view("later", "partition", 2_000, vec![("198.18.251.1", cut)]),
            mk_view("first", "loss", 1_000, vec![("198.18.251.1", loss)]),
        ]);
        let fault = &planned.plan.kernel[&"198.18.251.1".parse::<IpAddr>().unwrap()];
        assert_eq!(fault.uid, "first");
        assert!((fault.drop_probability - 0.3).abs() < 1e-9);
        assert_eq!(
            planned.refused["later"],
            ["peer node-0 is already faulted by experiment first"]
        );
    }

    #[test]
    fn a_behaviour_is_one_entry_and_the_first_window_keeps_it() {
        let lying = |uid: &str, start: u64, percent: u32| {
            let mut view = mk_view(uid, "falseMetric", start, vec![]);
            if let Ok(active) = &mut view.state {
                active.behaviour.false_metric_percent = Some(percent);
            }
            view
        };
        let planned = plan(&[lying("later", 2_000, 50), lying("first", 1_000, 5)]);
        assert_eq!(planned.plan.behaviour.false_metric_percent, Some(5));
        assert_eq!(planned.entries["first"], 1);
        assert_eq!(planned.entries["later"], 0);
        assert_eq!(
            planned.refused["later"],
            ["this agent already acts out falseMetric for experiment first"]
        );
        assert!(planned.plan.kernel.is_empty() && planned.plan.delays.is_empty());
    }

    #[test]
    fn inactive_experiments_contribute_nothing() {
        let mut view = mk_view("a", "partition", 0, vec![]);
        view.state = Err(Inactive::Suspended);
        assert_eq!(plan(&[view]), Planned::default());
    }
}
