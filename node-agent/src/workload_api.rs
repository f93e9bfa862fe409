//! This agent's X.509-SVID and trust bundles from the SPIFFE Workload API (SPIRE's agent socket),
//! when the mesh names one: kept current in the session credentials as the Workload API streams
//! rotations, and announced on a watch channel so open sessions can pass the new SVID on.
//!
//! Rules (docs/IDENTITY.md): without a usable SVID the agent neither dials nor accepts; a
//! Workload API outage keeps the last SVID in use until it expires; an SVID withdrawn (the
//! registration entry deleted) is not replaced, so it too ends at its expiry.
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use x0tta6bl4_api::condition::Condition;
use x0tta6bl4_api::mesh_node::MeshNodeStatus;

use spiffe::{X509Source, X509SourceBuilder};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_session::svid::{Svid, SvidCredentials, TrustBundles};

use crate::metrics::Metrics;

/// The latest SVID this agent holds (None before the first).
pub type SvidUpdates = watch::Receiver<Option<Arc<Svid>>>;

/// How long to wait between attempts to reach the Workload API at start.
const CONNECT_RETRY: Duration = Duration::from_secs(1);

/// The endpoint URI for a socket path (`unix:///run/spire/agent.sock`) or URI as configured.
pub fn endpoint(socket: &str) -> String {
    if socket.contains("://") || socket.starts_with("unix:") || socket.starts_with("tcp:") {
        socket.to_owned()
    } else {
        format!("unix://{socket}")
    }
}

/// Starts following the Workload API at `socket`: returns at once; the SVID arrives on the
/// channel (and in `credentials`) when the Workload API first answers.
pub fn follow(
    socket: &str,
    credentials: Arc<SvidCredentials>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> (SvidUpdates, tokio::task::JoinHandle<()>) {
    let (publish, updates) = watch::channel(None);
    let endpoint = endpoint(socket);
    let task = tokio::spawn(async move {
        let Some(source) = connect(&endpoint, &shutdown).await else {
            return;
        };
        let mut changes = source.updated();
        loop {
            take_current(&source, &credentials, &metrics, &publish);
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() {
                    tracing::warn!("the Workload API source closed: the SVID in use stays until it expires");
                    break;
                },
            }
        }
        source.shutdown().await;
    });
    (updates, task)
}

async fn connect(endpoint: &str, shutdown: &CancellationToken) -> Option<X509Source> {
    loop {
        let build = X509SourceBuilder::new()
            .endpoint(endpoint)
            .initial_sync_timeout(Duration::from_secs(10))
            .build();
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return None,
            outcome = build => outcome,
        };
        match outcome {
            Ok(source) => {
                tracing::info!(endpoint, "following the SPIFFE Workload API");
                return Some(source);
            }
            Err(error) => {
                tracing::warn!(endpoint, %error, "no X.509-SVID from the Workload API yet: not dialling or accepting");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(CONNECT_RETRY) => {}
                }
            }
        }
    }
}

/// Installs the source's current SVID and bundles, if it has a usable SVID.
fn take_current(
    source: &X509Source,
    credentials: &SvidCredentials,
    metrics: &Metrics,
    publish: &watch::Sender<Option<Arc<Svid>>>,
) {
    if let Ok(bundle_set) = source.bundle_set() {
        let mut bundles = TrustBundles::default();
        for (trust_domain, bundle) in bundle_set.iter() {
            let authorities = bundle
                .authorities()
                .iter()
                .map(|a| a.as_bytes().to_vec())
                .collect();
            bundles.insert(trust_domain.as_str(), authorities);
        }
        credentials.set_bundles(bundles);
    }
    let svid = match source.svid() {
        Ok(svid) => svid,
        Err(error) => {
            // Withdrawn or expired: nothing replaces the SVID in use, which ends at its expiry.
            tracing::warn!(%error, "the Workload API has no usable SVID for this agent");
            return;
        }
    };
    let chain = svid.cert_chain().iter().map(|c| c.as_bytes().to_vec()).collect();
    let parsed = Svid::from_der(chain, svid.private_key().as_bytes().to_vec());
    match parsed.and_then(|svid| {
        let svid = Arc::new(svid);
        credentials.set_svid(Arc::clone(&svid))?;
        Ok(svid)
    }) {
        Ok(svid) => {
            metrics.svid_updates.with_label_values(&["received"]).inc();
            #[allow(clippy::cast_precision_loss)]
            metrics.svid_expiry.set(svid.facts.not_after as f64);
            tracing::info!(
                spiffe_id = svid.facts.spiffe_id,
                not_after = svid.facts.not_after,
                "X.509-SVID in use"
            );
            publish.send_replace(Some(svid));
        }
        Err(error) => {
            metrics.svid_updates.with_label_values(&["unusable"]).inc();
            tracing::warn!(%error, "the Workload API's SVID cannot be used");
        }
    }
}

/// The MeshNode record's view of the SVID: its expiry and condition SvidValid.
pub fn report(credentials: &SvidCredentials, status: &mut MeshNodeStatus, now: SystemTime) {
    let svid = credentials.svid();
    let (valid, reason, message, since) = match &svid {
        None => (
            false,
            "NoSvid",
            "no X.509-SVID from the Workload API yet: the agent neither dials nor accepts".to_owned(),
            0,
        ),
        Some(svid) if svid.facts.remaining(now).is_zero() => (
            false,
            "SvidExpired",
            format!(
                "the X.509-SVID for {} expired and the Workload API gave no successor: no sessions",
                svid.facts.spiffe_id
            ),
            svid.facts.not_after,
        ),
        Some(svid) => (
            true,
            "SvidInUse",
            format!("sessions present the X.509-SVID for {}", svid.facts.spiffe_id),
            svid.facts.not_before,
        ),
    };
    let time = |unix: u64| {
        let seconds = i64::try_from(unix).ok()?;
        Some(Time(k8s_openapi::jiff::Timestamp::from_second(seconds).ok()?))
    };
    status.svid_expiry = svid.as_ref().and_then(|svid| time(svid.facts.not_after));
    // The SVID's own times (issued, expired), so a report rewrites the condition only when
    // the SVID changes; before the first SVID, the epoch.
    let since = time(since).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    status.conditions.push(Condition {
        type_: "SvidValid".to_owned(),
        status: if valid { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        last_transition_time: since,
        observed_generation: None,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_path_becomes_a_unix_endpoint_and_uris_stay() {
        assert_eq!(endpoint("/run/spire/agent.sock"), "unix:///run/spire/agent.sock");
        assert_eq!(endpoint("unix:///run/x.sock"), "unix:///run/x.sock");
        assert_eq!(endpoint("tcp://127.0.0.1:8081"), "tcp://127.0.0.1:8081");
    }
}
