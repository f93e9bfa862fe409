//! The fault endpoint's datapath part (`--fault-api`, loopback only): `GET /datapath` shows the
//! kernel's counters and fault map, or why the datapath is not running.
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_datapath::{DatapathError, DatapathMaps, monotonic_now_ns};

use super::state::DatapathState;

/// The maps, shared by the poller and the fault endpoint (each holds the lock only briefly,
/// never across an await).
pub type Shared<M> = Arc<Mutex<M>>;

#[derive(Serialize)]
struct FaultView {
    peer: String,
    drop_probability: f64,
    corrupt_probability: f64,
    delay_ms: f64,
    partition: String,
    directions: String,
    expires_in_seconds: f64,
}

#[derive(Serialize)]
struct TrafficView {
    peer: String,
    direction: &'static str,
    packets: u64,
    bytes: u64,
    drops: u64,
}

fn view(maps: &dyn DatapathMaps, state: &DatapathState) -> Result<serde_json::Value, DatapathError> {
    let now = monotonic_now_ns();
    let traffic: Vec<TrafficView> = maps
        .traffic()?
        .into_iter()
        .map(|t| TrafficView {
            peer: t.peer.to_string(),
            direction: t.direction.label(),
            packets: t.packets,
            bytes: t.bytes,
            drops: t.drops,
        })
        .collect();
    let faults: Vec<FaultView> = maps
        .faults()?
        .into_iter()
        .map(|(peer, f)| FaultView {
            peer: peer.to_string(),
            drop_probability: f.drop_probability,
            corrupt_probability: f.corrupt_probability,
            delay_ms: f.delay.as_secs_f64() * 1000.0,
            partition: format!("{:?}", f.partition),
            directions: format!("{:?}", f.directions),
            expires_in_seconds: f.expires_at_ns.saturating_sub(now) as f64 / 1e9,
        })
        .collect();
    let interfaces = state.interfaces();
    Ok(serde_json::json!({ "interfaces": interfaces, "traffic": traffic, "faults": faults }))
}

fn error_response(error: &DatapathError) -> Response {
    let status = match error {
        DatapathError::InvalidFault(_) | DatapathError::DelayUnsupported => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, format!("{error}\n")).into_response()
}

async fn show<M: DatapathMaps + Send + 'static>(
    State((maps, state)): State<(Shared<M>, DatapathState)>,
) -> Response {
    let maps = maps.lock().unwrap_or_else(PoisonError::into_inner);
    match view(&*maps, &state) {
        Ok(body) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response(),
        Err(error) => error_response(&error),
    }
}

/// `GET /datapath`: the counters and the fault map.
pub fn inspection<M: DatapathMaps + Send + 'static>(maps: Shared<M>, state: DatapathState) -> Router {
    Router::new()
        .route("/datapath", get(show::<M>))
        .with_state((maps, state))
}

/// `GET /datapath` where the datapath does not run: why.
pub fn unavailable_inspection(why: String) -> Router {
    Router::new().route(
        "/datapath",
        get(move || {
            let why = why.clone();
            async move {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the eBPF datapath is not running: {why}\n"),
                )
            }
        }),
    )
}

/// Serves the fault endpoint until `shutdown`; only on a loopback address.
pub async fn serve_endpoint(address: SocketAddr, routes: Router, shutdown: CancellationToken) {
    if !address.ip().is_loopback() {
        tracing::error!(%address, "the fault endpoint must listen on a loopback address; not serving it");
        return;
    }
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(error) => {
            tracing::error!(%error, %address, "cannot listen for the fault endpoint");
            return;
        }
    };
    tracing::info!(%address, "serving /datapath and /chaos/faults (loopback only)");
    let served = axum::serve(listener, routes)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "fault endpoint failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_datapath::{Directions, FakeMaps, Fault};

    #[test]
    fn the_inspection_shows_the_fault_map() {
        let mut maps = FakeMaps::new();
        let mut fault = Fault::until(monotonic_now_ns() + 5_000_000_000);
        fault.drop_probability = 0.3;
        fault.directions = Directions::BOTH;
        maps.set_fault("198.18.0.2".parse().unwrap(), fault).unwrap();
        let view = view(&maps, &DatapathState::default()).unwrap();
        assert_eq!(view["faults"][0]["peer"], "198.18.0.2");
        let shown = view["faults"][0]["drop_probability"].as_f64().unwrap();
        assert!((shown - 0.3).abs() < 1e-6, "kept as a threshold: {shown}");
    }
}
