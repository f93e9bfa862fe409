//! The aggregator's side of a job (status.aggregator is this agent, phase Running): for each
//! remaining round, send the signed training request to every participant, collect their
//! updates until all arrived or the quorum timeout, verify each before use, aggregate with the
//! spec's rule, evaluate on the held-out set and write the unsealed record and the model.
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_protocol::TRAIN_FLOW;
use x0tta6bl4_api::fl_record::{Rejection, RoundRecord};
use x0tta6bl4_fl::aggregate::{Contribution, Rule, aggregate};
use x0tta6bl4_fl::codec::train_request::TrainRequest;
use x0tta6bl4_fl::dataset::Dataset;
use x0tta6bl4_fl::model::{ModelShape, digest};
use x0tta6bl4_fl::training::{apply, evaluate};
use x0tta6bl4_fl::update::{ModelUpdate, SignedUpdate};
use x0tta6bl4_fl::validate::{Rejection as Refusal, RoundExpectations, UpdateValidator};

use super::admission::{admit_with_fresh_keys, participant_keys};
use super::gathering::{Gathered, Gatherer, LISTED_PER_PARTICIPANT};
use super::sink::ResultSink;
use super::stragglers::{Late, OpenRounds, Stale, StalePolicy};
use super::zone_reports::ZoneReports;
use super::{FlContext, Incoming, job, participant, send_message, spans};

/// Updates claiming a later round, held until that round starts (per round, times the
/// participants): an update can overtake its round's start only by a little, and the bound
/// keeps unauthenticated claims from filling memory.
const EARLY_PER_PARTICIPANT: usize = 4;
/// When the request is first sent again to participants that have not answered; each resend
/// waits twice as long as the one before, up to [`RESEND_MAX`] (a request carries the whole
/// model, and a participant still training needs no copy every second).
const RESEND_FIRST: Duration = Duration::from_secs(1);
const RESEND_MAX: Duration = Duration::from_secs(8);
/// Attempts at writing a round's result before the job is given up.
const WRITE_ATTEMPTS: u32 = 5;

/// What a round needs that stays fixed over the job.
struct Plan {
    job: Arc<FLTrainingRound>,
    uid: String,
    shape: ModelShape,
    dataset: job::JobDataset,
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
        let seed = job::job_seed(&job);
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
        tracing::info!(
            job = %self.uid, windows = test.len(), faulty = test.class_counts().get(1).copied().unwrap_or(0),
            "evaluating on this agent's held-out link telemetry"
        );
        Ok(self.test.get_or_init(|| test))
    }
}

/// How a job's updates are combined, fixed over the job.
pub(super) struct Combine {
    /// The spec's rule (inside each zone, for a hierarchical job).
    pub rule: Rule,
    /// Hierarchical jobs: the rule across the zones' reports, and each zone's aggregator.
    pub hierarchy: Option<(Rule, BTreeMap<String, String>)>,
}

impl Combine {
    fn new(job: &FLTrainingRound) -> Result<Self, String> {
        let hierarchy = match &job.spec.aggregation.hierarchical {
            None => None,
            Some(spec) => {
                let zone_aggregators = job
                    .status
                    .as_ref()
                    .map(|s| s.zone_aggregators.clone())
                    .unwrap_or_default();
                if zone_aggregators.is_empty() {
                    return Err("a hierarchical job whose status names no zone aggregators".into());
                }
                Some((
                    job::rule_from(spec.global_rule, spec.global_byzantine),
                    zone_aggregators,
                ))
            }
        };
        Ok(Combine {
            rule: job::rule(job),
            hierarchy,
        })
    }

    /// Takes the zones' aggregators from the job as it is now: the operator replaces one that
    /// stopped reporting.
    fn refresh(&mut self, job: &FLTrainingRound) {
        if let (Some((_, zone_aggregators)), Some(status)) = (&mut self.hierarchy, &job.status)
            && !status.zone_aggregators.is_empty()
            && *zone_aggregators != status.zone_aggregators
        {
            tracing::info!(zones = ?status.zone_aggregators, "zone aggregators changed");
            zone_aggregators.clone_from(&status.zone_aggregators);
        }
    }

    fn name(&self) -> String {
        match &self.hierarchy {
            None => self.rule.name().to_owned(),
            Some((global, _)) => format!("{} per zone, {} across zones", self.rule.name(), global.name()),
        }
    }
}

