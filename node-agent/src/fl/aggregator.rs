//! The aggregator's side of a job (status.aggregator is this agent, phase Running): for each
//! remaining round, send the signed training request to every participant, collect their
//! updates until all arrived or the quorum timeout, verify each before use, aggregate with the
//! spec's rule, evaluate on the held-out set and write the unsealed record and the model.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_protocol::TRAIN_FLOW;
use x0tta6bl4_api::fl_record::{Rejection, RoundRecord};
use x0tta6bl4_fl::aggregate::{Contribution, Rule, aggregate};
use x0tta6bl4_fl::dataset::Dataset;
use x0tta6bl4_fl::model::{ModelShape, digest};
use x0tta6bl4_fl::training::{apply, evaluate};
use x0tta6bl4_fl::update::{ModelUpdate, SignedUpdate};
use x0tta6bl4_fl::validate::{RoundExpectations, UpdateValidator};

use super::messages::TrainRequest;
use super::sink::ResultSink;
use super::{FlContext, Incoming, job, participant};

/// Updates claiming a later round, held until that round starts (per round, times the
/// participants): an update can overtake its round's start only by a little, and the bound
/// keeps unauthenticated claims from filling memory.
const EARLY_PER_PARTICIPANT: usize = 4;
/// How often the request is sent again to participants that have not answered.
const RESEND_EVERY: Duration = Duration::from_secs(1);
/// Attempts at writing a round's result before the job is given up.
const WRITE_ATTEMPTS: u32 = 5;

/// What a round needs that stays fixed over the job.
struct Plan {
    job: Arc<FLTrainingRound>,
    uid: String,
    shape: ModelShape,
    dataset: job::JobDataset,
    rule: Rule,
    seed: u64,
    participants: Vec<String>,
    rounds: u32,
    quorum_timeout: Duration,
    /// The held-out set. A linkTelemetry job's is this agent's own held-out windows, taken
    /// when the first round is evaluated and kept, so every round is scored on the same ones.
    test: std::sync::OnceLock<Dataset>,
}

impl Plan {
    fn new(job: Arc<FLTrainingRound>) -> Result<Self, String> {
        let shape = job::shape(&job)?;
        let dataset = job::dataset(&job)?;
        let uid = job::uid(&job).to_owned();
        let seed = job::seed(&uid);
        let participants = job::participants(&job).to_vec();
        if participants.is_empty() {
            return Err("the status lists no participants".into());
        }
        let test = std::sync::OnceLock::new();
        if let job::JobDataset::Shipped(name) = dataset {
            let _ = test.set(participant::split(name, participants.len(), seed)?.1);
        }
        let quorum_timeout =
            x0tta6bl4_api::duration::parse(&job.spec.quorum_timeout).map_err(|e| e.to_string())?;
        Ok(Plan {
            rule: job::rule(&job),
            rounds: u32::try_from(job.spec.rounds).unwrap_or(0),
            job,
            uid,
            shape,
            dataset,
            seed,
            participants,
            quorum_timeout,
            test,
        })
    }

    fn test(&self, ctx: &FlContext) -> Result<&Dataset, String> {
        if let Some(test) = self.test.get() {
            return Ok(test);
        }
        let test = participant::test_set(self.dataset, self.participants.len(), self.seed, &ctx.telemetry)?;
        Ok(self.test.get_or_init(|| test))
    }
}

