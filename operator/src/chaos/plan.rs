//! What a ChaosExperiment does next (pure: the experiment, what was read of the cluster and the
//! time go in; the new status, its conditions, the Events and when to look again come out).
//!
//! The operator never touches a node. It writes, into the experiment's status, which fault
//! entries each target agent installs and the window they hold for, and the agents carry them
//! out. The contract, which the agents implement (`node-agent/src/chaos/desired.rs`): an agent
//! installs the entries of `status.assignments[node == its node]` while the experiment exists
//! and is not being deleted, `spec.suspend` and `spec.dryRun` are false, its MeshNetwork's
//! `spec.chaos.paused` is false, `status.phase` is `Injecting` and the time is before
//! `status.deadline` (which it also gives the kernel as the entries' expiry); otherwise it
//! removes them. So injecting is one status write (phase Injecting with `injectedAt`,
//! `deadline` and `assignments`), and reverting is a write of any other phase (with
//! `revertedAt` and `revertCause`). A window, once written, is never recomputed: a restarted
//! operator neither extends a deadline nor injects twice.
//!
//! | phase      | how it is left                                                              |
//! |------------|-----------------------------------------------------------------------------|
//! | Pending    | waits for the mesh (ReferenceNotFound, MeshChaosPaused, MeshUnhealthy,      |
//! |            | NoCandidates, TargetBusy); then Injecting, or Failed (BlastRadiusExceeded)  |
//! | Injecting  | Recovering at the deadline or on an abort guard; Suspended on spec.suspend; |
//! |            | Pending (MeshChaosPaused) on the mesh's kill switch, keeping the rest of    |
//! |            | the window for later                                                        |
//! | Suspended  | back to Pending when spec.suspend is false (a resumed window is `remaining`)|
//! | Recovering | Completed with a verdict once the targets removed their entries and the     |
//! |            | mesh converged again, or after [`RESTORE_BOUND`] without that               |
//! | Completed  | final (a dry run, or a spec that was refused, is planned again on a change) |
//! | Failed     | final: InvalidSpec, Unsupported, BlastRadiusExceeded (until the spec changes)|
//!
//! Every status time is written truncated to the microsecond, the precision of `MicroTime` on
//! the wire, so the window the operator computes is exactly the one the agents read back.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;
use x0tta6bl4_api::chaos::{
    ActionSpec, ActionType, Direction, NodeAssignment, TargetMode, phase, revert_cause,
};
use x0tta6bl4_api::condition::{self, CONVERGED, DEGRADED, Desired, PROGRESSING, READY, Status};
use x0tta6bl4_api::duration;
use x0tta6bl4_api::mesh_network::RevokedKey;
use x0tta6bl4_api::{
    ChaosExperiment, ChaosExperimentSpec, ChaosExperimentStatus, FLTrainingRound, FieldError, MeshNetwork,
    MeshNode,
};

use super::blast_radius::*;
use super::byzantine;
use super::measure::*;
use super::targets::*;

/// How often an experiment waiting for a healthy mesh or for busy targets looks again.
pub const WAITING_RETRY: Duration = Duration::from_secs(5);
/// How often an experiment whose MeshNetwork is missing looks for it again.
pub const MISSING_MESH_RETRY: Duration = Duration::from_secs(30);
/// How often an experiment held by the mesh's kill switch looks again (mesh changes also wake it).
pub const PAUSED_RETRY: Duration = Duration::from_secs(30);
/// How often an experiment with no live agent to target looks again.
pub const NO_CANDIDATES_RETRY: Duration = Duration::from_secs(15);
/// The longest wait between two looks at an injected fault (agents' reports also wake it).
pub const INJECTING_EVERY: Duration = Duration::from_secs(2);
/// How often a reverted fault is looked at until the mesh is whole again.
pub const RECOVERING_EVERY: Duration = Duration::from_secs(2);
/// How long after the revert the mesh has to converge again before the experiment is judged
/// without a time to restore.
pub const RESTORE_BOUND: Duration = Duration::from_secs(120);
/// Grace time after injection before abort.minReachablePercent applies, when unset.
pub const DEFAULT_RECOVER_AFTER: Duration = Duration::from_secs(10);
/// Wake a little after the deadline rather than a little before it.
const DEADLINE_MARGIN: Duration = Duration::from_millis(10);
/// Names listed in a message before the rest are counted.
const NAMES_LISTED: usize = 10;

/// Condition reasons this planner writes.
pub mod reason {
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const UNSUPPORTED: &str = "Unsupported";
    pub const REFERENCE_NOT_FOUND: &str = "ReferenceNotFound";
    pub const MESH_CHAOS_PAUSED: &str = "MeshChaosPaused";
    pub const MESH_UNHEALTHY: &str = "MeshUnhealthy";
    pub const NO_CANDIDATES: &str = "NoCandidates";
    pub const TARGET_BUSY: &str = "TargetBusy";
    pub const BLAST_RADIUS_EXCEEDED: &str = "BlastRadiusExceeded";
    pub const DRY_RUN: &str = "DryRun";
    pub const SUSPENDED: &str = "Suspended";
    pub const INJECTING: &str = "Injecting";
    pub const RECOVERING: &str = "Recovering";
    pub const COMPLETED: &str = "Completed";
    pub const PASSED: &str = "Passed";
    pub const EXPECTATION_FAILED: &str = "ExpectationFailed";
    pub const ABORTED: &str = "Aborted";
    pub const INCONCLUSIVE: &str = "Inconclusive";
    pub const NOT_RESTORED: &str = "NotRestored";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const ROUND_NOT_RUNNING: &str = "RoundNotRunning";
    pub const ROUND_ENDED: &str = "RoundEnded";
}

/// Verdicts, as `status.verdict` and the `verdict` label of the metrics spell them.
pub mod verdict {
    pub const PASSED: &str = "Passed";
    pub const FAILED: &str = "Failed";
    pub const INCONCLUSIVE: &str = "Inconclusive";
}

/// Event reasons of the experiment's life, one per transition.
pub mod event {
    pub const INJECTED: &str = "Injected";
    pub const REVERTED: &str = "Reverted";
    pub const ABORTED: &str = "Aborted";
    pub const COMPLETED: &str = "Completed";
}

/// What the reconciler read of the cluster for one plan.
#[derive(Debug, Clone, Copy)]
pub struct ClusterView<'a> {
    /// The experiment's MeshNetwork; `None` when it does not exist.
    pub mesh: Option<&'a MeshNetwork>,
    /// The MeshNode records of that mesh.
    pub records: &'a [MeshNode],
    /// Labels of the nodes, by node name (read only when spec.target.nodeSelector is set).
    pub node_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    /// The other ChaosExperiments of the namespace.
    pub others: &'a [ChaosExperiment],
    /// The agent pod of the mesh's DaemonSet on each node (read only for nodeKill).
    pub pods: &'a BTreeMap<String, String>,
    /// The FLTrainingRound of spec.target.roundRef (`None` when there is none, or it does not
    /// exist).
    pub round: Option<&'a FLTrainingRound>,
    /// The FLTrainingRounds of the namespace (read only for a round's experiment): where an
    /// honest reference run is found.
    pub jobs: &'a [FLTrainingRound],
}

/// One Event to publish on the experiment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub reason: &'static str,
    /// What the operator did (Inject, Revert, Abort, Judge) or, for a condition, Set<Type>.
    pub action: String,
    pub note: String,
    /// A Warning (something for a person to look at) rather than a Normal event.
    pub warning: bool,
}

impl Notice {
    fn normal(reason: &'static str, note: String) -> Self {
        Self {
            reason,
            action: action_of(reason).to_owned(),
            note,
            warning: false,
        }
    }

    fn warning(reason: &'static str, note: String) -> Self {
        Self {
            warning: true,
            ..Self::normal(reason, note)
        }
    }

    /// A condition that flipped, told as the rest of the operator tells it.
    fn of_condition(flipped: &Desired) -> Self {
        Self {
            reason: flipped.reason,
            action: format!("Set{}", flipped.type_),
            note: format!(
                "{} is {}: {}",
                flipped.type_,
                flipped.status.as_str(),
                flipped.message
            ),
            warning: flipped.reason == reason::INVALID_SPEC
                || (flipped.type_ == DEGRADED && flipped.status == Status::True),
        }
    }
}

fn action_of(reason: &str) -> &'static str {
    match reason {
        event::INJECTED => "Inject",
        event::REVERTED => "Revert",
        event::ABORTED => "Abort",
        _ => "Judge",
    }
}

/// What happened in this plan, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// A window closed, with this cause.
    pub reverted: Option<&'static str>,
    /// The experiment was judged, with this verdict.
    pub verdict: Option<&'static str>,
    /// The judged experiment's final times, when measured.
    pub time_to_detect: Option<Duration>,
    pub time_to_recover: Option<Duration>,
    /// nodeKill: the agent pods to delete, (node, pod), after the status that records their
    /// kill is written (at most once: a kill recorded and not carried out is reported, never
    /// repeated).
    pub pod_deletions: Vec<(String, String)>,
}

/// The result of one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The status to write (conditions included); equal to the current one when nothing changed.
    pub status: ChaosExperimentStatus,
    /// The conditions as desired (empty for a settled experiment, which is left as it is).
    pub conditions: Vec<Desired>,
    /// Events to publish: the life transitions (Injected, Reverted, Aborted, Completed), or,
    /// in a plan without one, the conditions that flipped.
    pub events: Vec<Notice>,
    /// When to look again; `None` waits for a change.
    pub requeue: Option<Duration>,
    pub outcome: Outcome,
}

/// Whether nothing is left to do for the experiment until its spec changes: it finished
/// after injecting (it never runs twice), or it was refused, or finished as a dry run, and
/// its spec has not changed since.
pub fn is_settled(experiment: &ChaosExperiment) -> bool {
    let Some(status) = &experiment.status else {
        return false;
    };
    let terminal = status.phase == phase::COMPLETED || status.phase == phase::FAILED;
    terminal && (ran(status) || status.observed_generation == experiment.metadata.generation)
}

/// Whether a fault window was ever opened.
fn ran(status: &ChaosExperimentStatus) -> bool {
    status.injected_at.is_some() || !status.injected_for.is_empty()
}

/// Decides what the experiment does next at `now`.
pub fn plan(experiment: &ChaosExperiment, view: &ClusterView<'_>, now: &Time) -> Plan {
    let current = experiment.status.clone().unwrap_or_default();
    if is_settled(experiment) {
        return Plan {
            status: current,
            conditions: Vec::new(),
            events: Vec::new(),
            requeue: None,
            outcome: Outcome::default(),
        };
    }
    let mut status = if current.phase == phase::COMPLETED || current.phase == phase::FAILED {
        // A dry run or a refusal whose spec changed: planned again from the start.
        ChaosExperimentStatus {
            conditions: current.conditions,
            ..Default::default()
        }
    } else {
        current
    };
    let uid = experiment.uid().unwrap_or_default();
    let stamp = whole_microsecond(now.0);
    let planner = Planner {
        experiment,
        spec: &experiment.spec,
        view,
        agents: agents(view.records, &uid, now),
        uid,
        now: now.0,
        stamp,
    };
    let mut outcome = Outcome::default();
    let step = planner.step(&mut status, &mut outcome);
    let generation = experiment.metadata.generation;
    status.phase = step.phase.to_owned();
    status.observed_generation = generation;
    let conditions = step.conditions.to_vec();
    let flipped = condition::set_all(
        &mut status.conditions,
        conditions.clone(),
        generation,
        &Time(stamp),
    );
    let events = if step.notices.is_empty() {
        flipped.iter().map(Notice::of_condition).collect()
    } else {
        step.notices
    };
    Plan {
        status,
        conditions,
        events,
        requeue: step.requeue,
        outcome,
    }
}

struct Step {
    phase: &'static str,
    conditions: [Desired; 3],
    requeue: Option<Duration>,
    notices: Vec<Notice>,
}

impl Step {
    fn new(phase: &'static str, conditions: [Desired; 3], requeue: Option<Duration>) -> Self {
        Self {
            phase,
            conditions,
            requeue,
            notices: Vec::new(),
        }
    }

    fn telling(mut self, notice: Notice) -> Self {
        self.notices.push(notice);
        self
    }
}

/// Waiting for something outside the experiment: progressing, nothing wrong with it.
fn waiting(reason: &'static str, message: String) -> [Desired; 3] {
    [
        Desired::new(READY, Status::False, reason, message.clone()),
        Desired::new(PROGRESSING, Status::True, reason, message),
        Desired::new(
            DEGRADED,
            Status::False,
            reason::AS_EXPECTED,
            "nothing has gone wrong; the experiment waits",
        ),
    ]
}

