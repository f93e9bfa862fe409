//! What one reconcile of an FLTrainingRound does (pure): the job and what was read of the
//! cluster go in, with the time; where the job stands ([`Decision`]: its phase, conditions and
//! when to look again), its progress (participants chosen, rounds sealed into the chain,
//! aggregators replaced) and the seals to write back come out. [`stage`] validates the spec and
//! says, from the job alone, what the reconciler reads for it ([`Observed`]).
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use x0tta6bl4_api::condition::READY;
use x0tta6bl4_api::{FLTrainingRound, FLTrainingRoundStatus, MeshNode};

use super::chain::{self, NewSeal};
use super::failover;
use super::rounds;
use super::select::{self, Candidate, SelectError};
use crate::agent_report::AgentReport;

/// How often a job waiting for agents (or for a missing mesh) looks again.
pub const WAITING_RETRY: Duration = Duration::from_secs(15);
/// A running job looks at its rounds at least this often (round ConfigMaps also wake it).
pub const RUNNING_RETRY: Duration = Duration::from_secs(10);

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const COMPLETED: &str = "Completed";
pub const FAILED: &str = "Failed";

/// Where a job is before this reconcile, which decides what is read for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The spec is refused: every field's problem, joined. Nothing is read.
    Refused(String),
    /// The job finished (Completed or Failed) and is not evaluated again. Nothing is read.
    Finished,
    /// The participants are still to be chosen: the mesh, its records and their nodes' labels
    /// are read.
    Selecting,
    /// The rounds are under way: the mesh, its records and the job's round ConfigMaps are read.
    Following,
}

/// Validates the spec, then places the job.
pub fn stage(job: &FLTrainingRound) -> Stage {
    if let Err(errors) = job.spec.validate() {
        return Stage::Refused(x0tta6bl4_api::join_field_errors(&errors));
    }
    match &job.status {
        Some(status) if status.phase == COMPLETED => Stage::Finished,
        // Refused before and valid now: the user fixed the spec, so the job starts. Any other
        // failure is how the job ended.
        Some(status) if status.phase == FAILED && !refused_spec(status) => Stage::Finished,
        Some(status) if !status.participants.is_empty() => Stage::Following,
        _ => Stage::Selecting,
    }
}

/// The job was refused for its spec (and never started).
fn refused_spec(status: &FLTrainingRoundStatus) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == READY && c.reason == INVALID_SPEC)
}

/// The reason of a refused spec's conditions.
pub const INVALID_SPEC: &str = "InvalidSpec";

/// What the reconciler read for the job's [`Stage`]; empty for a refused or finished job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The job's MeshNetwork exists (nothing more is read when it does not).
    pub mesh_found: bool,
    /// The MeshNode records of that mesh.
    pub records: Vec<MeshNode>,
    /// Selecting: the labels of each record's node, by node name (a missing node has none).
    pub node_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Following: the job's round ConfigMaps.
    pub round_maps: Vec<ConfigMap>,
}

/// Where the job stands after this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The spec is refused until it changes (Failed, reason InvalidSpec), with the message.
    Refused(String),
    /// The job had finished; its phase and conditions stay as they are.
    Finished,
    /// Waiting for the mesh or for agents (Pending).
    Waiting { reason: &'static str, message: String },
    /// The participants and aggregators were chosen in this reconcile (Running).
    Started,
    /// Rounds under way (Running); `aggregator_live` is false when the aggregator has not
    /// reported and no live participant could take over.
    Running { aggregator_live: bool },
    /// Every round is sealed (Completed).
    Completed,
    /// The aggregator reported the next round as failed (Failed), with the message.
    RoundFailed(String),
}