/// Runs the job's remaining rounds; returns when they are done, the job fails, or `cancel`
/// (the job was deleted or left Running).
pub async fn run(
    ctx: Arc<FlContext>,
    job: Arc<FLTrainingRound>,
    jobs: tokio::sync::watch::Receiver<job::Jobs>,
    sink: Arc<impl ResultSink>,
    mut incoming: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    let name = job::name(&job).to_owned();
    let (plan, mut combine) =
        match Plan::new(Arc::clone(&job)).and_then(|plan| Ok((plan, Combine::new(&job)?))) {
            Ok(ready) => ready,
            Err(error) => {
                // Recorded as the next round's failure, so the operator fails the job with the
                // reason (a condition the user sees) instead of the job waiting forever.
                tracing::error!(job = %name, %error, "cannot run the federated job");
                let next = job.status.as_ref().map_or(0, |s| s.completed_rounds).max(0) + 1;
                if let Err(error) = sink.fail(&job, next, &error).await {
                    tracing::warn!(job = %name, %error, "cannot record why the job cannot run");
                }
                cancel.cancelled().await;
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
    tracing::info!(job = %name, first_round = round, rounds = plan.rounds, rule = %combine.name(), "aggregating federated job");
    // Removed with the job's series when this aggregator stops (every return below).
    let accuracy = ctx.metrics.job_accuracy(&name);
    let mut center: Option<Vec<f32>> = None;
    let mut early: BTreeMap<u32, Vec<Incoming>> = BTreeMap::new();
    let mut open = OpenRounds::new(StalePolicy::from_spec(&job.spec.straggler_policy));
    while round <= plan.rounds {
        let current = jobs.borrow().get(&name).cloned();
        if let Some(current) = current.filter(|j| job::uid(j) == plan.uid) {
            combine.refresh(&current);
        }
        let started = Instant::now();
        let mut state = RoundState {
            incoming: &mut incoming,
            early: &mut early,
            open: &mut open,
        };
        let span = spans::round(&plan.uid, &name, round, &ctx.node_name);
        let outcome = tokio::select! {
            () = cancel.cancelled() => return,
            outcome = run_round(&ctx, &plan, &combine, round, &model, center.as_deref(), &mut state)
                .instrument(span.clone()) => outcome,
        };
        match &outcome {
            Ok((record, _, _)) => {
                span.record("accepted", record.accepted.len());
                span.record("rejected", record.rejected.len());
                span.record("accuracy", record.accuracy.as_str());
            }
            Err(error) => {
                span.record("error", error.as_str());
            }
        }
        drop(span);
        let (record, step) = match outcome {
            Ok((mut record, step, new_model)) => {
                record.duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
                model = new_model;
                (record, step)
            }
            Err(reason) => {
                tracing::error!(job = %name, round, %reason, "round failed");
                ctx.metrics.rounds.with_label_values(&["failed"]).inc();
                ctx.metrics
                    .round_seconds
                    .with_label_values(&["failed"])
                    .observe(started.elapsed().as_secs_f64());
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
        ctx.metrics
            .round_seconds
            .with_label_values(&["completed"])
            .observe(started.elapsed().as_secs_f64());
        if let Ok(percent) = record.accuracy.parse::<f64>() {
            accuracy.set(percent / 100.0);
        }
        tracing::info!(
            job = %name, round, accuracy = %record.accuracy, loss = %record.loss,
            accepted = record.accepted.len(), rejected = record.rejected.len(),
            down_weighted = record.down_weighted.len(), duration_ms = record.duration_ms, "round complete"
        );
        center = Some(step);
        round += 1;
    }
    tracing::info!(job = %name, "all rounds aggregated");
    // Stay until the operator completes the job, so it is not started again meanwhile.
    cancel.cancelled().await;
}

/// What a round takes over from the previous one and hands on to the next.
struct RoundState<'a> {
    incoming: &'a mut mpsc::Receiver<Incoming>,
    /// Updates that claimed a round not started yet.
    early: &'a mut BTreeMap<u32, Vec<Incoming>>,
    /// Past rounds still accepting stragglers.
    open: &'a mut OpenRounds,
}

/// The updates of one round as they are judged.
struct Collector<'a> {
    ctx: &'a FlContext,
    participants: &'a [String],
    /// Fresh updates that end the round before its timeout (`spec.quorumPercent`).
    quorum: usize,
    round: u32,
    uid: &'a str,
    validator: UpdateValidator,
    admitted: HashMap<String, ModelUpdate>,
    stale: HashMap<String, Stale>,
    rejected: Vec<Rejection>,
    unlisted: usize,
}

impl Gatherer for Collector<'_> {
    fn claim(&self, message: &Incoming) -> Option<u32> {
        SignedUpdate::decode(&message.bytes)
            .ok()
            .filter(|(claimed, _)| claimed.update.round_uid == self.uid)
            .map(|(claimed, _)| claimed.update.round)
    }

    /// A straggler's update is judged against its own round while that is open, everything
    /// else against this round.
    fn take(&mut self, update: Incoming, claimed_round: Option<u32>, open: &mut OpenRounds) {
        if let Some(claimed) = claimed_round.filter(|c| *c < self.round) {
            match open.admit(&update.bytes, claimed, self.round, || {
                participant_keys(self.ctx, self.participants)
            }) {
                Late::Admitted(stale) => {
                    self.ctx
                        .metrics
                        .updates
                        .with_label_values(&["stale_admitted"])
                        .inc();
                    let participant = stale.update.participant.clone();
                    let fresher = self
                        .stale
                        .get(&participant)
                        .is_some_and(|held| held.staleness <= stale.staleness);
                    if !fresher {
                        self.stale.insert(participant, stale);
                    }
                    return;
                }
                Late::Refused { round, rejection } => {
                    return self.refuse(update.source, rejection, Some(round));
                }
                Late::NotOpen => {}
            }
        }
        let keys = || participant_keys(self.ctx, self.participants);
        match admit_with_fresh_keys(&mut self.validator, &update.bytes, keys) {
            Ok(admitted) => {
                self.ctx.metrics.updates.with_label_values(&["admitted"]).inc();
                self.admitted.insert(admitted.participant.clone(), admitted);
            }
            Err(refusal) => self.refuse(update.source, refusal, None),
        }
    }

    fn complete(&self) -> bool {
        self.admitted.len() >= self.quorum
    }

    fn waiting(&self) -> Vec<String> {
        self.participants
            .iter()
            .filter(|p| !self.admitted.contains_key(*p) && **p != self.ctx.node_name)
            .cloned()
            .collect()
    }
}

impl Collector<'_> {
    fn refuse(&mut self, source: String, refusal: Refusal, for_round: Option<u32>) {
        self.ctx
            .metrics
            .updates
            .with_label_values(&[refusal.reason.code()])
            .inc();
        if self.rejected.len() >= LISTED_PER_PARTICIPANT * self.participants.len() + 16 {
            self.unlisted += 1;
            return;
        }
        let round = for_round
            .map(|r| format!(" (late update for round {r})"))
            .unwrap_or_default();
        self.rejected.push(Rejection {
            participant: refusal.claimed_participant.unwrap_or(source),
            reason: format!("{}: {}{round}", refusal.reason.code(), refusal.reason),
        });
    }

    /// Aggregates what was admitted (a straggler's update standing in for a participant
    /// without a fresh one) with the spec's rule.
    fn finish(
        self,
        rule: &Rule,
        center: Option<&[f32]>,
        timed_out: bool,
        quorum_timeout: Duration,
        open: &mut OpenRounds,
    ) -> Result<Gathered, String> {
        let Collector {
            ctx,
            validator,
            admitted,
            stale,
            mut rejected,
            unlisted,
            participants,
            round,
            ..
        } = self;
        open.close(validator);
        let missing = if timed_out {
            format!("NoUpdate: no valid update within the quorum timeout ({quorum_timeout:?})")
        } else {
            format!(
                "NoUpdate: the round had its quorum ({} of {}) before this update",
                admitted.len(),
                participants.len()
            )
        };
        for participant in participants {
            if !admitted.contains_key(participant) && !stale.contains_key(participant) {
                rejected.push(Rejection {
                    participant: participant.clone(),
                    reason: missing.clone(),
                });
            }
        }
        if unlisted > 0 {
            rejected.push(Rejection {
                participant: "(more)".into(),
                reason: format!("{unlisted} further refused updates, counted in x0_agent_fl_updates_total"),
            });
        }
        let used_stale: BTreeMap<&str, (&Stale, Vec<f32>)> = stale
            .iter()
            .filter(|(participant, _)| !admitted.contains_key(*participant))
            .map(|(participant, s)| (participant.as_str(), (s, s.weighted_values())))
            .collect();
        // In the participants' order, so the record reads the same on every run.
        let contributions: Vec<Contribution> = participants
            .iter()
            .filter_map(|p| match (admitted.get(p), used_stale.get(p.as_str())) {
                (Some(u), _) => Some(u.contribution()),
                (None, Some((s, values))) => Some(s.update.contribution_with(values)),
                (None, None) => None,
            })
            .collect();
        let result = aggregate(rule, &contributions, center).map_err(|e| {
            format!(
                "{} refused with {} admitted update(s) of {}: {e}",
                rule.name(),
                contributions.len(),
                participants.len()
            )
        })?;
        let mut gathered = Gathered {
            step: Vec::new(),
            accepted: Vec::new(),
            rejected,
            down_weighted: used_stale
                .values()
                .map(|(s, _)| Rejection {
                    participant: s.update.participant.clone(),
                    reason: s.reason(round),
                })
                .collect(),
        };
        for outcome in &result.outcomes {
            ctx.metrics.verdict(rule.name(), &outcome.verdict);
            gathered.record(&outcome.participant, &outcome.verdict, rule.name());
        }
        gathered.step = result.values;
        Ok(gathered)
    }
}

