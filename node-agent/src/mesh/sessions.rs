//! The actor's session table: which session with a peer is kept ([`admits`]), a session
//! admitted (endorsements announced, the router's neighbour started) or closed, a neighbour
//! lost, the session gauges and the dialler's set of connected peers kept in step; and the
//! eBPF counters, joined to the peer whose session has their address.
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use x0tta6bl4_wire::{EndorsementAnnounce, Message, NodeId};

use super::{Admission, Direction, Mesh, PeerNames, SessionUp, short};
use crate::clock::{unix_micros, unix_seconds};
use crate::convergence::Event;

/// One admitted session.
pub(super) struct Session {
    pub(super) id: u64,
    pub(super) spiffe_id: String,
    pub(super) key_epoch: u32,
    pub(super) key_exchange: String,
    pub(super) post_quantum: bool,
    pub(super) direction: Direction,
    pub(super) remote: Option<SocketAddr>,
    pub(super) writer: mpsc::Sender<Vec<u8>>,
    /// Held to keep the session open; dropping it closes the session.
    pub(super) _kill: oneshot::Sender<()>,
    pub(super) since_unix_us: u64,
    pub(super) last_received: Instant,
    /// The peer's wall clock on its last hello and ours when it arrived, Unix µs.
    pub(super) last_hello_clocks: Option<(u64, u64)>,
}

/// One session per peer: the one dialled by the lower NodeId, so two agents that dial each
/// other keep the same one. A newer session also replaces the one held when both were dialled
/// the same way (the peer restarted and dialled again) or when the held one went silent.
pub fn admits(
    self_id: NodeId,
    peer: NodeId,
    direction: Direction,
    held: Option<(Direction, Duration)>,
    silence_limit: Duration,
) -> bool {
    let preferred = if self_id < peer {
        Direction::Outbound
    } else {
        Direction::Inbound
    };
    held.is_none_or(|(held_direction, silent_for)| {
        direction == preferred || held_direction == direction || silent_for > silence_limit
    })
}

impl Mesh {
    pub(super) fn on_session_up(&mut self, up: SessionUp) {
        // A revocation applied between the handshake's check and now.
        if self
            .trust
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_revoked(&up.peer, up.key_epoch)
        {
            self.metrics.refused("revoked_key");
            let _ = up.reply.send(Admission::Revoked);
            return;
        }
        let timeout = self.router.config().neighbour_timeout;
        let held = self
            .sessions
            .get(&up.peer)
            .map(|held| (held.direction, held.last_received.elapsed()));
        let admit = admits(self.self_id, up.peer, up.direction, held, timeout);
        if !admit {
            self.metrics.refused("duplicate_session");
            let _ = up.reply.send(Admission::Duplicate);
            return;
        }
        let peer = up.peer;
        let now_unix = unix_micros();
        let session = Session {
            id: up.id,
            spiffe_id: up.spiffe_id,
            key_epoch: up.key_epoch,
            key_exchange: up.key_exchange,
            post_quantum: up.post_quantum,
            direction: up.direction,
            remote: up.remote,
            writer: up.writer,
            _kill: up.kill,
            since_unix_us: now_unix,
            last_received: Instant::now(),
            last_hello_clocks: None,
        };
        if up.reply.send(Admission::Accepted).is_err() {
            return; // The session task is gone already.
        }
        self.metrics
            .sessions_established
            .with_label_values(&[session.direction.label(), &session.key_exchange])
            .inc();
        tracing::info!(
            peer = %short(&peer),
            spiffe_id = %session.spiffe_id,
            direction = session.direction.label(),
            key_exchange = %session.key_exchange,
            remote = ?session.remote,
            "session up"
        );
        let replaced = self.sessions.insert(peer, session).is_some();
        // Endorsements first, so the peer can verify the advertisements that follow.
        for endorsement in self.book.announcements(self.self_id, unix_seconds()) {
            let _ = self.send(
                peer,
                &Message::EndorsementAnnounce(EndorsementAnnounce { endorsement }),
            );
        }
        let now = self.clock.now();
        let mut outputs = Vec::new();
        if replaced {
            // Frames queued on the old session are lost: start the neighbour afresh.
            outputs.extend(self.router.on_session_down(peer, now));
        }
        outputs.extend(self.router.on_session_up(peer, now));
        self.convergence.on_topology(Event {
            at_unix_us: now_unix,
            kind: if replaced {
                "session_replaced"
            } else {
                "session_up"
            },
            node: Some(peer.to_string()),
            detail: None,
        });
        self.sessions_changed();
        self.dispatch(outputs);
    }

    pub(super) fn on_session_down(&mut self, id: u64, peer: NodeId) {
        if self.sessions.get(&peer).is_none_or(|session| session.id != id) {
            return; // A session already replaced or closed by us.
        }
        self.sessions.remove(&peer);
        self.neighbour_lost(peer, "session_closed");
    }