impl Decision {
    /// The phase to write; `None` keeps the phase the job has.
    pub fn phase(&self) -> Option<&'static str> {
        match self {
            Decision::Refused(_) | Decision::RoundFailed(_) => Some(FAILED),
            Decision::Finished => None,
            Decision::Waiting { .. } => Some(PENDING),
            Decision::Started | Decision::Running { .. } => Some(RUNNING),
            Decision::Completed => Some(COMPLETED),
        }
    }

    /// When to look again; `None` waits for a change (of the spec, or of a round ConfigMap).
    pub fn requeue(&self) -> Option<Duration> {
        match self {
            Decision::Waiting { .. } => Some(WAITING_RETRY),
            Decision::Started | Decision::Running { .. } => Some(RUNNING_RETRY),
            Decision::Refused(_) | Decision::Finished | Decision::Completed | Decision::RoundFailed(_) => {
                None
            }
        }
    }
}

/// The result of one plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub decision: Decision,
    /// The job's status with this reconcile's progress; its phase, conditions and counters
    /// are [`super::status::compute`]'s.
    pub progress: FLTrainingRoundStatus,
    /// Records sealed in this reconcile, to be written next to their results before the status.
    pub seals: Vec<NewSeal>,
    /// Aggregators replaced in this reconcile, one sentence each.
    pub replaced: Vec<String>,
}

/// Decides what the job does next at `now`, from what was read for its [`stage`].
pub fn plan(job: &FLTrainingRound, observed: &Observed, now: &Time) -> Plan {
    let mut plan = Plan {
        decision: Decision::Finished,
        progress: job.status.clone().unwrap_or_default(),
        seals: Vec::new(),
        replaced: Vec::new(),
    };
    plan.decision = match stage(job) {
        Stage::Refused(message) => Decision::Refused(message),
        Stage::Finished => Decision::Finished,
        Stage::Selecting | Stage::Following if !observed.mesh_found => {
            let namespace = job.namespace().unwrap_or_default();
            Decision::Waiting {
                reason: "ReferenceNotFound",
                message: format!(
                    "MeshNetwork {} not found in namespace {namespace}",
                    job.spec.mesh_ref.name
                ),
            }
        }
        Stage::Selecting => select_participants(job, observed, &mut plan.progress, now),
        Stage::Following => follow(job, observed, &mut plan, now),
    };
    plan
}

/// Chooses the participants and aggregators from the mesh's live, endorsed agents.
fn select_participants(
    job: &FLTrainingRound,
    observed: &Observed,
    progress: &mut FLTrainingRoundStatus,
    now: &Time,
) -> Decision {
    let candidates: Vec<Candidate> = observed
        .records
        .iter()
        .map(|record| {
            let endorsed = record.status.as_ref().is_some_and(|s| !s.endorsement.is_empty());
            Candidate {
                node: record.spec.node_name.clone(),
                labels: observed
                    .node_labels
                    .get(&record.spec.node_name)
                    .cloned()
                    .unwrap_or_default(),
                live: endorsed && AgentReport::from_record(record, now).is_some(),
            }
        })
        .collect();
    match select::select(&job.spec, &candidates, &job.uid().unwrap_or_default()) {
        Ok(selection) => {
            progress.participants = selection.participants;
            progress.aggregator = selection.aggregator;
            progress.zones = selection.zones;
            progress.zone_aggregators = selection.zone_aggregators;
            Decision::Started
        }
        Err(SelectError::BadSelector(message)) => {
            Decision::Refused(format!("spec.participants.selector: {message}"))
        }
        Err(error @ SelectError::TooFew { .. }) => Decision::Waiting {
            reason: "InsufficientParticipants",
            message: error.to_string(),
        },
        Err(
            error @ (SelectError::RuleCannotHold { .. }
            | SelectError::QuorumCannotHold { .. }
            | SelectError::ZoneCannotHold { .. }
            | SelectError::TooFewZones { .. }),
        ) => Decision::Waiting {
            reason: "RuleCannotHold",
            message: error.to_string(),
        },
    }
}

