//! The mesh actor's typed API for the rest of the agent: what sessions hand it ([`Input`]),
//! what the agent asks of it ([`MeshHandle`]: send, ping, status, rotate, resolve, the peers'
//! names by address) and what it answers. Everything that talks to the actor depends on this,
//! and it on nothing of theirs.
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_wire::{Message, NodeId};

use super::report::StatusReport;
use crate::ping::{PingError, PingResult};

/// The node name of each peer with a session, by the session's remote address (canonical: an
/// IPv4-mapped address as IPv4). An address with sessions of two nodes names neither: what is
/// counted by address cannot be told apart.
pub type PeerNames = BTreeMap<IpAddr, String>;

/// Which side opened the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Outbound,
    Inbound,
}

impl Direction {
    pub fn label(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// Inputs of the mesh actor.
pub enum Input {
    /// A session passed its handshake and binding; the actor admits it or not.
    SessionUp(Box<SessionUp>),
    /// A session ended (`id` tells it from a newer session with the same peer).
    SessionDown { id: u64, peer: NodeId },
    /// A decoded frame from a session.
    Frame { id: u64, peer: NodeId, message: Message },
    /// From the agent itself (API, /status, /ping).
    Command(Command),
    /// Cumulative eBPF counters by peer address, from the datapath poller.
    LinkCounters(Vec<(std::net::IpAddr, x0tta6bl4_routing::LinkCounters)>),
}

/// An authenticated session, offered to the actor.
pub struct SessionUp {
    pub id: u64,
    pub peer: NodeId,
    pub spiffe_id: String,
    pub key_epoch: u32,
    pub key_exchange: String,
    pub post_quantum: bool,
    pub direction: Direction,
    pub remote: Option<SocketAddr>,
    /// Frames to send.
    pub writer: mpsc::Sender<Vec<u8>>,
    /// Dropped by the actor to close the session.
    pub kill: oneshot::Sender<()>,
    pub reply: oneshot::Sender<Admission>,
}

/// Whether a session is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Accepted,
    /// Another session with the same peer is kept.
    Duplicate,
    /// The peer bound the session with a key revoked since its handshake was checked.
    Revoked,
}

/// A payload delivered to this agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub source: NodeId,
    pub flow: u32,
    pub payload: Vec<u8>,
}

/// Why a payload was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("flow {0:#x} is reserved for the agent")]
    ReservedFlow(u32),
    #[error("no route to the destination")]
    NoRoute,
    #[error("the payload does not fit in one data message")]
    TooLarge,
    #[error("the writer queue of the next hop is full")]
    QueueFull,
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// Requests from inside the agent.
pub enum Command {
    Send {
        destination: NodeId,
        flow: u32,
        payload: Vec<u8>,
        reply: oneshot::Sender<Result<(), SendError>>,
    },
    Ping {
        destination: NodeId,
        reply: oneshot::Sender<Result<PingResult, PingError>>,
    },
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    /// The node key was rotated and its endorsement admitted: announce it, then sign with it.
    Rotate {
        identity: Identity,
        reply: oneshot::Sender<()>,
    },
    /// The trust store's revoked keys changed: these were newly revoked (node, through
    /// epoch). Sessions bound with a revoked key are closed.
    Revoked {
        keys: Vec<(NodeId, u32)>,
        reply: oneshot::Sender<()>,
    },
    /// The node names of the peers with a session, by the session's remote address.
    PeerNames {
        reply: oneshot::Sender<PeerNames>,
    },
    /// A node id in hex, a SPIFFE ID or a node name, to a NodeId this agent knows.
    Resolve {
        name: String,
        reply: oneshot::Sender<Option<NodeId>>,
    },
}

/// The API of the mesh for the rest of the agent: send to a node, ping it, read the status.
#[derive(Clone)]
pub struct MeshHandle {
    inbox: mpsc::Sender<Input>,
}

impl MeshHandle {
    pub fn new(inbox: mpsc::Sender<Input>) -> Self {
        MeshHandle { inbox }
    }

    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.inbox.send(Input::Command(command(reply))).await.ok()?;
        answer.await.ok()
    }

    /// Sends `payload` to `destination` hop by hop along the mesh routes.
    pub async fn send(&self, destination: NodeId, flow: u32, payload: Vec<u8>) -> Result<(), SendError> {
        self.ask(|reply| Command::Send {
            destination,
            flow,
            payload,
            reply,
        })
        .await
        .unwrap_or(Err(SendError::ShuttingDown))
    }

    /// Pings `destination`, waiting at most `timeout` for the answer.
    pub async fn ping(&self, destination: NodeId, timeout: Duration) -> Result<PingResult, PingError> {
        let asked = self.ask(|reply| Command::Ping { destination, reply });
        match tokio::time::timeout(timeout, asked).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(PingError::ShuttingDown),
            Err(_) => Err(PingError::Timeout),
        }
    }

    /// Feeds the eBPF datapath's per-peer counters to the routing's link metric.
    pub async fn link_counters(&self, readings: Vec<(std::net::IpAddr, x0tta6bl4_routing::LinkCounters)>) {
        // Nothing to do once the actor is gone: the agent is stopping.
        let _ = self.inbox.send(Input::LinkCounters(readings)).await;
    }

    pub async fn status(&self) -> Option<StatusReport> {
        self.ask(|reply| Command::Status { reply }).await
    }

    /// Switches to a rotated key; false if the mesh is gone.
    pub async fn rotate(&self, identity: Identity) -> bool {
        self.ask(|reply| Command::Rotate { identity, reply })
            .await
            .is_some()
    }

    /// Closes the sessions bound with keys the trust store now revokes, and records the newly
    /// revoked `keys` (node, through epoch) as events. False once the mesh is gone.
    pub async fn revoked(&self, keys: Vec<(NodeId, u32)>) -> bool {
        self.ask(|reply| Command::Revoked { keys, reply }).await.is_some()
    }

    /// The node names of the peers with a session, by address (empty once the mesh is gone).
    pub async fn peer_names(&self) -> PeerNames {
        self.ask(|reply| Command::PeerNames { reply })
            .await
            .unwrap_or_default()
    }

    pub async fn resolve(&self, name: String) -> Option<NodeId> {
        self.ask(|reply| Command::Resolve { name, reply }).await.flatten()
    }
}
