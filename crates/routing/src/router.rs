//! The routing state machine of one node: neighbours and their links, the verified
//! advertisements of every originator, and the loop-free choice of a next hop per destination.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use x0tta6bl4_wire::{
    Data, EncodeError, Envelope, Hello, MAX_ADVERTISED_COSTS, MAX_ORIGINATOR_NEIGHBOURS, NodeId, Originator,
    OriginatorBody, SeqnoRequest,
};

use crate::RouterConfig;
use crate::dedup::{DedupCache, Seen};
use crate::metric::{INFINITY, LinkCounters, LinkMetric, LinkQuality};
use crate::window::SequenceWindow;

mod seqno_requests;
use seqno_requests::RequestLog;
pub use seqno_requests::SeqnoOutcome;

/// Checks an originator's signature. Implemented by the crypto crate with ML-DSA-65 under its
/// originator context string (`SigningContext::Originator`) and its trust store of endorsed
/// keys; the
/// router calls it at most once per `(originator, seq)` while that pair is in its dedup cache.
pub trait OriginatorVerifier {
    /// `Ok` if `signature` is `originator`'s valid signature, with its key of `key_epoch`, over
    /// exactly `signed_bytes`.
    fn verify(
        &self,
        originator: &NodeId,
        key_epoch: u32,
        signed_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError>;
}

macro_rules! forward_verifier {
    ($($wrapper:ty),*) => {$(
        impl<T: OriginatorVerifier + ?Sized> OriginatorVerifier for $wrapper {
            fn verify(&self, originator: &NodeId, key_epoch: u32, signed_bytes: &[u8], signature: &[u8])
                -> Result<(), VerifyError> {
                (**self).verify(originator, key_epoch, signed_bytes, signature)
            }
        }
    )*};
}
// So many routers (a simulator's nodes) can share one verifier.
forward_verifier!(&T, Box<T>, Rc<T>, Arc<T>);

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, thiserror::Error)]
pub enum VerifyError {
    /// The signature does not verify with the originator's key: forged or tampered.
    #[error("signature does not verify")]
    BadSignature,
    /// No trusted (endorsed) key for this originator and key epoch (label `unendorsed_key`, as
    /// the crypto crate's trust store counts it).
    #[error("no trusted key for this originator and key epoch")]
    UnknownKey,
    /// The key was revoked.
    #[error("the originator's key was revoked")]
    RevokedKey,
    /// The key epoch is outside its validity (rotated out past the overlap window).
    #[error("the key epoch is no longer valid")]
    ExpiredKey,
}

impl VerifyError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::BadSignature => "bad_signature",
            VerifyError::UnknownKey => "unendorsed_key",
            VerifyError::RevokedKey => "revoked_key",
            VerifyError::ExpiredKey => "expired_key",
        }
    }
}