/// Hands the round's messages to `gatherer` until it is complete or the quorum timeout
/// passes, sending the training request again meanwhile; a message claiming a later round
/// of the job waits for it (bounded). Returns whether the timeout passed.
async fn gather(
    ctx: &FlContext,
    plan: &Plan,
    round: u32,
    request: &[u8],
    gatherer: &mut impl Gatherer,
    state: &mut RoundState<'_>,
) -> Result<bool, String> {
    for message in state.early.remove(&round).unwrap_or_default() {
        let claimed = gatherer.claim(&message);
        gatherer.take(message, claimed, state.open);
    }
    let deadline = tokio::time::Instant::now() + plan.quorum_timeout;
    let mut resend_gap = RESEND_FIRST;
    let mut next_resend = tokio::time::Instant::now() + resend_gap;
    while !gatherer.complete() {
        let message = tokio::select! {
            () = tokio::time::sleep_until(deadline) => return Ok(true),
            () = tokio::time::sleep_until(next_resend) => {
                resend_gap = (resend_gap * 2).min(RESEND_MAX);
                next_resend += resend_gap;
                // A participant that has not learnt of the job yet (its watch lags), or whose
                // request was lost, gets it again; one that already trained drops the copy.
                for participant in gatherer.waiting() {
                    let _ = send_message(ctx, &participant, TRAIN_FLOW, request).await;
                }
                continue;
            }
            message = state.incoming.recv() => match message {
                Some(message) => message,
                None => return Err("the agent is stopping".into()),
            },
        };
        let claimed = gatherer.claim(&message);
        if let Some(later) = claimed.filter(|c| *c > round && *c <= plan.rounds) {
            let held = state.early.entry(later).or_default();
            if held.len() < EARLY_PER_PARTICIPANT * plan.participants.len() {
                held.push(message);
            } else {
                ctx.metrics.drop("early_update_overflow");
            }
            continue;
        }
        gatherer.take(message, claimed, state.open);
    }
    Ok(false)
}

