//! `/status` (JSON: identity, neighbours with link quality and key exchange, routes, counters,
//! the last convergence episode and recent events) and `/ping?to=NODE` (the built-in ping),
//! served next to /metrics, /healthz and /readyz.
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::mesh::MeshHandle;
pub use crate::mesh::report::{IncidentReport, NeighbourReport, QuarantineReport, RouteReport, StatusReport};
use crate::ping::PingResult;

/// The mesh, once the identity is known (before, /status and /ping answer 503).
pub type MeshCell = Arc<OnceLock<MeshHandle>>;

#[derive(Clone)]
struct ApiState {
    mesh: MeshCell,
    /// /ping requests served at once; more are refused (429), so the endpoint cannot be used
    /// to flood the mesh.
    pings: Arc<Semaphore>,
}

const CONCURRENT_PING_REQUESTS: usize = 4;

const MAX_PINGS: usize = 20;
const MAX_PING_TIMEOUT: Duration = Duration::from_secs(5);

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

fn not_ready() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "the mesh is not running yet\n").into_response()
}

/// `/status` and `/ping`.
pub fn router(mesh: MeshCell) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/ping", get(ping))
        .with_state(ApiState {
            mesh,
            pings: Arc::new(Semaphore::new(CONCURRENT_PING_REQUESTS)),
        })
}

async fn status(State(state): State<ApiState>) -> Response {
    let Some(handle) = state.mesh.get() else {
        return not_ready();
    };
    match handle.status().await {
        Some(report) => json(StatusCode::OK, &report),
        None => not_ready(),
    }
}

/// What `/ping` was asked.
#[derive(Debug, PartialEq, Eq)]
struct PingQuery {
    to: String,
    count: usize,
    timeout: Duration,
}

fn parse_ping_query(query: Option<&str>) -> Result<PingQuery, String> {
    let mut to = None;
    let mut count = 1;
    let mut timeout = Duration::from_secs(1);
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "to" => to = Some(value.to_owned()),
            "count" => {
                count = value
                    .parse::<usize>()
                    .map_err(|_| format!("count '{value}' is not a number"))?
                    .clamp(1, MAX_PINGS);
            }
            "timeout_ms" => {
                let millis = value
                    .parse::<u64>()
                    .map_err(|_| format!("timeout_ms '{value}' is not a number"))?;
                timeout = Duration::from_millis(millis).min(MAX_PING_TIMEOUT);
            }
            other => return Err(format!("unknown parameter '{other}'")),
        }
    }
    let to = to
        .filter(|to| !to.is_empty())
        .ok_or("to= is required: a node id (hex), SPIFFE ID or node name")?;
    Ok(PingQuery { to, count, timeout })
}

#[derive(Serialize)]
struct PingReport {
    to: String,
    node_id: String,
    results: Vec<PingOutcome>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum PingOutcome {
    Answered(PingResult),
    Failed { error: &'static str },
}

async fn ping(State(state): State<ApiState>, RawQuery(query): RawQuery) -> Response {
    let Some(handle) = state.mesh.get() else {
        return not_ready();
    };
    let Ok(_permit) = state.pings.try_acquire() else {
        return (StatusCode::TOO_MANY_REQUESTS, "too many pings in progress\n").into_response();
    };
    let query = match parse_ping_query(query.as_deref()) {
        Ok(query) => query,
        Err(error) => return (StatusCode::BAD_REQUEST, format!("{error}\n")).into_response(),
    };
    let Some(destination) = handle.resolve(query.to.clone()).await else {
        return (StatusCode::NOT_FOUND, format!("no known node '{}'\n", query.to)).into_response();
    };
    let mut results = Vec::with_capacity(query.count);
    for _ in 0..query.count {
        results.push(match handle.ping(destination, query.timeout).await {
            Ok(result) => PingOutcome::Answered(result),
            Err(error) => PingOutcome::Failed { error: error.label() },
        });
    }
    json(
        StatusCode::OK,
        &PingReport {
            to: query.to,
            node_id: destination.to_string(),
            results,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_queries_are_bounded_and_need_a_destination() {
        assert_eq!(
            parse_ping_query(Some("to=node-2&count=500&timeout_ms=60000")),
            Ok(PingQuery {
                to: "node-2".to_owned(),
                count: MAX_PINGS,
                timeout: MAX_PING_TIMEOUT,
            })
        );
        assert!(parse_ping_query(Some("count=2")).is_err());
        assert!(parse_ping_query(None).is_err());
        assert!(parse_ping_query(Some("to=a&flood=yes")).is_err());
        assert!(parse_ping_query(Some("to=a&count=x")).is_err());
    }
}
