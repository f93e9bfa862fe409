//! The actor's periodic chores: the chaos executor's falseMetric applied (and, on a
//! kemDowngrade change, every session closed), convergence
//! episodes settled, abandoned pings forgotten, the neighbour, route and per-link gauges
//! refreshed (by the peer's node name; a gone link's series removed), expired keys and endorsements pruned, and
//! sessions outside the peering set closed.
use std::sync::PoisonError;
use std::time::Duration;

use tokio::time::Instant;

use super::{Mesh, short};
use crate::clock::{unix_micros, unix_seconds};
use crate::metrics::LinkSample;

/// How often gauges are refreshed, pings in flight swept and episodes settled.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// How often expired keys are pruned.
pub(super) const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

impl Mesh {
    /// When the next key in use runs out (a session peer's, or this agent's own), if sooner
    /// than the next housekeeping: housekeeping then runs at that instant, so a key stops
    /// being accepted when it runs out rather than up to a housekeeping interval later (by
    /// which time its holder may have rotated and announced a successor, and nobody would
    /// have noticed the expiry).
    fn next_key_expiry(&self, now: Instant) -> Instant {
        let now_micros = unix_micros();
        // Just past the second a key runs out in (expiry is checked in whole seconds).
        let at_micros = |not_after: u64| not_after.saturating_mul(1_000_000).saturating_add(1_000);
        let own = self.signer.identity.get().endorsement.not_after;
        let earliest = {
            let trust = self.trust.read().unwrap_or_else(PoisonError::into_inner);
            self.sessions
                .iter()
                .filter_map(|(peer, session)| trust.not_after(peer, session.key_epoch))
                .chain([own])
                .map(at_micros)
                .filter(|at| *at > now_micros)
                .min()
        };
        earliest.map_or(now + HOUSEKEEPING_INTERVAL, |at| {
            now + Duration::from_micros(at - now_micros)
        })
    }

    pub(super) fn housekeeping(&mut self) {
        let now = Instant::now();
        self.next_housekeeping = (now + HOUSEKEEPING_INTERVAL).min(self.next_key_expiry(now));
        if self.false_metric_percent.has_changed().unwrap_or(false) {
            let percent = *self.false_metric_percent.borrow_and_update();
            self.router.set_false_metric_percent(percent);
        }
        if self.kem_downgrade.has_changed().unwrap_or(false) {
            let downgraded = *self.kem_downgrade.borrow_and_update();
            // Sessions keep the key exchange they were made with: close them all, and the
            // dialer and the peers make new ones with what is offered now.
            let peers: Vec<_> = self.sessions.keys().copied().collect();
            tracing::warn!(
                downgraded,
                sessions = peers.len(),
                "chaos: kemDowngrade changed, closing every session"
            );
            for peer in peers {
                self.sessions.remove(&peer);
                self.neighbour_lost(peer, "kem_downgrade");
            }
        }
        if self.expiring_endorsement.has_changed().unwrap_or(false) {
            let endorsement = self.expiring_endorsement.borrow_and_update().clone();
            // Nothing to undo at the revert: the key has run out, and rotation replaces it.
            if let Some(bytes) = endorsement {
                self.adopt_expiring(&bytes);
            }
        }
        self.expire_keys();
        self.prune_unwanted(now);
        if let Some(episode) = self.convergence.settle(unix_micros()) {
            self.episode_settled(episode.duration_ms);
        }
        self.pings.forget_abandoned();
        let neighbours = self.router.neighbours();
        self.metrics
            .neighbours
            .set(i64::try_from(neighbours.iter().filter(|n| n.alive).count()).unwrap_or(i64::MAX));
        self.metrics
            .routes
            .set(i64::try_from(self.router.routes().len()).unwrap_or(i64::MAX));
        let links: Vec<LinkSample> = neighbours
            .iter()
            .filter(|n| n.alive)
            .map(|neighbour| LinkSample {
                peer_node: self
                    .name_of(&neighbour.peer)
                    .unwrap_or_else(|| short(&neighbour.peer)),
                cost: neighbour.cost,
                loss_percent: neighbour.quality.loss_percent,
                rtt_seconds: neighbour.quality.rtt.map(|rtt| rtt.as_secs_f64()),
            })
            .collect();
        self.link_labels = self.metrics.set_links(&links, &self.link_labels);
        if now >= self.next_prune {
            self.next_prune = now + PRUNE_INTERVAL;
            let now_unix = unix_seconds();
            self.trust
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .prune(now_unix);
            self.book.prune(now_unix);
        }
    }

    pub(super) fn episode_settled(&self, duration_ms: f64) {
        self.metrics.last_convergence_seconds.set(duration_ms / 1000.0);
        self.metrics.convergence_seconds.observe(duration_ms / 1000.0);
    }
}
