//! Injection by hand, on a loopback-only endpoint (`--fl-admin 127.0.0.1:PORT`):
//! `POST /fl/inject?job=NAME&round=K&kind=unsigned|tampered` sends an update in this agent's
//! name to the job's aggregator that must be refused: `unsigned` carries no signature,
//! `tampered` is signed and then has one value changed. The refusal shows in round K's record.
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_fl::update::{ModelUpdate, SignedUpdate};

use super::job::{self, Jobs};
use super::{FlContext, route_update};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unsigned,
    Tampered,
}

#[derive(Debug, PartialEq, Eq)]
pub struct InjectRequest {
    pub job: String,
    pub round: u32,
    pub kind: Kind,
}

pub fn parse(query: &str) -> Result<InjectRequest, String> {
    let (mut job, mut round, mut kind) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "job" => job = Some(value.to_owned()),
            "round" => {
                round = Some(
                    value
                        .parse::<u32>()
                        .map_err(|_| format!("round={value:?} is not a round number"))?,
                )
            }
            "kind" => {
                kind = Some(match value {
                    "unsigned" => Kind::Unsigned,
                    "tampered" => Kind::Tampered,
                    _ => return Err(format!("kind={value:?}: unsigned or tampered")),
                })
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(InjectRequest {
        job: job.filter(|j| !j.is_empty()).ok_or("job=NAME is required")?,
        round: round.ok_or("round=K is required")?,
        kind: kind.ok_or("kind=unsigned|tampered is required")?,
    })
}

/// The bytes of the bad update: zeros of the model's size in this agent's name.
pub fn bad_update(
    ctx: &FlContext,
    job: &x0tta6bl4_api::FLTrainingRound,
    round: u32,
    kind: Kind,
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
    let signed = match kind {
        Kind::Unsigned => SignedUpdate {
            update,
            signature: Vec::new(),
        },
        Kind::Tampered => {
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

#[derive(Clone)]
struct InjectState {
    ctx: Arc<FlContext>,
    jobs: watch::Receiver<Jobs>,
}

async fn inject(State(state): State<InjectState>, RawQuery(query): RawQuery) -> (StatusCode, String) {
    let request = match parse(query.as_deref().unwrap_or("")) {
        Ok(request) => request,
        Err(why) => return (StatusCode::BAD_REQUEST, format!("{why}\n")),
    };
    let Some(job) = state.jobs.borrow().get(&request.job).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no job {:?}\n", request.job));
    };
    // Where this agent's own updates go: the job's aggregator, or its zone's in a hierarchical job.
    let Some(aggregator) = job::update_destination(&job, &state.ctx.node_name).map(str::to_owned) else {
        return (StatusCode::CONFLICT, "the job is not running\n".into());
    };
    let bytes = match bad_update(&state.ctx, &job, request.round, request.kind) {
        Ok(bytes) => bytes,
        Err(why) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("{why}\n")),
    };
    tracing::warn!(job = %request.job, round = request.round, kind = ?request.kind, %aggregator, "injecting a bad update by hand");
    match route_update(&state.ctx, &aggregator, bytes).await {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "sent a {:?} update for round {} of {} to {aggregator}\n",
                request.kind, request.round, request.job
            ),
        ),
        Err(error) => (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")),
    }
}

/// Serves the endpoint on a loopback address until `shutdown`.
pub async fn serve(
    address: SocketAddr,
    ctx: Arc<FlContext>,
    jobs: watch::Receiver<Jobs>,
    shutdown: CancellationToken,
) {
    if !address.ip().is_loopback() {
        tracing::error!(%address, "the federated-learning admin endpoint must listen on loopback; not serving it");
        return;
    }
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, %address, "cannot listen for the federated-learning admin endpoint");
            return;
        }
    };
    tracing::info!(%address, "serving /fl/inject (loopback only)");
    let app = Router::new()
        .route("/fl/inject", axum::routing::post(inject))
        .with_state(InjectState { ctx, jobs });
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(%error, "federated-learning admin endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inject_queries_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse("job=demo&round=3&kind=tampered"),
            Ok(InjectRequest {
                job: "demo".into(),
                round: 3,
                kind: Kind::Tampered
            })
        );
        assert!(
            parse("job=demo&round=x&kind=unsigned")
                .unwrap_err()
                .contains("round")
        );
        assert!(
            parse("job=demo&round=1&kind=forged")
                .unwrap_err()
                .contains("kind")
        );
        assert!(parse("round=1&kind=unsigned").unwrap_err().contains("job"));
        assert!(parse("job=d&round=1&kind=unsigned&x=1").is_err());
    }
}