    /// A neighbour is gone (its session closed, or silent past the timeout): its routes are
    /// withdrawn now.
    pub(super) fn neighbour_lost(&mut self, peer: NodeId, cause: &'static str) {
        self.metrics.neighbour_losses.with_label_values(&[cause]).inc();
        tracing::info!(peer = %short(&peer), cause, "neighbour lost");
        self.convergence.on_topology(Event {
            at_unix_us: unix_micros(),
            kind: "neighbour_lost",
            node: Some(peer.to_string()),
            detail: Some(cause.to_owned()),
        });
        let outputs = self.router.on_session_down(peer, self.clock.now());
        self.sessions_changed();
        self.dispatch(outputs);
    }

    pub(super) fn sessions_changed(&mut self) {
        self.metrics.sessions.reset();
        for session in self.sessions.values() {
            self.metrics
                .sessions
                .with_label_values(&[&session.key_exchange])
                .inc();
        }
        let peers: BTreeSet<NodeId> = self.sessions.keys().copied().collect();
        self.connected.send_replace(peers);
    }

    /// The node names of the peers with a session, by the session's remote address.
    pub(super) fn peer_names(&self) -> PeerNames {
        names_by_address(self.sessions.iter().filter_map(|(peer, session)| {
            let address = session.remote?.ip();
            Some((address, self.name_of(peer).unwrap_or_else(|| short(peer))))
        }))
    }

    /// The datapath counts by address; the router knows peers by node: a session's remote
    /// address joins the two (IPv4-mapped addresses compared as IPv4).
    pub(super) fn on_link_counters(
        &mut self,
        readings: Vec<(std::net::IpAddr, x0tta6bl4_routing::LinkCounters)>,
    ) {
        let now = self.clock.now();
        for (address, counters) in readings {
            let peer = self
                .sessions
                .iter()
                .find(|(_, session)| {
                    session
                        .remote
                        .is_some_and(|r| r.ip().to_canonical() == address.to_canonical())
                })
                .map(|(peer, _)| *peer);
            if let Some(peer) = peer {
                let outputs = self.router.on_link_counters(peer, counters, now);
                self.dispatch(outputs);
            }
        }
    }
}

/// Names by canonical address; an address two peers share names neither.
pub(super) fn names_by_address(sessions: impl Iterator<Item = (IpAddr, String)>) -> PeerNames {
    let mut names = PeerNames::new();
    let mut shared = BTreeSet::new();
    for (address, name) in sessions {
        let address = address.to_canonical();
        match names.get(&address) {
            Some(held) if *held != name => {
                shared.insert(address);
            }
            _ => {
                names.insert(address, name);
            }
        }
    }
    names.retain(|address, _| !shared.contains(address));
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_name_their_addresses_unless_two_nodes_share_one() {
        let v4: IpAddr = "10.0.0.2".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        let shared: IpAddr = "10.0.0.9".parse().unwrap();
        let names = names_by_address(
            [
                (mapped, "node-2".to_owned()),
                (v4, "node-2".to_owned()),
                (shared, "node-3".to_owned()),
                (shared, "node-4".to_owned()),
            ]
            .into_iter(),
        );
        assert_eq!(names, PeerNames::from([(v4, "node-2".to_owned())]));
    }

    const LOW: NodeId = NodeId([1; 32]);
    const HIGH: NodeId = NodeId([2; 32]);
    const LIMIT: Duration = Duration::from_millis(300);
    const FRESH: Duration = Duration::from_millis(10);

    #[test]
    fn both_ends_keep_the_session_dialled_by_the_lower_node_id() {
        // The lower node holds the session the higher one dialled; its own dial wins.
        assert!(admits(
            LOW,
            HIGH,
            Direction::Outbound,
            Some((Direction::Inbound, FRESH)),
            LIMIT
        ));
        // The higher node agrees: the inbound session (dialled by the lower) wins ...
        assert!(admits(
            HIGH,
            LOW,
            Direction::Inbound,
            Some((Direction::Outbound, FRESH)),
            LIMIT
        ));
        // ... and neither side lets the other one replace it.
        assert!(!admits(
            HIGH,
            LOW,
            Direction::Outbound,
            Some((Direction::Inbound, FRESH)),
            LIMIT
        ));
        assert!(!admits(
            LOW,
            HIGH,
            Direction::Inbound,
            Some((Direction::Outbound, FRESH)),
            LIMIT
        ));
    }

    #[test]
    fn a_first_session_a_redial_or_a_replacement_for_a_silent_one_is_admitted() {
        assert!(admits(LOW, HIGH, Direction::Inbound, None, LIMIT));
        assert!(admits(
            LOW,
            HIGH,
            Direction::Inbound,
            Some((Direction::Inbound, FRESH)),
            LIMIT
        ));
        let silent = Duration::from_secs(1);
        assert!(admits(
            LOW,
            HIGH,
            Direction::Inbound,
            Some((Direction::Outbound, silent)),
            LIMIT
        ));
    }
}