/// Refused until the spec changes.
fn refused(reason: &'static str, message: String) -> [Desired; 3] {
    [
        Desired::new(READY, Status::False, reason, message.clone()),
        Desired::new(
            PROGRESSING,
            Status::False,
            reason,
            "nothing is injected until the spec changes",
        ),
        Desired::new(DEGRADED, Status::True, reason, message),
    ]
}

/// A fault injected or being recovered from.
fn running(reason: &'static str, message: String, aborted: Option<&str>) -> [Desired; 3] {
    let degraded = match aborted {
        Some(why) => Desired::new(DEGRADED, Status::True, reason::ABORTED, why),
        None => Desired::new(
            DEGRADED,
            Status::False,
            reason::AS_EXPECTED,
            "no abort guard was crossed",
        ),
    };
    [
        Desired::new(READY, Status::False, reason, message.clone()),
        Desired::new(PROGRESSING, Status::True, reason, message),
        degraded,
    ]
}

struct Planner<'a> {
    experiment: &'a ChaosExperiment,
    spec: &'a ChaosExperimentSpec,
    view: &'a ClusterView<'a>,
    agents: BTreeMap<String, Agent>,
    uid: String,
    /// The time of this plan.
    now: Timestamp,
    /// `now` at whole seconds: every time written into the status.
    stamp: Timestamp,
}

