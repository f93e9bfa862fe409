//! A zone's aggregator in a hierarchical job (`status.zoneAggregators` names this agent for
//! its zone). When the round's training request reaches it, it collects its zone members'
//! updates (they send them here, not to the job's aggregator), verifies each before use,
//! aggregates them with the spec's rule and sends the result, with every member's outcome, to
//! the job's aggregator as a [`ZoneReport`] signed with its node key. A Byzantine member is
//! filtered inside its zone: its update never leaves it.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_protocol::ZONE_FLOW;
use x0tta6bl4_fl::aggregate::{Contribution, Verdict, aggregate};
use x0tta6bl4_fl::codec::train_request::TrainRequest;
use x0tta6bl4_fl::codec::zone_report::{self, MemberOutcome, MemberVerdict, ZoneReport};
use x0tta6bl4_fl::update::ModelUpdate;
use x0tta6bl4_fl::validate::{RoundExpectations, UpdateValidator};

use super::admission::{admit_with_fresh_keys, participant_keys};
use super::context::FlContext;
use super::incoming::Incoming;
use super::{job, send_message};

/// Updates queued for a running zone round.
const QUEUE: usize = 64;

/// Starts this agent's zone round for an authenticated training request, if the job is
/// hierarchical and this agent aggregates a zone; the previous round's zone work stops.
pub fn start(ctx: &Arc<FlContext>, job: &Arc<FLTrainingRound>, request: &TrainRequest) {
    if !job::hierarchical(job) {
        return;
    }
    let Some(zone) = job::zone_aggregated_by(job, &ctx.node_name) else {
        return;
    };
    let Some((incoming, cancel)) = ctx.zone_rounds.begin(&request.job_uid, request.round, QUEUE) else {
        return;
    };
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
    let limit = zone_report::MAX_REASON_LEN;
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}
