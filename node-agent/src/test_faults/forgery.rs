//! `POST /chaos/forged-update?job=NAME&round=K&kind=unsigned|tampered` on the fault endpoint:
//! the FL participant sends, once, an update in this agent's name that the job's aggregator
//! must refuse (`crate::fl::forge`), and the request is answered once it is sent, or why not.
//! A forgery is a one-off rather than a state, so it is a request with a reply, not a
//! behaviour.
use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use tokio::sync::{mpsc, oneshot};

use crate::chaos::by_hand::ANSWER_WITHIN;

/// How a forged update fails its signature check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forgery {
    /// No signature at all.
    Unsigned,
    /// Signed, then one value changed.
    Tampered,
}

/// An update in this agent's name for round `round` of FL job `job`, that its aggregator must
/// refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgedUpdate {
    pub job: String,
    pub round: u32,
    pub forgery: Forgery,
}

/// Why a forged update was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForgeRefusal {
    NoJob(String),
    NotRunning,
    Failed(String),
    Unreachable(String),
}

impl std::fmt::Display for ForgeRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForgeRefusal::NoJob(job) => write!(f, "no FL job {job:?} on this agent's mesh"),
            ForgeRefusal::NotRunning => write!(f, "the job is not running"),
            ForgeRefusal::Failed(why) => write!(f, "cannot build the update: {why}"),
            ForgeRefusal::Unreachable(why) => write!(f, "cannot reach the aggregator: {why}"),
        }
    }
}

/// A forged update to send, and where to answer.
pub struct ForgeRequest {
    pub update: ForgedUpdate,
    pub reply: oneshot::Sender<Result<String, ForgeRefusal>>,
}

/// The fault endpoint's end of the forgeries; the FL participant receives them.
pub type ForgeLine = mpsc::Sender<ForgeRequest>;

/// Parses a forged update's query.
pub fn parse_forged(query: &str) -> Result<ForgedUpdate, String> {
    let (mut job, mut round, mut forgery) = (None, None, None);
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
                forgery = Some(match value {
                    "unsigned" => Forgery::Unsigned,
                    "tampered" => Forgery::Tampered,
                    _ => return Err(format!("kind={value:?}: unsigned or tampered")),
                })
            }
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    Ok(ForgedUpdate {
        job: job.filter(|j| !j.is_empty()).ok_or("job=NAME is required")?,
        round: round.ok_or("round=K is required")?,
        forgery: forgery.ok_or("kind=unsigned|tampered is required")?,
    })
}

async fn forge(State(forgeries): State<ForgeLine>, RawQuery(query): RawQuery) -> Response {
    let update = match parse_forged(query.as_deref().unwrap_or("")) {
        Ok(update) => update,
        Err(message) => return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response(),
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if forgeries.send(ForgeRequest { update, reply }).await.is_err() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "federated learning is not running\n",
        )
            .into_response();
    }
    match tokio::time::timeout(ANSWER_WITHIN, answer).await {
        Ok(Ok(Ok(sent))) => (StatusCode::OK, format!("{sent}\n")).into_response(),
        Ok(Ok(Err(refusal))) => {
            let status = match refusal {
                ForgeRefusal::NoJob(_) => StatusCode::NOT_FOUND,
                ForgeRefusal::NotRunning => StatusCode::CONFLICT,
                ForgeRefusal::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
                ForgeRefusal::Unreachable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, format!("{refusal}\n")).into_response()
        }
        Ok(Err(_)) | Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no answer from federated learning within {}s\n",
                ANSWER_WITHIN.as_secs()
            ),
        )
            .into_response(),
    }
}

/// `POST /chaos/forged-update`, merged into the fault endpoint's routes.
pub fn routes(forgeries: ForgeLine) -> Router {
    Router::new()
        .route("/chaos/forged-update", axum::routing::post(forge))
        .with_state(forgeries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_update_queries_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_forged("job=demo&round=3&kind=tampered"),
            Ok(ForgedUpdate {
                job: "demo".into(),
                round: 3,
                forgery: Forgery::Tampered
            })
        );
        assert!(
            parse_forged("job=demo&round=x&kind=unsigned")
                .unwrap_err()
                .contains("round")
        );
        assert!(
            parse_forged("job=demo&round=1&kind=forged")
                .unwrap_err()
                .contains("kind")
        );
        assert!(parse_forged("round=1&kind=unsigned").unwrap_err().contains("job"));
        assert!(parse_forged("job=d&round=1&kind=unsigned&x=1").is_err());
    }
}