impl Planner<'_> {
    fn step(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome) -> Step {
        let started = status.phase == phase::INJECTING || status.phase == phase::RECOVERING || ran(status);
        if !started {
            if let Err(errors) = check_spec(self.spec) {
                let message = x0tta6bl4_api::join_field_errors(&errors);
                return Step::new(phase::FAILED, refused(reason::INVALID_SPEC, message), None);
            }
            if !self.spec.action.type_.is_supported() {
                let message = format!(
                    "{} is not supported yet: this release injects network and node faults (partition, loss, corrupt, latency, nodeKill), falseMetric, byzantineUpdate, forgedBeacon, replayedBeacon, signatureFailure, kemDowngrade, keyRevocation and keyExpiry",
                    self.spec.action.type_.as_str()
                );
                return Step::new(phase::FAILED, refused(reason::UNSUPPORTED, message), None);
            }
        }
        match status.phase.as_str() {
            phase::INJECTING => self.injecting(status, outcome),
            phase::RECOVERING => self.recovering(status, outcome),
            _ => self.waiting(status, outcome),
        }
    }

    fn mesh_name(&self) -> &str {
        match (&self.spec.target.mesh_ref, self.view.round) {
            (Some(reference), _) => reference.name.as_str(),
            (None, Some(round)) => round.spec.mesh_ref.name.as_str(),
            (None, None) => "",
        }
    }

    /// The live agents that spec.target allows, and for a round's experiment only the job's
    /// participants.
    fn eligible(&self) -> Vec<String> {
        let mut found = candidates(&self.spec.target, &self.agents, self.view.node_labels);
        if let Some(round) = self.view.round {
            let participants = byzantine::participants(round);
            found.retain(|node| participants.contains(node));
        }
        found
    }

    /// A round's experiment waits for its job to run; `None` when it may go on.
    fn round_gate(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome) -> Option<Step> {
        let reference = self.spec.target.round_ref.as_ref()?;
        let namespace = self.experiment.namespace().unwrap_or_default();
        let Some(round) = self.view.round else {
            let message = format!(
                "FLTrainingRound {} not found in namespace {namespace}",
                reference.name
            );
            return Some(Step::new(
                phase::PENDING,
                waiting(reason::REFERENCE_NOT_FOUND, message),
                Some(MISSING_MESH_RETRY),
            ));
        };
        let job_phase = round.status.as_ref().map_or("", |s| s.phase.as_str());
        if byzantine::round_ended(round) {
            if ran(status) {
                // Held (suspended, kill switch) until the job was over: judge what was seen.
                return Some(self.complete(status, outcome, None));
            }
            let message = format!(
                "FLTrainingRound {} is {job_phase}: there is no running job to attack",
                reference.name
            );
            return Some(Step::new(
                phase::FAILED,
                refused(reason::ROUND_ENDED, message),
                None,
            ));
        }
        if !byzantine::round_running(round) {
            let message = format!(
                "waiting for FLTrainingRound {} to run (it is {})",
                reference.name,
                if job_phase.is_empty() {
                    "not started"
                } else {
                    job_phase
                }
            );
            return Some(Step::new(
                phase::PENDING,
                waiting(reason::ROUND_NOT_RUNNING, message),
                Some(WAITING_RETRY),
            ));
        }
        None
    }

    fn paused(&self) -> bool {
        self.view.mesh.is_some_and(|m| m.spec.chaos.paused)
    }

    fn targets(status: &ChaosExperimentStatus) -> BTreeSet<String> {
        status.targets.iter().cloned().collect()
    }

    /// Pending, Suspended, or a kill switch that held a window: inject once everything allows it.
    fn waiting(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome) -> Step {
        let spec = self.spec;
        let owed = if status.remaining.is_empty() {
            String::new()
        } else {
            format!("; {} of the window remain", status.remaining)
        };
        if spec.suspend {
            let message = format!("spec.suspend is true: nothing is injected{owed}");
            return Step::new(phase::SUSPENDED, running(reason::SUSPENDED, message, None), None);
        }
        if ran(status) && spec.dry_run {
            // The fault is out already (suspended or held by the kill switch); what was
            // measured cannot be judged as the experiment that was asked for.
            let why = "aborted: spec.dryRun was set after the fault had been injected".to_owned();
            status.revert_cause = revert_cause::ABORT.to_owned();
            status.reverted_at.get_or_insert(MicroTime(self.stamp));
            status.remaining.clear();
            status.verdict_message = why.clone();
            return Step::new(
                phase::RECOVERING,
                running(
                    reason::RECOVERING,
                    "waiting for the mesh to converge again".into(),
                    Some(&why),
                ),
                Some(RECOVERING_EVERY),
            )
            .telling(Notice::warning(event::ABORTED, why));
        }
        if let Some(step) = self.round_gate(status, outcome) {
            return step;
        }
        let Some(mesh) = self.view.mesh else {
            let message = format!(
                "MeshNetwork {} not found in namespace {}",
                self.mesh_name(),
                self.experiment.namespace().unwrap_or_default()
            );
            return Step::new(
                phase::PENDING,
                waiting(reason::REFERENCE_NOT_FOUND, message),
                Some(MISSING_MESH_RETRY),
            );
        };
        if spec.dry_run {
            return self.dry_run(status, mesh);
        }
        if mesh.spec.chaos.paused {
            let message = format!(
                "MeshNetwork {} has spec.chaos.paused true (the kill switch): nothing is injected until it is false{owed}",
                self.mesh_name()
            );
            return Step::new(
                phase::PENDING,
                waiting(reason::MESH_CHAOS_PAUSED, message),
                Some(PAUSED_RETRY),
            );
        }
        let silent: Vec<&String> = self
            .agents
            .iter()
            .filter(|(_, agent)| !agent.live)
            .map(|(node, _)| node)
            .collect();
        let steady = converged(mesh).and_then(|()| {
            if silent.is_empty() {
                Ok(())
            } else {
                Err(format!("the agents of {} are not reporting", names(&silent)))
            }
        });
        if let Err(why) = steady {
            let message = format!("the mesh must be converged before a fault is injected: {why}");
            return Step::new(
                phase::PENDING,
                waiting(reason::MESH_UNHEALTHY, message),
                Some(WAITING_RETRY),
            );
        }
        let resuming = !status.remaining.is_empty();
        let (targets, assignments, window) = if resuming {
            // The rest of a window: the same targets and entries as when it first opened.
            (
                status.targets.clone(),
                status.assignments.clone(),
                duration::parse(&status.remaining).unwrap_or_default(),
            )
        } else {
            let candidates = self.eligible();
            if candidates.is_empty() {
                let message = format!(
                    "no live agent of MeshNetwork {} matches spec.target",
                    self.mesh_name()
                );
                return Step::new(
                    phase::PENDING,
                    waiting(reason::NO_CANDIDATES, message),
                    Some(NO_CANDIDATES_RETRY),
                );
            }
            let targets = self.choose(&candidates);
            if let Some(refusal) = blast_radius(spec, &targets, &self.agents).refusal() {
                return Step::new(
                    phase::FAILED,
                    refused(reason::BLAST_RADIUS_EXCEEDED, refusal),
                    None,
                );
            }
            let assignments = assignments(&spec.action, &targets, &self.agents);
            let window = duration::parse(&spec.duration).unwrap_or(Duration::from_secs(60));
            (targets, assignments, window)
        };
        if let Some(why) = busy(self.experiment, &targets, self.view.others) {
            return Step::new(
                phase::PENDING,
                waiting(reason::TARGET_BUSY, why),
                Some(WAITING_RETRY),
            );
        }
        self.inject(status, outcome, targets, assignments, window, resuming)
    }

    /// Opens a window: the one status write the agents act on.
    fn inject(
        &self,
        status: &mut ChaosExperimentStatus,
        outcome: &mut Outcome,
        targets: Vec<String>,
        assignments: Vec<NodeAssignment>,
        window: Duration,
        resuming: bool,
    ) -> Step {
        let deadline = after(self.stamp, window);
        let entries: usize = assignments.iter().map(|a| a.entries.len()).sum();
        let message = format!(
            "{} {} into {} for {}: {entries} fault entries, until {deadline}",
            if resuming { "resumed" } else { "injected" },
            describe_action(&self.spec.action),
            names(&targets),
            format_precise(window),
        );
        if self.spec.action.type_ == ActionType::NodeKill {
            schedule_kills(&mut status.kills, &targets, self.spec, self.stamp);
        }
        status.mesh = self.mesh_name().to_owned();
        if let (ActionType::ByzantineUpdate, Some(round), None) =
            (self.spec.action.type_, self.view.round, &status.byzantine)
        {
            let reference = byzantine::reference(round, self.view.jobs, self.view.others);
            status.byzantine = Some(byzantine::at_injection(&self.spec.action, round, reference));
        }
        if self.spec.action.type_ == ActionType::KeyRevocation && !resuming {
            status.revoked_keys = revoked_keys(&targets, self.view.records);
        }
        status.targets = targets;
        status.assignments = assignments;
        status.injected_at = Some(MicroTime(self.stamp));
        status.deadline = Some(MicroTime(deadline));
        status.remaining.clear();
        status.reverted_at = None;
        status.revert_cause.clear();
        self.kill_due(status, outcome);
        let requeue = INJECTING_EVERY.min(window + DEADLINE_MARGIN);
        // The conditions say what every later look at the open window says, so that the next
        // reconcile has nothing to rewrite; the Event tells the injection in full.
        Step::new(
            phase::INJECTING,
            running(
                reason::INJECTING,
                self.injected_message(&status.targets, deadline),
                None,
            ),
            Some(requeue),
        )
        .telling(Notice::normal(event::INJECTED, message))
    }

    /// What the conditions say while a window is open.
    fn injected_message(&self, targets: &[String], deadline: Timestamp) -> String {
        format!(
            "{} injected into {} until {deadline}",
            describe_action(&self.spec.action),
            names(targets),
        )
    }

    fn injecting(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome) -> Step {
        let (true, Some(deadline)) = (
            status.injected_at.is_some(),
            status.deadline.as_ref().map(|t| t.0),
        ) else {
            // No agent carries a window without both ends: record it as over now.
            return self.window_closed(status, outcome, self.stamp, revert_cause::DURATION);
        };
        let targets = Self::targets(status);
        self.kill_due(status, outcome);
        let measured = measure(status, &self.agents, &targets, None);
        record(status, &measured, self.now < deadline);
        measure_kills(status, &self.agents, &targets);
        // The rounds sealed since the last look count, whatever closes the window now.
        let job_ended = match (self.view.round, status.byzantine.as_mut()) {
            (Some(round), Some(attacked)) => {
                byzantine::observe(attacked, round, &targets, self.view.jobs);
                byzantine::round_ended(round)
            }
            _ => false,
        };
        if self.now >= deadline {
            return self.window_closed(status, outcome, deadline, revert_cause::DURATION);
        }
        if job_ended {
            return self.window_closed(status, outcome, self.stamp, revert_cause::ROUND_ENDED);
        }
        if self.spec.suspend {
            let remaining = self.hold_window(status, outcome, revert_cause::SUSPEND);
            let message =
                format!("spec.suspend is true: the fault is reverted; {remaining} of the window remain");
            return Step::new(
                phase::SUSPENDED,
                running(reason::SUSPENDED, message.clone(), None),
                None,
            )
            .telling(Notice::normal(
                event::REVERTED,
                format!("reverted (cause {}): {message}", revert_cause::SUSPEND),
            ));
        }
        if self.paused() {
            let remaining = self.hold_window(status, outcome, revert_cause::KILL_SWITCH);
            let message = format!(
                "MeshNetwork {} has spec.chaos.paused true (the kill switch): the fault is reverted; {remaining} of the window remain",
                self.mesh_name()
            );
            return Step::new(
                phase::PENDING,
                waiting(reason::MESH_CHAOS_PAUSED, message.clone()),
                Some(PAUSED_RETRY),
            )
            .telling(Notice::warning(
                event::REVERTED,
                format!("reverted (cause {}): {message}", revert_cause::KILL_SWITCH),
            ));
        }
        if self.spec.dry_run {
            return self.abort(
                status,
                outcome,
                "aborted: spec.dryRun was set while the fault was injected".into(),
            );
        }
        if let Err(errors) = check_spec(self.spec) {
            let why = format!(
                "aborted: the spec became invalid: {}",
                x0tta6bl4_api::join_field_errors(&errors)
            );
            return self.abort(status, outcome, why);
        }
        if let Some(why) = abort_guard(self.spec, status, &self.agents, &targets, &measured, self.now) {
            return self.abort(status, outcome, why);
        }
        let message = self.injected_message(&status.targets, deadline);
        let until_deadline = elapsed(self.now, deadline) + DEADLINE_MARGIN;
        let until_next_kill = status
            .kills
            .iter()
            .filter(|kill| kill.killed_at.is_none())
            .filter_map(|kill| kill.due_at.as_ref())
            .map(|due| elapsed(self.now, due.0) + DEADLINE_MARGIN)
            .min()
            .unwrap_or(INJECTING_EVERY);
        Step::new(
            phase::INJECTING,
            running(reason::INJECTING, message, None),
            Some(INJECTING_EVERY.min(until_deadline).min(until_next_kill)),
        )
    }

    /// nodeKill: records every kill that is due as made now, with the pod it deletes; the
    /// reconciler deletes the pods once this status is written.
    fn kill_due(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome) {
        for kill in status.kills.iter_mut() {
            let due = kill.due_at.as_ref().is_some_and(|due| due.0 <= self.now);
            if kill.killed_at.is_some() || !due {
                continue;
            }
            kill.killed_at = Some(MicroTime(self.stamp));
            match self.view.pods.get(&kill.node) {
                Some(pod) => {
                    kill.pod = pod.clone();
                    outcome.pod_deletions.push((kill.node.clone(), pod.clone()));
                }
                None => {
                    kill.note = format!("no agent pod of MeshNetwork {} on this node", self.mesh_name());
                }
            }
        }
    }

    /// Closes the window at `at` (for the operator's books; the phase change is what makes the
    /// agents remove their entries) and adds its length to `injectedFor`.
    fn close(
        &self,
        status: &mut ChaosExperimentStatus,
        outcome: &mut Outcome,
        at: Timestamp,
        cause: &'static str,
    ) {
        if let Some(injected_at) = status.injected_at.as_ref().map(|t| t.0) {
            let before = duration::parse(&status.injected_for).unwrap_or_default();
            status.injected_for = format_precise(before + elapsed(injected_at, at));
        }
        status.reverted_at = Some(MicroTime(at));
        status.revert_cause = cause.to_owned();
        outcome.reverted = Some(cause);
    }

    /// The window ran out (or, for a round's experiment, its job ended): recover.
    fn window_closed(
        &self,
        status: &mut ChaosExperimentStatus,
        outcome: &mut Outcome,
        at: Timestamp,
        cause: &'static str,
    ) -> Step {
        self.close(status, outcome, at, cause);
        let message = format!(
            "the window closed at {at} after {} injected; waiting for the targets to remove their entries and the mesh to converge",
            status.injected_for
        );
        Step::new(
            phase::RECOVERING,
            running(reason::RECOVERING, message.clone(), None),
            Some(RECOVERING_EVERY),
        )
        .telling(Notice::normal(
            event::REVERTED,
            format!("reverted (cause {cause}): {message}"),
        ))
    }

    /// Reverts now but keeps the rest of the window for later (suspend, kill switch).
    fn hold_window(
        &self,
        status: &mut ChaosExperimentStatus,
        outcome: &mut Outcome,
        cause: &'static str,
    ) -> String {
        let deadline = status.deadline.as_ref().map_or(self.stamp, |t| t.0);
        let remaining = format_precise(elapsed(self.stamp, deadline));
        self.close(status, outcome, self.stamp, cause);
        status.remaining = remaining.clone();
        status.injected_at = None;
        status.deadline = None;
        remaining
    }

    /// Reverts now for good; the verdict will be Failed, reason Aborted, with `why`.
    fn abort(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome, why: String) -> Step {
        self.close(status, outcome, self.stamp, revert_cause::ABORT);
        status.verdict_message = why.clone();
        Step::new(
            phase::RECOVERING,
            running(
                reason::RECOVERING,
                "the fault is reverted; waiting for the mesh to converge again".into(),
                Some(&why),
            ),
            Some(RECOVERING_EVERY),
        )
        .telling(Notice::warning(event::ABORTED, why))
    }

    fn recovering(&self, status: &mut ChaosExperimentStatus, outcome: &mut Outcome) -> Step {
        let reverted_at = status.reverted_at.get_or_insert(MicroTime(self.stamp)).0;
        let targets = Self::targets(status);
        let measured = measure(status, &self.agents, &targets, Some(reverted_at));
        record(status, &measured, false);
        let still_active: Vec<String> = targets
            .iter()
            .filter(|node| {
                self.agents.get(*node).is_some_and(|agent| {
                    agent.live && agent.report.as_ref().is_some_and(|r| r.active_entries > 0)
                })
            })
            .cloned()
            .collect();
        let converged_again = self.converged_again();
        if still_active.is_empty() && converged_again.is_ok() {
            let restored = self
                .agents
                .values()
                .filter(|agent| agent.live)
                .filter_map(|agent| agent.last_route_change)
                .fold(reverted_at, Timestamp::max);
            status.time_to_restore = format_precise(elapsed(reverted_at, restored));
            return self.complete(status, outcome, None);
        }
        if self.now >= after(reverted_at, RESTORE_BOUND) {
            status.time_to_restore.clear();
            let why = if still_active.is_empty() {
                format!(
                    "the mesh did not converge again within {} of the revert ({})",
                    format_precise(RESTORE_BOUND),
                    converged_again.err().unwrap_or_default()
                )
            } else {
                format!(
                    "{} still reported fault entries {} after the revert",
                    names(&still_active),
                    format_precise(RESTORE_BOUND)
                )
            };
            return self.complete(status, outcome, Some(why));
        }
        let message = match (still_active.is_empty(), converged_again) {
            (false, _) => format!(
                "the fault is reverted; waiting for {} to remove their fault entries",
                names(&still_active)
            ),
            (true, Err(why)) => {
                format!("the fault is reverted; waiting for the mesh to converge again: {why}")
            }
            (true, Ok(())) => "the fault is reverted".to_owned(),
        };
        let aborted = (status.revert_cause == revert_cause::ABORT).then_some(status.verdict_message.as_str());
        Step::new(
            phase::RECOVERING,
            running(reason::RECOVERING, message, aborted),
            Some(RECOVERING_EVERY),
        )
    }

    /// The mesh is whole again: its Converged condition is True and every live agent's record
    /// shows a route to every other live agent (the condition may lag the records).
    fn converged_again(&self) -> Result<(), String> {
        let mesh = self
            .view
            .mesh
            .ok_or_else(|| format!("MeshNetwork {} not found", self.mesh_name()))?;
        converged(mesh)?;
        let live = self.agents.values().filter(|a| a.live).count();
        let others = i32::try_from(live.saturating_sub(1)).unwrap_or(i32::MAX);
        let lacking: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, agent)| agent.live && agent.route_count < others)
            .map(|(node, _)| node.clone())
            .collect();
        if lacking.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} lack a route to some of the other {others} live agents",
                names(&lacking)
            ))
        }
    }

    fn complete(
        &self,
        status: &mut ChaosExperimentStatus,
        outcome: &mut Outcome,
        not_restored: Option<String>,
    ) -> Step {
        let targets = Self::targets(status);
        let judged = if self.spec.action.type_ == ActionType::ByzantineUpdate {
            byzantine::judge(self.spec, status.byzantine.as_ref())
        } else {
            judge(self.spec, status, &self.agents, &targets)
        };
        status.verdict = judged.verdict.to_owned();
        status.verdict_message = match &not_restored {
            Some(why) => format!("{}; {why}", judged.message),
            None => judged.message.clone(),
        };
        outcome.verdict = Some(judged.verdict);
        outcome.time_to_detect = duration::parse(&status.time_to_detect).ok();
        outcome.time_to_recover = duration::parse(&status.time_to_recover).ok();
        let done = Desired::new(
            PROGRESSING,
            Status::False,
            reason::COMPLETED,
            "the fault was reverted and the experiment judged",
        );
        let conditions = if judged.verdict == verdict::PASSED {
            let degraded = match &not_restored {
                Some(why) => Desired::new(DEGRADED, Status::True, reason::NOT_RESTORED, why.clone()),
                None => Desired::new(
                    DEGRADED,
                    Status::False,
                    reason::AS_EXPECTED,
                    "the experiment passed and the mesh converged again",
                ),
            };
            [
                Desired::new(READY, Status::True, judged.reason, status.verdict_message.clone()),
                done,
                degraded,
            ]
        } else {
            [
                Desired::new(
                    READY,
                    Status::False,
                    judged.reason,
                    status.verdict_message.clone(),
                ),
                done,
                Desired::new(
                    DEGRADED,
                    Status::True,
                    judged.reason,
                    status.verdict_message.clone(),
                ),
            ]
        };
        let note = format!("verdict {}: {}", judged.verdict, status.verdict_message);
        let notice = if judged.verdict == verdict::PASSED && not_restored.is_none() {
            Notice::normal(event::COMPLETED, note)
        } else {
            Notice::warning(event::COMPLETED, note)
        };
        Step::new(phase::COMPLETED, conditions, None).telling(notice)
    }

    /// Targets, entries and guard verdicts, written without injecting anything.
    /// The targets among `candidates`: by spec.target, and for a cascade the chain from there.
    fn choose(&self, candidates: &[String]) -> Vec<String> {
        let targets = select_targets(&self.spec.target, candidates, &self.uid);
        match (&self.spec.action.cascade, targets.as_slice()) {
            (Some(cascade), [first]) => {
                let steps = usize::try_from(cascade.steps).unwrap_or(1);
                cascade_chain(first, steps, &self.agents, &self.uid)
            }
            _ => targets,
        }
    }

    fn dry_run(&self, status: &mut ChaosExperimentStatus, mesh: &MeshNetwork) -> Step {
        let spec = self.spec;
        let candidates = self.eligible();
        let targets = self.choose(&candidates);
        if spec.action.type_ == ActionType::NodeKill {
            // The kills as planned; their times come with a real injection.
            status.kills.clear();
            schedule_kills(&mut status.kills, &targets, spec, self.stamp);
            for kill in &mut status.kills {
                kill.due_at = None;
            }
        }
        let assignments = assignments(&spec.action, &targets, &self.agents);
        let guards = blast_radius(spec, &targets, &self.agents);
        let planned: Vec<String> = if spec.action.type_ == ActionType::NodeKill {
            status
                .kills
                .iter()
                .map(|k| format!("step {}: kill {}", k.step, k.node))
                .collect()
        } else {
            assignments
                .iter()
                .map(|a| format!("{}: {} entries", a.node, a.entries.len()))
                .collect()
        };
        let verdict = |check: &Result<String, String>| match check {
            Ok(fine) => format!("ok ({fine})"),
            Err(refusal) => format!("refused ({refusal})"),
        };
        let message = format!(
            "dry run of {} for {}: {} of {} candidates would be targeted ({}); blast radius: {}; disconnect: {}; mesh converged: {}; kill switch: {}",
            describe_action(&spec.action),
            spec.duration,
            targets.len(),
            candidates.len(),
            if planned.is_empty() {
                "none".to_owned()
            } else {
                names(&planned)
            },
            verdict(&guards.share),
            verdict(&guards.connectivity),
            converged(mesh).map_or_else(|why| format!("no ({why})"), |()| "yes".to_owned()),
            if mesh.spec.chaos.paused { "on" } else { "off" },
        );
        status.targets = targets;
        status.assignments = assignments;
        let problem = if status.targets.is_empty() {
            Some((
                reason::NO_CANDIDATES,
                "no live agent matches spec.target".to_owned(),
            ))
        } else {
            guards.refusal().map(|why| (reason::BLAST_RADIUS_EXCEEDED, why))
        };
        let idle = Desired::new(
            PROGRESSING,
            Status::False,
            reason::DRY_RUN,
            "a dry run injects nothing",
        );
        let conditions = match problem {
            None => [
                Desired::new(READY, Status::True, reason::DRY_RUN, message),
                idle,
                Desired::new(
                    DEGRADED,
                    Status::False,
                    reason::AS_EXPECTED,
                    "the guards would allow the experiment",
                ),
            ],
            Some((why_reason, why)) => [
                Desired::new(READY, Status::False, reason::DRY_RUN, message),
                idle,
                Desired::new(DEGRADED, Status::True, why_reason, why),
            ],
        };
        Step::new(phase::COMPLETED, conditions, None)
    }
}

