//! Which fault entries the experiments want of this agent now (pure: the experiments, the kill
//! switch and the time are passed in).
//!
//! The rule, shared with the operator (`operator/src/chaos/`): an agent carries the entries the
//! experiment's status assigns to its node while the experiment exists and is not being
//! deleted, is neither suspended nor a dry run, its mesh's kill switch is off, its phase is
//! Injecting and its deadline has not passed. The deadline goes into every entry as its expiry,
//! so the entry ends on time even when nobody is left to remove it.
use std::collections::BTreeSet;
use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use x0tta6bl4_api::chaos::{ActionSpec, ActionType, Direction, FaultEntry, phase, revert_cause};
use x0tta6bl4_api::{ChaosExperiment, ChaosExperimentStatus};

use super::behaviour::{BeaconFault, Behaviour, Poisoning};

/// Why an experiment's entries are not (or no longer) installed on this agent: the words of
/// `AgentChaosReport.revertCause` and of the revert metric's `cause` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inactive {
    /// The window closed (by the deadline, or the operator ended it after it).
    Deadline,
    Deleted,
    Suspended,
    KillSwitch,
    Aborted,
    /// byzantineUpdate: the attacked job ended before the deadline.
    RoundEnded,
    /// Not injecting yet (Pending), or the operator ended the window for another reason.
    NotInjecting,
}

impl Inactive {
    pub fn label(self) -> &'static str {
        match self {
            Inactive::Deadline => "deadline",
            Inactive::Deleted => "deleted",
            Inactive::Suspended => "suspended",
            Inactive::KillSwitch => "killSwitch",
            Inactive::Aborted => "aborted",
            Inactive::RoundEnded => "roundEnded",
            Inactive::NotInjecting => "notInjecting",
        }
    }
}

/// One entry to install: the peer's address and what to do to its traffic, until `deadline`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub peer: String,
    pub address: IpAddr,
    pub entry: FaultEntry,
}

/// One experiment of this agent's mesh, as this agent sees it now.
#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentView {
    pub uid: String,
    pub name: String,
    pub action: &'static str,
    /// The nodes the fault is on now (node names): every target, or for nodeKill the nodes
    /// killed so far.
    pub targets: BTreeSet<String>,
    /// This agent is one of them.
    pub is_target: bool,
    /// When the window opened, in Unix microseconds (the operator's clock).
    pub window_start_us: Option<u64>,
    /// Installed now, with its deadline in Unix microseconds; or why not.
    pub state: Result<Active, Inactive>,
    /// Entries of this agent's node that could not be used (an address that is not an IP).
    pub unusable: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    pub deadline_us: u64,
    pub entries: Vec<Planned>,
    /// What this agent acts out for an adversarial experiment that targets it (honest
    /// otherwise).
    pub behaviour: Behaviour,
}

/// What a target of `action` acts out; a byzantineUpdate poisons only the updates to the job
/// the operator named in the status when the window opened.
fn behaviour_of(action: &ActionSpec, status: &ChaosExperimentStatus, node: &str) -> Behaviour {
    match action.type_ {
        ActionType::FalseMetric => Behaviour {
            false_metric_percent: action
                .metric_percent
                .and_then(|percent| u32::try_from(percent.clamp(1, 100)).ok()),
            ..Behaviour::default()
        },
        ActionType::ByzantineUpdate => Behaviour {
            byzantine_update: action
                .byzantine
                .clone()
                .zip(status.byzantine.as_ref().filter(|b| !b.round_uid.is_empty()))
                .map(|(spec, attacked)| Poisoning {
                    job_uid: Some(attacked.round_uid.clone()),
                    spec,
                }),
            ..Behaviour::default()
        },
        ActionType::ForgedBeacon => Behaviour {
            beacon: Some(BeaconFault::Impersonate),
            ..Behaviour::default()
        },
        ActionType::ReplayedBeacon => Behaviour {
            beacon: Some(BeaconFault::Replay),
            ..Behaviour::default()
        },
        ActionType::KemDowngrade => Behaviour {
            kem_downgrade: true,
            ..Behaviour::default()
        },
        ActionType::SignatureFailure => Behaviour {
            signature_failure: true,
            ..Behaviour::default()
        },
        ActionType::KeyExpiry => Behaviour {
            expiring_endorsement: status
                .expiring_endorsements
                .iter()
                .find(|e| e.node == node)
                .and_then(|e| STANDARD.decode(&e.endorsement).ok()),
            ..Behaviour::default()
        },
        _ => Behaviour::default(),
    }
}

