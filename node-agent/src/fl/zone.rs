//! A zone's aggregator in a hierarchical job (`status.zoneAggregators` names this agent for
//! its zone). When the round's training request reaches it, it collects its zone members'
//! updates (they send them here, not to the job's aggregator), verifies each before use,
//! aggregates them with the spec's rule and sends the result, with every member's outcome, to
//! the job's aggregator as a [`ZoneReport`] signed with its node key. A Byzantine member is
//! filtered inside its zone: its update never leaves it.
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_protocol::ZONE_FLOW;
use x0tta6bl4_fl::aggregate::{Contribution, Verdict, aggregate};
use x0tta6bl4_fl::update::ModelUpdate;
use x0tta6bl4_fl::validate::{RoundExpectations, UpdateValidator};

use super::aggregator::{admit_with_fresh_keys, participant_keys};
use super::messages::TrainRequest;
use super::zone_report::{MemberOutcome, MemberVerdict, ZoneReport};
use super::{FlContext, Incoming, job, send_message};

/// Updates held per job for a zone round that has not started here yet (the request can
/// reach a member before its zone's aggregator), bounded against unauthenticated bytes.
const HELD_PER_JOB: usize = 64;
/// Updates queued for a running zone round.
const QUEUE: usize = 64;

/// One job's zone round on this agent.
struct Slot {
    round: u32,
    updates: Option<mpsc::Sender<Incoming>>,
    cancel: CancellationToken,
    /// Updates for a round not started yet: (round, update).
    held: Vec<(u32, Incoming)>,
}

/// The zone rounds this agent runs, by job UID.
#[derive(Default)]
pub struct ZoneRounds {
    slots: Mutex<HashMap<String, Slot>>,
}

impl ZoneRounds {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the zone rounds of jobs not in `running` (deleted, finished, failed).
    pub fn retain(&self, running: impl Fn(&str) -> bool) {
        self.slots().retain(|uid, slot| {
            let keep = running(uid);
            if !keep {
                slot.cancel.cancel();
            }
            keep
        });
    }

    /// Hands a member's update to the zone round it claims: now if that round runs, later if
    /// it has not started here yet; `Err` with the drop reason otherwise.
    pub fn route(&self, uid: &str, round: u32, update: Incoming) -> Result<(), &'static str> {
        let mut slots = self.slots();
        let slot = slots.entry(uid.to_owned()).or_insert_with(|| Slot {
            round: 0,
            updates: None,
            cancel: CancellationToken::new(),
            held: Vec::new(),
        });
        if round == slot.round {
            let Some(updates) = &slot.updates else {
                return Err("update_for_no_zone_round");
            };
            return updates.try_send(update).map_err(|_| "zone_queue_full");
        }
        if round < slot.round {
            return Err("update_for_closed_zone_round");
        }
        if slot.held.len() >= HELD_PER_JOB {
            return Err("zone_early_update_overflow");
        }
        slot.held.push((round, update));
        Ok(())
    }
}

/// Starts this agent's zone round for an authenticated training request, if the job is
/// hierarchical and this agent aggregates a zone; the previous round's zone work stops.
pub fn start(ctx: &Arc<FlContext>, job: &Arc<FLTrainingRound>, request: &TrainRequest) {
    if !job::hierarchical(job) {
        return;
    }
    let Some(zone) = job::zone_aggregated_by(job, &ctx.node_name) else {
        return;
    };
    let (updates, incoming) = mpsc::channel(QUEUE);
    let cancel = CancellationToken::new();
    {
        let mut slots = ctx.zone_rounds.slots();
        let slot = slots.entry(request.job_uid.clone()).or_insert_with(|| Slot {
            round: 0,
            updates: None,
            cancel: CancellationToken::new(),
            held: Vec::new(),
        });
        if request.round <= slot.round && slot.updates.is_some() {
            return;
        }
        slot.cancel.cancel();
        slot.round = request.round;
        slot.cancel = cancel.clone();
        let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut slot.held)
            .into_iter()
            .filter(|(round, _)| *round >= request.round)
            .partition(|(round, _)| *round == request.round);
        slot.held = later;
        for (_, update) in now {
            let _ = updates.try_send(update);
        }
        slot.updates = Some(updates);
    }
    tokio::spawn(run(
        Arc::clone(ctx),
        Arc::clone(job),
        zone.to_owned(),
        request.clone(),
        incoming,
        cancel,
    ));
}

