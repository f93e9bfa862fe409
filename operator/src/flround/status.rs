//! The job's status from a plan (pure): the plan's progress with the phase, the conditions and
//! the counters the decision implies, and the conditions that flipped (for Events).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use x0tta6bl4_api::condition::{self, DEGRADED, Desired, PROGRESSING, READY, Status};
use x0tta6bl4_api::{FLTrainingRound, FLTrainingRoundStatus};

use super::plan::{Decision, INVALID_SPEC, Plan};

/// The status to write for `job` after `plan`, and the conditions that flipped.
pub fn compute(job: &FLTrainingRound, plan: &Plan, now: &Time) -> (FLTrainingRoundStatus, Vec<Desired>) {
    let generation = job.meta().generation;
    let mut status = plan.progress.clone();
    let transitions = match conditions(&plan.decision, &status, job.spec.rounds) {
        Some(desired) => condition::set_all(&mut status.conditions, desired, generation, now),
        None => {
            // A finished job's conditions say how it ended, as they are.
            for condition in &mut status.conditions {
                condition.observed_generation = generation;
            }
            Vec::new()
        }
    };
    if let Some(phase) = plan.decision.phase() {
        status.phase = phase.to_owned();
    }
    status.observed_generation = generation;
    status.round_text = format!("{}/{}", status.completed_rounds, job.spec.rounds);
    (status, transitions)
}

/// The conditions `decision` sets; `None` keeps them as they are.
fn conditions(decision: &Decision, progress: &FLTrainingRoundStatus, rounds: i32) -> Option<Vec<Desired>> {
    Some(match decision {
        Decision::Finished => return None,
        Decision::Refused(message) => waiting(INVALID_SPEC, message.clone()),
        Decision::Waiting { reason, message } => waiting(reason, message.clone()),
        Decision::Started => running(progress, rounds),
        Decision::Running { aggregator_live } => {
            let mut conditions = running(progress, rounds);
            if !aggregator_live {
                conditions[2] = Desired::new(
                    DEGRADED,
                    Status::True,
                    "AggregatorLost",
                    format!(
                        "the aggregator {} has not reported and no live participant can take over; rounds resume when one reports",
                        progress.aggregator
                    ),
                );
            }
            conditions
        }
        Decision::Completed => {
            let message = format!(
                "{} rounds, final accuracy {}, model {} (chain head {})",
                progress.completed_rounds, progress.accuracy, progress.model_config_map, progress.chain_head
            );
            vec![
                Desired::new(READY, Status::True, "Completed", message),
                Desired::new(PROGRESSING, Status::False, "Completed", "every round is done"),
                Desired::new(DEGRADED, Status::False, "AsExpected", "every round is done"),
            ]
        }
        Decision::RoundFailed(message) => vec![
            Desired::new(READY, Status::False, "RoundFailed", message.clone()),
            Desired::new(PROGRESSING, Status::False, "RoundFailed", message.clone()),
            Desired::new(DEGRADED, Status::True, "RoundFailed", message.clone()),
        ],
    })
}

fn waiting(reason: &'static str, message: String) -> Vec<Desired> {
    vec![
        Desired::new(READY, Status::False, reason, message.clone()),
        Desired::new(PROGRESSING, Status::False, reason, message.clone()),
        Desired::new(DEGRADED, Status::True, reason, message),
    ]
}