/// Signs this node's own advertisements (the crypto crate: ML-DSA-65 with the node's current
/// key, under `SigningContext::Originator`).
pub trait OriginatorSigner {
    /// The epoch of the key `sign` uses.
    fn key_epoch(&self) -> u32;
    /// The signature over exactly `signed_bytes`.
    fn sign(&self, signed_bytes: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// The signer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("signing failed: {0}")]
pub struct SignError(pub String);

/// Why [`Router::originate`] produced nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginateError {
    /// The signer failed.
    #[error(transparent)]
    Sign(#[from] SignError),
    /// The advertisement does not fit the wire format (an endpoint over 255 bytes).
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Why an incoming message was dropped. Each has a metric label ([`RejectReason::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RejectReason {
    /// From a peer we have no session with.
    NotNeighbour,
    /// It travelled more than `max_hops`.
    HopLimit,
    /// Our own advertisement, come back.
    OwnAdvertisement,
    /// The same signed bytes were verified already: not verified again. A duplicate still
    /// tells which neighbours offer a path (its envelope is used), but is not forwarded as new.
    Duplicate,
    /// Other signed bytes under an already verified `(originator, seq)`: refused unverified.
    Equivocation,
    /// The signature did not verify.
    Unverified(VerifyError),
    /// A valid signature, but a sequence number already accepted or older than the window.
    Replayed,
}

impl RejectReason {
    /// A short, stable label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RejectReason::NotNeighbour => "not_neighbour",
            RejectReason::HopLimit => "hop_limit",
            RejectReason::OwnAdvertisement => "own_advertisement",
            RejectReason::Duplicate => "duplicate",
            RejectReason::Equivocation => "equivocation",
            RejectReason::Unverified(error) => error.reason(),
            RejectReason::Replayed => "replayed",
        }
    }
}

/// What the router asks its caller to do, or tells it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this hello to `peer` in its session.
    SendHello {
        /// The neighbour.
        peer: NodeId,
        /// What to send.
        hello: Hello,
    },
    /// Send this advertisement to `peer` (its envelope already rewritten for that peer).
    Forward {
        /// The neighbour.
        peer: NodeId,
        /// What to send.
        originator: Originator,
    },
    /// A neighbour went silent for the neighbour timeout: its routes were withdrawn.
    NeighbourDead {
        /// The neighbour.
        peer: NodeId,
        /// Time since its last hello.
        silent_for: Duration,
    },
    /// The next hop towards `destination` changed (`None`: unreachable).
    RouteChanged {
        /// The destination.
        destination: NodeId,
        /// The previous next hop.
        old_next_hop: Option<NodeId>,
        /// The new next hop.
        new_next_hop: Option<NodeId>,
    },
    /// An incoming message was dropped.
    Rejected {
        /// The neighbour it came from.
        from: NodeId,
        /// Why.
        reason: RejectReason,
    },
    /// Time to advertise this node: call [`Router::originate`]. Periodic, and brought forward
    /// (at most once per hello interval) when a neighbour appears or dies, or when a seqno
    /// request asks for it.
    OriginateDue,
    /// Send this seqno request to `peer` in its session.
    SendSeqnoRequest {
        /// The neighbour.
        peer: NodeId,
        /// What to send.
        request: SeqnoRequest,
    },
}

/// The selected route to one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Where the route leads.
    pub destination: NodeId,
    /// The neighbour to send to.
    pub next_hop: NodeId,
    /// Sum of link costs along the path.
    pub metric: u32,
    /// Sequence number of the advertisement it comes from.
    pub seq: u64,
    /// Hops to the destination.
    pub hop_count: u8,
}

/// One neighbour's offer of a path to a destination, selected or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The neighbour offering it.
    pub via: NodeId,
    /// Sequence number of the advertisement.
    pub seq: u64,
    /// The neighbour's own metric (the envelope's `path_cost`).
    pub advertised_metric: u32,
    /// Ours through that neighbour (advertised + link cost; [`INFINITY`] if unusable).
    pub metric: u32,
    /// Whether Babel's feasibility condition allows selecting it.
    pub feasible: bool,
    /// Whether it is the selected route.
    pub selected: bool,
}

/// One neighbour as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeighbourStatus {
    /// The neighbour.
    pub peer: NodeId,
    /// Heard within the neighbour timeout.
    pub alive: bool,
    /// Link cost ([`INFINITY`] unless alive).
    pub cost: u32,
    /// Excluded from routing by the self-healing loop.
    pub quarantined: bool,
    /// The measurements behind the cost.
    pub quality: LinkQuality,
    /// When its last hello arrived.
    pub last_heard: Option<Duration>,
}

/// What to do with a data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDecision {
    /// It is for this node.
    Deliver(Data),
    /// Send it to `next_hop` (TTL already decremented if this node is a forwarder).
    Forward {
        /// The neighbour.
        next_hop: NodeId,
        /// The message.
        data: Data,
    },
    /// Drop it.
    Drop {
        /// Why (`"ttl_expired"` or `"no_route"`).
        reason: &'static str,
        /// The message.
        data: Data,
    },
}

#[derive(Debug)]
struct Neighbour {
    alive: bool,
    last_heard: Option<Duration>,
    next_hello_at: Duration,
    next_hello_seq: u32,
    /// The peer's last hello and when it arrived, echoed in ours for its RTT.
    last_rx_hello: Option<(u32, Duration)>,
    metric: LinkMetric,
    /// [`INFINITY`] unless alive.
    cost: u32,
    /// The cost when routes were last reselected for it (re-selection needs a real change).
    cost_at_selection: u32,
    /// What the peer says its links cost (its last hello).
    claimed: Vec<(NodeId, u32)>,
    /// Excluded from routing by the self-healing loop: still greeted and measured (so the
    /// quarantine can be lifted on evidence), never selected as a next hop or advertised.
    quarantined: bool,
}

impl Neighbour {
    /// What routing through this neighbour costs: its link cost while it is alive and not
    /// quarantined, [`INFINITY`] otherwise.
    fn route_cost(&self) -> u32 {
        if self.alive && !self.quarantined {
            self.cost
        } else {
            INFINITY
        }
    }

    fn new(now: Duration) -> Self {
        Neighbour {
            alive: false,
            last_heard: None,
            next_hello_at: now,
            next_hello_seq: 1,
            last_rx_hello: None,
            metric: LinkMetric::default(),
            cost: INFINITY,
            cost_at_selection: INFINITY,
            claimed: Vec::new(),
            quarantined: false,
        }
    }
}

/// A neighbour's latest offer of a path to one destination.
#[derive(Debug, Clone, Copy)]
struct RouteEntry {
    seq: u64,
    /// The neighbour's metric (`INFINITY`: retracted or poisoned).
    path_cost: u32,
    hop_count: u8,
    refreshed_at: Duration,
}

/// What this node last told its neighbours about one destination.
#[derive(Debug, Clone, Copy)]
struct Advertised {
    seq: u64,
    /// `INFINITY` once retracted.
    metric: u32,
    next_hop: NodeId,
    hop_count: u8,
}

/// Everything known about one originator.
#[derive(Debug, Default)]
struct Destination {
    window: SequenceWindow,
    routes: BTreeMap<NodeId, RouteEntry>,
    selected: Option<NodeId>,
    /// Feasibility distance `(seq, metric)` (RFC 8966 §3.5.1).
    feasibility: Option<(u64, u32)>,
    advertised: Option<Advertised>,
    /// When we last sent neighbours an update of it (paces same-seqno updates).
    advertised_at: Option<Duration>,
    /// The signed advertisements still referenced by a route or by what we advertised, by seq.
    messages: BTreeMap<u64, Originator>,
    /// The newest advertisement accepted.
    latest: Option<Originator>,
}

impl Destination {
    /// Babel's feasibility condition: a newer seqno, or the same seqno and an advertised metric
    /// strictly below the feasibility distance. Whoever advertises less than our feasibility
    /// distance cannot be routing through us, so selecting it cannot close a loop.
    fn feasible(&self, seq: u64, advertised_metric: u32) -> bool {
        advertised_metric != INFINITY
            && match self.feasibility {
                None => true,
                Some((fd_seq, fd_metric)) => seq > fd_seq || (seq == fd_seq && advertised_metric < fd_metric),
            }
    }

    fn prune_messages(&mut self) {
        let routes = &self.routes;
        let advertised = self.advertised.map(|a| a.seq);
        self.messages
            .retain(|seq, _| Some(*seq) == advertised || routes.values().any(|route| route.seq == *seq));
    }
}

/// The least a new next hop must save to replace the current one (a sixteenth of a hop);
/// the margin is also at least a sixteenth of the current metric.
const SWITCH_MARGIN_MIN: u32 = crate::metric::BASE_LINK_COST / 16;

/// Counts of what the router did, for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouterCounters {
    /// Signature verifications asked of the verifier.
    pub verifications: u64,
    /// Dropped incoming messages, by reason.
    pub rejected: BTreeMap<RejectReason, u64>,
    /// Seqno requests sent, received and passed on, by outcome.
    pub seqno_requests: BTreeMap<SeqnoOutcome, u64>,
}

/// The routing state machine of one node. Feed it events with the current time; it returns
/// what to send and what happened. No IO, no clock: the caller calls [`Router::on_tick`] by
/// [`Router::next_deadline`].
#[derive(Debug)]
pub struct Router<V> {
    config: RouterConfig,
    self_id: NodeId,
    verifier: V,
    neighbours: BTreeMap<NodeId, Neighbour>,
    destinations: BTreeMap<NodeId, Destination>,
    dedup: DedupCache,
    counters: RouterCounters,
    own_seq: u64,
    own_latest: Option<Originator>,
    last_originated_at: Option<Duration>,
    next_originate_at: Duration,
    next_sweep_at: Duration,
    requests: RequestLog,
    /// The time of the latest input (for what route selection does without being told it).
    now: Duration,
    /// Destinations whose selected route changed under the same seqno while their last update
    /// was less than `update_gap` old: sent by the sweep once the gap has passed.
    pending_updates: BTreeSet<NodeId>,
}

/// The shortest hello, timeout and advertisement interval honoured.
const MIN_INTERVAL: Duration = Duration::from_millis(1);

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl<V: OriginatorVerifier> Router<V> {
    /// A node with no neighbours yet; its first advertisement is due at once.
    pub fn new(mut config: RouterConfig, self_id: NodeId, verifier: V, now: Duration) -> Self {
        // A zero interval would ask for a tick at the same instant forever.
        for interval in [
            &mut config.hello_interval,
            &mut config.neighbour_timeout,
            &mut config.originator_interval,
        ] {
            *interval = (*interval).max(MIN_INTERVAL);
        }
        let dedup = DedupCache::new(config.dedup_cache_size);
        Router {
            self_id,
            verifier,
            neighbours: BTreeMap::new(),
            destinations: BTreeMap::new(),
            dedup,
            counters: RouterCounters::default(),
            own_seq: 0,
            own_latest: None,
            last_originated_at: None,
            next_originate_at: now,
            next_sweep_at: now + config.hello_interval,
            requests: RequestLog::default(),
            now,
            pending_updates: BTreeSet::new(),
            config,
        }
    }

    /// Makes this node's next advertisement carry a sequence number above `seq`. Others reject
    /// sequence numbers they accepted before, so a restarted agent must start above its last
    /// run: seed it from the wall clock (microseconds since the Unix epoch) or persist it.
    pub fn set_sequence_floor(&mut self, seq: u64) {
        self.own_seq = self.own_seq.max(seq);
    }

    // ----- inputs -------------------------------------------------------------------------

    /// A neighbour session was established. Hellos start at once; the neighbour carries
    /// routes once its first hello arrives.
    pub fn on_session_up(&mut self, peer: NodeId, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        if peer == self.self_id {
            return out;
        }
        self.remove_neighbour(peer, now, &mut out);
        self.neighbours.insert(peer, Neighbour::new(now));
        self.send_hello(peer, now, &mut out);
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// A neighbour session ended: every route through it is withdrawn at once.
    pub fn on_session_down(&mut self, peer: NodeId, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        self.remove_neighbour(peer, now, &mut out);
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// A hello from a neighbour: liveness, link measurements, and its claimed link costs.
    pub fn on_hello(&mut self, peer: NodeId, hello: Hello, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        let Some(neighbour) = self.neighbours.get_mut(&peer) else {
            self.reject(peer, RejectReason::NotNeighbour, &mut out);
            return out;
        };
        neighbour.metric.on_hello_received(hello.seq);
        let held = Duration::from_micros(u64::from(hello.echo_delay_micros));
        neighbour.metric.on_echo(hello.echo_seq, held, now);
        neighbour.last_rx_hello = Some((hello.seq, now));
        neighbour.last_heard = Some(now);
        neighbour.claimed = hello.advertised_costs;
        neighbour.cost = self.config.link_cost(&neighbour.metric.quality());
        if neighbour.alive {
            self.reselect_if_cost_moved(peer, &mut out);
        } else {
            neighbour.alive = true;
            neighbour.cost_at_selection = neighbour.cost;
            self.trigger_originate(now);
            self.reselect_routes_via(peer, &mut out);
            self.send_table(peer, &mut out);
        }
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// An advertisement from a neighbour. The order of checks is a requirement:
    /// envelope checks, then deduplication (an exact duplicate is never verified again, a
    /// different body under a verified `(originator, seq)` is refused unverified), then the
    /// signature, then replay protection (after the signature, so a forged sequence number
    /// cannot move the window), then route selection and forwarding.
    pub fn on_originator(&mut self, from: NodeId, originator: Originator, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        let body = originator.body();
        let (origin, seq) = (body.originator, body.seq);
        if !self.neighbours.contains_key(&from) {
            self.reject(from, RejectReason::NotNeighbour, &mut out);
            return out;
        }
        if originator.envelope.hop_count > self.config.max_hops {
            self.reject(from, RejectReason::HopLimit, &mut out);
            return out;
        }
        if origin == self.self_id {
            self.reject(from, RejectReason::OwnAdvertisement, &mut out);
            return out;
        }
        let digest: [u8; 32] = Sha256::digest(originator.signed_bytes()).into();
        match self.dedup.check(origin, seq, &digest) {
            Seen::Equivocation => {
                self.reject(from, RejectReason::Equivocation, &mut out);
                return out;
            }
            Seen::Duplicate => {
                // The copies of a flood arrive within a few link latencies of the first, before
                // the originator's next advertisement: a copy two or more sequence numbers
                // behind the newest one accepted is a replay, and tells nothing about paths.
                let stale = self
                    .destinations
                    .get(&origin)
                    .and_then(|d| d.latest.as_ref())
                    .is_some_and(|latest| latest.body().seq > seq.saturating_add(1));
                if stale {
                    self.reject(from, RejectReason::Replayed, &mut out);
                    return out;
                }
                self.reject(from, RejectReason::Duplicate, &mut out)
            }
            Seen::New => {
                self.counters.verifications += 1;
                let verified = self.verifier.verify(
                    &origin,
                    body.key_epoch,
                    originator.signed_bytes(),
                    originator.signature(),
                );
                if let Err(error) = verified {
                    self.reject(from, RejectReason::Unverified(error), &mut out);
                    return out;
                }
                let destination = self.destinations.entry(origin).or_default();
                if destination.window.accept(seq).is_err() {
                    self.reject(from, RejectReason::Replayed, &mut out);
                    return out;
                }
                self.dedup.insert(origin, seq, digest);
                if destination
                    .latest
                    .as_ref()
                    .is_none_or(|latest| latest.body().seq < seq)
                {
                    destination.latest = Some(originator.clone());
                }
            }
        }
        self.update_route(from, originator, now, &mut out);
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// Time passes: neighbours that went silent die, hellos fall due, stale routes expire,
    /// and the periodic advertisement falls due.
    pub fn on_tick(&mut self, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        let timeout = self.config.neighbour_timeout;
        let silent: Vec<(NodeId, Duration)> = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.alive)
            .filter_map(|(peer, n)| n.last_heard.map(|heard| (*peer, heard)))
            .filter(|(_, heard)| *heard + timeout <= now)
            .collect();
        for (peer, heard) in silent {
            if let Some(neighbour) = self.neighbours.get_mut(&peer) {
                neighbour.alive = false;
                neighbour.cost = INFINITY;
                neighbour.cost_at_selection = INFINITY;
            }
            out.push(Output::NeighbourDead {
                peer,
                silent_for: now.saturating_sub(heard),
            });
            self.trigger_originate(now);
            self.withdraw_routes_via(peer, &mut out);
        }

        let due: Vec<NodeId> = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.next_hello_at <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            self.send_hello(peer, now, &mut out);
        }

        if self.next_sweep_at <= now {
            self.next_sweep_at = now + self.config.hello_interval;
            self.expire_routes(now, &mut out);
            self.requests.prune(now, self.config.originator_interval);
            self.send_pending_updates(now, &mut out);
        }
        self.send_wanted_requests(now, &mut out);

        if self.next_originate_at <= now {
            // Asked once; asked again an interval later if the caller did not originate.
            self.next_originate_at = now + self.config.originator_interval;
            out.push(Output::OriginateDue);
        }
        out
    }

    /// A new reading of a link's cumulative eBPF counters.
    pub fn on_link_counters(&mut self, peer: NodeId, counters: LinkCounters, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        if let Some(neighbour) = self.neighbours.get_mut(&peer) {
            neighbour.metric.on_counters(counters);
            if neighbour.alive {
                neighbour.cost = self.config.link_cost(&neighbour.metric.quality());
                self.reselect_if_cost_moved(peer, &mut out);
            }
        }
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// Excludes `peer` from routing (`true`) or admits it again (`false`): every route through
    /// it is re-selected at once, and the next advertisement leaves the link out. The session
    /// and its hellos go on, so the link is still measured while quarantined.
    pub fn set_quarantined(&mut self, peer: NodeId, quarantined: bool, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        let Some(neighbour) = self.neighbours.get_mut(&peer) else {
            return out;
        };
        if neighbour.quarantined == quarantined {
            return out;
        }
        neighbour.quarantined = quarantined;
        neighbour.cost_at_selection = neighbour.route_cost();
        self.trigger_originate(now);
        self.reselect_routes_via(peer, &mut out);
        if !quarantined && neighbour_alive(&self.neighbours, &peer) {
            self.send_table(peer, &mut out);
        }
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// Re-selects every route through `peer` with its current cost, even if the cost moved
    /// less than the re-selection hysteresis (the self-healing loop found the link degraded).
    pub fn reroute_around(&mut self, peer: NodeId, now: Duration) -> Vec<Output> {
        self.now = now;
        let mut out = Vec::new();
        if let Some(neighbour) = self.neighbours.get_mut(&peer) {
            neighbour.cost_at_selection = neighbour.route_cost();
            self.reselect_routes_via(peer, &mut out);
        }
        self.send_wanted_requests(now, &mut out);
        out
    }

    /// Advertises this node: a new sequence number, its live neighbours and their costs,
    /// signed by `signer`, sent to every live neighbour.
    pub fn originate(
        &mut self,
        now: Duration,
        signer: &impl OriginatorSigner,
    ) -> Result<Vec<Output>, OriginateError> {
        let seq = self.own_seq + 1;
        let body = OriginatorBody {
            originator: self.self_id,
            seq,
            issued_at_micros: micros(now),
            key_epoch: signer.key_epoch(),
            endpoint: self.config.endpoint.clone(),
            neighbours: self.live_costs(MAX_ORIGINATOR_NEIGHBOURS),
        };
        let signature = signer.sign(&body.signed_bytes()?)?;
        let message = Originator::new(
            body,
            signature,
            Envelope {
                hop_count: 1,
                path_cost: 0,
            },
        )?;
        self.own_seq = seq;
        self.last_originated_at = Some(now);
        self.next_originate_at = now + self.config.originator_interval;
        let out = self
            .neighbours
            .iter()
            .filter(|(_, n)| n.alive)
            .map(|(peer, _)| Output::Forward {
                peer: *peer,
                originator: message.clone(),
            })
            .collect();
        self.own_latest = Some(message);
        Ok(out)
    }

    /// Where a data message goes next. `from` is the neighbour it came from (`None` when this
    /// node is its source): forwarders decrement its TTL and drop it when it runs out.
    pub fn route_data(&self, from: Option<NodeId>, mut data: Data) -> DataDecision {
        if data.destination == self.self_id {
            return DataDecision::Deliver(data);
        }
        if from.is_some() {
            if data.ttl <= 1 {
                return DataDecision::Drop {
                    reason: "ttl_expired",
                    data,
                };
            }
            data.ttl -= 1;
        }
        match self.next_hop(&data.destination) {
            Some(next_hop) => DataDecision::Forward { next_hop, data },
            None => DataDecision::Drop {
                reason: "no_route",
                data,
            },
        }
    }

    // ----- queries ------------------------------------------------------------------------

    /// This node.
    pub fn self_id(&self) -> NodeId {
        self.self_id
    }

    /// The configuration.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Starts or stops understating link costs (a `falseMetric` chaos experiment); the costs
    /// follow at each neighbour's next hello.
    pub fn set_false_metric_percent(&mut self, percent: Option<u32>) {
        self.config.false_metric_percent = percent;
    }

    /// When [`Router::on_tick`] must be called next (a hello, a neighbour timeout, the route
    /// expiry sweep, or the next advertisement).
    pub fn next_deadline(&self) -> Duration {
        let timeout = self.config.neighbour_timeout;
        self.neighbours
            .values()
            .flat_map(|n| {
                [
                    Some(n.next_hello_at),
                    n.last_heard.filter(|_| n.alive).map(|heard| heard + timeout),
                ]
            })
            .flatten()
            .fold(self.next_originate_at.min(self.next_sweep_at), Duration::min)
    }

    /// The neighbour to send to for `destination`.
    pub fn next_hop(&self, destination: &NodeId) -> Option<NodeId> {
        self.destinations.get(destination)?.selected
    }

    /// The selected route to `destination`.
    pub fn route(&self, destination: &NodeId) -> Option<Route> {
        let dest = self.destinations.get(destination)?;
        let next_hop = dest.selected?;
        let entry = dest.routes.get(&next_hop)?;
        Some(Route {
            destination: *destination,
            next_hop,
            metric: entry.path_cost.saturating_add(self.link_cost(&next_hop)),
            seq: entry.seq,
            hop_count: entry.hop_count,
        })
    }

    /// Every selected route.
    pub fn routes(&self) -> Vec<Route> {
        self.destinations
            .keys()
            .filter_map(|destination| self.route(destination))
            .collect()
    }

    /// Every neighbour's offer of a path to `destination`, with its feasibility.
    pub fn candidates(&self, destination: &NodeId) -> Vec<Candidate> {
        let Some(dest) = self.destinations.get(destination) else {
            return Vec::new();
        };
        dest.routes
            .iter()
            .map(|(via, entry)| Candidate {
                via: *via,
                seq: entry.seq,
                advertised_metric: entry.path_cost,
                metric: entry.path_cost.saturating_add(self.link_cost(via)),
                feasible: dest.feasible(entry.seq, entry.path_cost),
                selected: dest.selected == Some(*via),
            })
            .collect()
    }

    /// Every neighbour with a session.
    pub fn neighbours(&self) -> Vec<NeighbourStatus> {
        self.neighbours
            .iter()
            .map(|(peer, n)| NeighbourStatus {
                peer: *peer,
                alive: n.alive,
                cost: n.cost,
                quarantined: n.quarantined,
                quality: n.metric.quality(),
                last_heard: n.last_heard,
            })
            .collect()
    }

    /// The cost of the link to `peer` ([`INFINITY`] unless it is a live neighbour).
    pub fn link_cost(&self, peer: &NodeId) -> u32 {
        self.neighbours.get(peer).map_or(INFINITY, Neighbour::route_cost)
    }

    /// What `peer` claims its link to us costs (from its hellos) and what we measure on the
    /// same link, for detecting a peer that lies about its metric. `None` until both exist.
    pub fn claimed_vs_measured(&self, peer: &NodeId) -> Option<(u32, u32)> {
        let neighbour = self.neighbours.get(peer).filter(|n| n.alive)?;
        let claimed = neighbour
            .claimed
            .iter()
            .find(|(node, _)| *node == self.self_id)?
            .1;
        Some((claimed, neighbour.cost))
    }

    /// Everything `peer` claims about its links in its last hello.
    pub fn advertised_costs(&self, peer: &NodeId) -> Option<&[(NodeId, u32)]> {
        self.neighbours.get(peer).map(|n| n.claimed.as_slice())
    }

    /// The newest verified advertisement of `originator` (its endpoint and its neighbours).
    pub fn originator_body(&self, originator: &NodeId) -> Option<&OriginatorBody> {
        self.destinations
            .get(originator)?
            .latest
            .as_ref()
            .map(Originator::body)
    }

    /// Signature verifications performed so far (each `(originator, seq)` at most once while
    /// it is in the dedup cache).
    pub fn verifications_performed(&self) -> u64 {
        self.counters.verifications
    }

    /// Incoming messages dropped for `reason` so far.
    pub fn rejections(&self, reason: RejectReason) -> u64 {
        self.counters.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// All counters.
    pub fn counters(&self) -> &RouterCounters {
        &self.counters
    }

    // ----- internals ----------------------------------------------------------------------

    fn reject(&mut self, from: NodeId, reason: RejectReason, out: &mut Vec<Output>) {
        *self.counters.rejected.entry(reason).or_default() += 1;
        out.push(Output::Rejected { from, reason });
    }

    fn live_costs(&self, limit: usize) -> Vec<(NodeId, u32)> {
        self.neighbours
            .iter()
            .filter(|(_, n)| n.route_cost() != INFINITY)
            .map(|(peer, n)| (*peer, n.cost))
            .take(limit)
            .collect()
    }

    fn send_hello(&mut self, peer: NodeId, now: Duration, out: &mut Vec<Output>) {
        let advertised_costs = self.live_costs(MAX_ADVERTISED_COSTS);
        let interval = self.config.hello_interval;
        let Some(neighbour) = self.neighbours.get_mut(&peer) else {
            return;
        };
        let seq = neighbour.next_hello_seq;
        neighbour.next_hello_seq = seq.checked_add(1).unwrap_or(1);
        let (echo_seq, echo_delay_micros) = neighbour.last_rx_hello.map_or((0, 0), |(seq, received_at)| {
            (
                seq,
                u32::try_from(micros(now.saturating_sub(received_at))).unwrap_or(u32::MAX),
            )
        });
        neighbour.metric.on_hello_sent(seq, now);
        neighbour.next_hello_at = now + interval;
        out.push(Output::SendHello {
            peer,
            hello: Hello {
                seq,
                sent_at_micros: micros(now),
                echo_seq,
                echo_delay_micros,
                advertised_costs,
            },
        });
    }

    /// Advertise soon: at once, unless the last advertisement is less than a hello interval
    /// old (a flapping link must not flood the mesh).
    fn trigger_originate(&mut self, now: Duration) {
        let earliest = self
            .last_originated_at
            .map_or(now, |last| last + self.config.hello_interval);
        self.next_originate_at = self.next_originate_at.min(earliest.max(now));
    }

    fn remove_neighbour(&mut self, peer: NodeId, now: Duration, out: &mut Vec<Output>) {
        if let Some(neighbour) = self.neighbours.remove(&peer) {
            if neighbour.alive {
                self.trigger_originate(now);
            }
            self.withdraw_routes_via(peer, out);
        }
    }

    fn withdraw_routes_via(&mut self, peer: NodeId, out: &mut Vec<Output>) {
        let affected: Vec<NodeId> = self
            .destinations
            .iter_mut()
            .filter_map(|(destination, dest)| dest.routes.remove(&peer).map(|_| *destination))
            .collect();
        for destination in affected {
            self.reselect(destination, out);
        }
    }

    fn reselect_routes_via(&mut self, peer: NodeId, out: &mut Vec<Output>) {
        let affected: Vec<NodeId> = self
            .destinations
            .iter()
            .filter(|(_, dest)| dest.routes.contains_key(&peer))
            .map(|(destination, _)| *destination)
            .collect();
        for destination in affected {
            self.reselect(destination, out);
        }
    }

    /// Link costs jitter with every RTT sample; routes are reselected only when a cost moved by
    /// more than an eighth since the last selection.
    fn reselect_if_cost_moved(&mut self, peer: NodeId, out: &mut Vec<Output>) {
        let Some(neighbour) = self.neighbours.get_mut(&peer) else {
            return;
        };
        if moved_by_an_eighth(neighbour.cost_at_selection, neighbour.cost) {
            neighbour.cost_at_selection = neighbour.cost;
            self.reselect_routes_via(peer, out);
        }
    }

    fn expire_routes(&mut self, now: Duration, out: &mut Vec<Output>) {
        let expiry = self.config.route_expiry;
        let affected: Vec<NodeId> = self
            .destinations
            .iter_mut()
            .filter_map(|(destination, dest)| {
                let before = dest.routes.len();
                dest.routes.retain(|_, route| route.refreshed_at + expiry > now);
                (dest.routes.len() != before).then_some(*destination)
            })
            .collect();
        for destination in affected {
            self.reselect(destination, out);
        }
    }

    /// Records a neighbour's offer (a verified advertisement or a duplicate of one) and
    /// reselects.
    fn update_route(&mut self, from: NodeId, originator: Originator, now: Duration, out: &mut Vec<Output>) {
        let origin = originator.body().originator;
        let seq = originator.body().seq;
        let Some(dest) = self.destinations.get_mut(&origin) else {
            return;
        };
        if dest.routes.get(&from).is_some_and(|route| route.seq > seq) {
            return; // An older copy than the neighbour already sent: nothing new.
        }
        let envelope = originator.envelope;
        dest.routes.insert(
            from,
            RouteEntry {
                seq,
                path_cost: envelope.path_cost,
                hop_count: envelope.hop_count,
                refreshed_at: now,
            },
        );
        dest.messages.entry(seq).or_insert(originator);
        self.reselect(origin, out);
    }

    /// Selects the best feasible route to `destination`, reports a changed next hop, and
    /// advertises what changed.
    fn reselect(&mut self, destination: NodeId, out: &mut Vec<Output>) {
        let pending_seq = self.requests.pending_seq(&destination);
        let Some(dest) = self.destinations.get_mut(&destination) else {
            return;
        };
        let neighbours = &self.neighbours;
        let cost_via = |via: &NodeId| neighbours.get(via).map_or(INFINITY, Neighbour::route_cost);
        let usable = |via: &NodeId, route: &RouteEntry| {
            route.path_cost.saturating_add(cost_via(via)) != INFINITY
                && dest.feasible(route.seq, route.path_cost)
        };
        // A request for a newer seqno is pending here (this node asked, or passed one on): when
        // a usable route carries it, only such routes are considered. Any feasible selection is
        // loop-free, and selecting the newer seqno makes it news, so the answer travels on to
        // whoever asked instead of stopping at a node that keeps a cheaper route under the
        // older seqno (which never forwards the newer one).
        let min_seq = pending_seq
            .filter(|wanted| {
                dest.routes
                    .iter()
                    .any(|(via, r)| r.seq >= *wanted && usable(via, r))
            })
            .unwrap_or(0);
        let mut best: Option<(u32, NodeId)> = None;
        for (via, route) in &dest.routes {
            let metric = route.path_cost.saturating_add(cost_via(via));
            if !usable(via, route) || route.seq < min_seq {
                continue;
            }
            // Lowest metric; on a tie keep the current next hop, then the lowest id.
            let better = best.is_none_or(|(best_metric, best_via)| {
                metric < best_metric
                    || (metric == best_metric
                        && dest.selected == Some(*via)
                        && dest.selected != Some(best_via))
            });
            if better {
                best = Some((metric, *via));
            }
        }
        // Hysteresis: the current next hop stays unless another is cheaper by more than
        // SWITCH_MARGIN. Without it, RTT jitter of a millisecond between equal paths flips
        // routes back and forth on a busy agent (each flip a route change, and work).
        if let (Some((best_metric, best_via)), Some(current)) = (best, dest.selected)
            && best_via != current
            && let Some(route) = dest.routes.get(&current)
        {
            let current_metric = route.path_cost.saturating_add(cost_via(&current));
            let margin = (current_metric / 16).max(SWITCH_MARGIN_MIN);
            if usable(&current, route)
                && route.seq >= min_seq
                && best_metric.saturating_add(margin) >= current_metric
            {
                best = Some((current_metric, current));
            }
        }
        let missing_seqno = if best.is_none() {
            dest.missing_seqno()
        } else {
            None
        };
        let selected_seq = best
            .and_then(|(_, via)| dest.routes.get(&via))
            .map(|route| route.seq);
        let new_next_hop = best.map(|(_, via)| via);
        if new_next_hop != dest.selected {
            out.push(Output::RouteChanged {
                destination,
                old_next_hop: dest.selected,
                new_next_hop,
            });
            dest.selected = new_next_hop;
        }
        let pace = Pace {
            now: self.now,
            gap: self.config.update_gap,
        };
        if advertise(
            destination,
            dest,
            best,
            neighbours,
            self.config.max_hops,
            pace,
            out,
        ) == Sent::Deferred
        {
            self.pending_updates.insert(destination);
        }
        dest.prune_messages();
        if let Some(seq) = missing_seqno {
            self.want_seqno(destination, seq);
        }
        if let Some(seq) = selected_seq {
            self.requests.answered(&destination, seq);
        }
    }

    /// Sends the same-seqno updates deferred by the pacing whose gap has passed (route
    /// selection runs again: what goes out is the route selected now, if it still differs from
    /// what the neighbours were told).
    fn send_pending_updates(&mut self, now: Duration, out: &mut Vec<Output>) {
        let gap = self.config.update_gap;
        let due: Vec<NodeId> = self
            .pending_updates
            .iter()
            .copied()
            .filter(|destination| {
                self.destinations
                    .get(destination)
                    .and_then(|dest| dest.advertised_at)
                    .is_none_or(|at| at + gap <= now)
            })
            .collect();
        for destination in due {
            self.pending_updates.remove(&destination);
            self.reselect(destination, out);
        }
    }

    /// Sends a neighbour that just came alive everything it needs to route at once: our
    /// current advertisement of every destination, and our own.
    fn send_table(&self, peer: NodeId, out: &mut Vec<Output>) {
        for (destination, dest) in &self.destinations {
            let Some(advertised) = dest.advertised else {
                continue;
            };
            if *destination == peer
                || advertised.metric == INFINITY
                || advertised.hop_count > self.config.max_hops
            {
                continue;
            }
            let Some(message) = dest.messages.get(&advertised.seq) else {
                continue;
            };
            let path_cost = if advertised.next_hop == peer {
                INFINITY
            } else {
                advertised.metric
            };
            let envelope = Envelope {
                hop_count: advertised.hop_count,
                path_cost,
            };
            out.push(Output::Forward {
                peer,
                originator: message.with_envelope(envelope),
            });
        }
        if let Some(own) = &self.own_latest {
            out.push(Output::Forward {
                peer,
                originator: own.clone(),
            });
        }
    }
}

fn neighbour_alive(neighbours: &BTreeMap<NodeId, Neighbour>, peer: &NodeId) -> bool {
    neighbours.get(peer).is_some_and(|n| n.alive)
}

/// When route selection may send a same-seqno update of one destination.
#[derive(Debug, Clone, Copy)]
struct Pace {
    now: Duration,
    gap: Duration,
}

/// What [`advertise`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    /// Sent, or nothing worth sending.
    Done,
    /// A same-seqno change within the gap since the last update: to send once it has passed.
    Deferred,
}

/// Whether a cost moved by more than an eighth: what a link cost must move before routes are
/// re-selected, and a metric before the neighbours hear of it under the same seqno, so that
/// RTT jitter is no news.
fn moved_by_an_eighth(old: u32, new: u32) -> bool {
    u64::from(old.abs_diff(new)) * 8 > u64::from(old)
}

/// Tells the neighbours when the selected route changed in a way they must know: a newer
/// seqno, or no route at all (a retraction: the same signed advertisement with an infinite
/// path cost), at once; under the same seqno, another next hop at no higher metric or a metric
/// lower by more than an eighth, at most once per `update_gap` per destination (a triggered
/// update, as Babel sends). The next hop gets an infinite cost (poisoned reverse), so it never counts on a path
/// through us that goes through itself.
fn advertise(
    destination: NodeId,
    dest: &mut Destination,
    best: Option<(u32, NodeId)>,
    neighbours: &BTreeMap<NodeId, Neighbour>,
    max_hops: u8,
    pace: Pace,
    out: &mut Vec<Output>,
) -> Sent {
    let live_peers = || {
        neighbours
            .iter()
            .filter(|(peer, n)| n.alive && **peer != destination)
            .map(|(peer, _)| *peer)
    };
    let Some((metric, via)) = best else {
        // No route: retract what we advertised, once.
        let Some(advertised) = dest.advertised.as_mut().filter(|a| a.metric != INFINITY) else {
            return Sent::Done;
        };
        advertised.metric = INFINITY;
        dest.advertised_at = Some(pace.now);
        let Some(message) = dest.messages.get(&advertised.seq) else {
            return Sent::Done;
        };
        if advertised.hop_count <= max_hops {
            let envelope = Envelope {
                hop_count: advertised.hop_count,
                path_cost: INFINITY,
            };
            for peer in live_peers() {
                out.push(Output::Forward {
                    peer,
                    originator: message.with_envelope(envelope),
                });
            }
        }
        return Sent::Done;
    };
    let Some(route) = dest.routes.get(&via) else {
        return Sent::Done;
    };
    let (seq, hop_count) = (route.seq, route.hop_count.saturating_add(1));
    // A newer seqno, or a route where we had retracted one, is news to send now. Another next
    // hop or a clearly different metric under the same seqno is paced: sending every
    // improvement at once made each copy of a flood that arrived over a cheaper path a new
    // flood (the cold-start storm of a large mesh), while waiting for the originator's next
    // seqno left neighbours with our stale metric (or our stale poisoned reverse) for a whole
    // originator interval, too long once that interval is long. Loop freedom depends on
    // neither: a neighbour only selects us while our advertised metric is below its
    // feasibility distance (RFC 8966 §3.5.3), and the data follows our current selection.
    let news = dest
        .advertised
        .is_none_or(|a| seq > a.seq || (seq == a.seq && a.metric == INFINITY));
    // Only a change for the better (or no worse, through another next hop): a neighbour that
    // heard a higher metric under the same seqno may find its route through us above its
    // feasibility distance and drop it (RFC 8966 §3.5.1), a loss the next seqno would not
    // have caused. A worse metric waits for the next seqno, as before.
    let changed = dest.advertised.is_some_and(|a| {
        seq == a.seq
            && a.metric != INFINITY
            && metric <= a.metric
            && (a.next_hop != via || moved_by_an_eighth(a.metric, metric))
    });
    if !news && !changed {
        return Sent::Done;
    }
    if !news && dest.advertised_at.is_some_and(|at| at + pace.gap > pace.now) {
        return Sent::Deferred;
    }
    // The feasibility distance is the smallest metric advertised for the newest seqno.
    dest.feasibility = Some(match dest.feasibility {
        Some((fd_seq, fd_metric)) if fd_seq == seq => (seq, fd_metric.min(metric)),
        Some((fd_seq, fd_metric)) if fd_seq > seq => (fd_seq, fd_metric),
        _ => (seq, metric),
    });
    dest.advertised = Some(Advertised {
        seq,
        metric,
        next_hop: via,
        hop_count,
    });
    dest.advertised_at = Some(pace.now);
    let Some(message) = dest.messages.get(&seq) else {
        return Sent::Done;
    };
    if hop_count > max_hops {
        return Sent::Done;
    }
    for peer in live_peers() {
        let path_cost = if peer == via { INFINITY } else { metric };
        out.push(Output::Forward {
            peer,
            originator: message.with_envelope(Envelope { hop_count, path_cost }),
        });
    }
    Sent::Done
}

#[cfg(test)]
mod tests;