/// Collects, aggregates and reports one round of one zone.
async fn run(
    ctx: Arc<FlContext>,
    job: Arc<FLTrainingRound>,
    zone: String,
    request: TrainRequest,
    mut incoming: mpsc::Receiver<Incoming>,
    cancel: CancellationToken,
) {
    let members = job::zone_members(&job, &zone);
    let quorum_timeout =
        x0tta6bl4_api::duration::parse(&job.spec.quorum_timeout).unwrap_or(Duration::from_secs(60));
    // A quarter of the round is left for the report to reach the job's aggregator.
    let deadline = tokio::time::Instant::now() + quorum_timeout * 3 / 4;
    let quorum = job.spec.quorum(members.len());
    let mut validator = UpdateValidator::with_keys(
        RoundExpectations::new(
            request.job_uid.clone(),
            request.round,
            request.base_digest,
            request.values.len(),
        ),
        participant_keys(&ctx, &members),
    );
    let mut admitted: HashMap<String, ModelUpdate> = HashMap::new();
    let mut outcomes: Vec<MemberOutcome> = Vec::new();
    let mut timed_out = false;
    while admitted.len() < quorum {
        let update = tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(deadline) => {
                timed_out = true;
                break;
            }
            update = incoming.recv() => match update {
                Some(update) => update,
                None => return,
            },
        };
        match admit_with_fresh_keys(&mut validator, &update.bytes, || participant_keys(&ctx, &members)) {
            Ok(update) => {
                ctx.metrics.updates.with_label_values(&["zone_admitted"]).inc();
                admitted.insert(update.participant.clone(), update);
            }
            Err(refusal) => {
                ctx.metrics
                    .updates
                    .with_label_values(&[refusal.reason.code()])
                    .inc();
                if outcomes.len() < 4 * members.len() + 16 {
                    outcomes.push(MemberOutcome {
                        participant: refusal.claimed_participant.unwrap_or(update.source),
                        verdict: MemberVerdict::Rejected(truncate(format!(
                            "{}: {}",
                            refusal.reason.code(),
                            refusal.reason
                        ))),
                    });
                }
            }
        }
    }
    let missing = if timed_out {
        format!("NoUpdate: no valid update reached zone {zone}'s aggregator in time")
    } else {
        format!(
            "NoUpdate: zone {zone} had its quorum ({} of {}) before this update",
            admitted.len(),
            members.len()
        )
    };
    for member in members.iter().filter(|m| !admitted.contains_key(*m)) {
        outcomes.push(MemberOutcome {
            participant: member.clone(),
            verdict: MemberVerdict::Rejected(truncate(missing.clone())),
        });
    }
    let used: Vec<&ModelUpdate> = members.iter().filter_map(|m| admitted.get(m)).collect();
    let contributions: Vec<Contribution> = used.iter().map(|u| u.contribution()).collect();
    let rule = job::rule(&job);
    let (values, error) = match aggregate(&rule, &contributions, None) {
        Ok(result) => {
            for outcome in result.outcomes {
                let verdict = match outcome.verdict {
                    Verdict::Accepted { .. } => MemberVerdict::Accepted,
                    Verdict::DownWeighted { reason, .. } => {
                        MemberVerdict::DownWeighted(truncate(format!("{}: {reason}", rule.name())))
                    }
                    Verdict::Rejected { reason } => {
                        MemberVerdict::Rejected(truncate(format!("{}: {reason}", rule.name())))
                    }
                };
                outcomes.push(MemberOutcome {
                    participant: outcome.participant,
                    verdict,
                });
            }
            (result.values, String::new())
        }
        Err(error) => (
            Vec::new(),
            truncate(format!(
                "{} refused with {} admitted update(s) of {}: {error}",
                rule.name(),
                contributions.len(),
                members.len()
            )),
        ),
    };
    let identity = ctx.identity.get();
    let report = ZoneReport {
        job_uid: request.job_uid.clone(),
        round: request.round,
        zone: zone.clone(),
        zone_aggregator: ctx.node_name.clone(),
        key_epoch: identity.endorsement.key_epoch,
        base_digest: request.base_digest,
        examples: used.iter().map(|u| u.examples).sum(),
        error,
        outcomes,
        values,
    };
    let bytes = match report.sign(&identity.key) {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%zone, round = request.round, %error, "cannot sign the zone report");
            return;
        }
    };
    tracing::info!(
        %zone, round = request.round, admitted = used.len(), members = members.len(),
        "zone aggregated; reporting to {}", request.aggregator
    );
    if let Err(error) = send_message(&ctx, &request.aggregator, ZONE_FLOW, &bytes).await {
        tracing::warn!(%zone, round = request.round, %error, "cannot send the zone report");
    }
}

/// Reasons longer than a report carries are cut (on a character boundary).
fn truncate(mut text: String) -> String {
    let limit = super::zone_report::MAX_REASON_LEN;
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