/// What `spec.validate()` checks, and what this planner needs besides: the blocks and values
/// that the schema's rules require, in case an object predates them.
fn check_spec(spec: &ChaosExperimentSpec) -> Result<(), Vec<FieldError>> {
    let mut errors = spec.validate().err().unwrap_or_default();
    if matches!(
        spec.target.mode,
        TargetMode::FixedPercent | TargetMode::RandomMaxPercent
    ) && spec.target.value.is_none()
    {
        errors.push(FieldError::new(
            "spec.target.value",
            "modes fixedPercent and randomMaxPercent need a value",
        ));
    }
    let action = spec.action.type_;
    if action != ActionType::ByzantineUpdate
        && spec.target.mesh_ref.is_none()
        && spec.target.round_ref.is_none()
    {
        errors.push(FieldError::new(
            "spec.target.meshRef",
            format!("{} acts on a mesh: set spec.target.meshRef", action.as_str()),
        ));
    }
    if matches!(action, ActionType::Loss | ActionType::Corrupt) && spec.action.probability_percent.is_none() {
        errors.push(FieldError::new(
            "spec.action.probabilityPercent",
            "loss and corrupt need probabilityPercent",
        ));
    }
    if action == ActionType::FalseMetric && spec.action.metric_percent.is_none() {
        errors.push(FieldError::new(
            "spec.action.metricPercent",
            "type falseMetric needs metricPercent",
        ));
    }
    if action == ActionType::Latency && spec.action.latency.is_none() {
        errors.push(FieldError::new(
            "spec.action.latency",
            "type latency needs the latency block",
        ));
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// The steady state a fault may be injected into: the mesh's Converged condition is True.
fn converged(mesh: &MeshNetwork) -> Result<(), String> {
    let conditions = mesh
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    match condition::find(conditions, CONVERGED) {
        Some(c) if c.status == "True" => Ok(()),
        Some(c) => Err(format!("Converged is {} ({}: {})", c.status, c.reason, c.message)),
        None => Err("Converged is not reported yet".to_owned()),
    }
}

/// The concurrency rule: one injected experiment at a time per node of a mesh. An experiment
/// whose targets overlap the targets of another experiment of the same mesh that is Injecting
/// waits (Pending, reason TargetBusy) until that one has stopped injecting: an agent's kernel
/// holds one fault entry per peer address, so two experiments on one node would overwrite each
/// other's entries, and neither could be measured. Experiments with disjoint targets run
/// together. Returns why this one must wait.
fn busy(experiment: &ChaosExperiment, targets: &[String], others: &[ChaosExperiment]) -> Option<String> {
    let mesh = experiment.spec.target.mesh_ref.as_ref()?;
    let uid = experiment.uid();
    others
        .iter()
        .filter(|other| other.uid() != uid && other.metadata.deletion_timestamp.is_none())
        .filter(|other| other.spec.target.mesh_ref.as_ref() == Some(mesh))
        .find_map(|other| {
            let status = other.status.as_ref()?;
            if status.phase != phase::INJECTING {
                return None;
            }
            let shared: Vec<String> = targets
                .iter()
                .filter(|node| status.targets.contains(node))
                .cloned()
                .collect();
            (!shared.is_empty()).then(|| {
                format!(
                    "{} also targeted by experiment {}, which is injecting; one experiment at a time per node",
                    names(&shared),
                    other.name_any()
                )
            })
        })
}

/// A duration as status fields spell it, to the millisecond (`1.234s`, `300ms`, `2m0.5s`).
pub fn format_precise(value: Duration) -> String {
    let millis = (value.as_nanos() + 500_000) / 1_000_000;
    duration::format(Duration::from_millis(u64::try_from(millis).unwrap_or(u64::MAX)))
}

pub(super) fn describe_action(action: &ActionSpec) -> String {
    let direction = match action.direction {
        Direction::To => "to",
        Direction::From => "from",
        Direction::Both => "both",
    };
    match action.type_ {
        ActionType::Partition => format!("partition ({direction})"),
        ActionType::Loss | ActionType::Corrupt => format!(
            "{} {}%",
            action.type_.as_str(),
            action.probability_percent.unwrap_or_default()
        ),
        ActionType::Latency => match &action.latency {
            Some(latency) => match &latency.jitter {
                Some(jitter) => format!("latency {} ± {jitter}", latency.delay),
                None => format!("latency {}", latency.delay),
            },
            None => "latency".to_owned(),
        },
        ActionType::ForgedBeacon => "forgedBeacon (advertisements in other nodes' names)".to_owned(),
        ActionType::ReplayedBeacon => {
            "replayedBeacon (other nodes' old advertisements sent again)".to_owned()
        }
        ActionType::KemDowngrade => "kemDowngrade (classical key exchange only)".to_owned(),
        ActionType::KeyRevocation => {
            "keyRevocation (the targets' keys revoked by the mesh authority)".to_owned()
        }
        ActionType::KeyExpiry => "keyExpiry (the targets' endorsements let run out)".to_owned(),
        ActionType::SignatureFailure => {
            "signatureFailure (advertisements and FL updates with spoiled signatures)".to_owned()
        }
        ActionType::FalseMetric => format!(
            "falseMetric (link costs advertised at {}% of what is measured)",
            action.metric_percent.unwrap_or_default()
        ),
        other => other.as_str().to_owned(),
    }
}

/// keyRevocation: each target's key as its record shows it endorsed when the window opens,
/// with every earlier epoch.
fn revoked_keys(targets: &[String], records: &[MeshNode]) -> Vec<RevokedKey> {
    targets
        .iter()
        .map(|target| RevokedKey {
            node_name: target.clone(),
            through_key_epoch: records
                .iter()
                .find(|record| record.spec.node_name == *target)
                .and_then(|record| record.status.as_ref())
                .and_then(|status| status.endorsed_epoch)
                .unwrap_or(0),
            reason: "keyRevocation experiment".to_owned(),
        })
        .collect()
}

/// Names for a message: all of a few, the first [`NAMES_LISTED`] of many.
pub(super) fn names<S: AsRef<str>>(all: &[S]) -> String {
    let mut listed: Vec<&str> = all.iter().take(NAMES_LISTED).map(AsRef::as_ref).collect();
    let rest = all.len().saturating_sub(NAMES_LISTED);
    let more = format!("and {rest} more");
    if rest > 0 {
        listed.push(&more);
    }
    listed.join(", ")
}

/// The kills of a nodeKill experiment: every target at once, or a cascade's chain one
/// interval apart. Kills already made (a resumed window) are kept; the rest are due again from
/// the new window's start.
fn schedule_kills(
    kills: &mut Vec<x0tta6bl4_api::chaos::KillStep>,
    targets: &[String],
    spec: &ChaosExperimentSpec,
    start: Timestamp,
) {
    let interval = spec
        .action
        .cascade
        .as_ref()
        .and_then(|c| duration::parse(&c.interval).ok());
    let mut pending = 0u32;
    for (index, node) in targets.iter().enumerate() {
        let step = if interval.is_some() { index + 1 } else { 1 };
        if let Some(done) = kills.iter().find(|k| &k.node == node)
            && done.killed_at.is_some()
        {
            continue;
        }
        let due = match interval {
            Some(every) => after(start, every * pending),
            None => start,
        };
        pending += 1;
        kills.retain(|k| &k.node != node);
        kills.push(x0tta6bl4_api::chaos::KillStep {
            step: i32::try_from(step).unwrap_or(i32::MAX),
            node: node.clone(),
            due_at: Some(MicroTime(due)),
            ..Default::default()
        });
    }
    kills.sort_by_key(|k| (k.step, k.node.clone()));
}

/// Times go into the status as MicroTime: a time truncated to microseconds reads back exactly.
fn whole_microsecond(time: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(time.as_microsecond()).unwrap_or(time)
}

/// `to - from`, or zero when `to` is earlier.
pub(super) fn elapsed(from: Timestamp, to: Timestamp) -> Duration {
    Duration::try_from(to.duration_since(from)).unwrap_or(Duration::ZERO)
}

pub(super) fn after(time: Timestamp, span: Duration) -> Timestamp {
    SignedDuration::try_from(span)
        .ok()
        .and_then(|span| time.checked_add(span).ok())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use x0tta6bl4_api::mesh_node::NeighbourStatus;
    use x0tta6bl4_api::{MeshNetworkStatus, MeshNodeStatus};

    use super::*;
    use crate::testing;
    use x0tta6bl4_api::chaos::{AgentChaosReport, TargetSpec};

    const UID: &str = "uid-1";
    const BASE: i64 = 1_700_000_000;
    /// Partition node-2 (the only node labelled chaos=victim) for a minute.
    const CUT_NODE_2: &str = "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: partition}, duration: 60s}";

    fn at(offset: i64) -> Time {
        Time(Timestamp::from_second(BASE + offset).unwrap())
    }

    fn micro(offset: i64) -> MicroTime {
        MicroTime(at(offset).0)
    }

    fn at_millis(offset: i64) -> Time {
        Time(Timestamp::from_millisecond(BASE * 1000 + offset).unwrap())
    }

    fn mk_experiment_named(name: &str, uid: &str, spec: &str) -> ChaosExperiment {
        serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: ChaosExperiment\nmetadata: {{name: {name}, namespace: team, uid: {uid}, generation: 1}}\nspec: {spec}"
        ))
        .unwrap()
    }

    fn mk_experiment(spec: &str) -> ChaosExperiment {
        mk_experiment_named("cut", UID, spec)
    }

    fn mk_spec(spec: &str) -> ChaosExperimentSpec {
        serde_norway::from_str(spec).unwrap()
    }

    fn mk_target(target: &str) -> TargetSpec {
        serde_norway::from_str(target).unwrap()
    }

    fn mk_mesh(converged: bool) -> MeshNetwork {
        let mut mesh: MeshNetwork = serde_norway::from_str(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNetwork\nmetadata: {name: demo, namespace: team}\nspec: {}",
        )
        .unwrap();
        let (status, reason) = if converged {
            ("True", "AllRoutesKnown")
        } else {
            ("False", "PartialReachability")
        };
        mesh.status = Some(MeshNetworkStatus {
            conditions: vec![Condition {
                type_: CONVERGED.into(),
                status: status.into(),
                reason: reason.into(),
                message: "as the test has it".into(),
                last_transition_time: at(-100),
                observed_generation: Some(1),
            }],
            ..Default::default()
        });
        mesh
    }

    /// The record of node-<index>, at 198.18.251.<index + 1>, with sessions to `neighbours`.
    fn mk_agent(index: usize, neighbours: &[usize], routes: usize) -> MeshNode {
        let mut record: MeshNode = serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNode\nmetadata: {{name: demo-node-{index}, namespace: team}}\nspec: {{meshName: demo, nodeName: node-{index}}}"
        ))
        .unwrap();
        record.status = Some(MeshNodeStatus {
            endpoint: format!("198.18.251.{}:5000/5001", index + 1),
            neighbours: neighbours
                .iter()
                .map(|n| NeighbourStatus {
                    node: format!("node-{n}"),
                    ..Default::default()
                })
                .collect(),
            route_count: routes as i32,
            last_report_time: Some(at(0)),
            ..Default::default()
        });
        record
    }

    fn mk_ring(n: usize) -> Vec<MeshNode> {
        (0..n)
            .map(|i| mk_agent(i, &[(i + n - 1) % n, (i + 1) % n], n - 1))
            .collect()
    }

    fn mk_line(n: usize) -> Vec<MeshNode> {
        (0..n)
            .map(|i| {
                let neighbours: Vec<usize> = [i.checked_sub(1), Some(i + 1).filter(|j| *j < n)]
                    .into_iter()
                    .flatten()
                    .collect();
                mk_agent(i, &neighbours, n - 1)
            })
            .collect()
    }

    fn mk_nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    /// An experiment, its mesh and the mesh's agents, planned as the reconciler would: each
    /// plan's status is written and read back at the precision of the wire.
    struct World {
        experiment: ChaosExperiment,
        mesh: Option<MeshNetwork>,
        records: Vec<MeshNode>,
        /// Agents that stopped writing their records.
        silent: BTreeSet<String>,
        labels: BTreeMap<String, BTreeMap<String, String>>,
        others: Vec<ChaosExperiment>,
        /// The agent pod on each node.
        pods: BTreeMap<String, String>,
        /// The FLTrainingRound of a round's experiment.
        round: Option<FLTrainingRound>,
    }

    impl World {
        fn new(spec: &str, records: Vec<MeshNode>) -> Self {
            let labels = records
                .iter()
                .map(|r| {
                    let node = r.spec.node_name.clone();
                    let labels = if node == "node-2" {
                        BTreeMap::from([("chaos".to_owned(), "victim".to_owned())])
                    } else {
                        BTreeMap::new()
                    };
                    (node, labels)
                })
                .collect();
            let pods = records
                .iter()
                .map(|r| {
                    (
                        r.spec.node_name.clone(),
                        format!("demo-agent-{}", r.spec.node_name),
                    )
                })
                .collect();
            Self {
                pods,
                experiment: mk_experiment(spec),
                mesh: Some(mk_mesh(true)),
                records,
                silent: BTreeSet::new(),
                labels,
                others: Vec::new(),
                round: None,
            }
        }

        fn plan_at(&mut self, offset: i64) -> Plan {
            self.plan_at_time(at(offset))
        }

        fn plan_at_time(&mut self, now: Time) -> Plan {
            for record in &mut self.records {
                if !self.silent.contains(&record.spec.node_name) {
                    record.status.as_mut().unwrap().last_report_time = Some(now.clone());
                }
            }
            let view = ClusterView {
                mesh: self.mesh.as_ref(),
                records: &self.records,
                node_labels: &self.labels,
                others: &self.others,
                pods: &self.pods,
                round: self.round.as_ref(),
                jobs: &[],
            };
            let planned = plan(&self.experiment, &view, &now);
            let wire = serde_json::to_value(&planned.status).unwrap();
            self.experiment.status = Some(serde_json::from_value(wire).unwrap());
            planned
        }

        fn status(&self) -> &ChaosExperimentStatus {
            self.experiment.status.as_ref().unwrap()
        }

        fn edit_spec(&mut self, edit: impl FnOnce(&mut ChaosExperimentSpec)) {
            edit(&mut self.experiment.spec);
            let generation = self.experiment.metadata.generation.unwrap_or(1);
            self.experiment.metadata.generation = Some(generation + 1);
        }

        fn record(&mut self, node: &str) -> &mut MeshNodeStatus {
            self.records
                .iter_mut()
                .find(|r| r.spec.node_name == node)
                .unwrap()
                .status
                .as_mut()
                .unwrap()
        }

        /// Edits `node`'s report on the experiment.
        fn report(&mut self, node: &str, edit: impl FnOnce(&mut AgentChaosReport)) {
            let status = self.record(node);
            if status.chaos.is_empty() {
                status.chaos.push(AgentChaosReport {
                    experiment: "cut".into(),
                    uid: UID.into(),
                    ..Default::default()
                });
            }
            edit(&mut status.chaos[0]);
        }

        /// node-2 installed its entries at 1 s; node-1 and node-3 lost it at 3 s and 4 s; every
        /// untargeted agent routed around it by 6 s.
        fn with_reports_of_a_fault_routed_around(&mut self) {
            self.report("node-2", |r| {
                r.target = true;
                r.applied_at = Some(micro(1));
                r.active_entries = 3;
                r.mechanism = "ebpf".into();
            });
            for (node, detected, avoiding) in [
                ("node-0", None, 5),
                ("node-1", Some(3), 6),
                ("node-3", Some(4), 6),
            ] {
                self.report(node, |r| {
                    r.detected_at = detected.map(micro);
                    r.detection = detected.map_or(String::new(), |_| "neighbour node-2 lost".into());
                    r.avoiding_since = Some(micro(avoiding));
                    r.reachable = 2;
                    r.peers = 2;
                });
            }
        }

        /// node-2 removed its entries when the window closed at 60 s.
        fn with_target_reverted(&mut self) {
            self.report("node-2", |r| {
                r.active_entries = 0;
                r.reverted_at = Some(micro(60));
                r.revert_cause = "deadline".into();
            });
        }
    }

    fn condition_of<'a>(status: &'a ChaosExperimentStatus, type_: &str) -> (&'a str, &'a str) {
        let c = condition::find(&status.conditions, type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn reasons(plan: &Plan) -> Vec<&'static str> {
        plan.events.iter().map(|e| e.reason).collect()
    }

    #[test]
    fn each_mode_chooses_its_count_and_the_same_nodes_every_time() {
        let ten = mk_nodes(10);
        let count = |target: &str| select_targets(&mk_target(target), &ten, UID).len();
        assert_eq!(count("{mode: one}"), 1);
        assert_eq!(count("{mode: all}"), 10);
        assert_eq!(count("{mode: fixed, value: 3}"), 3);
        assert_eq!(count("{mode: fixed, value: 30}"), 10, "never more than there are");
        assert_eq!(
            count("{mode: fixedPercent, value: 25}"),
            2,
            "25% of 10, rounded down"
        );
        assert_eq!(count("{mode: fixedPercent, value: 5}"), 1, "at least one");
        let fixed = mk_target("{mode: fixed, value: 3}");
        let chosen = select_targets(&fixed, &ten, UID);
        assert_eq!(
            select_targets(&fixed, &ten, UID),
            chosen,
            "stable for one experiment"
        );
        let mut sorted = chosen.clone();
        sorted.sort();
        assert_eq!(chosen, sorted, "listed by name");
        assert_ne!(
            select_targets(&fixed, &ten, "uid-2"),
            chosen,
            "another experiment draws its own"
        );
        assert!(select_targets(&mk_target("{mode: all}"), &[], UID).is_empty());
    }

    #[test]
    fn a_random_max_percent_count_is_seeded_and_stays_within_its_bound() {
        let ten = mk_nodes(10);
        let target = mk_target("{mode: randomMaxPercent, value: 50}");
        let mut counts = BTreeSet::new();
        for seed in 0..64 {
            let seed = format!("uid-{seed}");
            let chosen = select_targets(&target, &ten, &seed);
            assert!((1..=5).contains(&chosen.len()), "{seed}: {}", chosen.len());
            assert_eq!(select_targets(&target, &ten, &seed), chosen);
            counts.insert(chosen.len());
        }
        assert!(
            counts.len() > 1,
            "the count varies between experiments: {counts:?}"
        );
    }

    #[test]
    fn only_live_agents_on_matching_nodes_are_candidates() {
        let mut records = mk_ring(4);
        records[3].status.as_mut().unwrap().last_report_time = Some(at(-200));
        let agents = agents(&records, UID, &at(0));
        let victims = BTreeMap::from([
            (
                "node-2".to_owned(),
                BTreeMap::from([("chaos".to_owned(), "victim".to_owned())]),
            ),
            (
                "node-3".to_owned(),
                BTreeMap::from([("chaos".to_owned(), "victim".to_owned())]),
            ),
        ]);
        assert_eq!(
            candidates(&mk_target("{}"), &agents, &BTreeMap::new()),
            ["node-0", "node-1", "node-2"],
            "node-3 has been silent for 200 s"
        );
        assert_eq!(
            candidates(&mk_target("{nodeSelector: {chaos: victim}}"), &agents, &victims),
            ["node-2"]
        );
    }

    #[test]
    fn endpoint_addresses_are_read_from_every_published_form() {
        let ip = |text: &str| endpoint_address(text).map(|ip| ip.to_string());
        assert_eq!(ip("198.18.251.2:7946").as_deref(), Some("198.18.251.2"));
        assert_eq!(ip("198.18.251.2:5000/5001").as_deref(), Some("198.18.251.2"));
        assert_eq!(ip("198.18.251.2").as_deref(), Some("198.18.251.2"));
        assert_eq!(ip("[fd00::2]:5000/5001").as_deref(), Some("fd00::2"));
        assert_eq!(ip("fd00::2").as_deref(), Some("fd00::2"));
        assert_eq!(ip("[::ffff:198.18.251.3]:7946").as_deref(), Some("198.18.251.3"));
        assert_eq!(ip(""), None);
        assert_eq!(ip("node-1:7946"), None);
        assert_eq!(ip("[fd00::2:7946"), None);
    }

    #[test]
    fn a_target_gets_one_entry_per_other_live_agent_with_the_action_parameters() {
        let mut records = mk_ring(5);
        records[3].status.as_mut().unwrap().last_report_time = Some(at(-200));
        records[4].status.as_mut().unwrap().endpoint.clear();
        let agents = agents(&records, UID, &at(0));
        let targets = ["node-1".to_owned()];
        let loss = assignments(
            &mk_spec("{target: {}, action: {type: loss, probabilityPercent: 30, direction: to}}").action,
            &targets,
            &agents,
        );
        assert_eq!(loss.len(), 1);
        assert_eq!(loss[0].node, "node-1");
        let peers: Vec<(&str, &str)> = loss[0]
            .entries
            .iter()
            .map(|e| (e.peer.as_str(), e.address.as_str()))
            .collect();
        assert_eq!(
            peers,
            [("node-0", "198.18.251.1"), ("node-2", "198.18.251.3")],
            "node-3 is dead and node-4 published no endpoint"
        );
        let entry = &loss[0].entries[0];
        assert_eq!(
            (entry.drop_percent, entry.partition, entry.direction),
            (Some(30), false, Direction::To)
        );
        let latency = assignments(
            &mk_spec("{target: {}, action: {type: latency, latency: {delay: 100ms, jitter: 10ms}}}").action,
            &targets,
            &agents,
        );
        let entry = &latency[0].entries[0];
        assert_eq!((entry.delay_millis, entry.jitter_millis), (Some(100), Some(10)));
        assert_eq!((entry.drop_percent, entry.partition), (None, false));
        let partition = assignments(
            &mk_spec("{target: {}, action: {type: partition}}").action,
            &targets,
            &agents,
        );
        assert!(
            partition[0]
                .entries
                .iter()
                .all(|e| e.partition && e.direction == Direction::Both)
        );
        let corrupt = assignments(
            &mk_spec("{target: {}, action: {type: corrupt, probabilityPercent: 5}}").action,
            &targets,
            &agents,
        );
        assert_eq!(corrupt[0].entries[0].corrupt_percent, Some(5));
    }

    #[test]
    fn a_cut_vertex_target_in_a_line_of_three_is_refused_unless_disconnect_is_allowed() {
        let agents = agents(&mk_line(3), UID, &at(0));
        let middle = ["node-1".to_owned()];
        let spec = mk_spec("{target: {}, action: {type: partition}}");
        let check = blast_radius(&spec, &middle, &agents);
        let refusal = check.refusal().unwrap();
        assert!(
            refusal.contains("without node-1 the 2 untargeted agents split into 2 parts: {node-0}, {node-2}"),
            "{refusal}"
        );
        assert!(check.share.is_ok(), "one of three is within 50%");
        let allowed =
            mk_spec("{target: {}, action: {type: partition}, blastRadius: {allowDisconnect: true}}");
        assert_eq!(blast_radius(&allowed, &middle, &agents).refusal(), None);
        let end = ["node-0".to_owned()];
        assert_eq!(
            blast_radius(&spec, &end, &agents).refusal(),
            None,
            "an end is no cut vertex"
        );

        let mut world = World::new(CUT_NODE_2, mk_line(3));
        world.labels.insert(
            "node-1".into(),
            BTreeMap::from([("chaos".to_owned(), "victim".to_owned())]),
        );
        world.labels.insert("node-2".into(), BTreeMap::new());
        let refused = world.plan_at(0);
        assert_eq!(refused.status.phase, phase::FAILED);
        assert_eq!(
            condition_of(&refused.status, READY),
            ("False", reason::BLAST_RADIUS_EXCEEDED)
        );
        assert_eq!(condition_of(&refused.status, DEGRADED).0, "True");
        assert_eq!(
            (refused.status.injected_at.clone(), refused.requeue),
            (None, None)
        );
        assert!(refused.status.targets.is_empty(), "nothing was injected");
        assert!(is_settled(&world.experiment), "no retry until the spec changes");
    }

    #[test]
    fn targeting_more_than_max_target_percent_is_refused_with_the_numbers() {
        let agents = agents(&mk_ring(3), UID, &at(0));
        let two = ["node-0".to_owned(), "node-1".to_owned()];
        let spec = mk_spec("{target: {}, action: {type: loss, probabilityPercent: 10}}");
        assert_eq!(
            blast_radius(&spec, &two, &agents).refusal().unwrap(),
            "2 of 3 live agents targeted (66%), spec.blastRadius.maxTargetPercent is 50"
        );
        let wide = mk_spec(
            "{target: {}, action: {type: loss, probabilityPercent: 10}, blastRadius: {maxTargetPercent: 70}}",
        );
        assert_eq!(blast_radius(&wide, &two, &agents).refusal(), None);
    }

    #[test]
    fn a_fault_that_only_degrades_links_is_not_held_to_the_disconnect_check() {
        let agents = agents(&mk_line(3), UID, &at(0));
        let middle = ["node-1".to_owned()];
        let lossy = mk_spec("{target: {}, action: {type: loss, probabilityPercent: 30}}");
        assert_eq!(blast_radius(&lossy, &middle, &agents).refusal(), None);
        let total = mk_spec("{target: {}, action: {type: loss, probabilityPercent: 100}}");
        assert!(
            blast_radius(&total, &middle, &agents).refusal().is_some(),
            "100% loss cuts"
        );
    }

    #[test]
    fn a_dry_run_writes_targets_and_entries_but_never_a_window() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: partition}, dryRun: true}",
            mk_ring(4),
        );
        let dry = world.plan_at(0);
        assert_eq!(dry.status.phase, phase::COMPLETED);
        assert_eq!(dry.status.targets, ["node-2"]);
        assert_eq!(dry.status.assignments[0].entries.len(), 3);
        assert_eq!(
            (dry.status.injected_at.clone(), dry.status.deadline.clone()),
            (None, None)
        );
        assert_eq!(dry.status.verdict, "");
        assert_eq!(condition_of(&dry.status, READY), ("True", reason::DRY_RUN));
        let message = &condition::find(&dry.status.conditions, READY).unwrap().message;
        for part in [
            "node-2: 3 entries",
            "blast radius: ok (1 of 4 live agents targeted (25%)",
            "disconnect: ok",
            "mesh converged: yes",
            "kill switch: off",
        ] {
            assert!(message.contains(part), "{part} in {message}");
        }
        assert_eq!(world.plan_at(5).events, [], "a finished dry run is left alone");
        world.edit_spec(|spec| spec.dry_run = false);
        assert_eq!(
            world.plan_at(10).status.phase,
            phase::INJECTING,
            "then run for real"
        );
    }

    #[test]
    fn the_first_plan_injects_in_one_write_with_a_window_of_the_duration() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        let first = world.plan_at_time(at_millis(400));
        let status = &first.status;
        assert_eq!(status.phase, phase::INJECTING);
        assert_eq!(status.targets, ["node-2"]);
        assert_eq!(
            status.injected_at,
            Some(MicroTime(at_millis(400).0)),
            "to the microsecond, as MicroTime has it on the wire"
        );
        assert_eq!(status.deadline, Some(MicroTime(at_millis(60_400).0)));
        assert_eq!(status.assignments.len(), 1);
        let peers: Vec<(&str, &str)> = status.assignments[0]
            .entries
            .iter()
            .map(|e| (e.peer.as_str(), e.address.as_str()))
            .collect();
        assert_eq!(
            peers,
            [
                ("node-0", "198.18.251.1"),
                ("node-1", "198.18.251.2"),
                ("node-3", "198.18.251.4")
            ]
        );
        assert_eq!(reasons(&first), [event::INJECTED]);
        assert_eq!(first.requeue, Some(INJECTING_EVERY));
        assert_eq!(condition_of(status, READY), ("False", reason::INJECTING));
        assert_eq!(condition_of(status, PROGRESSING), ("True", reason::INJECTING));
        assert_eq!(condition_of(status, DEGRADED), ("False", reason::AS_EXPECTED));
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn a_re_plan_never_extends_or_reopens_the_window() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.plan_at(0);
        let injected = world.status().clone();
        let window = (injected.injected_at.clone(), injected.deadline.clone());
        for offset in [1, 30, 58] {
            let again = world.plan_at(offset);
            assert_eq!(again.status.phase, phase::INJECTING);
            assert_eq!(
                (again.status.injected_at.clone(), again.status.deadline.clone()),
                window
            );
            assert_eq!(again.events, [], "no second injection");
            assert_eq!(again.status, injected, "nothing to rewrite while the window runs");
        }
        assert_eq!(
            world.plan_at_time(at_millis(59_500)).requeue,
            Some(Duration::from_millis(510)),
            "the last look lands just after the deadline"
        );
    }

    #[test]
    fn the_deadline_reverts_and_recovering_completes_with_a_time_to_restore() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.plan_at(0);
        world.with_reports_of_a_fault_routed_around();
        // Every agent bounds its neighbours' clocks within 40 µs: node-0 is two links from
        // node-2, whose entries went in first.
        for node in ["node-0", "node-1", "node-2", "node-3"] {
            for neighbour in &mut world.record(node).neighbours {
                neighbour.clock_bound_micros = Some(40);
            }
        }
        let measured = world.plan_at(10);
        assert_eq!(measured.status.clock_skew_bound, "80us");
        assert_eq!(
            measured.status.time_to_detect, "2s",
            "node-1 at 3 s, after the entries at 1 s"
        );
        assert_eq!(measured.status.detected_by, "node-1: neighbour node-2 lost");
        assert_eq!(
            measured.status.time_to_recover, "5s",
            "the last untargeted agent at 6 s"
        );
        assert_eq!(measured.status.reachable_percent, Some(100));

        let reverted = world.plan_at(60);
        assert_eq!(reverted.status.phase, phase::RECOVERING);
        assert_eq!(reverted.status.reverted_at, Some(micro(60)));
        assert_eq!(reverted.status.revert_cause, revert_cause::DURATION);
        assert_eq!(reverted.status.injected_for, "1m0s");
        assert_eq!(reasons(&reverted), [event::REVERTED]);
        assert_eq!(reverted.outcome.reverted, Some(revert_cause::DURATION));
        assert_eq!(reverted.requeue, Some(RECOVERING_EVERY));

        let waiting = world.plan_at(61);
        assert_eq!(
            waiting.status.phase,
            phase::RECOVERING,
            "node-2 still holds its entries"
        );
        assert!(
            condition::find(&waiting.status.conditions, READY)
                .unwrap()
                .message
                .contains("node-2")
        );

        world.with_target_reverted();
        world.record("node-1").last_route_change_time = Some(micro(62));
        world.record("node-3").last_route_change_time = Some(micro(20));
        let done = world.plan_at(63);
        assert_eq!(done.status.phase, phase::COMPLETED);
        assert_eq!(done.status.time_to_restore, "2s");
        assert_eq!(done.status.verdict, verdict::PASSED);
        assert_eq!(
            done.status.verdict_message,
            "detected after 2s by node-1: neighbour node-2 lost; recovered after 5s; 100% of pairs of untargeted agents reachable at the end of the fault"
        );
        assert_eq!(condition_of(&done.status, READY), ("True", reason::PASSED));
        assert_eq!(
            condition_of(&done.status, PROGRESSING),
            ("False", reason::COMPLETED)
        );
        assert_eq!(
            condition_of(&done.status, DEGRADED),
            ("False", reason::AS_EXPECTED)
        );
        assert_eq!(reasons(&done), [event::COMPLETED]);
        assert!(!done.events[0].warning);
        assert_eq!(done.outcome.verdict, Some(verdict::PASSED));
        assert_eq!(done.outcome.time_to_detect, Some(Duration::from_secs(2)));
        assert_eq!(done.outcome.time_to_recover, Some(Duration::from_secs(5)));

        assert!(is_settled(&world.experiment));
        let after = world.plan_at(100);
        assert_eq!((after.events.len(), after.requeue), (0, None));
        assert_eq!(
            after.status,
            *world.status(),
            "a finished experiment is left alone"
        );
    }

    #[test]
    fn suspend_and_resume_inject_for_the_duration_in_total() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.plan_at(0);
        world.edit_spec(|spec| spec.suspend = true);
        let suspended = world.plan_at(20);
        let status = &suspended.status;
        assert_eq!(status.phase, phase::SUSPENDED);
        assert_eq!(
            (status.remaining.as_str(), status.injected_for.as_str()),
            ("40s", "20s")
        );
        assert_eq!(
            (status.injected_at.clone(), status.deadline.clone()),
            (None, None)
        );
        assert_eq!(
            (status.reverted_at.clone(), status.revert_cause.as_str()),
            (Some(micro(20)), revert_cause::SUSPEND)
        );
        assert_eq!(reasons(&suspended), [event::REVERTED]);
        assert_eq!(suspended.requeue, None);
        assert_eq!(condition_of(status, PROGRESSING), ("True", reason::SUSPENDED));
        assert_eq!(world.plan_at(25).events, []);

        world.edit_spec(|spec| spec.suspend = false);
        let resumed = world.plan_at(100);
        assert_eq!(resumed.status.phase, phase::INJECTING);
        assert_eq!(
            (
                resumed.status.injected_at.clone(),
                resumed.status.deadline.clone()
            ),
            (Some(micro(100)), Some(micro(140))),
            "a window of what remained"
        );
        assert_eq!(resumed.status.targets, ["node-2"]);
        assert!(
            resumed.events[0].note.starts_with("resumed"),
            "{}",
            resumed.events[0].note
        );
        assert_eq!(
            (
                resumed.status.reverted_at.clone(),
                resumed.status.revert_cause.as_str()
            ),
            (None, "")
        );

        let ended = world.plan_at(140);
        assert_eq!(ended.status.phase, phase::RECOVERING);
        assert_eq!(
            duration::parse(&ended.status.injected_for).unwrap(),
            duration::parse(&world.experiment.spec.duration).unwrap()
        );
    }

    #[test]
    fn the_kill_switch_reverts_keeps_the_rest_of_the_window_and_resumes_it() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.mesh.as_mut().unwrap().spec.chaos.paused = true;
        let held = world.plan_at(0);
        assert_eq!(held.status.phase, phase::PENDING);
        assert_eq!(
            condition_of(&held.status, READY),
            ("False", reason::MESH_CHAOS_PAUSED)
        );
        assert_eq!(
            held.status.injected_at, None,
            "nothing is injected under the kill switch"
        );

        world.mesh.as_mut().unwrap().spec.chaos.paused = false;
        world.plan_at(10);
        assert_eq!(world.status().deadline, Some(micro(70)));
        world.mesh.as_mut().unwrap().spec.chaos.paused = true;
        let paused = world.plan_at(30);
        assert_eq!(paused.status.phase, phase::PENDING);
        assert_eq!(paused.status.revert_cause, revert_cause::KILL_SWITCH);
        assert_eq!(
            (
                paused.status.remaining.as_str(),
                paused.status.injected_for.as_str()
            ),
            ("40s", "20s")
        );
        assert_eq!(reasons(&paused), [event::REVERTED]);
        assert!(paused.events[0].warning);
        assert_eq!(paused.outcome.reverted, Some(revert_cause::KILL_SWITCH));
        assert_eq!(world.plan_at(40).events, [], "still paused: nothing new");

        world.mesh.as_mut().unwrap().spec.chaos.paused = false;
        let resumed = world.plan_at(50);
        assert_eq!(resumed.status.phase, phase::INJECTING);
        assert_eq!(resumed.status.deadline, Some(micro(90)));
    }

    #[test]
    fn an_unconverged_or_missing_mesh_makes_the_experiment_wait() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.mesh = Some(mk_mesh(false));
        let unhealthy = world.plan_at(0);
        assert_eq!(unhealthy.status.phase, phase::PENDING);
        assert_eq!(
            condition_of(&unhealthy.status, READY),
            ("False", reason::MESH_UNHEALTHY)
        );
        assert_eq!(condition_of(&unhealthy.status, PROGRESSING).0, "True");
        assert_eq!(unhealthy.requeue, Some(WAITING_RETRY));
        assert_eq!(unhealthy.status.injected_at, None);
        world.mesh = None;
        let missing = world.plan_at(1);
        assert_eq!(
            condition_of(&missing.status, READY),
            ("False", reason::REFERENCE_NOT_FOUND)
        );
        assert_eq!(missing.requeue, Some(MISSING_MESH_RETRY));
        world.mesh = Some(mk_mesh(true));
        assert_eq!(world.plan_at(2).status.phase, phase::INJECTING);
    }

    #[test]
    fn an_experiment_waits_while_another_injects_into_the_same_node() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        let mut other = mk_experiment_named("other", "uid-2", CUT_NODE_2);
        other.status = Some(ChaosExperimentStatus {
            phase: phase::INJECTING.into(),
            targets: vec!["node-2".into()],
            ..Default::default()
        });
        world.others = vec![other];
        let busy = world.plan_at(0);
        assert_eq!(busy.status.phase, phase::PENDING);
        assert_eq!(condition_of(&busy.status, READY), ("False", reason::TARGET_BUSY));
        let message = &condition::find(&busy.status.conditions, READY).unwrap().message;
        assert!(
            message.contains("node-2") && message.contains("other"),
            "{message}"
        );
        assert_eq!(busy.requeue, Some(WAITING_RETRY));
        world.others[0].status.as_mut().unwrap().targets = vec!["node-0".into()];
        assert_eq!(
            world.plan_at(1).status.phase,
            phase::INJECTING,
            "disjoint targets run together"
        );
    }

    #[test]
    fn too_many_silent_agents_abort_with_the_guard_named() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: partition}, duration: 5m, abort: {maxSilentAgents: 0}}",
            mk_ring(4),
        );
        world.plan_at(0);
        world.silent.insert("node-0".into());
        assert_eq!(
            world.plan_at(60).status.phase,
            phase::INJECTING,
            "silent for 60 s is not dead yet"
        );
        let aborted = world.plan_at(95);
        assert_eq!(aborted.status.phase, phase::RECOVERING);
        assert_eq!(aborted.status.revert_cause, revert_cause::ABORT);
        assert_eq!(aborted.status.reverted_at, Some(micro(95)));
        assert_eq!(
            aborted.status.verdict_message,
            "aborted by abort.maxSilentAgents: 1 untargeted agents stopped reporting (node-0), the limit is 0"
        );
        assert_eq!(reasons(&aborted), [event::ABORTED]);
        assert!(aborted.events[0].warning);
        assert_eq!(condition_of(&aborted.status, DEGRADED), ("True", reason::ABORTED));
        let judged = world.plan_at(96);
        assert_eq!(judged.status.phase, phase::COMPLETED);
        assert_eq!(judged.status.verdict, verdict::FAILED);
        assert_eq!(condition_of(&judged.status, READY), ("False", reason::ABORTED));
        assert!(judged.status.verdict_message.contains("abort.maxSilentAgents"));
    }

    #[test]
    fn low_reachability_aborts_only_after_recover_after() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: partition}, abort: {minReachablePercent: 80, recoverAfter: 10s}}",
            mk_ring(4),
        );
        world.plan_at(0);
        for node in ["node-0", "node-1", "node-3"] {
            world.report(node, |r| {
                r.reachable = 1;
                r.peers = 2;
            });
        }
        let early = world.plan_at(5);
        assert_eq!(early.status.phase, phase::INJECTING, "the routes may still move");
        assert_eq!(early.status.reachable_percent, Some(50));
        let aborted = world.plan_at(10);
        assert_eq!(aborted.status.phase, phase::RECOVERING);
        assert_eq!(
            aborted.status.verdict_message,
            "aborted by abort.minReachablePercent: 50% of pairs of untargeted agents reachable 10s after injection, the limit is 80%"
        );
        assert_eq!(aborted.outcome.reverted, Some(revert_cause::ABORT));
    }

    #[test]
    fn detection_counts_from_the_first_application_and_ignores_what_came_before() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.plan_at(0);
        world.with_reports_of_a_fault_routed_around();
        world.report("node-0", |r| {
            r.detected_at = Some(micro(-5));
            r.detection = "an earlier hiccup".into();
        });
        let records = world.records.clone();
        let agents = agents(&records, UID, &at(10));
        let targets = BTreeSet::from(["node-2".to_owned()]);
        let measured = measure(world.status(), &agents, &targets, None);
        assert_eq!(
            measured.reference,
            Some(at(1).0),
            "node-2 applied at 1 s, after injectedAt"
        );
        assert_eq!(
            measured.detection,
            Some((Duration::from_secs(2), "node-1: neighbour node-2 lost".to_owned()))
        );
        assert_eq!(measured.recovery, Some(Duration::from_secs(5)));
        assert_eq!(measured.reachable_percent, Some(100));
        assert_eq!(
            measure(world.status(), &agents, &targets, Some(at(5).0)).recovery,
            None,
            "routes around the target after the fault ended are no recovery"
        );
        world.report("node-3", |r| r.avoiding_since = None);
        let agents = super::agents(&world.records, UID, &at(10));
        assert_eq!(
            measure(world.status(), &agents, &targets, None).recovery,
            None,
            "node-3 still routes through it"
        );
    }

    /// A reverted experiment with the reports of [`World::with_reports_of_a_fault_routed_around`].
    fn mk_judged(spec: &str, edit: impl FnOnce(&mut World, &mut ChaosExperimentStatus)) -> Judgement {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.with_reports_of_a_fault_routed_around();
        world.with_target_reverted();
        let mut status = ChaosExperimentStatus {
            phase: phase::RECOVERING.into(),
            targets: vec!["node-2".into()],
            injected_at: Some(micro(0)),
            deadline: Some(micro(60)),
            reverted_at: Some(micro(60)),
            revert_cause: revert_cause::DURATION.into(),
            time_to_detect: "2s".into(),
            detected_by: "node-1: neighbour node-2 lost".into(),
            time_to_recover: "5s".into(),
            reachable_percent: Some(100),
            ..Default::default()
        };
        edit(&mut world, &mut status);
        let agents = agents(&world.records, UID, &at(0));
        judge(
            &mk_spec(spec),
            &status,
            &agents,
            &BTreeSet::from(["node-2".to_owned()]),
        )
    }

    const PLAIN: &str = "{target: {}, action: {type: partition}}";

    #[test]
    fn a_fault_routed_around_within_the_expectations_passes() {
        let judged = mk_judged(
            "{target: {}, action: {type: partition}, expectations: {maxTimeToDetect: 2s, maxTimeToRecover: 5s}}",
            |_, _| {},
        );
        assert_eq!((judged.verdict, judged.reason), (verdict::PASSED, reason::PASSED));
        assert!(
            judged.message.starts_with("detected after 2s by node-1"),
            "{}",
            judged.message
        );
    }

    #[test]
    fn a_slow_detection_or_recovery_fails_naming_the_expectation_and_the_value() {
        let judged = mk_judged(
            "{target: {}, action: {type: partition}, expectations: {maxTimeToDetect: 1500ms, maxTimeToRecover: 3s}}",
            |_, _| {},
        );
        assert_eq!(
            (judged.verdict, judged.reason),
            (verdict::FAILED, reason::EXPECTATION_FAILED)
        );
        assert_eq!(
            judged.message,
            "timeToDetect 2s exceeds expectations.maxTimeToDetect 1.5s; timeToRecover 5s exceeds expectations.maxTimeToRecover 3s"
        );
    }

    #[test]
    fn an_expected_detection_or_recovery_that_never_came_fails() {
        let judged = mk_judged(
            "{target: {}, action: {type: partition}, expectations: {maxTimeToDetect: 10s, maxTimeToRecover: 10s}}",
            |_, status| {
                status.time_to_detect.clear();
                status.detected_by.clear();
                status.time_to_recover.clear();
            },
        );
        assert_eq!(judged.verdict, verdict::FAILED);
        assert!(
            judged
                .message
                .contains("no untargeted agent detected the fault; expectations.maxTimeToDetect is 10s")
        );
        assert!(judged.message.contains("did not route around the targets"));
        let unasked = mk_judged(PLAIN, |_, status| status.time_to_detect.clear());
        assert_eq!(unasked.verdict, verdict::PASSED, "no expectation, no failure");
    }

    #[test]
    fn reachability_below_the_expectation_fails_and_the_default_expects_every_pair() {
        let judged = mk_judged(PLAIN, |_, status| status.reachable_percent = Some(66));
        assert_eq!(judged.verdict, verdict::FAILED);
        assert_eq!(
            judged.message,
            "reachablePercent 66% is below expectations.minReachablePercent 100%"
        );
        let lenient = mk_judged(
            "{target: {}, action: {type: partition}, expectations: {minReachablePercent: 60}}",
            |_, status| status.reachable_percent = Some(66),
        );
        assert_eq!(lenient.verdict, verdict::PASSED);
    }

    #[test]
    fn missing_reports_or_a_refusing_target_make_the_verdict_inconclusive() {
        let refused = mk_judged(PLAIN, |world, _| {
            world.report("node-2", |r| {
                r.refused = "the eBPF datapath is unavailable".into()
            })
        });
        assert_eq!(
            (refused.verdict, refused.reason),
            (verdict::INCONCLUSIVE, reason::INCONCLUSIVE)
        );
        assert_eq!(
            refused.message,
            "target node-2 could not install its fault entries: the eBPF datapath is unavailable"
        );
        let never_applied = mk_judged(PLAIN, |world, _| world.report("node-2", |r| r.applied_at = None));
        assert_eq!(
            never_applied.message,
            "no target reported installing its fault entries"
        );
        let unheard = mk_judged(PLAIN, |world, _| {
            for node in ["node-0", "node-1", "node-3"] {
                world.record(node).chaos.clear();
            }
        });
        assert_eq!(unheard.verdict, verdict::INCONCLUSIVE);
        assert_eq!(unheard.message, "no untargeted agent reported on the experiment");
        let unmeasured = mk_judged(PLAIN, |_, status| status.reachable_percent = None);
        assert_eq!(unmeasured.verdict, verdict::INCONCLUSIVE);
    }

    #[test]
    fn an_aborted_experiment_fails_with_reason_aborted_and_the_guard() {
        let judged = mk_judged(PLAIN, |_, status| {
            status.revert_cause = revert_cause::ABORT.into();
            status.verdict_message =
                "aborted by abort.maxSilentAgents: 2 untargeted agents stopped reporting".into();
        });
        assert_eq!(
            (judged.verdict, judged.reason),
            (verdict::FAILED, reason::ABORTED)
        );
        assert!(judged.message.contains("abort.maxSilentAgents"));
    }

    #[test]
    fn a_mesh_that_does_not_converge_again_is_judged_without_a_time_to_restore() {
        let mut world = World::new(CUT_NODE_2, mk_ring(4));
        world.plan_at(0);
        world.with_reports_of_a_fault_routed_around();
        world.plan_at(10);
        world.plan_at(60);
        world.with_target_reverted();
        world.mesh = Some(mk_mesh(false));
        assert_eq!(world.plan_at(120).status.phase, phase::RECOVERING);
        let judged = world.plan_at(180);
        assert_eq!(judged.status.phase, phase::COMPLETED);
        assert_eq!(judged.status.time_to_restore, "");
        assert_eq!(judged.status.verdict, verdict::PASSED);
        assert!(
            judged
                .status
                .verdict_message
                .contains("the mesh did not converge again within 2m0s of the revert"),
            "{}",
            judged.status.verdict_message
        );
        assert_eq!(
            condition_of(&judged.status, DEGRADED),
            ("True", reason::NOT_RESTORED)
        );
        assert!(judged.events[0].warning);
    }

    #[test]
    fn every_action_of_the_api_is_injected_by_this_release() {
        for action in [
            "partition",
            "latency",
            "loss",
            "corrupt",
            "nodeKill",
            "byzantineUpdate",
            "forgedBeacon",
            "replayedBeacon",
            "falseMetric",
            "keyExpiry",
            "kemDowngrade",
            "signatureFailure",
            "keyRevocation",
        ] {
            let parsed: ActionType = serde_norway::from_str(action).unwrap();
            assert!(parsed.is_supported(), "{action}");
            assert_eq!(parsed.as_str(), action);
        }
    }

    #[test]
    fn a_key_revocation_window_revokes_each_targets_endorsed_epoch_and_assigns_no_entries() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}}, action: {type: keyRevocation}, duration: 20s}",
            mk_ring(4),
        );
        let injected = world.plan_at(0);
        assert_eq!(injected.status.phase, phase::INJECTING);
        assert!(injected.status.assignments.is_empty());
        let revoked: Vec<(&str, i64)> = injected
            .status
            .revoked_keys
            .iter()
            .map(|k| (k.node_name.as_str(), k.through_key_epoch))
            .collect();
        assert_eq!(revoked, [(injected.status.targets[0].as_str(), 0)]);
    }

    const LIAR_NODE_2: &str = "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: falseMetric, metricPercent: 5}, duration: 30s}";

    #[test]
    fn a_false_metric_window_targets_agents_and_assigns_no_entries() {
        let mut world = World::new(LIAR_NODE_2, mk_ring(4));
        let injected = world.plan_at(0);
        assert_eq!(injected.status.phase, phase::INJECTING);
        assert_eq!(injected.status.targets, ["node-2"]);
        assert!(
            injected.status.assignments.is_empty(),
            "the target acts the lie out itself: {:?}",
            injected.status.assignments
        );
        assert!(
            injected.events[0]
                .note
                .contains("falseMetric (link costs advertised at 5% of what is measured)"),
            "{:?}",
            injected.events
        );
    }

    #[test]
    fn a_false_metric_without_its_percentage_is_refused_naming_the_field() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}}, action: {type: falseMetric}}",
            mk_ring(4),
        );
        let refused = world.plan_at(0);
        assert_eq!(
            condition_of(&refused.status, READY),
            ("False", reason::INVALID_SPEC)
        );
        let message = &condition::find(&refused.status.conditions, READY)
            .unwrap()
            .message;
        assert!(message.contains("spec.action.metricPercent"), "{message}");
    }

    #[test]
    fn an_honest_agent_accused_of_lying_fails_a_false_metric_experiment() {
        let honest = mk_judged(LIAR_NODE_2, |_, _| {});
        assert_eq!(honest.verdict, verdict::PASSED, "{}", honest.message);
        let judged = mk_judged(LIAR_NODE_2, |world, status| {
            world.report("node-1", |r| r.accused = vec!["node-2".into(), "node-3".into()]);
            let agents = agents(&world.records, UID, &at(0));
            let measured = measure(status, &agents, &BTreeSet::from(["node-2".to_owned()]), None);
            record(status, &measured, false);
        });
        assert_eq!(
            (judged.verdict, judged.reason),
            (verdict::FAILED, reason::EXPECTATION_FAILED)
        );
        assert!(
            judged
                .message
                .contains("honest agents were accused of lying about their links: node-3 (by node-1)"),
            "only the untargeted accused count: {}",
            judged.message
        );
    }

    const POISON: &str = "{target: {roundRef: {name: job}, mode: fixed, value: 2}, action: {type: byzantineUpdate, byzantine: {attack: signFlip}}, duration: 60s}";

    /// FLTrainingRound "job" on mesh demo, in `phase`, with node-0..3 taking part.
    fn mk_job(
        phase: &str,
        completed: i32,
        records: Vec<x0tta6bl4_api::fl_record::RoundRecord>,
    ) -> FLTrainingRound {
        let aggregation = serde_json::json!({"rule": "median", "byzantine": 1});
        testing::fl_job(6, aggregation, phase, completed, "60.0", &mk_nodes(4), records)
    }

    fn mk_round_record(
        round: i32,
        rejected: &[&str],
        accuracy: &str,
    ) -> x0tta6bl4_api::fl_record::RoundRecord {
        testing::round_record(round, &mk_nodes(4), rejected, accuracy)
    }

    #[test]
    fn a_rounds_experiment_waits_for_its_job_then_attacks_its_participants_only() {
        let mut world = World::new(POISON, mk_ring(6));
        let missing = world.plan_at(0);
        assert_eq!(
            condition_of(&missing.status, READY),
            ("False", reason::REFERENCE_NOT_FOUND)
        );
        world.round = Some(mk_job("Pending", 0, vec![]));
        let pending = world.plan_at(1);
        assert_eq!(
            condition_of(&pending.status, READY),
            ("False", reason::ROUND_NOT_RUNNING)
        );
        world.round = Some(mk_job("Running", 2, vec![]));
        let injected = world.plan_at(2);
        let status = &injected.status;
        assert_eq!(status.phase, phase::INJECTING);
        assert_eq!(status.mesh, "demo", "the agents find the mesh in the status");
        assert_eq!(status.targets.len(), 2);
        assert!(
            status.targets.iter().all(|t| mk_nodes(4).contains(t)),
            "only participants: {:?}",
            status.targets
        );
        assert!(status.assignments.is_empty());
        let attacked = status.byzantine.as_ref().unwrap();
        assert_eq!(
            (
                attacked.round_uid.as_str(),
                attacked.rounds_before,
                attacked.accuracy_before.as_str()
            ),
            ("job-uid", 2, "60.0")
        );

        // Two rounds sealed, the targets' updates rejected; then the job completes: the
        // window closes before its deadline and the experiment is judged on the rounds.
        let targets: Vec<&str> = status.targets.iter().map(String::as_str).collect();
        let records = vec![
            mk_round_record(3, &targets, "61.0"),
            mk_round_record(4, &targets, "62.5"),
        ];
        world.round = Some(mk_job("Completed", 4, records));
        let closed = world.plan_at(5);
        assert_eq!(closed.status.phase, phase::RECOVERING);
        assert_eq!(closed.status.revert_cause, revert_cause::ROUND_ENDED);
        let attacked = closed.status.byzantine.as_ref().unwrap();
        assert_eq!(attacked.attacked_rounds, [3, 4]);
        assert_eq!((attacked.target_updates, attacked.rejected), (4, 4));
        assert_eq!(attacked.accuracy_change, "+2.5");
        for target in closed.status.targets.clone() {
            world.report(&target, |r| {
                r.target = true;
                r.applied_at = Some(micro(2));
                r.reverted_at = Some(micro(5));
                r.active_entries = 0;
            });
        }
        let judged = world.plan_at(6);
        assert_eq!(judged.status.phase, phase::COMPLETED);
        assert_eq!(
            judged.status.verdict,
            verdict::PASSED,
            "{}",
            judged.status.verdict_message
        );
        assert!(
            judged.status.verdict_message.starts_with(
                "signFlip (strength 1000%) against median with f = 1: 4 of the targets' 4 updates"
            ),
            "{}",
            judged.status.verdict_message
        );
    }

    #[test]
    fn a_rounds_experiment_on_a_finished_job_is_refused_once() {
        let mut world = World::new(POISON, mk_ring(6));
        world.round = Some(mk_job("Completed", 6, vec![]));
        let refused = world.plan_at(0);
        assert_eq!(refused.status.phase, phase::FAILED);
        assert_eq!(
            condition_of(&refused.status, READY),
            ("False", reason::ROUND_ENDED)
        );
        assert_eq!(refused.requeue, None);
    }

    #[test]
    fn an_agent_that_stopped_reporting_keeps_the_experiment_waiting() {
        let mut world = World::new(CUT_NODE_2, mk_ring(5));
        world.silent.insert("node-4".to_owned());
        let waiting = world.plan_at(100);
        assert_eq!(waiting.status.phase, phase::PENDING);
        assert_eq!(
            condition_of(&waiting.status, READY),
            ("False", reason::MESH_UNHEALTHY)
        );
        let message = &condition::find(&waiting.status.conditions, READY)
            .unwrap()
            .message;
        assert!(message.contains("node-4 are not reporting"), "{message}");
        assert!(waiting.status.injected_at.is_none());
    }

    #[test]
    fn a_node_kill_deletes_the_targets_pod_once_after_recording_it() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: nodeKill}, duration: 30s}",
            mk_ring(5),
        );
        let first = world.plan_at(0);
        assert_eq!(first.status.phase, phase::INJECTING);
        assert!(first.status.assignments.is_empty(), "a kill installs no entries");
        assert_eq!(
            first.outcome.pod_deletions,
            [("node-2".to_owned(), "demo-agent-node-2".to_owned())]
        );
        let kill = &first.status.kills[0];
        assert_eq!((kill.step, kill.node.as_str()), (1, "node-2"));
        assert_eq!(kill.killed_at, Some(micro(0)));
        // The neighbours notice; a replan never kills again.
        world.report("node-2", |_| {});
        world.report("node-1", |r| {
            r.detections.push(x0tta6bl4_api::chaos::TargetDetection {
                node: "node-2".into(),
                at: Some(MicroTime(at_millis(850).0)),
                what: "neighbour node-2 lost (session_closed)".into(),
            })
        });
        let later = world.plan_at(2);
        assert!(later.outcome.pod_deletions.is_empty());
        assert_eq!(later.status.kills[0].time_to_detect, "850ms");
        assert_eq!(
            later.status.kills[0].detected_by,
            "node-1: neighbour node-2 lost (session_closed)"
        );
    }

    #[test]
    fn a_kill_has_recovered_once_every_untargeted_agent_routes_around_it_as_it_knows_it() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: nodeKill}, duration: 30s}",
            mk_ring(5),
        );
        world.plan_at(0);
        let avoiding = |seen: &[&str]| {
            let seen: Vec<String> = seen.iter().map(|s| (*s).to_owned()).collect();
            move |r: &mut AgentChaosReport| {
                r.faulty = seen;
                r.avoiding_since = Some(MicroTime(at_millis(1_200).0));
                (r.reachable, r.peers) = (3, 3);
            }
        };
        for node in ["node-0", "node-1", "node-3"] {
            world.report(node, avoiding(&["node-2"]));
        }
        world.report("node-4", |r| {
            avoiding(&[])(r);
            r.reachable = 2;
        });
        let unsure = world.plan_at(2);
        assert_eq!(
            unsure.status.kills[0].time_to_recover, "",
            "node-4 has not seen the kill yet: its routes say nothing about it"
        );
        assert_eq!(unsure.status.reachable_percent, Some(91));
        world.report("node-4", avoiding(&["node-2"]));
        let recovered = world.plan_at(3);
        assert_eq!(recovered.status.kills[0].time_to_recover, "1.2s");
        assert_eq!(
            recovered.status.reachable_percent,
            Some(100),
            "the reachability the mesh recovered to, not the one before"
        );
    }

    #[test]
    fn a_cascade_kills_a_neighbour_of_the_last_victim_one_interval_apart() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: nodeKill, cascade: {steps: 3, interval: 5s}}, duration: 60s, blastRadius: {maxTargetPercent: 60, allowDisconnect: true}}",
            mk_ring(6),
        );
        let first = world.plan_at(0);
        let chain: Vec<&str> = first.status.kills.iter().map(|k| k.node.as_str()).collect();
        assert_eq!(chain.len(), 3);
        assert_eq!(chain[0], "node-2");
        assert!(["node-1", "node-3"].contains(&chain[1]), "{chain:?}");
        let steps: Vec<(i32, Option<MicroTime>)> = first
            .status
            .kills
            .iter()
            .map(|k| (k.step, k.due_at.clone()))
            .collect();
        assert_eq!(
            steps,
            [(1, Some(micro(0))), (2, Some(micro(5))), (3, Some(micro(10)))]
        );
        assert_eq!(first.outcome.pod_deletions.len(), 1, "only the first is due");
        assert!(first.requeue.unwrap() <= Duration::from_secs(2));
        let second = world.plan_at(5);
        assert_eq!(
            second.outcome.pod_deletions,
            [(chain[1].to_owned(), format!("demo-agent-{}", chain[1]))]
        );
        assert!(world.plan_at(7).outcome.pod_deletions.is_empty());
        assert_eq!(world.plan_at(10).outcome.pod_deletions.len(), 1);
    }

    #[test]
    fn a_cascade_that_would_cut_the_mesh_is_refused_before_the_first_kill() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {chaos: victim}}, action: {type: nodeKill, cascade: {steps: 2, interval: 5s}}, duration: 60s}",
            mk_line(5),
        );
        let refused = world.plan_at(0);
        assert_eq!(refused.status.phase, phase::FAILED);
        assert_eq!(
            condition_of(&refused.status, READY),
            ("False", reason::BLAST_RADIUS_EXCEEDED)
        );
        assert!(refused.outcome.pod_deletions.is_empty());
    }

    #[test]
    fn an_invalid_spec_fails_with_the_field_and_is_planned_again_once_fixed() {
        let mut world = World::new(
            "{target: {meshRef: {name: demo}, nodeSelector: {'bad key!': victim}}, action: {type: partition}}",
            mk_ring(4),
        );
        let invalid = world.plan_at(0);
        assert_eq!(invalid.status.phase, phase::FAILED);
        assert_eq!(
            condition_of(&invalid.status, READY),
            ("False", reason::INVALID_SPEC)
        );
        let message = &condition::find(&invalid.status.conditions, READY)
            .unwrap()
            .message;
        assert!(
            message.contains("spec.target.nodeSelector[bad key!]"),
            "{message}"
        );
        assert!(
            invalid
                .events
                .iter()
                .any(|e| e.warning && e.reason == reason::INVALID_SPEC)
        );
        assert!(is_settled(&world.experiment), "no retry storm");
        world.edit_spec(|spec| {
            spec.target.node_selector = BTreeMap::from([("chaos".to_owned(), "victim".to_owned())])
        });
        let fixed = world.plan_at(5);
        assert_eq!(fixed.status.phase, phase::INJECTING);
        assert_eq!(fixed.status.observed_generation, Some(2));
        assert_eq!(
            condition_of(&fixed.status, DEGRADED),
            ("False", reason::AS_EXPECTED)
        );
    }

    #[test]
    fn status_durations_keep_milliseconds() {
        assert_eq!(format_precise(Duration::from_millis(1234)), "1.234s");
        assert_eq!(format_precise(Duration::from_micros(1_234_567)), "1.235s");
        assert_eq!(format_precise(Duration::from_millis(300)), "300ms");
        assert_eq!(format_precise(Duration::from_millis(61_500)), "1m1.5s");
        assert_eq!(format_precise(Duration::ZERO), "0s");
    }
}