fn running(progress: &FLTrainingRoundStatus, rounds: i32) -> Vec<Desired> {
    let message = format!(
        "round {} of {rounds}, {} participants, aggregated by {}",
        progress.completed_rounds + 1,
        progress.participants.len(),
        progress.aggregator
    );
    vec![
        Desired::new(READY, Status::False, "Running", message.clone()),
        Desired::new(PROGRESSING, Status::True, "Training", message),
        Desired::new(DEGRADED, Status::False, "AsExpected", "the aggregator reports"),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::plan::tests::{mk_job, mk_mesh, mk_record, mk_round, now, running, stale};
    use super::super::plan::{self, Observed};
    use super::*;

    fn reason_of(status: &FLTrainingRoundStatus, type_: &str) -> (String, String) {
        let c = condition::find(&status.conditions, type_).unwrap();
        (c.status.clone(), c.reason.clone())
    }

    /// Plans `job` with `observed` and computes its status.
    fn step(job: &FLTrainingRound, observed: &Observed) -> (FLTrainingRoundStatus, Vec<Desired>) {
        compute(job, &plan::plan(job, observed, &now()), &now())
    }

    #[test]
    fn an_invalid_spec_is_failed_with_reason_invalid_spec_naming_the_field() {
        let mut job = mk_job(3, None);
        job.spec.learning_rate = "0".into();
        let (status, flipped) = step(&job, &Observed::default());
        assert_eq!(status.phase, plan::FAILED);
        assert_eq!(reason_of(&status, READY), ("False".into(), "InvalidSpec".into()));
        assert_eq!(
            reason_of(&status, DEGRADED),
            ("True".into(), "InvalidSpec".into())
        );
        let ready = condition::find(&status.conditions, READY).unwrap();
        assert!(
            ready.message.starts_with("spec.learningRate"),
            "{}",
            ready.message
        );
        assert_eq!(flipped.len(), 3, "three new conditions, three Events");
        assert_eq!(
            (status.observed_generation, status.round_text.as_str()),
            (Some(1), "0/3")
        );
    }

    #[test]
    fn a_job_runs_then_completes_and_each_status_is_a_fixed_point() {
        let observed = mk_mesh(&now());
        let mut job = mk_job(1, None);
        let (started, _) = step(&job, &observed);
        assert_eq!(started.phase, plan::RUNNING);
        assert_eq!(
            reason_of(&started, PROGRESSING),
            ("True".into(), "Training".into())
        );
        assert_eq!(started.round_text, "0/1");
        job.status = Some(started.clone());
        assert_eq!(
            step(&job, &observed),
            (started, vec![]),
            "nothing new: nothing to write"
        );

        let done = Observed {
            round_maps: vec![mk_round(1, None)],
            ..observed
        };
        let (completed, flipped) = step(&job, &done);
        assert_eq!(completed.phase, plan::COMPLETED);
        assert_eq!(reason_of(&completed, READY), ("True".into(), "Completed".into()));
        assert_eq!(completed.round_text, "1/1");
        assert_eq!(flipped.len(), 2, "Ready and Progressing flip");
        job.status = Some(completed.clone());
        assert_eq!(step(&job, &done), (completed, vec![]));
    }

    #[test]
    fn a_failed_round_keeps_its_reason_once_the_job_is_finished() {
        let mut observed = mk_mesh(&now());
        observed.round_maps = vec![mk_round(1, Some("2 updates arrived"))];
        let mut job = mk_job(3, Some(running()));
        let (failed, _) = step(&job, &observed);
        assert_eq!(failed.phase, plan::FAILED);
        assert_eq!(reason_of(&failed, READY), ("False".into(), "RoundFailed".into()));
        job.status = Some(failed.clone());
        // Finished: nothing is read and the status, reason included, is left as it is.
        assert_eq!(step(&job, &Observed::default()), (failed, vec![]));
    }

    #[test]
    fn a_lost_aggregator_degrades_the_job() {
        let observed = Observed {
            records: ["n0", "n1", "n2"].map(|n| mk_record(n, &stale(), true)).to_vec(),
            ..mk_mesh(&now())
        };
        let (status, flipped) = step(&mk_job(3, Some(running())), &observed);
        assert_eq!(status.phase, plan::RUNNING);
        assert_eq!(
            reason_of(&status, DEGRADED),
            ("True".into(), "AggregatorLost".into())
        );
        assert!(flipped.iter().any(|d| d.reason == "AggregatorLost"));
    }
}