fn micros(time: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime) -> u64 {
    u64::try_from(time.0.as_microsecond()).unwrap_or(0)
}

/// How `experiment` stands for the agent of `node` in mesh `mesh` at `now`; `None` when the
/// experiment is not about this mesh or is a dry run (it never touches an agent).
pub fn view(
    experiment: &ChaosExperiment,
    mesh: &str,
    node: &str,
    paused: bool,
    now: Timestamp,
) -> Option<ExperimentView> {
    let spec = &experiment.spec;
    let status = experiment.status.clone().unwrap_or_default();
    // A round's experiment names its mesh in the status (the operator read it from the round).
    let on_mesh = spec
        .target
        .mesh_ref
        .as_ref()
        .map_or(status.mesh.as_str(), |r| r.name.as_str());
    if on_mesh != mesh || spec.dry_run {
        return None;
    }
    let is_target = status.targets.iter().any(|t| t == node);
    // A kill is a fault from the moment it is made: until then a node of a cascade's chain
    // is alive and rightly carries traffic.
    let targets: BTreeSet<String> = if spec.action.type_ == ActionType::NodeKill {
        status
            .kills
            .iter()
            .filter(|kill| kill.killed_at.is_some())
            .map(|kill| kill.node.clone())
            .collect()
    } else {
        status.targets.iter().cloned().collect()
    };
    let now_us = u64::try_from(now.as_microsecond()).unwrap_or(0);
    let deadline_us = status.deadline.as_ref().map(micros);
    let state = if experiment.metadata.deletion_timestamp.is_some() {
        Err(Inactive::Deleted)
    } else if spec.suspend {
        Err(Inactive::Suspended)
    } else if paused {
        Err(Inactive::KillSwitch)
    } else if status.phase != phase::INJECTING {
        Err(match status.revert_cause.as_str() {
            revert_cause::ABORT => Inactive::Aborted,
            revert_cause::DURATION => Inactive::Deadline,
            revert_cause::SUSPEND => Inactive::Suspended,
            revert_cause::KILL_SWITCH => Inactive::KillSwitch,
            revert_cause::ROUND_ENDED => Inactive::RoundEnded,
            _ => Inactive::NotInjecting,
        })
    } else {
        match deadline_us {
            Some(deadline) if now_us < deadline => Ok(deadline),
            Some(_) => Err(Inactive::Deadline),
            None => Err(Inactive::NotInjecting),
        }
    };
    let mut unusable = Vec::new();
    let state = state.map(|deadline_us| {
        let entries = status
            .assignments
            .iter()
            .filter(|assignment| assignment.node == node)
            .flat_map(|assignment| assignment.entries.iter())
            .filter_map(|entry| match entry.address.parse::<IpAddr>() {
                Ok(address) => Some(Planned {
                    peer: entry.peer.clone(),
                    address: address.to_canonical(),
                    entry: entry.clone(),
                }),
                Err(_) => {
                    unusable.push(format!(
                        "{}: address {:?} is not an IP",
                        entry.peer, entry.address
                    ));
                    None
                }
            })
            .collect();
        let behaviour = if is_target {
            behaviour_of(&spec.action, &status, node)
        } else {
            Behaviour::default()
        };
        Active {
            deadline_us,
            entries,
            behaviour,
        }
    });
    Some(ExperimentView {
        uid: experiment.uid().unwrap_or_default(),
        name: experiment.name_any(),
        action: spec.action.type_.as_str(),
        is_target,
        targets,
        window_start_us: status.injected_at.as_ref().map(micros),
        state,
        unusable,
    })
}

