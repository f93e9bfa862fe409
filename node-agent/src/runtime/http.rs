//! The agent's HTTP endpoint: probes and /metrics from the start, /status and /ping once the
//! mesh runs (the returned cell is filled then).
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_telemetry::Readiness;

use crate::metrics::Metrics;
use crate::status::{self, MeshCell};

/// Binds `address` and serves until `shutdown`; a bind failure stops the agent.
pub async fn serve(
    address: SocketAddr,
    metrics: &Metrics,
    readiness: &Readiness,
    tasks: &mut JoinSet<()>,
    shutdown: &CancellationToken,
) -> anyhow::Result<MeshCell> {
    let mesh_cell: MeshCell = Arc::new(OnceLock::new());
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for /metrics and /status on {address}"))?;
    let app = x0tta6bl4_telemetry::router(metrics.registry.clone(), readiness.clone())
        .merge(status::router(Arc::clone(&mesh_cell)));
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "HTTP server failed");
        }
    });
    tracing::info!(%address, "serving /metrics, /healthz, /readyz, /status and /ping");
    Ok(mesh_cell)
}
