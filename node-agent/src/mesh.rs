//! The mesh actor: one task owns the [`Router`] and everything that must change with it (the
//! sessions by peer, the endorsement flood, pings, convergence events). Sessions send it what
//! they receive; it answers with frames queued on each session's bounded writer queue (full:
//! dropped and counted, so a slow peer never blocks it), and it drives the router's timers from
//! `next_deadline()`.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_crypto::SigningContext;
use x0tta6bl4_crypto::endorsement::{Refusal as TrustRefusal, TrustStore};
use x0tta6bl4_routing::healing::{HealingConfig, SelfHealing};
use x0tta6bl4_routing::{
    DataDecision, OriginatorSigner, OriginatorVerifier, Output, Router, SignError, VerifyError,
};
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_wire::{Data, EndorsementAnnounce, Message, NodeId};

use crate::clock::{Clock, unix_micros, unix_seconds};
use crate::convergence::{Convergence, Event};
use crate::endorsements::{EndorsementBook, Verdict};
use crate::identity::node_name_of;
use crate::metrics::{Metrics, message_label};
use crate::ping::{self, PingError, PingResult, PingTable};
use crate::rotation::CurrentIdentity;
use crate::session::Direction;
use crate::status::{NeighbourReport, RouteReport, StatusReport};

mod healing;

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

    pub async fn resolve(&self, name: String) -> Option<NodeId> {
        self.ask(|reply| Command::Resolve { name, reply }).await.flatten()
    }
}

/// Verifies originator messages with the keys the trust store admitted (ML-DSA-65 under the
/// originator context, validity at the wall clock).
pub struct TrustVerifier {
    pub trust: Arc<RwLock<TrustStore>>,
}

impl OriginatorVerifier for TrustVerifier {
    fn verify(
        &self,
        originator: &NodeId,
        key_epoch: u32,
        signed_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let trust = self.trust.read().unwrap_or_else(PoisonError::into_inner);
        trust
            .verify(
                SigningContext::Originator,
                &x0tta6bl4_crypto::NodeId(originator.0),
                key_epoch,
                signed_bytes,
                signature,
                unix_seconds(),
            )
            .map_err(|refusal| match refusal {
                TrustRefusal::UnknownKey => VerifyError::UnknownKey,
                TrustRefusal::Expired => VerifyError::ExpiredKey,
                TrustRefusal::BadSignature => VerifyError::BadSignature,
            })
    }
}

/// Signs this node's advertisements with its key, under the originator context.
pub struct NodeSigner {
    pub identity: CurrentIdentity,
}

impl OriginatorSigner for NodeSigner {
    fn key_epoch(&self) -> u32 {
        self.identity.get().endorsement.key_epoch
    }

    fn sign(&self, signed_bytes: &[u8]) -> Result<Vec<u8>, SignError> {
        self.identity
            .get()
            .key
            .sign(SigningContext::Originator, signed_bytes)
            .map(|signature| signature.0)
            .map_err(|error| SignError(error.to_string()))
    }
}

/// Facts about this agent shown in /status.
#[derive(Debug, Clone)]
pub struct AgentFacts {
    pub spiffe_id: String,
    pub node_name: String,
    pub mesh: String,
    pub namespace: String,
    pub endpoint: String,
    pub require_post_quantum: bool,
}

/// One admitted session.
struct Session {
    id: u64,
    spiffe_id: String,
    key_exchange: String,
    post_quantum: bool,
    direction: Direction,
    remote: Option<SocketAddr>,
    writer: mpsc::Sender<Vec<u8>>,
    /// Held to keep the session open; dropping it closes the session.
    _kill: oneshot::Sender<()>,
    since_unix_us: u64,
    last_received: Instant,
}

/// How often gauges are refreshed, pings in flight swept and episodes settled.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);
/// How often expired keys are pruned.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);
/// Inputs waiting for the actor; sessions wait (TCP pushes back) when it is full.
const INBOX: usize = 1024;
/// Payloads delivered to this agent and waiting for their consumer.
pub const DELIVERY_QUEUE: usize = 1024;