/// Whether the entry touches the traffic sent to its peer (egress) and received from it.
pub fn directions(entry: &FaultEntry) -> (bool, bool) {
    match entry.direction {
        Direction::To => (true, false),
        Direction::From => (false, true),
        Direction::Both => (true, true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_experiment(yaml: &str) -> ChaosExperiment {
        serde_norway::from_str(yaml).unwrap()
    }

    const INJECTING: &str = r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: ChaosExperiment
metadata: {name: cut, namespace: default, uid: u-1}
spec:
  target: {meshRef: {name: demo}}
  action: {type: partition}
status:
  phase: Injecting
  targets: [node-1]
  injectedAt: "2026-12-06T10:00:00Z"
  deadline: "2026-12-06T10:01:00Z"
  assignments:
  - node: node-1
    entries:
    - {peer: node-0, address: 198.18.251.1, direction: both, partition: true}
    - {peer: node-2, address: "::ffff:198.18.251.3", direction: both, partition: true}
    - {peer: node-3, address: not-an-ip, direction: both, partition: true}
"#;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_target_inside_its_window_installs_its_own_entries_until_the_deadline() {
        let view = view(
            &mk_experiment(INJECTING),
            "demo",
            "node-1",
            false,
            at("2026-12-06T10:00:30Z"),
        )
        .unwrap();
        assert!(view.is_target);
        let active = view.state.unwrap();
        assert_eq!(active.deadline_us, 1_796_551_260_000_000);
        let addresses: Vec<String> = active.entries.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(
            addresses,
            ["198.18.251.1", "198.18.251.3"],
            "IPv4-mapped comes back as IPv4"
        );
        assert_eq!(view.unusable.len(), 1, "a bad address is reported, not installed");
    }

    #[test]
    fn an_agent_that_is_not_assigned_installs_nothing_but_still_follows_the_experiment() {
        let view = view(
            &mk_experiment(INJECTING),
            "demo",
            "node-2",
            false,
            at("2026-12-06T10:00:30Z"),
        )
        .unwrap();
        assert!(!view.is_target);
        assert!(view.state.unwrap().entries.is_empty());
        assert_eq!(view.targets.iter().collect::<Vec<_>>(), ["node-1"]);
    }

    #[test]
    fn past_the_deadline_nothing_is_installed_even_if_the_operator_never_said_so() {
        let view = view(
            &mk_experiment(INJECTING),
            "demo",
            "node-1",
            false,
            at("2026-12-06T10:01:00Z"),
        )
        .unwrap();
        assert_eq!(view.state.unwrap_err(), Inactive::Deadline);
    }

    #[test]
    fn the_kill_switch_suspend_and_deletion_each_revert_with_their_own_cause() {
        let now = at("2026-12-06T10:00:30Z");
        let mut experiment = mk_experiment(INJECTING);
        assert_eq!(
            view(&experiment, "demo", "node-1", true, now)
                .unwrap()
                .state
                .unwrap_err(),
            Inactive::KillSwitch
        );
        experiment.spec.suspend = true;
        assert_eq!(
            view(&experiment, "demo", "node-1", false, now)
                .unwrap()
                .state
                .unwrap_err(),
            Inactive::Suspended
        );
        experiment.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(
            view(&experiment, "demo", "node-1", false, now)
                .unwrap()
                .state
                .unwrap_err(),
            Inactive::Deleted
        );
    }

    #[test]
    fn an_aborted_experiment_reverts_as_aborted() {
        let mut experiment = mk_experiment(INJECTING);
        let status = experiment.status.as_mut().unwrap();
        status.phase = phase::RECOVERING.to_owned();
        status.revert_cause = revert_cause::ABORT.to_owned();
        let view = view(&experiment, "demo", "node-1", false, at("2026-12-06T10:00:30Z")).unwrap();
        assert_eq!(view.state.unwrap_err(), Inactive::Aborted);
    }

    #[test]
    fn dry_runs_and_other_meshes_are_not_this_agents_business() {
        let now = at("2026-12-06T10:00:30Z");
        let mut experiment = mk_experiment(INJECTING);
        assert!(view(&experiment, "other", "node-1", false, now).is_none());
        experiment.spec.dry_run = true;
        assert!(view(&experiment, "demo", "node-1", false, now).is_none());
    }

    #[test]
    fn a_false_metric_target_lies_for_its_window_and_nobody_else_does() {
        let yaml = INJECTING
            .replace("{type: partition}", "{type: falseMetric, metricPercent: 5}")
            .replace("uid: u-1", "uid: u-3");
        let experiment = mk_experiment(&yaml);
        let inside = at("2026-12-06T10:00:30Z");
        let target = view(&experiment, "demo", "node-1", false, inside).unwrap();
        assert_eq!(target.state.unwrap().behaviour.false_metric_percent, Some(5));
        let bystander = view(&experiment, "demo", "node-2", false, inside).unwrap();
        assert!(bystander.state.unwrap().behaviour.is_honest());
        let after = view(&experiment, "demo", "node-1", false, at("2026-12-06T10:01:00Z")).unwrap();
        assert_eq!(after.state.unwrap_err(), Inactive::Deadline);
    }

    #[test]
    fn a_rounds_experiment_belongs_to_the_mesh_in_its_status_and_poisons_that_job_only() {
        let experiment = mk_experiment(
            r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: ChaosExperiment
metadata: {name: poison, namespace: default, uid: u-4}
spec:
  target: {roundRef: {name: job}}
  action: {type: byzantineUpdate, byzantine: {attack: signFlip}}
status:
  phase: Injecting
  mesh: demo
  targets: [node-1]
  injectedAt: "2026-12-06T10:00:00Z"
  deadline: "2026-12-06T10:01:00Z"
  byzantine: {roundUid: job-uid-7, roundsBefore: 2}
"#,
        );
        let inside = at("2026-12-06T10:00:30Z");
        assert!(view(&experiment, "other", "node-1", false, inside).is_none());
        let target = view(&experiment, "demo", "node-1", false, inside).unwrap();
        let poisoning = target.state.unwrap().behaviour.byzantine_update.unwrap();
        assert_eq!(poisoning.job_uid.as_deref(), Some("job-uid-7"));
        assert!(poisoning.attack_on("another-job").is_none());
    }

    #[test]
    fn a_cascade_counts_as_faulty_only_the_nodes_killed_so_far() {
        let experiment = mk_experiment(
            r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: ChaosExperiment
metadata: {name: cascade, namespace: default, uid: u-2}
spec:
  target: {meshRef: {name: demo}}
  action: {type: nodeKill, cascade: {steps: 2, interval: 10s}}
status:
  phase: Injecting
  targets: [node-1, node-2]
  injectedAt: "2026-12-06T10:00:00Z"
  deadline: "2026-12-06T10:01:00Z"
  kills:
  - {step: 1, node: node-1, killedAt: "2026-12-06T10:00:00Z"}
  - {step: 2, node: node-2, dueAt: "2026-12-06T10:00:10Z"}
"#,
        );
        let view = view(&experiment, "demo", "node-3", false, at("2026-12-06T10:00:05Z")).unwrap();
        assert_eq!(view.targets.iter().collect::<Vec<_>>(), ["node-1"]);
        let chained = super::view(&experiment, "demo", "node-2", false, at("2026-12-06T10:00:05Z")).unwrap();
        assert!(
            chained.is_target,
            "a node of the chain does not judge its own fault"
        );
    }
}
