//! byzantineUpdate: what poisoned updates did to the attacked FLTrainingRound, from the round's
//! hash-chained records, and the verdict (pure).
//!
//! The window opens on a running job; the rounds sealed after that are the attacked rounds
//! (a round whose updates were trained just before the targets' agents switched counts too:
//! the figures say how many of the targets' updates the rule refused, not that all were
//! poisoned). The window closes at the deadline or when the job ends, whichever comes first.
//! Passed: the job lost no round, and the global model's accuracy after the last attacked
//! round is at most `expectations.maxAccuracyDropPercent` points below the accuracy before
//! the attack.
use std::collections::BTreeSet;

use x0tta6bl4_api::chaos::{ActionSpec, ByzantineStatus, DEFAULT_MAX_ACCURACY_DROP_PERCENT};
use x0tta6bl4_api::{ChaosExperiment, ChaosExperimentSpec, FLTrainingRound};

use super::measure::Judgement;
use super::plan::{names, reason, verdict};
use crate::flround::plan::{COMPLETED, FAILED, RUNNING};

/// The job is over: nothing more to attack.
pub fn round_ended(round: &FLTrainingRound) -> bool {
    round
        .status
        .as_ref()
        .is_some_and(|s| s.phase == COMPLETED || s.phase == FAILED)
}

/// Whether the job is running, so that a window can open on it.
pub fn round_running(round: &FLTrainingRound) -> bool {
    round.status.as_ref().is_some_and(|s| s.phase == RUNNING)
}

/// The participants of the job, fixed when it started.
pub fn participants(round: &FLTrainingRound) -> BTreeSet<String> {
    round
        .status
        .as_ref()
        .map(|s| s.participants.iter().cloned().collect())
        .unwrap_or_default()
}

fn describe(action: &ActionSpec, round: &FLTrainingRound) -> String {
    let attack = action.byzantine.as_ref().map_or_else(
        || "byzantineUpdate".to_owned(),
        |spec| {
            let name = serde_json::to_value(spec.attack)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!("{name} (strength {}%)", spec.strength_percent)
        },
    );
    let aggregation = &round.spec.aggregation;
    let rule = serde_json::to_value(aggregation.rule)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    format!("{attack} against {rule} with f = {}", aggregation.byzantine)
}