/// The actor's state.
pub struct Mesh {
    self_id: NodeId,
    facts: AgentFacts,
    router: Router<TrustVerifier>,
    signer: NodeSigner,
    trust: Arc<RwLock<TrustStore>>,
    book: EndorsementBook,
    sessions: BTreeMap<NodeId, Session>,
    metrics: Arc<Metrics>,
    clock: Clock,
    started_unix_us: u64,
    convergence: Convergence,
    route_since: BTreeMap<NodeId, u64>,
    pings: PingTable,
    deliveries: mpsc::Sender<Delivery>,
    connected: watch::Sender<BTreeSet<NodeId>>,
    data_ttl: u8,
    verifications_counted: u64,
    next_housekeeping: Instant,
    next_prune: Instant,
    link_labels: BTreeSet<String>,
    healing: SelfHealing,
    /// Where each live link's sample goes every second (the linkTelemetry dataset).
    telemetry: crate::fl::telemetry::SharedRecorder,
    /// When the current node key came into use (for the key age in the status).
    key_since_unix_us: u64,
}

/// Everything the actor starts from.
pub struct MeshParts {
    pub self_id: NodeId,
    pub facts: AgentFacts,
    pub router: Router<TrustVerifier>,
    pub identity: CurrentIdentity,
    pub trust: Arc<RwLock<TrustStore>>,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub healing: HealingConfig,
    pub telemetry: crate::fl::telemetry::SharedRecorder,
    /// When the node key the agent starts with was made.
    pub key_created_unix: u64,
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

fn short(node: &NodeId) -> String {
    node.to_string().chars().take(16).collect()
}

impl Mesh {
    /// The actor, its inbox, the payloads delivered to this agent, and the set of peers with
    /// a session (for the dialler).
    #[allow(clippy::type_complexity)]
    pub fn new(
        parts: MeshParts,
    ) -> (
        Mesh,
        mpsc::Sender<Input>,
        mpsc::Receiver<Input>,
        mpsc::Receiver<Delivery>,
        watch::Receiver<BTreeSet<NodeId>>,
    ) {
        let (inbox, inputs) = mpsc::channel(INBOX);
        let (deliveries, delivered) = mpsc::channel(DELIVERY_QUEUE);
        let (connected, connected_rx) = watch::channel(BTreeSet::new());
        let config = parts.router.config().clone();
        let mut book = EndorsementBook::new();
        {
            let mut trust = parts.trust.write().unwrap_or_else(PoisonError::into_inner);
            if let Ok(own) = parts.identity.get().endorsement.encode() {
                // Admitted at start already (the runtime checked it): recorded to be announced.
                let _ = book.offer(&own, &mut trust, unix_seconds());
            }
        }
        let quiet = config.originator_interval.max(Duration::from_millis(500));
        let now = Instant::now();
        let mesh = Mesh {
            self_id: parts.self_id,
            facts: parts.facts,
            router: parts.router,
            signer: NodeSigner {
                identity: parts.identity,
            },
            trust: parts.trust,
            book,
            sessions: BTreeMap::new(),
            metrics: parts.metrics,
            clock: parts.clock,
            started_unix_us: unix_micros(),
            convergence: Convergence::new(u64::try_from(quiet.as_micros()).unwrap_or(u64::MAX)),
            route_since: BTreeMap::new(),
            pings: PingTable::default(),
            deliveries,
            connected,
            data_ttl: config.max_hops.max(1),
            verifications_counted: 0,
            next_housekeeping: now,
            next_prune: now + PRUNE_INTERVAL,
            link_labels: BTreeSet::new(),
            healing: SelfHealing::new(parts.healing, parts.clock.now()),
            telemetry: parts.telemetry,
            key_since_unix_us: parts.key_created_unix.saturating_mul(1_000_000),
        };
        (mesh, inbox, inputs, delivered, connected_rx)
    }