/// Seals the new round results into the chain, then finishes the job, fails it on a failed
/// round, or keeps it running with live aggregators.
fn follow(job: &FLTrainingRound, observed: &Observed, plan: &mut Plan, now: &Time) -> Decision {
    let progress = &mut plan.progress;
    let (results, failures) = rounds::parse(&observed.round_maps);
    plan.seals = chain::advance(progress, &results);
    if progress.completed_rounds >= job.spec.rounds {
        return Decision::Completed;
    }
    let next = progress.completed_rounds + 1;
    if let Some((_, why)) = failures.iter().find(|(round, _)| *round == next) {
        return Decision::RoundFailed(format!("round {next} failed: {why}"));
    }
    let live: BTreeSet<String> = observed
        .records
        .iter()
        .filter(|r| AgentReport::from_record(r, now).is_some())
        .map(|r| r.spec.node_name.clone())
        .collect();
    plan.replaced = failover::replace_dead_aggregators(progress, &live, &job.uid().unwrap_or_default());
    Decision::Running {
        aggregator_live: live.contains(&progress.aggregator),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use x0tta6bl4_api::fl_protocol::{ERROR_KEY, JOB_LABEL, RECORD_KEY, ROUND_LABEL, round_config_map};

    use super::super::chain::tests::round_record;
    use super::*;

    /// A job of `rounds` rounds on mesh "demo" of namespace "ns", with `status`.
    pub fn mk_job(rounds: i32, status: Option<FLTrainingRoundStatus>) -> FLTrainingRound {
        let mut job: FLTrainingRound = serde_norway::from_str(&format!(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: FLTrainingRound\n\
             metadata: {{name: job, namespace: ns, uid: job-uid, generation: 1}}\n\
             spec: {{meshRef: {{name: demo}}, model: {{kind: logisticRegression, inputDim: 4, classes: 3}}, \
             rounds: {rounds}, participants: {{minimum: 3}}}}"
        ))
        .unwrap();
        job.status = status;
        job
    }

    /// The record of an agent on `node` that reported at `reported`, endorsed or not.
    pub fn mk_record(node: &str, reported: &Time, endorsed: bool) -> MeshNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "MeshNode",
            "metadata": {"name": format!("demo-{node}"), "namespace": "ns"},
            "spec": {"meshName": "demo", "nodeName": node},
            "status": {"lastReportTime": reported, "endorsement": if endorsed { "e30=" } else { "" }}
        }))
        .unwrap()
    }

    /// The ConfigMap the aggregator writes for `round` of "job": its record, or its failure.
    pub fn mk_round(round: i32, failure: Option<&str>) -> ConfigMap {
        let record = round_record(round, &["n0", "n1", "n2"]);
        let data = match failure {
            Some(why) => serde_json::json!({ERROR_KEY: why}),
            None => serde_json::json!({RECORD_KEY: serde_json::to_string(&record).unwrap()}),
        };
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": round_config_map("job", round), "namespace": "ns",
                "labels": {JOB_LABEL: "job", ROUND_LABEL: round.to_string()}},
            "data": data
        }))
        .unwrap()
    }

    /// Three live, endorsed agents on n0, n1 and n2 of the mesh, as read at `now`.
    pub fn mk_mesh(now: &Time) -> Observed {
        Observed {
            mesh_found: true,
            records: ["n0", "n1", "n2"]
                .into_iter()
                .map(|node| mk_record(node, now, true))
                .collect(),
            ..Observed::default()
        }
    }

    /// The time of the plans.
    pub fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    /// Long before [`now`]: an agent that last reported then is dead.
    pub fn stale() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).unwrap())
    }

    /// A running job of three rounds on n0, n1 and n2, aggregated by n0, with no round sealed.
    pub fn running() -> FLTrainingRoundStatus {
        FLTrainingRoundStatus {
            phase: RUNNING.into(),
            participants: vec!["n0".into(), "n1".into(), "n2".into()],
            aggregator: "n0".into(),
            ..FLTrainingRoundStatus::default()
        }
    }

    #[test]
    fn a_new_job_chooses_its_participants_among_live_endorsed_agents() {
        let mut observed = mk_mesh(&now());
        observed.records.push(mk_record("n3", &now(), false));
        let planned = plan(&mk_job(3, None), &observed, &now());
        assert_eq!(planned.decision, Decision::Started);
        assert_eq!(planned.progress.participants, ["n0", "n1", "n2"]);
        assert!(
            planned
                .progress
                .participants
                .contains(&planned.progress.aggregator)
        );
        assert_eq!(planned.seals, []);
        assert_eq!(planned.decision.phase(), Some(RUNNING));
        assert_eq!(planned.decision.requeue(), Some(RUNNING_RETRY));
        // The same job chooses the same agents every time.
        assert_eq!(plan(&mk_job(3, None), &observed, &now()), planned);
    }

    #[test]
    fn a_new_job_waits_for_its_mesh_and_for_enough_agents() {
        let missing = plan(&mk_job(3, None), &Observed::default(), &now());
        assert_eq!(
            missing.decision,
            Decision::Waiting {
                reason: "ReferenceNotFound",
                message: "MeshNetwork demo not found in namespace ns".into()
            }
        );
        let mut two = mk_mesh(&now());
        two.records.truncate(2);
        two.records.push(mk_record("n2", &stale(), true));
        let too_few = plan(&mk_job(3, None), &two, &now());
        assert!(
            matches!(&too_few.decision, Decision::Waiting { reason: "InsufficientParticipants", message }
                if message.starts_with("2 live agents")),
            "{:?}",
            too_few.decision
        );
        assert_eq!(too_few.decision.phase(), Some(PENDING));
        assert_eq!(too_few.decision.requeue(), Some(WAITING_RETRY));
        assert!(too_few.progress.participants.is_empty());
    }

    #[test]
    fn a_running_job_seals_new_rounds_in_order() {
        let mut observed = mk_mesh(&now());
        observed.round_maps = vec![mk_round(2, None), mk_round(1, None)];
        let planned = plan(&mk_job(3, Some(running())), &observed, &now());
        assert_eq!(
            planned.decision,
            Decision::Running {
                aggregator_live: true
            }
        );
        assert_eq!(planned.progress.completed_rounds, 2);
        let sealed: Vec<(&str, i32)> = planned
            .seals
            .iter()
            .map(|s| (s.config_map.as_str(), s.sealed.round))
            .collect();
        assert_eq!(sealed, [("job-round-1", 1), ("job-round-2", 2)]);
        assert_eq!(planned.progress.chain_head, planned.seals[1].sealed.hash);
        assert_eq!(planned.replaced, Vec::<String>::new());
    }

    #[test]
    fn a_silent_aggregator_is_replaced_or_reported_lost() {
        let mut observed = mk_mesh(&now());
        observed.records[0] = mk_record("n0", &stale(), true);
        let planned = plan(&mk_job(3, Some(running())), &observed, &now());
        assert_eq!(
            planned.decision,
            Decision::Running {
                aggregator_live: true
            }
        );
        assert_ne!(planned.progress.aggregator, "n0");
        assert_eq!(planned.replaced.len(), 1, "{:?}", planned.replaced);
        // Nobody left to take over.
        let everyone_silent = Observed {
            records: ["n0", "n1", "n2"].map(|n| mk_record(n, &stale(), true)).to_vec(),
            ..observed
        };
        let lost = plan(&mk_job(3, Some(running())), &everyone_silent, &now());
        assert_eq!(
            lost.decision,
            Decision::Running {
                aggregator_live: false
            }
        );
        assert_eq!(lost.progress.aggregator, "n0");
    }

    #[test]
    fn the_last_round_completes_the_job_and_a_failed_round_fails_it() {
        let mut observed = mk_mesh(&now());
        observed.round_maps = vec![mk_round(1, None)];
        let completed = plan(&mk_job(1, Some(running())), &observed, &now());
        assert_eq!(completed.decision, Decision::Completed);
        assert_eq!(completed.seals.len(), 1, "the last round is sealed too");
        assert_eq!(completed.decision.phase(), Some(COMPLETED));
        assert_eq!(completed.decision.requeue(), None);

        observed
            .round_maps
            .push(mk_round(2, Some("median needs more than 2f updates")));
        let failed = plan(&mk_job(3, Some(running())), &observed, &now());
        assert_eq!(
            failed.decision,
            Decision::RoundFailed("round 2 failed: median needs more than 2f updates".into())
        );
        assert_eq!(failed.progress.completed_rounds, 1, "round 1 is sealed first");
        assert_eq!(failed.decision.phase(), Some(FAILED));
        // A failure of a later round waits for the rounds before it.
        observed.round_maps = vec![mk_round(3, Some("lost"))];
        let waiting = plan(&mk_job(3, Some(running())), &observed, &now());
        assert_eq!(
            waiting.decision,
            Decision::Running {
                aggregator_live: true
            }
        );
    }

    #[test]
    fn a_finished_job_is_not_evaluated_again() {
        for phase in [COMPLETED, FAILED] {
            let status = FLTrainingRoundStatus {
                phase: phase.into(),
                completed_rounds: 1,
                ..running()
            };
            let job = mk_job(3, Some(status.clone()));
            assert_eq!(stage(&job), Stage::Finished);
            let planned = plan(&job, &Observed::default(), &now());
            assert_eq!(planned.decision, Decision::Finished);
            assert_eq!(planned.progress, status);
            assert_eq!(
                (planned.decision.phase(), planned.decision.requeue()),
                (None, None)
            );
        }
    }

    #[test]
    fn a_refused_job_starts_once_its_spec_is_fixed() {
        let mut job = mk_job(3, None);
        job.spec.learning_rate = "fast".into();
        let refused = plan(&job, &Observed::default(), &now());
        let (status, _) = super::super::status::compute(&job, &refused, &now());
        assert_eq!(status.phase, FAILED);
        let mut fixed = mk_job(3, Some(status));
        assert_eq!(
            stage(&fixed),
            Stage::Selecting,
            "the fixed spec is evaluated again"
        );
        let started = plan(&fixed, &mk_mesh(&now()), &now());
        assert_eq!(started.decision, Decision::Started);
        // Still invalid: refused again, without reading anything.
        fixed.spec.learning_rate = "fast".into();
        assert!(matches!(stage(&fixed), Stage::Refused(_)));
    }

    #[test]
    fn an_invalid_spec_is_refused_with_every_field_and_nothing_read() {
        let mut job = mk_job(3, None);
        job.spec.learning_rate = "fast".into();
        job.spec.model.classes = 4;
        let Stage::Refused(message) = stage(&job) else {
            panic!("{:?}", stage(&job));
        };
        assert!(message.contains("spec.learningRate"), "{message}");
        assert!(message.contains("spec.model.classes"), "{message}");
        let planned = plan(&job, &Observed::default(), &now());
        assert_eq!(planned.decision, Decision::Refused(message));
        assert_eq!(planned.decision.phase(), Some(FAILED));
        assert_eq!(planned.decision.requeue(), None);
        // A selector the API server let through but that cannot be evaluated: refused too.
        let mut job = mk_job(3, None);
        job.spec.participants.selector = Some(
            serde_json::from_value(serde_json::json!({
                "matchExpressions": [{"key": "zone", "operator": "Near", "values": ["a"]}]
            }))
            .unwrap(),
        );
        let refused = plan(&job, &mk_mesh(&now()), &now());
        assert!(
            matches!(&refused.decision, Decision::Refused(m) if m.starts_with("spec.participants.selector: operator 'Near'")),
            "{:?}",
            refused.decision
        );
    }
}
