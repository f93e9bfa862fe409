//! Taking part in an authenticated round: the zone's round started if this agent aggregates
//! its zone, then the local update trained on a blocking thread (poisoned if the chaos
//! executor says so), signed with the node key and sent where the job says.
use std::sync::Arc;

use tracing::Instrument as _;
use x0tta6bl4_fl::codec::train_request::TrainRequest;

use super::{FlContext, job, participant, route_update, spans, zone};

impl FlContext {
    /// Takes part in an authenticated round: aggregates its zone if it is the zone's
    /// aggregator, then trains and sends its update where the job says (its zone's aggregator
    /// or the job's).
    pub fn take_part(self: &Arc<Self>, job: &Arc<x0tta6bl4_api::FLTrainingRound>, request: TrainRequest) {
        zone::start(self, job, &request);
        let destination = job::update_destination(job, &self.node_name)
            .unwrap_or(&request.aggregator)
            .to_owned();
        self.train_and_submit(request, destination);
    }

    /// Trains the round on a blocking thread and sends the signed update to `destination`.
    fn train_and_submit(self: &Arc<Self>, request: TrainRequest, destination: String) {
        let ctx = Arc::clone(self);
        let span = spans::train(&request, &self.node_name);
        tokio::spawn(async move {
            let trained = {
                let ctx = Arc::clone(&ctx);
                let request = request.clone();
                tokio::task::spawn_blocking(move || {
                    // A snapshot: training must not hold the recorder the mesh samples into.
                    let recorded = match request.dataset {
                        job::JobDataset::LinkTelemetry => {
                            let windows = ctx.telemetry.lock().training_set(request.seed)?;
                            tracing::info!(
                                job = %request.job_uid, round = request.round, windows = windows.len(),
                                faulty = windows.class_counts()[1], "training on this agent's link telemetry"
                            );
                            Some(windows)
                        }
                        job::JobDataset::Shipped(_) => None,
                    };
                    let attack = ctx
                        .byzantine_update
                        .borrow()
                        .as_ref()
                        .and_then(|poisoning| poisoning.attack_on(&request.job_uid))
                        .map(participant::attack_of);
                    if let Some(attack) = attack {
                        tracing::warn!(job = %request.job_uid, round = request.round, attack = attack.name(), "chaos: sending a poisoned update");
                    }
                    let poisoned = attack.is_some();
                    let update = participant::local_update_on(&request, &ctx.node_name, attack, recorded)?;
                    let spoiled = *ctx.signature_failure.borrow();
                    let mut signed = update.sign(&ctx.identity.get().key).map_err(|e| e.to_string())?;
                    if spoiled && let Some(first) = signed.signature.first_mut() {
                        // signatureFailure: the aggregator must refuse it (BadSignature).
                        *first ^= 0xff;
                    }
                    signed
                        .encode()
                        .map(|bytes| (bytes, poisoned))
                        .map_err(|e| e.to_string())
                })
                .await
            };
            let (bytes, poisoned) = match trained {
                Ok(Ok(trained)) => trained,
                Ok(Err(error)) => {
                    ctx.metrics.trained.with_label_values(&["failed"]).inc();
                    tracing::Span::current().record("outcome", "failed");
                    tracing::warn!(job = %request.job_uid, round = request.round, %error, "local training failed");
                    return;
                }
                Err(error) => {
                    ctx.metrics.trained.with_label_values(&["failed"]).inc();
                    tracing::Span::current().record("outcome", "panicked");
                    tracing::warn!(%error, "local training panicked");
                    return;
                }
            };
            if let Some(delay) = ctx.straggle {
                tracing::warn!(
                    ?delay,
                    round = request.round,
                    "test mode: holding the update back (straggler)"
                );
                tokio::time::sleep(delay).await;
            }
            // A chaos experiment's poisoned update is counted apart, so that an SRE sees which
            // agents are attacking and that they stopped.
            let outcome = if poisoned { "poisoned" } else { "sent" };
            ctx.metrics.trained.with_label_values(&[outcome]).inc();
            if let Err(error) = route_update(&ctx, &destination, bytes).await {
                tracing::Span::current().record("outcome", "unsent");
                tracing::warn!(%destination, %error, "cannot send the update");
            } else {
                tracing::Span::current().record("outcome", "sent");
            }
        }.instrument(span));
    }
}