/// One round: the record (duration filled in by the caller), the aggregate step and the new
/// model; or why the round cannot complete.
async fn run_round(
    ctx: &Arc<FlContext>,
    plan: &Plan,
    combine: &Combine,
    round: u32,
    model: &[f32],
    center: Option<&[f32]>,
    state: &mut RoundState<'_>,
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
        trace: spans::request_context(),
        participants: plan.participants.clone(),
        values: model.to_vec(),
    };
    let bytes = request.sign(&identity.key).map_err(|e| e.to_string())?;
    for participant in &plan.participants {
        if *participant == ctx.node_name {
            // This agent takes part too: its update comes back through the loopback (or goes
            // to its zone's aggregator) like any other.
            ctx.take_part(&plan.job, request.clone());
        } else if let Err(error) = send_message(ctx, participant, TRAIN_FLOW, &bytes).await {
            tracing::warn!(%participant, round, %error, "cannot send the training request");
        }
    }

    let gathered = match &combine.hierarchy {
        None => {
            let mut collector = Collector {
                ctx,
                participants: &plan.participants,
                quorum: plan.job.spec.quorum(plan.participants.len()),
                round,
                uid: &plan.uid,
                validator: UpdateValidator::with_keys(
                    RoundExpectations::new(plan.uid.clone(), round, base_digest, model.len()),
                    participant_keys(ctx, &plan.participants),
                ),
                admitted: HashMap::new(),
                stale: HashMap::new(),
                rejected: Vec::new(),
                unlisted: 0,
            };
            let timed_out = gather(ctx, plan, round, &bytes, &mut collector, state).await?;
            collector.finish(&combine.rule, center, timed_out, plan.quorum_timeout, state.open)?
        }
        Some((global, zone_aggregators)) => {
            let mut reports =
                ZoneReports::new(ctx, &plan.job, round, base_digest, model.len(), zone_aggregators);
            let timed_out = gather(ctx, plan, round, &bytes, &mut reports, state).await?;
            reports.finish(global, center, timed_out)?
        }
    };
    let mut new_model = model.to_vec();
    apply(&mut new_model, &gathered.step);
    if new_model.iter().any(|v| !v.is_finite()) {
        return Err("the aggregate made the model non-finite (diverged)".into());
    }
    let evaluation = evaluate(&plan.shape, &new_model, plan.test(ctx)?).map_err(|e| e.to_string())?;
    let record = RoundRecord {
        round: round as i32,
        participants: plan.participants.clone(),
        accepted: gathered.accepted,
        rejected: gathered.rejected,
        down_weighted: gathered.down_weighted,
        loss: format!("{:.4}", evaluation.loss),
        accuracy: format!("{:.1}", evaluation.accuracy * 100.0),
        duration_ms: 0,
        model_digest: hex::encode(digest(&new_model)),
        previous: String::new(),
        hash: String::new(),
    };
    Ok((record, gathered.step, new_model))
}
