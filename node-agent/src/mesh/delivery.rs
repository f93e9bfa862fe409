//! Frames in and out of the actor: a frame queued on a session's bounded writer (through the
//! chaos executor's delay line), a session's frame handed to the router or the endorsement
//! book, an endorsement flooded on, and a data message forwarded, delivered to this agent's
//! consumer or (the agent's own flows) to the ping table.
use std::sync::PoisonError;

use tokio::sync::mpsc;
use tokio::time::Instant;
use x0tta6bl4_routing::DataDecision;
use x0tta6bl4_wire::{Data, EndorsementAnnounce, Message, NodeId};

use super::send_delay::Held;
use super::{Delivery, Mesh, SendError, short};
use crate::clock::{unix_micros, unix_seconds};
use crate::endorsements::Verdict;
use crate::metrics::message_label;
use crate::ping;

impl Mesh {
    /// Queues a frame for `peer`. A full queue drops it (counted): the router never waits.
    pub(super) fn send(&mut self, peer: NodeId, message: &Message) -> Result<(), SendError> {
        let Some(session) = self.sessions.get(&peer) else {
            self.metrics.dropped("no_session");
            return Err(SendError::NoRoute);
        };
        let frame = match message.to_frame() {
            Ok(frame) => frame,
            Err(error) => {
                self.metrics.dropped(error.reason());
                return Err(SendError::TooLarge);
            }
        };
        let frame = match self
            .delays
            .offer(session.remote.map(|r| r.ip()), frame, &session.writer)
        {
            Held::No(frame) => frame,
            Held::Delayed => {
                self.metrics
                    .frames_sent
                    .with_label_values(&[message_label(message)])
                    .inc();
                return Ok(());
            }
            Held::Dropped => {
                self.metrics.dropped("chaos_delay_full");
                return Err(SendError::QueueFull);
            }
        };
        match session.writer.try_send(frame) {
            Ok(()) => {
                self.metrics
                    .frames_sent
                    .with_label_values(&[message_label(message)])
                    .inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.dropped("queue_full");
                Err(SendError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.metrics.dropped("session_closing");
                Err(SendError::NoRoute)
            }
        }
    }

    pub(super) fn on_frame(&mut self, id: u64, peer: NodeId, message: Message) {
        match self.sessions.get_mut(&peer) {
            Some(session) if session.id == id => session.last_received = Instant::now(),
            _ => {
                // From a session replaced or being closed: its peer state was reset.
                self.metrics.dropped("stale_session");
                return;
            }
        }
        let now = self.clock.now();
        match message {
            Message::Hello(hello) => {
                if let Some(session) = self.sessions.get_mut(&peer) {
                    session.last_hello_clocks = Some((hello.sent_at_micros, unix_micros()));
                }
                let outputs = self.router.on_hello(peer, hello, now);
                self.dispatch(outputs);
            }
            Message::Originator(originator) => {
                if self.beacon.borrow().is_some() {
                    self.captured.observe(&originator);
                }
                let outputs = self.router.on_originator(peer, originator, now);
                self.dispatch(outputs);
            }
            Message::SeqnoRequest(request) => {
                let outputs = self.router.on_seqno_request(peer, request, now);
                self.dispatch(outputs);
            }
            Message::Data(data) => {
                // A failure is counted where it happens.
                let _ = self.on_data(Some(peer), data);
            }
            Message::EndorsementAnnounce(announce) => self.on_endorsement(peer, &announce.endorsement),
            // The session checks and consumes SVID updates; one reaching the mesh is a bug.
            Message::SvidUpdate(_) => self.metrics.dropped("unexpected_svid_update"),
        }
    }

    fn on_endorsement(&mut self, from: NodeId, bytes: &[u8]) {
        let verdict = {
            let mut trust = self.trust.write().unwrap_or_else(PoisonError::into_inner);
            self.book.offer(bytes, &mut trust, unix_seconds())
        };
        match verdict {
            Verdict::New { node, spiffe_id } => {
                self.metrics.endorsements.with_label_values(&["admitted"]).inc();
                tracing::debug!(node = %short(&node), %spiffe_id, from = %short(&from), "endorsement admitted");
                let others: Vec<NodeId> = self
                    .sessions
                    .keys()
                    .filter(|peer| **peer != from)
                    .copied()
                    .collect();
                let message = Message::EndorsementAnnounce(EndorsementAnnounce {
                    endorsement: bytes.to_vec(),
                });
                for peer in others {
                    let _ = self.send(peer, &message);
                }
            }
            Verdict::Duplicate => self.metrics.endorsements.with_label_values(&["duplicate"]).inc(),
            Verdict::Refused(reason) => {
                self.metrics.endorsements.with_label_values(&[reason]).inc();
                tracing::warn!(from = %short(&from), reason, "endorsement refused");
            }
        }
    }

    /// A data message from a neighbour (`from`) or from this agent (`None`).
    pub(super) fn on_data(&mut self, from: Option<NodeId>, data: Data) -> Result<(), SendError> {
        match self.router.route_data(from, data) {
            DataDecision::Deliver(data) => {
                self.deliver(data);
                Ok(())
            }
            DataDecision::Forward { next_hop, data } => {
                let result = self.send(next_hop, &Message::Data(data));
                let label = match (&result, from) {
                    (Ok(()), Some(_)) => "forwarded",
                    (Ok(()), None) => "sent",
                    (Err(_), _) => "dropped_send",
                };
                self.metrics.data_messages.with_label_values(&[label]).inc();
                result
            }
            DataDecision::Drop { reason, .. } => {
                let label = if reason == "ttl_expired" {
                    "dropped_ttl_expired"
                } else {
                    "dropped_no_route"
                };
                self.metrics.data_messages.with_label_values(&[label]).inc();
                Err(SendError::NoRoute)
            }
        }
    }

    fn deliver(&mut self, data: Data) {
        match data.flow {
            ping::PING_FLOW => self.answer_ping(&data),
            ping::PONG_FLOW => self.ping_answered(&data),
            flow if flow >= ping::RESERVED_FLOWS => {
                self.metrics
                    .data_messages
                    .with_label_values(&["dropped_reserved_flow"])
                    .inc();
            }
            flow => {
                let delivery = Delivery {
                    source: data.source,
                    flow,
                    payload: data.payload,
                };
                let label = match self.deliveries.try_send(delivery) {
                    Ok(()) => "delivered",
                    Err(_) => "dropped_consumer_full",
                };
                self.metrics.data_messages.with_label_values(&[label]).inc();
            }
        }
    }
}
