//! Pings through the mesh: one started for /ping (or answered at once for this agent), a
//! request echoed back to its source, a reply completing the ping waiting for it; and the name
//! /ping is given (hex node id, SPIFFE ID or node name) resolved to a node.
use tokio::sync::oneshot;
use x0tta6bl4_wire::{Data, NodeId};

use super::Mesh;
use crate::identity::node_name_of;
use crate::ping::{self, PingError, PingResult};

impl Mesh {
    pub(super) fn start_ping(
        &mut self,
        destination: NodeId,
        reply: oneshot::Sender<Result<PingResult, PingError>>,
    ) {
        self.metrics.pings.with_label_values(&["sent"]).inc();
        if destination == self.self_id {
            let _ = reply.send(Ok(PingResult {
                rtt_ms: 0.0,
                hops_there: 0,
                hops_back: 0,
            }));
            return;
        }
        let id = self.pings.start(self.clock.now(), reply);
        let data = Data {
            source: self.self_id,
            destination,
            ttl: self.data_ttl,
            flow: ping::PING_FLOW,
            payload: ping::encode_request(id, self.data_ttl),
        };
        if self.on_data(None, data).is_err() {
            self.metrics.pings.with_label_values(&["no_route"]).inc();
            self.pings.fail(id, PingError::NoRoute);
        }
    }

    pub(super) fn resolve(&self, name: &str) -> Option<NodeId> {
        if let Ok(bytes) = hex::decode(name)
            && let Ok(id) = <[u8; 32]>::try_from(bytes.as_slice())
        {
            return Some(NodeId(id));
        }
        if name == self.facts.spiffe_id || name == self.facts.node_name {
            return Some(self.self_id);
        }
        self.book
            .nodes()
            .find(|(_, spiffe_id)| *spiffe_id == name || node_name_of(spiffe_id) == Some(name))
            .map(|(node, _)| node)
    }

    /// A ping request for this agent: echoed back to its source with the hop counts.
    pub(super) fn answer_ping(&mut self, data: &Data) {
        let Some((id, request_initial_ttl)) = ping::decode_request(&data.payload) else {
            self.metrics
                .data_messages
                .with_label_values(&["dropped_malformed_ping"])
                .inc();
            return;
        };
        let echo = ping::Echo {
            id,
            request_initial_ttl,
            request_arrival_ttl: data.ttl,
            reply_initial_ttl: self.data_ttl,
        };
        let reply = Data {
            source: self.self_id,
            destination: data.source,
            ttl: self.data_ttl,
            flow: ping::PONG_FLOW,
            payload: ping::encode_reply(echo),
        };
        self.metrics.pings.with_label_values(&["replied"]).inc();
        let _ = self.on_data(None, reply);
    }

    /// A ping reply: completes the ping it answers, if that is still waiting.
    pub(super) fn ping_answered(&mut self, data: &Data) {
        let completed = ping::decode_reply(&data.payload)
            .and_then(|echo| self.pings.complete(echo, data.ttl, self.clock.now()));
        if let Some(result) = completed {
            self.metrics.pings.with_label_values(&["answered"]).inc();
            self.metrics.ping_rtt_seconds.observe(result.rtt_ms / 1000.0);
        } else {
            self.metrics.pings.with_label_values(&["late_or_unknown"]).inc();
        }
    }
}
