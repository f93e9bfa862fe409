//! How X.509-SVIDs bound a session's life (meshes that take identities from SPIFFE).
//!
//! TLS 1.3 cannot present a new certificate inside a session, so each side keeps the expiry of
//! the newest SVID its peer has proven: the one of the handshake, then each rotated SVID the
//! peer sends on the session (`SvidUpdate`, validated against the trust bundle and for the same
//! SPIFFE ID). A session ends when that expiry passes (`peer_svid_expired`) or when this agent's
//! own SVID runs out without a successor (`own_svid_expired`). The update needs no signature of
//! its own: it arrives inside the TLS session the peer already authenticated, and a chain that
//! validates for the peer's own SPIFFE ID can only extend what SPIRE issued to that workload.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use x0tta6bl4_session::svid::{SvidCredentials, SvidFacts};
use x0tta6bl4_wire::{Message, SvidUpdate};

use crate::metrics::Metrics;
use crate::workload_api::SvidUpdates;

use super::SessionContext;

/// This agent's SVID source, shared by every session.
pub struct SvidMode {
    pub credentials: Arc<SvidCredentials>,
    pub updates: SvidUpdates,
}

impl SvidMode {
    pub fn holds_usable_svid(&self) -> bool {
        self.credentials.usable_key(SystemTime::now()).is_some()
    }

    /// Returns once this agent holds a usable SVID (at once if it does).
    pub async fn until_usable(&self) {
        let mut updates = self.updates.clone();
        while !self.holds_usable_svid() {
            // A new SVID wakes this at once; the timer covers the updates channel closing.
            tokio::select! {
                _ = updates.changed() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// The newest SVID expiry a session's peer has proven.
pub struct PeerSvid {
    spiffe_id: String,
    not_after: AtomicU64,
    renewed: Notify,
}

impl PeerSvid {
    pub fn new(facts: SvidFacts, spiffe_id: String) -> Self {
        PeerSvid {
            spiffe_id,
            not_after: AtomicU64::new(facts.not_after),
            renewed: Notify::new(),
        }
    }

    fn not_after(&self) -> u64 {
        self.not_after.load(Ordering::Acquire)
    }
}

/// A peer's rotated SVID, read from the session: accepted (the session lives on to its expiry)
/// or refused and counted (the session keeps the expiry it had).
pub fn on_peer_update(ctx: &SessionContext, peer: Option<&PeerSvid>, update: &SvidUpdate) {
    let (Some(mode), Some(peer)) = (&ctx.svid, peer) else {
        ctx.metrics.dropped("unexpected_svid_update");
        return;
    };
    match mode.credentials.verify_rotation(&update.chain, &peer.spiffe_id) {
        Ok(facts) => {
            peer.not_after.fetch_max(facts.not_after, Ordering::AcqRel);
            peer.renewed.notify_one();
            ctx.metrics
                .svid_updates
                .with_label_values(&["peer_accepted"])
                .inc();
        }
        Err(refusal) => {
            ctx.metrics
                .svid_updates
                .with_label_values(&[refusal.reason()])
                .inc();
            tracing::warn!(peer = peer.spiffe_id, reason = refusal.reason(), error = %refusal, "rotated SVID refused");
        }
    }
}

/// The instant a unix time in seconds falls on (now, if it has passed).
fn instant_of(unix_seconds: u64) -> Instant {
    let at = UNIX_EPOCH + Duration::from_secs(unix_seconds);
    Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
}

/// One session's SVID duties: pass this agent's rotated SVIDs on, and end the session when
/// either side's SVID runs out.
pub struct SvidWatch<'a> {
    duties: Option<(&'a SvidMode, &'a PeerSvid)>,
    metrics: &'a Metrics,
    writer: mpsc::Sender<Vec<u8>>,
}

impl<'a> SvidWatch<'a> {
    pub fn new(
        mode: Option<&'a SvidMode>,
        peer: Option<&'a PeerSvid>,
        metrics: &'a Metrics,
        writer: mpsc::Sender<Vec<u8>>,
    ) -> Self {
        SvidWatch {
            duties: mode.zip(peer),
            metrics,
            writer,
        }
    }

    /// Returns why the session must end; never returns without SPIFFE.
    pub async fn run(self) -> &'static str {
        let Some((mode, peer)) = self.duties else {
            return std::future::pending().await;
        };
        // A clone sees the SVID current now as news: it is sent once at the start, which covers
        // a rotation between this session's handshake and now.
        let mut updates = mode.updates.clone();
        let mut updates_open = true;
        loop {
            let peer_expiry = peer.not_after();
            let own_expiry = mode.credentials.svid().map_or(0, |svid| svid.facts.not_after);
            let renewed = peer.renewed.notified();
            tokio::select! {
                () = tokio::time::sleep_until(instant_of(peer_expiry)) => {
                    if peer.not_after() <= peer_expiry {
                        self.metrics.svid_session_closes.with_label_values(&["peer_svid_expired"]).inc();
                        return "peer_svid_expired";
                    }
                }
                () = renewed => {}
                () = tokio::time::sleep_until(instant_of(own_expiry)) => {
                    if !mode.holds_usable_svid() {
                        self.metrics.svid_session_closes.with_label_values(&["own_svid_expired"]).inc();
                        return "own_svid_expired";
                    }
                }
                changed = updates.changed(), if updates_open => match changed {
                    Ok(()) => {
                        let current = updates.borrow_and_update().clone();
                        if let Some(svid) = current {
                            self.send(SvidUpdate { chain: svid.chain_der() });
                        }
                    }
                    Err(_) => updates_open = false,
                },
            }
        }
    }

    fn send(&self, update: SvidUpdate) {
        match Message::SvidUpdate(update).to_frame() {
            Ok(frame) => {
                if self.writer.try_send(frame).is_err() {
                    self.metrics.dropped("svid_update_queue_full");
                } else {
                    self.metrics.frames_sent.with_label_values(&["svid"]).inc();
                }
            }
            Err(error) => tracing::warn!(%error, "this agent's SVID does not fit an update frame"),
        }
    }
}