    /// Runs until shutdown; then every session is closed (dropping their handles).
    pub async fn run(mut self, mut inputs: mpsc::Receiver<Input>, shutdown: CancellationToken) {
        loop {
            let deadline = self
                .clock
                .instant(self.router.next_deadline().min(self.healing.next_due()))
                .min(self.next_housekeeping);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                input = inputs.recv() => match input {
                    Some(input) => self.handle(input),
                    None => break,
                },
                () = tokio::time::sleep_until(deadline) => {}
            }
            // Checked after every input too, so a stream of frames cannot starve the hellos.
            let now = self.clock.now();
            if self.router.next_deadline() <= now {
                let outputs = self.router.on_tick(now);
                self.dispatch(outputs);
            }
            self.heal_if_due();
            if Instant::now() >= self.next_housekeeping {
                self.housekeeping();
            }
        }
        let peers = self.sessions.len();
        self.sessions.clear();
        tracing::info!(sessions = peers, "mesh stopped; sessions closed");
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::SessionUp(up) => self.on_session_up(*up),
            Input::SessionDown { id, peer } => self.on_session_down(id, peer),
            Input::Frame { id, peer, message } => self.on_frame(id, peer, message),
            Input::Command(command) => self.on_command(command),
            Input::LinkCounters(readings) => self.on_link_counters(readings),
        }
    }

    // ----- sessions ---------------------------------------------------------------------------

    fn on_session_up(&mut self, up: SessionUp) {
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
            key_exchange: up.key_exchange,
            post_quantum: up.post_quantum,
            direction: up.direction,
            remote: up.remote,
            writer: up.writer,
            _kill: up.kill,
            since_unix_us: now_unix,
            last_received: Instant::now(),
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

    fn on_session_down(&mut self, id: u64, peer: NodeId) {
        if self.sessions.get(&peer).is_none_or(|session| session.id != id) {
            return; // A session already replaced or closed by us.
        }
        self.sessions.remove(&peer);
        self.neighbour_lost(peer, "session_closed");
    }

    /// A neighbour is gone (its session closed, or silent past the timeout): its routes are
    /// withdrawn now.
    fn neighbour_lost(&mut self, peer: NodeId, cause: &'static str) {
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

    fn sessions_changed(&mut self) {
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

    /// Queues a frame for `peer`. A full queue drops it (counted): the router never waits.
    fn send(&mut self, peer: NodeId, message: &Message) -> Result<(), SendError> {
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

    // ----- frames -----------------------------------------------------------------------------

    fn on_frame(&mut self, id: u64, peer: NodeId, message: Message) {
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
                let outputs = self.router.on_hello(peer, hello, now);
                self.dispatch(outputs);
            }
            Message::Originator(originator) => {
                let outputs = self.router.on_originator(peer, originator, now);
                self.dispatch(outputs);
            }
            Message::Data(data) => {
                // A failure is counted where it happens.
                let _ = self.on_data(Some(peer), data);
            }
            Message::EndorsementAnnounce(announce) => self.on_endorsement(peer, &announce.endorsement),
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
    fn on_data(&mut self, from: Option<NodeId>, data: Data) -> Result<(), SendError> {
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
            ping::PING_FLOW => {
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
            ping::PONG_FLOW => {
                let completed = ping::decode_reply(&data.payload)
                    .and_then(|echo| self.pings.complete(echo, data.ttl, self.clock.now()));
                if let Some(result) = completed {
                    self.metrics.pings.with_label_values(&["answered"]).inc();
                    self.metrics.ping_rtt_seconds.observe(result.rtt_ms / 1000.0);
                } else {
                    self.metrics.pings.with_label_values(&["late_or_unknown"]).inc();
                }
            }
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

    // ----- eBPF counters -----------------------------------------------------------------------

    /// The datapath counts by address; the router knows peers by node: a session's remote
    /// address joins the two (IPv4-mapped addresses compared as IPv4).
    fn on_link_counters(&mut self, readings: Vec<(std::net::IpAddr, x0tta6bl4_routing::LinkCounters)>) {
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

    // ----- commands ---------------------------------------------------------------------------

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Send {
                destination,
                flow,
                payload,
                reply,
            } => {
                let result = if flow >= ping::RESERVED_FLOWS {
                    Err(SendError::ReservedFlow(flow))
                } else if payload.len() > x0tta6bl4_wire::MAX_DATA_PAYLOAD_LEN {
                    Err(SendError::TooLarge)
                } else {
                    let data = Data {
                        source: self.self_id,
                        destination,
                        ttl: self.data_ttl,
                        flow,
                        payload,
                    };
                    self.on_data(None, data)
                };
                let _ = reply.send(result);
            }
            Command::Ping { destination, reply } => self.start_ping(destination, reply),
            Command::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Command::Resolve { name, reply } => {
                let _ = reply.send(self.resolve(&name));
            }
            Command::Rotate { identity, reply } => {
                self.rotate(identity);
                let _ = reply.send(());
            }
        }
    }

    /// Announces the rotated key's endorsement on every session, then signs with the new key
    /// at once: frames leave each session in order, so a neighbour admits the key before the
    /// first advertisement signed with it arrives.
    fn rotate(&mut self, identity: Identity) {
        match identity.endorsement.encode() {
            Ok(bytes) => {
                {
                    let mut trust = self.trust.write().unwrap_or_else(PoisonError::into_inner);
                    let _ = self.book.offer(&bytes, &mut trust, unix_seconds());
                }
                let message = Message::EndorsementAnnounce(EndorsementAnnounce { endorsement: bytes });
                let peers: Vec<NodeId> = self.sessions.keys().copied().collect();
                for peer in peers {
                    let _ = self.send(peer, &message);
                }
            }
            Err(error) => tracing::error!(%error, "the rotated key's endorsement does not encode"),
        }
        let epoch = identity.endorsement.key_epoch;
        self.signer.identity.replace(identity);
        self.key_since_unix_us = unix_micros();
        self.dispatch(vec![Output::OriginateDue]);
        tracing::info!(epoch, "signing with the rotated key");
    }

    fn start_ping(&mut self, destination: NodeId, reply: oneshot::Sender<Result<PingResult, PingError>>) {
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

    fn resolve(&self, name: &str) -> Option<NodeId> {
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

    // ----- router outputs ---------------------------------------------------------------------

    fn dispatch(&mut self, outputs: Vec<Output>) {
        let mut queue: VecDeque<Output> = outputs.into();
        while let Some(output) = queue.pop_front() {
            match output {
                Output::SendHello { peer, hello } => {
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

    fn episode_settled(&self, duration_ms: f64) {
        self.metrics.last_convergence_seconds.set(duration_ms / 1000.0);
    }

    // ----- housekeeping and status ------------------------------------------------------------

    fn housekeeping(&mut self) {
        let now = Instant::now();
        self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
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
        let mut labels = BTreeSet::new();
        for neighbour in neighbours.iter().filter(|n| n.alive) {
            let label = short(&neighbour.peer);
            self.metrics
                .link_cost
                .with_label_values(&[&label])
                .set(i64::from(neighbour.cost));
            self.metrics
                .link_loss_percent
                .with_label_values(&[&label])
                .set(i64::from(neighbour.quality.loss_percent));
            if let Some(rtt) = neighbour.quality.rtt {
                self.metrics
                    .link_rtt_seconds
                    .with_label_values(&[&label])
                    .set(rtt.as_secs_f64());
            }
            labels.insert(label);
        }
        for gone in self.link_labels.difference(&labels) {
            let _ = self.metrics.link_cost.remove_label_values(&[gone]);
            let _ = self.metrics.link_loss_percent.remove_label_values(&[gone]);
            let _ = self.metrics.link_rtt_seconds.remove_label_values(&[gone]);
        }
        self.link_labels = labels;
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

    fn name_of(&self, node: &NodeId) -> Option<String> {
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

    fn status(&self) -> StatusReport {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn the_verifier_maps_trust_store_refusals_to_routing_reasons() {
        let authority = x0tta6bl4_crypto::SigningKey::generate().unwrap();
        let trust = Arc::new(RwLock::new(TrustStore::new(
            "x0.local",
            vec![authority.verifying_key().clone()],
        )));
        let verifier = TrustVerifier { trust };
        assert_eq!(
            verifier.verify(&LOW, 1, b"advert", &[0; 10]),
            Err(VerifyError::UnknownKey)
        );
    }
}
