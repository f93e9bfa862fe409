//! What the router's outputs make the actor do: hellos (stamped with the wall clock) and
//! advertisements sent, a silent neighbour's session closed, a route change timed and fed to
//! convergence, rejections counted (forged and replayed ones also kept as events), an
//! advertisement originated when due (forged too while a chaos experiment says so).
use std::collections::VecDeque;

use x0tta6bl4_routing::{Output, RejectReason};
use x0tta6bl4_wire::{Message, NodeId};

use super::forgery::{BeaconFault, SpoiledSigner};
use super::{Mesh, short};
use crate::clock::unix_micros;
use crate::convergence::Event;

/// How often a refusal of one neighbour for one reason is recorded as an event.
const REFUSAL_EVENT_EVERY_US: u64 = 5_000_000;

impl Mesh {
    pub(super) fn dispatch(&mut self, outputs: Vec<Output>) {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::SendHello { peer, mut hello } => {
                    // Stamped by the wall clock as it leaves, so the neighbour can bound how
                    // far apart our clocks are (the router's own clock is our uptime).
                    hello.sent_at_micros = unix_micros();
                    let _ = self.send(peer, &Message::Hello(hello));
                }
                Output::Forward { peer, originator } => {
                    let _ = self.send(peer, &Message::Originator(originator));
                }
                Output::SendSeqnoRequest { peer, request } => {
                    let _ = self.send(peer, &Message::SeqnoRequest(request));
                }
                Output::NeighbourDead { peer, silent_for } => {
                    tracing::info!(peer = %short(&peer), silent_ms = silent_for.as_millis(), "neighbour silent past the timeout");
                    // Its session is useless now: close it, so both sides dial afresh.
                    self.sessions.remove(&peer);
                    self.metrics
                        .neighbour_losses
                        .with_label_values(&["hello_timeout"])
                        .inc();
                    self.convergence.on_topology(Event {
                        at_unix_us: unix_micros(),
                        kind: "neighbour_lost",
                        node: Some(peer.to_string()),
                        detail: Some("hello_timeout".to_owned()),
                    });
                    queue.extend(self.router.on_session_down(peer, self.clock.now()));
                    self.sessions_changed();
                }
                Output::RouteChanged {
                    destination,
                    old_next_hop,
                    new_next_hop,
                } => self.route_changed(destination, old_next_hop, new_next_hop),
                Output::Rejected { from, reason } => {
                    self.metrics
                        .routing_rejections
                        .with_label_values(&[reason.label()])
                        .inc();
                    if !matches!(reason, RejectReason::Duplicate) {
                        tracing::debug!(from = %short(&from), reason = reason.label(), "routing message rejected");
                    }
                    self.note_refusal(from, reason);
                }
                Output::OriginateDue => queue.extend(self.originate()),
            }
        }
        self.copy_router_counters();
    }

    /// Adds what the router counted since the last call to the metrics.
    fn copy_router_counters(&mut self) {
        let performed = self.router.verifications_performed();
        self.metrics
            .originator_verifications
            .inc_by(performed.saturating_sub(self.verifications_counted));
        self.verifications_counted = performed;
        for (outcome, count) in &self.router.counters().seqno_requests {
            let counted = self.seqno_requests_counted.entry(*outcome).or_default();
            if *count > *counted {
                self.metrics
                    .seqno_requests
                    .with_label_values(&[outcome.label()])
                    .inc_by(count - *counted);
                *counted = *count;
            }
        }
    }

    /// This agent's advertisement, honest unless a chaos experiment makes it forge: spoiled
    /// signatures (signatureFailure), and besides its own, advertisements in other nodes'
    /// names (forgedBeacon) or their old ones again (replayedBeacon).
    fn originate(&mut self) -> Vec<Output> {
        let now = self.clock.now();
        let spoiled = *self.signature_failure.borrow();
        let originated = if spoiled {
            self.router.originate(now, &SpoiledSigner(&self.signer))
        } else {
            self.router.originate(now, &self.signer)
        };
        let mut outputs = originated.unwrap_or_else(|error| {
            tracing::error!(%error, "could not originate an advertisement");
            Vec::new()
        });
        if spoiled {
            self.metrics
                .forged_advertisements
                .with_label_values(&["spoiled_signature"])
                .inc_by(outputs.len() as u64);
        }
        let beacon = *self.beacon.borrow();
        let Some(fault) = beacon else {
            self.captured.clear();
            return outputs;
        };
        let (kind, forged) = match fault {
            BeaconFault::Replay => ("replay", self.captured.replays()),
            BeaconFault::Impersonate => (
                "impersonation",
                self.captured
                    .impersonations(self.self_id, unix_micros(), &self.signer),
            ),
        };
        let peers: Vec<NodeId> = self.sessions.keys().copied().collect();
        for originator in &forged {
            for peer in &peers {
                outputs.push(Output::Forward {
                    peer: *peer,
                    originator: originator.clone(),
                });
            }
        }
        self.metrics
            .forged_advertisements
            .with_label_values(&[kind])
            .inc_by((forged.len() * peers.len()) as u64);
        outputs
    }

    /// A forged or replayed advertisement refused: kept as an event naming the neighbour that
    /// sent it (what a chaos experiment's detection reads), at most once per neighbour and
    /// reason every [`REFUSAL_EVENT_EVERY_US`], so a forger cannot flood the event log.
    fn note_refusal(&mut self, from: NodeId, reason: RejectReason) {
        if !matches!(reason, RejectReason::Unverified(_) | RejectReason::Replayed) {
            return;
        }
        let label = match reason {
            RejectReason::Unverified(error) => error.reason(),
            _ => reason.label(),
        };
        let at = unix_micros();
        let key = (from, label);
        if self
            .refusals_noted
            .get(&key)
            .is_some_and(|last| at.saturating_sub(*last) < REFUSAL_EVENT_EVERY_US)
        {
            return;
        }
        self.refusals_noted.insert(key, at);
        self.convergence.on_refusal(Event {
            at_unix_us: at,
            kind: "advertisement_refused",
            node: Some(from.to_string()),
            detail: Some(label.to_owned()),
        });
    }

    fn route_changed(&mut self, destination: NodeId, old: Option<NodeId>, new: Option<NodeId>) {
        let at = unix_micros();
        self.metrics.route_changes.inc();
        match new {
            Some(_) => {
                self.route_since.insert(destination, at);
            }
            None => {
                self.route_since.remove(&destination);
            }
        }
        let describe = |hop: Option<NodeId>| hop.map_or_else(|| "none".to_owned(), |hop| short(&hop));
        tracing::debug!(destination = %short(&destination), old = %describe(old), new = %describe(new), "route changed");
        let settled = self.convergence.on_route_change(Event {
            at_unix_us: at,
            kind: "route_changed",
            node: Some(destination.to_string()),
            detail: Some(format!("{} -> {}", describe(old), describe(new))),
        });
        if let Some(episode) = settled {
            self.episode_settled(episode.duration_ms);
        }
    }
}
