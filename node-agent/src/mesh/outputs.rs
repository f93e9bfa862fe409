//! What the router's outputs make the actor do: hellos (stamped with the wall clock) and
//! advertisements sent, a silent neighbour's session closed, a route change timed and fed to
//! convergence, rejections counted, an advertisement originated when due.
use std::collections::VecDeque;

use x0tta6bl4_routing::Output;
use x0tta6bl4_wire::{Message, NodeId};

use super::{Mesh, short};
use crate::clock::unix_micros;
use crate::convergence::Event;

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
                    if !matches!(reason, x0tta6bl4_routing::RejectReason::Duplicate) {
                        tracing::debug!(from = %short(&from), reason = reason.label(), "routing message rejected");
                    }
                }
                Output::OriginateDue => match self.router.originate(self.clock.now(), &self.signer) {
                    Ok(outputs) => queue.extend(outputs),
                    Err(error) => tracing::error!(%error, "could not originate an advertisement"),
                },
            }
        }
        let performed = self.router.verifications_performed();
        self.metrics
            .originator_verifications
            .inc_by(performed.saturating_sub(self.verifications_counted));
        self.verifications_counted = performed;
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