/// The honest run to compare `attacked` with among `jobs`: the newest Completed job of the
/// same mesh, model and seed, other than `attacked`, that no byzantineUpdate experiment of
/// `experiments` attacked.
pub fn reference<'a>(
    attacked: &FLTrainingRound,
    jobs: &'a [FLTrainingRound],
    experiments: &[ChaosExperiment],
) -> Option<&'a FLTrainingRound> {
    let seed = attacked.spec.seed?;
    let was_attacked = |job: &FLTrainingRound| {
        experiments.iter().any(|experiment| {
            experiment
                .status
                .as_ref()
                .and_then(|s| s.byzantine.as_ref())
                .is_some_and(|b| Some(b.round_uid.as_str()) == job.metadata.uid.as_deref())
        })
    };
    jobs.iter()
        .filter(|job| job.metadata.uid != attacked.metadata.uid)
        .filter(|job| {
            job.spec.seed == Some(seed)
                && job.spec.model == attacked.spec.model
                && job.spec.mesh_ref == attacked.spec.mesh_ref
        })
        .filter(|job| {
            job.status
                .as_ref()
                .is_some_and(|s| s.phase == COMPLETED && !s.records.is_empty())
        })
        .filter(|job| !was_attacked(job))
        .max_by_key(|job| job.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

/// The accuracy of `job` after round `round` (its last, if it ran fewer).
fn accuracy_after(job: &FLTrainingRound, round: i32) -> Option<String> {
    let records = &job.status.as_ref()?.records;
    records
        .iter()
        .find(|r| r.round == round)
        .or_else(|| records.iter().filter(|r| r.round < round).max_by_key(|r| r.round))
        .map(|r| r.accuracy.clone())
}

fn change(after: &str, before: &str) -> String {
    match (after.parse::<f64>(), before.parse::<f64>()) {
        (Ok(after), Ok(before)) => format!("{:+.1}", after - before),
        _ => String::new(),
    }
}

/// What the status records when the window opens on `round`.
pub fn at_injection(
    action: &ActionSpec,
    round: &FLTrainingRound,
    reference: Option<&FLTrainingRound>,
) -> ByzantineStatus {
    let status = round.status.clone().unwrap_or_default();
    ByzantineStatus {
        reference_round: reference
            .map(|r| r.metadata.name.clone().unwrap_or_default())
            .unwrap_or_default(),
        round_uid: round.metadata.uid.clone().unwrap_or_default(),
        attack: describe(action, round),
        rounds_before: status.completed_rounds,
        accuracy_before: if status.completed_rounds > 0 {
            status.accuracy.trim_end_matches('%').to_owned()
        } else {
            String::new()
        },
        ..ByzantineStatus::default()
    }
}

/// Adds the rounds sealed since the last look (each once: a sealed record never changes) and
/// the rounds lost if the job failed, and compares with the reference run (`jobs` holds it, if
/// it still exists). Called while the window is open.
pub fn observe(
    outcome: &mut ByzantineStatus,
    round: &FLTrainingRound,
    targets: &BTreeSet<String>,
    jobs: &[FLTrainingRound],
) {
    if round.metadata.uid.as_deref() != Some(outcome.round_uid.as_str()) {
        // Deleted and created again under the same name: not the attacked job.
        return;
    }
    let Some(status) = &round.status else { return };
    let mut records: Vec<_> = status
        .records
        .iter()
        .filter(|r| r.round > outcome.rounds_before && !outcome.attacked_rounds.contains(&r.round))
        .collect();
    records.sort_by_key(|r| r.round);
    let count = |n: usize| i32::try_from(n).unwrap_or(i32::MAX);
    for record in records {
        let by_target = |participant: &String| targets.contains(participant);
        let rejected: BTreeSet<&String> = record
            .rejected
            .iter()
            .map(|r| &r.participant)
            .filter(|p| by_target(p))
            .collect();
        let down_weighted: BTreeSet<&String> = record
            .down_weighted
            .iter()
            .map(|r| &r.participant)
            .filter(|p| by_target(p))
            .collect();
        let accepted = record.accepted.iter().filter(|p| by_target(p)).count();
        let asked = record.participants.iter().filter(|p| by_target(p)).count();
        outcome.attacked_rounds.push(record.round);
        outcome.target_updates += count(asked);
        outcome.rejected += count(rejected.len());
        outcome.down_weighted += count(down_weighted.len());
        outcome.accepted += count(accepted);
        outcome.accuracy_after = record.accuracy.clone();
    }
    if status.phase == FAILED {
        outcome.rounds_lost = (round.spec.rounds - status.completed_rounds).max(0);
    }
    outcome.accuracy_change = change(&outcome.accuracy_after, &outcome.accuracy_before);
    let last = outcome.attacked_rounds.last().copied();
    let reference = jobs
        .iter()
        .find(|job| job.metadata.name.as_deref() == Some(outcome.reference_round.as_str()));
    if let Some(accuracy) = reference
        .zip(last)
        .and_then(|(job, last)| accuracy_after(job, last))
    {
        outcome.change_vs_reference = change(&outcome.accuracy_after, &accuracy);
        outcome.reference_accuracy = accuracy;
    }
}

/// The verdict of a byzantineUpdate experiment.
pub fn judge(spec: &ChaosExperimentSpec, outcome: Option<&ByzantineStatus>) -> Judgement {
    let judgement = |verdict, reason, message: String| Judgement {
        verdict,
        reason,
        message,
    };
    let Some(outcome) = outcome else {
        return judgement(
            verdict::INCONCLUSIVE,
            reason::INCONCLUSIVE,
            "the window never opened on the job".into(),
        );
    };
    let tally = format!(
        "{}: {} of the targets' {} updates in rounds [{}] rejected, {} down-weighted, {} accepted",
        outcome.attack,
        outcome.rejected,
        outcome.target_updates,
        names(
            &outcome
                .attacked_rounds
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        ),
        outcome.down_weighted,
        outcome.accepted,
    );
    if outcome.rounds_lost > 0 {
        return judgement(
            verdict::FAILED,
            reason::EXPECTATION_FAILED,
            format!("{tally}; the job failed and lost {} rounds", outcome.rounds_lost),
        );
    }
    if outcome.attacked_rounds.is_empty() {
        return judgement(
            verdict::INCONCLUSIVE,
            reason::INCONCLUSIVE,
            format!("{tally}: no round was sealed while the window was open"),
        );
    }
    let limit = spec
        .expectations
        .max_accuracy_drop_percent
        .unwrap_or(DEFAULT_MAX_ACCURACY_DROP_PERCENT);
    let last = outcome.attacked_rounds.last().copied().unwrap_or_default();
    // Each baseline there is: the round before the attack, and the honest run.
    let comparisons: Vec<(String, f64)> = [
        (
            &outcome.accuracy_change,
            format!("{}% before the attack", outcome.accuracy_before),
        ),
        (
            &outcome.change_vs_reference,
            format!(
                "{}% in the honest run {} after the same round",
                outcome.reference_accuracy, outcome.reference_round
            ),
        ),
    ]
    .into_iter()
    .filter_map(|(change, against)| {
        let value = change.parse::<f64>().ok()?;
        Some((format!("{against} ({change} points)"), value))
    })
    .collect();
    if comparisons.is_empty() {
        return judgement(
            verdict::INCONCLUSIVE,
            reason::INCONCLUSIVE,
            format!(
                "{tally}; nothing to compare the accuracy with: the attack began in round 1 and the namespace has no honest run of the same model and seed"
            ),
        );
    }
    let accuracy = format!(
        "accuracy {}% after round {last} against {}",
        outcome.accuracy_after,
        comparisons
            .iter()
            .map(|(text, _)| text.as_str())
            .collect::<Vec<_>>()
            .join(" and ")
    );
    if comparisons.iter().any(|(_, change)| -change > f64::from(limit)) {
        judgement(
            verdict::FAILED,
            reason::EXPECTATION_FAILED,
            format!("{tally}; {accuracy}: a drop beyond expectations.maxAccuracyDropPercent {limit}"),
        )
    } else {
        judgement(
            verdict::PASSED,
            reason::PASSED,
            format!("{tally}; {accuracy}, within expectations.maxAccuracyDropPercent {limit}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use x0tta6bl4_api::fl_record::RoundRecord;

    use super::*;
    use crate::testing;

    fn participants() -> Vec<String> {
        ["n0", "n1", "n2", "n3"].map(String::from).to_vec()
    }

    fn mk_round(phase: &str, completed: i32, records: Vec<RoundRecord>) -> FLTrainingRound {
        let aggregation = serde_json::json!({"rule": "multiKrum", "byzantine": 2});
        testing::fl_job(
            10,
            aggregation,
            phase,
            completed,
            "80.0",
            &participants(),
            records,
        )
    }

    fn mk_record(round: i32, rejected: &[&str], accuracy: &str) -> RoundRecord {
        testing::round_record(round, &participants(), rejected, accuracy)
    }

    #[test]
    fn an_attack_from_round_one_is_compared_with_the_honest_run_of_the_same_seed() {
        let spec = spec("");
        let with_seed = |name: &str, uid: &str, phase: &str, records| {
            let mut job = mk_round(phase, 3, records);
            job.metadata.name = Some(name.into());
            job.metadata.uid = Some(uid.into());
            job.spec.seed = Some(7);
            job
        };
        let honest = with_seed(
            "honest",
            "h",
            COMPLETED,
            vec![
                mk_record(1, &[], "50.0"),
                mk_record(2, &[], "70.0"),
                mk_record(3, &[], "85.0"),
            ],
        );
        let attacked_before = with_seed("poisoned", "job-uid", RUNNING, vec![]);
        let mut attacked_earlier = with_seed("earlier", "e", COMPLETED, vec![mk_record(1, &["n1"], "40.0")]);
        attacked_earlier.metadata.creation_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(2_000_000_000).unwrap(),
            ));
        let jobs = [honest.clone(), attacked_earlier];
        let mut earlier_experiment: ChaosExperiment = serde_json::from_value(serde_json::json!({
            "apiVersion": "x0tta6bl4.io/v1alpha1", "kind": "ChaosExperiment",
            "metadata": {"name": "x", "namespace": "default"},
            "spec": {"target": {"roundRef": {"name": "earlier"}}, "action": {"type": "byzantineUpdate", "byzantine": {"attack": "ipm"}}}
        }))
        .unwrap();
        earlier_experiment.status = Some(x0tta6bl4_api::ChaosExperimentStatus {
            byzantine: Some(ByzantineStatus {
                round_uid: "e".into(),
                ..ByzantineStatus::default()
            }),
            ..Default::default()
        });
        let chosen = reference(&attacked_before, &jobs, &[earlier_experiment])
            .map(|j| j.metadata.name.clone().unwrap());
        assert_eq!(
            chosen.as_deref(),
            Some("honest"),
            "a newer run that an experiment attacked is no reference"
        );

        let mut status = attacked_before.clone();
        status.status.as_mut().unwrap().completed_rounds = 0;
        let mut outcome = at_injection(&spec.action, &status, Some(&honest));
        assert!(outcome.accuracy_before.is_empty());
        let attacked = with_seed(
            "poisoned",
            "job-uid",
            RUNNING,
            vec![mk_record(1, &["n1"], "48.0"), mk_record(2, &["n1"], "68.5")],
        );
        observe(&mut outcome, &attacked, &BTreeSet::from(["n1".to_owned()]), &jobs);
        assert_eq!(
            (
                outcome.reference_accuracy.as_str(),
                outcome.change_vs_reference.as_str()
            ),
            ("70.0", "-1.5")
        );
        let judged = judge(&spec, Some(&outcome));
        assert_eq!(judged.verdict, verdict::PASSED, "{}", judged.message);
        assert!(
            judged
                .message
                .contains("accuracy 68.5% after round 2 against 70.0% in the honest run honest after the same round (-1.5 points)"),
            "{}",
            judged.message
        );
    }

    fn spec(extra: &str) -> ChaosExperimentSpec {
        serde_norway::from_str(&format!(
            "target: {{roundRef: {{name: job}}}}\naction: {{type: byzantineUpdate, byzantine: {{attack: signFlip}}}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn the_rounds_after_the_window_opened_are_counted_once_each() {
        let spec = spec("");
        let before = mk_round(RUNNING, 2, vec![mk_record(2, &[], "80.0")]);
        let mut outcome = at_injection(&spec.action, &before, None);
        assert_eq!(
            (outcome.rounds_before, outcome.accuracy_before.as_str()),
            (2, "80.0")
        );
        assert_eq!(
            outcome.attack,
            "signFlip (strength 1000%) against multiKrum with f = 2"
        );
        let targets = BTreeSet::from(["n1".to_owned(), "n2".to_owned()]);
        let later = mk_round(
            RUNNING,
            4,
            vec![
                mk_record(2, &[], "80.0"),
                mk_record(3, &["n1"], "79.5"),
                mk_record(4, &["n1", "n2"], "81.0"),
            ],
        );
        observe(&mut outcome, &later, &targets, &[]);
        observe(&mut outcome, &later, &targets, &[]);
        assert_eq!(outcome.attacked_rounds, [3, 4]);
        assert_eq!(
            (outcome.target_updates, outcome.rejected, outcome.accepted),
            (4, 3, 1)
        );
        assert_eq!(outcome.accuracy_change, "+1.0");
        let judged = judge(&spec, Some(&outcome));
        assert_eq!(judged.verdict, verdict::PASSED, "{}", judged.message);
        assert!(
            judged
                .message
                .contains("3 of the targets' 4 updates in rounds [3, 4] rejected"),
            "{}",
            judged.message
        );
    }

    #[test]
    fn a_drop_beyond_the_bound_or_a_failed_job_fails_and_a_recreated_job_is_not_counted() {
        let spec = spec("expectations: {maxAccuracyDropPercent: 2}");
        let targets = BTreeSet::from(["n1".to_owned()]);
        let mut outcome = at_injection(&spec.action, &mk_round(RUNNING, 1, vec![]), None);
        observe(
            &mut outcome,
            &mk_round(RUNNING, 2, vec![mk_record(2, &[], "70.0")]),
            &targets,
            &[],
        );
        let judged = judge(&spec, Some(&outcome));
        assert_eq!(judged.verdict, verdict::FAILED);
        assert!(
            judged.message.contains(
                "80.0% before the attack (-10.0 points): a drop beyond expectations.maxAccuracyDropPercent 2"
            ),
            "{}",
            judged.message
        );

        let mut failed = at_injection(&spec.action, &mk_round(RUNNING, 1, vec![]), None);
        observe(&mut failed, &mk_round(FAILED, 3, vec![]), &targets, &[]);
        assert_eq!(failed.rounds_lost, 7);
        assert_eq!(judge(&spec, Some(&failed)).verdict, verdict::FAILED);

        let mut other = at_injection(&spec.action, &mk_round(RUNNING, 1, vec![]), None);
        let mut recreated = mk_round(RUNNING, 2, vec![mk_record(2, &["n1"], "10.0")]);
        recreated.metadata.uid = Some("another-uid".into());
        observe(&mut other, &recreated, &targets, &[]);
        assert!(other.attacked_rounds.is_empty());
        assert_eq!(judge(&spec, Some(&other)).verdict, verdict::INCONCLUSIVE);
    }
}
