//! Forged updates (test builds only), sent once on request of the agent's fault endpoint
//! (`POST /chaos/forged-update`, `crate::test_faults::forgery`): an update in this agent's name that
//! the job's aggregator must refuse, `unsigned` (no signature) or `tampered` (signed, then one
//! value changed). The refusal shows in the round's record.
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use x0tta6bl4_fl::update::{ModelUpdate, SignedUpdate};

use super::job::{self, Jobs};
use super::{FlContext, route_update};
use crate::test_faults::forgery::{ForgeRefusal, ForgeRequest, ForgedUpdate, Forgery};

/// The bytes of the forged update: zeros of the model's size in this agent's name.
pub fn forged_bytes(
    ctx: &FlContext,
    job: &x0tta6bl4_api::FLTrainingRound,
    round: u32,
    forgery: Forgery,
) -> Result<Vec<u8>, String> {
    let shape = job::shape(job)?;
    let update = ModelUpdate {
        round_uid: job::uid(job).to_owned(),
        round,
        participant: ctx.node_name.clone(),
        base_digest: [0; 32],
        examples: 1,
        values: vec![0.0; shape.parameter_count()],
    };
    let signed = match forgery {
        Forgery::Unsigned => SignedUpdate {
            update,
            signature: Vec::new(),
        },
        Forgery::Tampered => {
            let mut signed = update.sign(&ctx.identity.get().key).map_err(|e| e.to_string())?;
            // Changed after signing: the signature no longer covers what is sent.
            if let Some(first) = signed.update.values.first_mut() {
                *first = 1.0;
            }
            signed
        }
    };
    signed.encode().map_err(|e| e.to_string())
}

async fn send(
    ctx: &FlContext,
    jobs: &watch::Receiver<Jobs>,
    forged: &ForgedUpdate,
) -> Result<String, ForgeRefusal> {
    let Some(job) = jobs.borrow().get(&forged.job).cloned() else {
        return Err(ForgeRefusal::NoJob(forged.job.clone()));
    };
    // Where this agent's own updates go: the job's aggregator, or its zone's in a hierarchical job.
    let Some(aggregator) = job::update_destination(&job, &ctx.node_name).map(str::to_owned) else {
        return Err(ForgeRefusal::NotRunning);
    };
    let bytes = forged_bytes(ctx, &job, forged.round, forged.forgery).map_err(ForgeRefusal::Failed)?;
    tracing::warn!(job = %forged.job, round = forged.round, forgery = ?forged.forgery, %aggregator, "chaos: sending a forged update");
    route_update(ctx, &aggregator, bytes)
        .await
        .map_err(|error| ForgeRefusal::Unreachable(error.to_string()))?;
    Ok(format!(
        "sent a {:?} update for round {} of {} to {aggregator}",
        forged.forgery, forged.round, forged.job
    ))
}

/// Carries out the executor's forgery requests until `shutdown`, answering each.
pub async fn carry_out(
    ctx: Arc<FlContext>,
    jobs: watch::Receiver<Jobs>,
    mut requests: mpsc::Receiver<ForgeRequest>,
    shutdown: CancellationToken,
) {
    loop {
        let request = tokio::select! {
            () = shutdown.cancelled() => break,
            request = requests.recv() => match request {
                Some(request) => request,
                None => break,
            },
        };
        let answer = send(&ctx, &jobs, &request.update).await;
        // The requester may have given up waiting; nothing else to do then.
        let _ = request.reply.send(answer);
    }
}