/// Runs the job's remaining rounds; returns when they are done, the job fails, or `cancel`
/// (the job was deleted or left Running).
pub async fn run(
    ctx: Arc<FlContext>,
    job: Arc<FLTrainingRound>,
    sink: Arc<impl ResultSink>,
    mut incoming: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    let name = job::name(&job).to_owned();
    let plan = match Plan::new(Arc::clone(&job)) {
        Ok(plan) => plan,
        Err(error) => {
            tracing::error!(job = %name, %error, "cannot run the federated job");
            return;
        }
    };
    // Resume after the newest round written (a restarted aggregator), never before the
    // rounds the operator has already counted.
    let completed = job.status.as_ref().map_or(0, |s| s.completed_rounds).max(0);
    let (mut round, mut model) = loop {
        match sink.latest(&job).await {
            Ok(Some((written, model))) if written >= completed => break (written as u32 + 1, model),
            Ok(None) if completed == 0 => break (1, plan.shape.initial_parameters(plan.seed)),
            Ok(_) => {
                tracing::error!(job = %name, completed, "the model of the last completed round is missing; cannot resume");
                return;
            }
            Err(error) => tracing::warn!(job = %name, %error, "cannot read the job's results; retrying"),
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    if model.len() != plan.shape.parameter_count() {
        tracing::error!(job = %name, "the stored model does not fit the spec's model");
        return;
    }
    tracing::info!(job = %name, first_round = round, rounds = plan.rounds, rule = plan.rule.name(), "aggregating federated job");
    let mut center: Option<Vec<f32>> = None;
    let mut early: BTreeMap<u32, Vec<Incoming>> = BTreeMap::new();
    while round <= plan.rounds {
        let started = Instant::now();
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = run_round(&ctx, &plan, round, &model, center.as_deref(), &mut incoming, &mut early) => outcome,
        };
        let (record, step) = match outcome {
            Ok((mut record, step, new_model)) => {
                record.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                model = new_model;
                (record, step)
            }
            Err(reason) => {
                tracing::error!(job = %name, round, %reason, "round failed");
                ctx.metrics.rounds.with_label_values(&["failed"]).inc();
                if let Err(error) = sink.fail(&job, round as i32, &reason).await {
                    tracing::warn!(job = %name, %error, "cannot record the failed round");
                }
                cancel.cancelled().await;
                return;
            }
        };
        let mut attempt = 0;
        while let Err(error) = sink.write(&job, &record, &model).await {
            attempt += 1;
            tracing::warn!(job = %name, round, %error, attempt, "cannot write the round's result");
            if attempt >= WRITE_ATTEMPTS {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        ctx.metrics.rounds.with_label_values(&["completed"]).inc();
        tracing::info!(
            job = %name, round, accuracy = %record.accuracy, loss = %record.loss,
            accepted = record.accepted.len(), rejected = record.rejected.len(),
            duration_ms = record.duration_ms, "round complete"
        );
        center = Some(step);
        round += 1;
    }
    tracing::info!(job = %name, "all rounds aggregated");
    // Stay until the operator completes the job, so it is not started again meanwhile.
    cancel.cancelled().await;
}

/// One round: the record (duration filled in by the caller), the aggregate step and the new
/// model; or why the round cannot complete.
async fn run_round(
    ctx: &Arc<FlContext>,
    plan: &Plan,
    round: u32,
    model: &[f32],
    center: Option<&[f32]>,
    incoming: &mut mpsc::Receiver<Incoming>,
    early: &mut BTreeMap<u32, Vec<Incoming>>,
) -> Result<(RoundRecord, Vec<f32>, Vec<f32>), String> {
    let base_digest = digest(model);
    let identity = ctx.identity.get();
    let request = TrainRequest {
        job_uid: plan.uid.clone(),
        round,
        aggregator: ctx.node_name.clone(),
        key_epoch: identity.endorsement.key_epoch,
        base_digest,
        shape: plan.shape,
        dataset: plan.dataset,
        local_epochs: u32::try_from(plan.job.spec.local_epochs).unwrap_or(1),
        batch_size: job::BATCH_SIZE,
        learning_rate: plan
            .job
            .spec
            .learning_rate
            .parse()
            .map_err(|_| "bad learningRate")?,
        seed: plan.seed,
        participants: plan.participants.clone(),
        values: model.to_vec(),
    };
    let bytes = request.sign(&identity.key).map_err(|e| e.to_string())?;
    for participant in &plan.participants {
        if *participant == ctx.node_name {
            // This agent trains too; its update comes back through the loopback like any other.
            ctx.train_and_submit(request.clone());
        } else if let Err(error) = ctx
            .mesh
            .send(ctx.node_id(participant), TRAIN_FLOW, bytes.clone())
            .await
        {
            tracing::warn!(%participant, round, %error, "cannot send the training request");
        }
    }

    let now = crate::clock::unix_seconds();
    let keys: HashMap<String, _> = {
        let trust = ctx
            .trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        plan.participants
            .iter()
            .filter_map(|p| {
                Some((
                    p.clone(),
                    trust
                        .newest_key(&x0tta6bl4_crypto::NodeId(ctx.node_id(p).0), now)?
                        .1
                        .clone(),
                ))
            })
            .collect()
    };
    let mut validator = UpdateValidator::new(
        RoundExpectations::new(plan.uid.clone(), round, base_digest, model.len()),
        keys,
    );
    let mut admitted: HashMap<String, ModelUpdate> = HashMap::new();
    let mut rejected: Vec<Rejection> = Vec::new();
    let mut judge = |update: Incoming, admitted: &mut HashMap<String, ModelUpdate>| match validator
        .admit(&update.bytes)
    {
        Ok(u) => {
            ctx.metrics.updates.with_label_values(&["admitted"]).inc();
            admitted.insert(u.participant.clone(), u);
        }
        Err(refusal) => {
            ctx.metrics
                .updates
                .with_label_values(&[refusal.reason.code()])
                .inc();
            rejected.push(Rejection {
                participant: refusal.claimed_participant.unwrap_or(update.source),
                reason: format!("{}: {}", refusal.reason.code(), refusal.reason),
            });
        }
    };
    for update in early.remove(&round).unwrap_or_default() {
        judge(update, &mut admitted);
    }
    let deadline = tokio::time::Instant::now() + plan.quorum_timeout;
    let mut resend = tokio::time::interval_at(tokio::time::Instant::now() + RESEND_EVERY, RESEND_EVERY);
    while admitted.len() < plan.participants.len() {
        let update = tokio::select! {
            () = tokio::time::sleep_until(deadline) => break,
            _ = resend.tick() => {
                // A participant that has not learnt of the job yet (its watch lags), or whose
                // request was lost, gets it again; one that already trained drops the copy.
                for participant in plan.participants.iter().filter(|p| !admitted.contains_key(*p) && **p != ctx.node_name) {
                    let _ = ctx.mesh.send(ctx.node_id(participant), TRAIN_FLOW, bytes.clone()).await;
                }
                continue;
            }
            update = incoming.recv() => match update {
                Some(update) => update,
                None => return Err("the agent is stopping".into()),
            },
        };
        // A claim of a later round of this job waits for it (bounded); everything else is
        // judged now, where a stale or foreign update is refused with its reason.
        if let Ok((claimed, _)) = SignedUpdate::decode(&update.bytes)
            && claimed.update.round_uid == plan.uid
            && claimed.update.round > round
            && claimed.update.round <= plan.rounds
        {
            let held = early.entry(claimed.update.round).or_default();
            if held.len() < EARLY_PER_PARTICIPANT * plan.participants.len() {
                held.push(update);
            } else {
                ctx.metrics.drop("early_update_overflow");
            }
            continue;
        }
        judge(update, &mut admitted);
    }
    for participant in &plan.participants {
        if !admitted.contains_key(participant) {
            rejected.push(Rejection {
                participant: participant.clone(),
                reason: format!(
                    "NoUpdate: no valid update within the quorum timeout ({:?})",
                    plan.quorum_timeout
                ),
            });
        }
    }

    // In the participants' order, so the record reads the same on every run.
    let used: Vec<&ModelUpdate> = plan.participants.iter().filter_map(|p| admitted.get(p)).collect();
    let contributions: Vec<Contribution> = used
        .iter()
        .map(|u| Contribution {
            participant: &u.participant,
            examples: u.examples,
            values: &u.values,
        })
        .collect();
    let result = aggregate(&plan.rule, &contributions, center).map_err(|e| {
        format!(
            "{} refused with {} admitted update(s) of {}: {e}",
            plan.rule.name(),
            contributions.len(),
            plan.participants.len()
        )
    })?;
    let mut accepted = Vec::new();
    for outcome in &result.outcomes {
        match &outcome.verdict {
            x0tta6bl4_fl::aggregate::Verdict::Rejected { reason } => rejected.push(Rejection {
                participant: outcome.participant.clone(),
                reason: format!("{}: {reason}", plan.rule.name()),
            }),
            _ => accepted.push(outcome.participant.clone()),
        }
    }
    let mut new_model = model.to_vec();
    apply(&mut new_model, &result.values);
    if new_model.iter().any(|v| !v.is_finite()) {
        return Err("the aggregate made the model non-finite (diverged)".into());
    }
    let evaluation = evaluate(&plan.shape, &new_model, plan.test(ctx)?).map_err(|e| e.to_string())?;
    let record = RoundRecord {
        round: round as i32,
        participants: plan.participants.clone(),
        accepted,
        rejected,
        loss: format!("{:.4}", evaluation.loss),
        accuracy: format!("{:.1}", evaluation.accuracy * 100.0),
        duration_ms: 0,
        model_digest: hex::encode(digest(&new_model)),
        previous: String::new(),
        hash: String::new(),
    };
    Ok((record, result.values, new_model))
}
