//! The mesh actor: one task owns the [`Router`] and everything that must change with it (the
//! sessions by peer, the endorsement flood, pings, convergence events). Sessions send it what
//! they receive; it answers with frames queued on each session's bounded writer queue (full:
//! dropped and counted, so a slow peer never blocks it), and it drives the router's timers from
//! `next_deadline()`.
//!
//! This file holds the actor's state, its construction, its loop and the dispatch of its inputs
//! and commands; what they do is in the children, each an `impl Mesh` block: `sessions` (the
//! session table), `delivery` (frames and data in and out), `outputs` (the router's outputs),
//! `pings`, `key_rotation`, `housekeeping` (gauges, settling, pruning), `status` (the report)
//! and `healing` (the self-healing loop).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_routing::healing::{HealingConfig, SelfHealing};
use x0tta6bl4_routing::{Router, SeqnoOutcome};
use x0tta6bl4_wire::{Data, NodeId};

use self::forgery::BeaconFault;
use self::housekeeping::PRUNE_INTERVAL;
use self::sessions::Session;
use crate::clock::{Clock, unix_micros, unix_seconds};
use crate::convergence::Convergence;
use crate::endorsements::EndorsementBook;
use crate::identity::CurrentIdentity;
use crate::metrics::Metrics;
use crate::ping::{self, PingTable};

mod crypto;
mod delivery;
pub mod forgery;
mod handle;
mod healing;
mod housekeeping;
mod key_expiry;
mod key_rotation;
mod outputs;
mod peering;
mod pings;
pub mod report;
mod revocation;
pub mod send_delay;
mod sessions;
mod status;

pub use crypto::{NodeSigner, TrustVerifier};
pub use handle::{
    Admission, Command, Delivery, Direction, Input, MeshHandle, PeerNames, SendError, SessionUp,
};
pub use sessions::admits;

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
    /// The router's seqno request counters as last copied to the metrics.
    seqno_requests_counted: BTreeMap<SeqnoOutcome, u64>,
    next_housekeeping: Instant,
    next_prune: Instant,
    link_labels: BTreeSet<String>,
    healing: SelfHealing,
    /// Where each live link's sample goes every second (the linkTelemetry dataset).
    telemetry: crate::links::SharedRecorder,
    /// When the current node key came into use (for the key age in the status).
    key_since_unix_us: u64,
    /// Latency faults of the chaos executor.
    delays: crate::mesh::send_delay::DelayLine,
    false_metric_percent: tokio::sync::watch::Receiver<Option<u32>>,
    /// forgedBeacon / replayedBeacon and signatureFailure of the chaos executor.
    beacon: watch::Receiver<Option<BeaconFault>>,
    signature_failure: watch::Receiver<bool>,
    /// kemDowngrade of the chaos executor: every session is closed when it changes, so that
    /// the next ones are made with the key exchange it asks for.
    kem_downgrade: watch::Receiver<bool>,
    /// keyExpiry of the chaos executor: a short endorsement of this agent's key to present.
    expiring_endorsement: watch::Receiver<Option<Vec<u8>>>,
    /// Wakes key rotation when this agent's endorsement has run out.
    rotate_now: Arc<tokio::sync::Notify>,
    /// The key epoch whose expiry key rotation was woken for.
    expiry_noted: Option<u32>,
    /// Other nodes' advertisements captured while a beacon fault is on.
    captured: forgery::Captured,
    /// When a refusal of each (neighbour, reason) was last recorded as an event.
    refusals_noted: BTreeMap<(NodeId, &'static str), u64>,
    /// The peers the peering rule gives this agent; `None` outside a cluster.
    peering: Option<watch::Receiver<BTreeSet<crate::peers::PeerEndpoint>>>,
    /// Sessions outside the peering set, since when (closed after `peering::GRACE`).
    unwanted_since: BTreeMap<NodeId, Instant>,
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
    pub telemetry: crate::links::SharedRecorder,
    /// When the node key the agent starts with was made.
    pub key_created_unix: u64,
    /// Latency faults: frames to these peers wait before they are queued.
    pub delays: crate::mesh::send_delay::DelayLine,
    /// A chaos experiment's falseMetric: the share of measured link costs to claim.
    pub false_metric_percent: tokio::sync::watch::Receiver<Option<u32>>,
    /// A chaos experiment's forgedBeacon or replayedBeacon.
    pub beacon: watch::Receiver<Option<BeaconFault>>,
    /// A chaos experiment's signatureFailure.
    pub signature_failure: watch::Receiver<bool>,
    /// A chaos experiment's kemDowngrade.
    pub kem_downgrade: watch::Receiver<bool>,
    /// A chaos experiment's keyExpiry.
    pub expiring_endorsement: watch::Receiver<Option<Vec<u8>>>,
    /// Key rotation's wake-up (this agent's endorsement ran out).
    pub rotate_now: Arc<tokio::sync::Notify>,
    /// The peers the peering rule gives this agent, from the peer source that applies it
    /// (`None`: keep every session).
    pub peering: Option<watch::Receiver<BTreeSet<crate::peers::PeerEndpoint>>>,
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
        parts
            .metrics
            .endorsement_valid_until(parts.identity.get().endorsement.not_after);
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
            seqno_requests_counted: BTreeMap::new(),
            next_housekeeping: now,
            next_prune: now + PRUNE_INTERVAL,
            link_labels: BTreeSet::new(),
            healing: SelfHealing::new(parts.healing, parts.clock.now()),
            telemetry: parts.telemetry,
            key_since_unix_us: parts.key_created_unix.saturating_mul(1_000_000),
            delays: parts.delays,
            false_metric_percent: parts.false_metric_percent,
            beacon: parts.beacon,
            signature_failure: parts.signature_failure,
            kem_downgrade: parts.kem_downgrade,
            expiring_endorsement: parts.expiring_endorsement,
            rotate_now: parts.rotate_now,
            expiry_noted: None,
            captured: forgery::Captured::default(),
            refusals_noted: BTreeMap::new(),
            peering: parts.peering,
            unwanted_since: BTreeMap::new(),
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
            Command::PeerNames { reply } => {
                let _ = reply.send(self.peer_names());
            }
            Command::Revoked { keys, reply } => {
                self.revoked(&keys);
                let _ = reply.send(());
            }
            Command::Rotate { identity, reply } => {
                self.rotate(identity);
                let _ = reply.send(());
            }
        }
    }
}
