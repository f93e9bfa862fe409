//! The actor's [`StatusReport`]: this agent's facts and key, its neighbours with their
//! sessions and link quality, its routes, counters, convergence and self-healing; nodes named
//! by what their endorsement or session says.
use x0tta6bl4_routing::OriginatorSigner;
use x0tta6bl4_wire::NodeId;

use super::Mesh;
use super::report::{NeighbourReport, RouteReport, StatusReport};
use crate::clock::{offset_from_hello, unix_micros};
use crate::identity::node_name_of;

impl Mesh {
    pub(super) fn name_of(&self, node: &NodeId) -> Option<String> {
        if *node == self.self_id {
            return Some(self.facts.node_name.clone());
        }
        let spiffe_id = self
            .sessions
            .get(node)
            .map(|session| session.spiffe_id.as_str())
            .or_else(|| self.book.spiffe_id(node))?;
        node_name_of(spiffe_id).map(str::to_owned)
    }

    pub(super) fn status(&self) -> StatusReport {
        let neighbours = self
            .router
            .neighbours()
            .into_iter()
            .map(|neighbour| {
                let session = self.sessions.get(&neighbour.peer);
                NeighbourReport {
                    node_id: neighbour.peer.to_string(),
                    node_name: self.name_of(&neighbour.peer),
                    spiffe_id: session.map(|s| s.spiffe_id.clone()),
                    alive: neighbour.alive,
                    quarantined: neighbour.quarantined,
                    cost: neighbour.cost,
                    loss_percent: neighbour.quality.loss_percent,
                    rtt_ms: neighbour.quality.rtt.map(|rtt| rtt.as_secs_f64() * 1000.0),
                    key_exchange: session.map(|s| s.key_exchange.clone()),
                    post_quantum: session.is_some_and(|s| s.post_quantum),
                    direction: session.map(|s| s.direction.label()),
                    remote_address: session.and_then(|s| s.remote).map(|addr| addr.to_string()),
                    session_since_unix_us: session.map(|s| s.since_unix_us),
                    clock_offset: session
                        .and_then(|s| s.last_hello_clocks)
                        .zip(neighbour.quality.rtt)
                        .and_then(|((sent, received), rtt)| offset_from_hello(sent, received, rtt)),
                }
            })
            .collect();
        let routes = self
            .router
            .routes()
            .into_iter()
            .map(|route| RouteReport {
                destination: route.destination.to_string(),
                destination_name: self.name_of(&route.destination),
                next_hop: route.next_hop.to_string(),
                next_hop_name: self.name_of(&route.next_hop),
                metric: route.metric,
                hop_count: route.hop_count,
                seq: route.seq,
                since_unix_us: self.route_since.get(&route.destination).copied(),
            })
            .collect();
        let sessions_pq = self.sessions.values().filter(|s| s.post_quantum).count();
        let (quarantined, incidents) = self.healing_report();
        StatusReport {
            node_id: self.self_id.to_string(),
            spiffe_id: self.facts.spiffe_id.clone(),
            node_name: self.facts.node_name.clone(),
            mesh: self.facts.mesh.clone(),
            namespace: self.facts.namespace.clone(),
            endpoint: self.facts.endpoint.clone(),
            require_post_quantum: self.facts.require_post_quantum,
            key_epoch: self.signer.key_epoch(),
            key_since_unix_us: self.key_since_unix_us,
            now_unix_us: unix_micros(),
            started_unix_us: self.started_unix_us,
            sessions: self.sessions.len(),
            post_quantum_sessions: sessions_pq,
            known_nodes: self.book.len(),
            neighbours,
            routes,
            counters: self.metrics.counters(),
            last_topology_event: self.convergence.last_topology().cloned(),
            last_convergence: self.convergence.latest().cloned(),
            last_settled_convergence: self.convergence.last_settled().cloned(),
            events: self.convergence.events().cloned().collect(),
            quarantined,
            incidents,
        }
    }
}
