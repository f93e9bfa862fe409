//! Stopping: SIGTERM or SIGINT cancels the agent's token; the tasks then get a bounded grace.
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long tasks get to finish after a shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the agent");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = terminate => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// A task that cancels `shutdown` on a signal (and ends when something else cancels it).
pub fn cancel_on_signal(tasks: &mut JoinSet<()>, shutdown: &CancellationToken) {
    let shutdown = shutdown.clone();
    tasks.spawn(async move {
        tokio::select! {
            () = shutdown_signal() => shutdown.cancel(),
            () = shutdown.cancelled() => {}
        }
    });
}

/// Waits (bounded) for the tasks to finish after shutdown.
pub async fn drain(mut tasks: JoinSet<()>) -> anyhow::Result<()> {
    let all_done = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, all_done).await.is_err() {
        tracing::warn!("some tasks did not stop in time");
    }
    tracing::info!("stopped");
    Ok(())
}
