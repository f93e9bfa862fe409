//! The simulated mesh: one real [`Router`] per agent, links with latency and loss, and an event
//! queue in simulated time.
//!
//! Every message goes through the real wire format when sent: it is encoded into a frame, and
//! the frame's length is what the traffic counts. In flight it travels as the message itself,
//! and one frame in `decode_every` is decoded again and checked equal to what is delivered
//! (all of them with `decode_every = 1`). Decoding every copy would cost a third of the run
//! time and, worse, give each of the N² received copies of the advertisements its own
//! buffers (about 14 GB at 2000 agents), where a forwarded advertisement shares its signed
//! bytes with the original, as `Originator::with_envelope` intends.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use x0tta6bl4_routing::{NodeId, Output, Router, RouterConfig};
use x0tta6bl4_wire::{Message, decode_frame, encode_frame};

use crate::queue::EventQueue;
use crate::rng::Rng;
use crate::stats::Histogram;
use crate::topology::Topology;
use crate::verify::{SimSigner, SimVerifier, VerifyCache};

/// A `/proc/self/status` field in bytes (`"VmRSS:"`, `"VmHWM:"`), on Linux.
pub fn process_memory(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with(field))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Node ids are SHA-256 outputs: their first bytes are already a good hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        for (slot, byte) in word.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }
}

type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

/// How the simulated links and agents behave.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Every agent's routing configuration (its endpoint is set per agent).
    pub router: RouterConfig,
    /// Each link gets a fixed one-way latency drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// Probability that any one message is lost.
    pub loss: f64,
    /// Agents start at uniformly random times in `[0, boot_spread)` (a DaemonSet rollout); it
    /// also spreads their advertisement phases, as on a real cluster.
    pub boot_spread: Duration,
    /// A neighbour session is up this many one-way latencies after both ends have started
    /// (the TLS 1.3 handshake and the ML-DSA channel binding)...
    pub session_setup_latencies: u32,
    /// ...plus a delay drawn uniformly from `[0, session_jitter)` (finding the peer's record,
    /// connecting): it also gives each link its own hello phase, as on a real mesh.
    pub session_jitter: Duration,
    /// One sent frame in this many is decoded again and compared with the message delivered.
    pub decode_every: u64,
    pub seed: u64,
}

#[derive(Debug, Clone, Copy)]
struct Link {
    peer: u32,
    latency: Duration,
}

/// Messages and bytes one agent sent (frames, header included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    pub hello_messages: u64,
    pub hello_bytes: u64,
    pub originator_messages: u64,
    pub originator_bytes: u64,
    /// Messages handed to the router (not lost, not to a dead agent).
    pub received: u64,
}

impl Traffic {
    pub fn messages(&self) -> u64 {
        self.hello_messages + self.originator_messages
    }

    pub fn bytes(&self) -> u64 {
        self.hello_bytes + self.originator_bytes
    }

    pub fn minus(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            hello_messages: self.hello_messages - earlier.hello_messages,
            hello_bytes: self.hello_bytes - earlier.hello_bytes,
            originator_messages: self.originator_messages - earlier.originator_messages,
            originator_bytes: self.originator_bytes - earlier.originator_bytes,
            received: self.received - earlier.received,
        }
    }
}

struct Agent {
    id: NodeId,
    router: Router<SimVerifier>,
    signer: SimSigner,
    links: Vec<Link>,
    alive: bool,
    /// The earliest tick event queued for it.
    tick_at: Option<Duration>,
    /// Destinations it has a route to.
    reachable: u32,
    traffic: Traffic,
    /// Wall time spent inside its router's methods.
    busy: Duration,
    /// Defer its next advertisement by a random part of an interval.
    defer_next_advertisement: bool,
}

/// Wall time of each router call, by kind (nanoseconds).
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub hello: Histogram,
    /// Advertisements for which the router asked for no verification (duplicates).
    pub originator_duplicate: Histogram,
    /// Advertisements for which the router asked for a verification that the shared cache
    /// already had: the router's own work, without the signature check.
    pub originator_cached: Histogram,
    /// Advertisements verified for real inside the call: what a real agent spends on the first
    /// copy of every `(originator, seq)`.
    pub originator_verified: Histogram,
    pub tick: Histogram,
    /// `Router::originate`, including the real ML-DSA-65 signature.
    pub originate: Histogram,
    /// Decoding an advertisement's frame (outside the router, as a real agent's session
    /// does), on the sampled frames.
    pub decode_originator: Histogram,
}

/// What happened in one slice of simulated time, mesh-wide.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slice {
    /// Advertisements sent (originated or forwarded).
    pub adverts: u64,
    /// Of which with an infinite path cost (a retraction, or poisoned reverse).
    pub infinite: u64,
    pub advert_bytes: u64,
    /// Advertisements originated (new sequence numbers).
    pub originated: u64,
    pub route_changes: u64,
    pub route_losses: u64,
}

impl Slice {
    /// The sum of `slices`.
    pub fn total<'a>(slices: impl IntoIterator<Item = &'a Slice>) -> Slice {
        slices.into_iter().fold(Slice::default(), |sum, slice| Slice {
            adverts: sum.adverts + slice.adverts,
            infinite: sum.infinite + slice.infinite,
            advert_bytes: sum.advert_bytes + slice.advert_bytes,
            originated: sum.originated + slice.originated,
            route_changes: sum.route_changes + slice.route_changes,
            route_losses: sum.route_losses + slice.route_losses,
        })
    }
}

/// The width of a [`Slice`].
pub const SLICE: Duration = Duration::from_millis(100);

enum Event {
    SessionUp(u32, u32),
    /// A deferred advertisement (see [`Mesh::desync_phases`]).
    Originate(u32),
    Deliver {
        to: u32,
        from: u32,
        slot: u32,
    },
    Tick(u32),
}

/// What [`Mesh::follow`] found at the end of a chain of next hops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathEnd {
    Reached,
    /// Through an agent that is dead (or about to be killed).
    Dead,
    NoRoute,
    Loop,
}

/// One `(source, destination)` pair whose route went through a killed agent.
#[derive(Debug, Clone, Copy)]
pub struct PairState {
    pub source: u32,
    pub valid: bool,
    /// First time its path reached the destination avoiding every dead agent.
    pub first_valid: Option<Duration>,
    /// Since when it has done so without interruption.
    pub valid_since: Option<Duration>,
    /// How often a valid path broke again.
    pub flaps: u32,
}

/// Follows the forwarding paths of the affected pairs after a kill, at most once per
/// millisecond of simulated time (the resolution of the reroute times). A pair's path is walked
/// again only when an agent on its last walked path changed its next hop towards the pair's
/// destination: nothing else can change where that path goes.
struct RerouteTracker {
    dead: Vec<bool>,
    /// Per destination, its affected pairs, and the path each took at its last walk.
    pairs: Vec<Vec<PairState>>,
    paths: Vec<Vec<Vec<u32>>>,
    /// Per destination, the agents whose next hop to it changed since the last check.
    changed: Vec<Vec<u32>>,
    dirty_list: Vec<u32>,
    /// Scratch: agents in `changed` of the destination being checked.
    mark: Vec<bool>,
    last_check: Duration,
    invalid: usize,
    loops: u64,
}

/// How often (in simulated time) the affected paths are re-checked at most.
pub const REROUTE_RESOLUTION: Duration = Duration::from_millis(1);

/// The simulated mesh.
pub struct Mesh {
    now: Duration,
    agents: Vec<Agent>,
    index: IdMap<u32>,
    queue: EventQueue<Event>,
    loss: f64,
    loss_rng: Rng,
    cache: Rc<VerifyCache>,
    /// Messages in flight, by slot (the queue's entries stay small), and the free slots.
    in_flight: Vec<Option<Message>>,
    free_slots: Vec<u32>,
    /// Where each sent message is encoded.
    scratch: Vec<u8>,
    decode_every: u64,
    sent: u64,
    /// Frames decoded again and compared.
    pub decode_checks: u64,
    /// Mesh-wide counts per [`SLICE`] of simulated time.
    pub timeline: Vec<Slice>,
    pub timings: Timings,
    pub rejections: BTreeMap<&'static str, u64>,
    /// `(when, at, dead peer)` of every `NeighbourDead`.
    pub deaths: Vec<(Duration, u32, u32)>,
    /// Routes lost (next hop became `None`).
    pub route_losses: u64,
    complete: usize,
    pub converged_at: Option<Duration>,
    /// Mesh-wide totals from the start to the first convergence.
    pub sent_before_convergence: Option<Slice>,
    /// Since when every agent has had a route to every other without interruption.
    pub complete_since: Option<Duration>,
    pub lost_messages: u64,
    pub undeliverable: u64,
    pub decode_errors: u64,
    pub originate_errors: u64,
    pub events: u64,
    tracker: Option<RerouteTracker>,
    wall_deadline: Option<Instant>,
    memory_limit: Option<u64>,
    /// Why [`Mesh::run_until`] stopped early, if it did.
    pub stopped_by: Option<&'static str>,
    desync_rng: Rng,
    desync_interval: Duration,
    /// Print where the run is every so often (wall clock), and when it last did.
    progress: Option<(Duration, Instant)>,
    last_boot: Duration,
    memo: Vec<u8>,
    touched: Vec<u32>,
}

const MEMO_UNKNOWN: u8 = 0;
const MEMO_VISITING: u8 = 1;

fn memo_code(end: PathEnd) -> u8 {
    match end {
        PathEnd::Reached => 2,
        PathEnd::Dead => 3,
        PathEnd::NoRoute => 4,
        PathEnd::Loop => 5,
    }
}

fn memo_end(code: u8) -> Option<PathEnd> {
    match code {
        2 => Some(PathEnd::Reached),
        3 => Some(PathEnd::Dead),
        4 => Some(PathEnd::NoRoute),
        5 => Some(PathEnd::Loop),
        _ => None,
    }
}

impl Mesh {
    /// Agents along `topology`, with their keys and a shared verification cache; nothing has
    /// started yet (agent `i` starts at its boot time).
    pub fn new(
        topology: &Topology,
        signers: Vec<SimSigner>,
        cache: Rc<VerifyCache>,
        config: &MeshConfig,
    ) -> Self {
        let n = topology.len();
        let mut latency_rng = Rng::new(config.seed, 1);
        let mut boot_rng = Rng::new(config.seed, 2);
        let (low, high) = (
            config.latency.0.as_micros() as u64,
            config.latency.1.as_micros() as u64,
        );
        let mut links: Vec<Vec<Link>> = vec![Vec::new(); n];
        for &(a, b) in &topology.edges {
            let latency = Duration::from_micros(latency_rng.between(low, high.max(low)));
            links[a as usize].push(Link { peer: b, latency });
            links[b as usize].push(Link { peer: a, latency });
        }
        let mut session_rng = Rng::new(config.seed, 7);
        let jitter = config.session_jitter.as_micros() as u64;
        let spread = config.boot_spread.as_micros() as u64;
        let boots: Vec<Duration> = (0..n)
            .map(|_| Duration::from_micros(if spread == 0 { 0 } else { boot_rng.below(spread) }))
            .collect();
        let mut queue = EventQueue::default();
        let mut agents = Vec::with_capacity(n);
        for (i, (signer, links)) in signers.into_iter().zip(links).enumerate() {
            let id = crate::verify::node_id(i);
            let mut router_config = config.router.clone();
            router_config.endpoint = format!("198.18.{}.{}:7946", i / 256, i % 256);
            let verifier = SimVerifier {
                agent: i,
                cache: Rc::clone(&cache),
            };
            let router = Router::new(router_config, id, verifier, boots[i]);
            queue.push(boots[i], Event::Tick(i as u32));
            agents.push(Agent {
                id,
                router,
                signer,
                links,
                alive: true,
                tick_at: Some(boots[i]),
                reachable: 0,
                traffic: Traffic::default(),
                busy: Duration::ZERO,
                defer_next_advertisement: false,
            });
        }
        for &(a, b) in &topology.edges {
            let latency = agents[a as usize]
                .links
                .iter()
                .find(|link| link.peer == b)
                .map_or(Duration::ZERO, |link| link.latency);
            let up = boots[a as usize].max(boots[b as usize])
                + latency * config.session_setup_latencies
                + Duration::from_micros(if jitter == 0 { 0 } else { session_rng.below(jitter) });
            queue.push(up, Event::SessionUp(a, b));
        }
        let index = agents
            .iter()
            .enumerate()
            .map(|(i, agent)| (agent.id, i as u32))
            .collect();
        Mesh {
            now: Duration::ZERO,
            agents,
            index,
            queue,
            loss: config.loss,
            loss_rng: Rng::new(config.seed, 3),
            cache,
            in_flight: Vec::new(),
            free_slots: Vec::new(),
            scratch: Vec::new(),
            decode_every: config.decode_every.max(1),
            sent: 0,
            decode_checks: 0,
            timeline: Vec::new(),
            timings: Timings::default(),
            rejections: BTreeMap::new(),
            deaths: Vec::new(),
            route_losses: 0,
            complete: 0,
            converged_at: if n <= 1 { Some(Duration::ZERO) } else { None },
            sent_before_convergence: None,
            complete_since: if n <= 1 { Some(Duration::ZERO) } else { None },
            lost_messages: 0,
            undeliverable: 0,
            decode_errors: 0,
            originate_errors: 0,
            events: 0,
            tracker: None,
            wall_deadline: None,
            memory_limit: None,
            stopped_by: None,
            progress: None,
            desync_rng: Rng::new(config.seed, 6),
            desync_interval: Duration::ZERO,
            last_boot: boots.iter().copied().max().unwrap_or_default(),
            memo: vec![MEMO_UNKNOWN; n],
            touched: Vec::new(),
        }
    }

    pub fn now(&self) -> Duration {
        self.now
    }

    /// When the last agent started.
    pub fn last_boot(&self) -> Duration {
        self.last_boot
    }

    pub fn len(&self) -> usize {
        self.agents.len()
    }

    pub fn is_empty(&self) -> bool {
        self.agents.is_empty()
    }

    pub fn id(&self, agent: usize) -> NodeId {
        self.agents[agent].id
    }

    pub fn router(&self, agent: usize) -> &Router<SimVerifier> {
        &self.agents[agent].router
    }

    pub fn cache(&self) -> &VerifyCache {
        &self.cache
    }

    pub fn neighbours(&self, agent: usize) -> impl Iterator<Item = usize> + '_ {
        self.agents[agent].links.iter().map(|link| link.peer as usize)
    }

    pub fn is_alive(&self, agent: usize) -> bool {
        self.agents[agent].alive
    }

    /// Agents with a route to every other agent.
    pub fn complete_agents(&self) -> usize {
        self.complete
    }

    /// Routes held, over all agents.
    pub fn total_routes(&self) -> u64 {
        self.agents.iter().map(|agent| u64::from(agent.reachable)).sum()
    }

    pub fn traffic(&self, agent: usize) -> Traffic {
        self.agents[agent].traffic
    }

    pub fn busy(&self, agent: usize) -> Duration {
        self.agents[agent].busy
    }

    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }

    /// Stop [`Mesh::run_until`] once the wall clock passes `deadline`.
    pub fn set_wall_deadline(&mut self, deadline: Option<Instant>) {
        self.wall_deadline = deadline;
    }

    /// Stop [`Mesh::run_until`] once the process's resident memory passes `bytes`.
    pub fn set_memory_limit(&mut self, bytes: Option<u64>) {
        self.memory_limit = bytes;
    }

    /// Moves every agent's advertisement phase to a random point of the interval: the next time
    /// its router asks to advertise, the agent does so after a delay drawn uniformly from
    /// `[0, interval)` (the router tolerates a late `originate`; its next periodic one follows
    /// an interval after the actual one). This stands in for the timer jitter the routing crate
    /// lacks: without it, the phases of agents started together stay locked together.
    pub fn desync_phases(&mut self, interval: Duration, seed: u64) {
        for agent in &mut self.agents {
            agent.defer_next_advertisement = true;
        }
        self.desync_rng = Rng::new(seed, 6);
        self.desync_interval = interval;
    }

    /// Print progress to stderr every `every` of wall-clock time.
    pub fn set_progress(&mut self, every: Option<Duration>) {
        self.progress = every.map(|every| (every, Instant::now()));
    }

    /// Processes every event up to and including `until`. Returns false if the wall-clock
    /// deadline stopped it first.
    pub fn run_until(&mut self, until: Duration) -> bool {
        while let Some(at) = self.queue.peek_time() {
            if at > until {
                break;
            }
            if at > self.now {
                self.advance_to(at);
            }
            let Some((at, event)) = self.queue.pop() else {
                break;
            };
            self.now = self.now.max(at);
            self.events += 1;
            match event {
                Event::SessionUp(a, b) => self.session_up(a as usize, b as usize),
                Event::Originate(agent) => {
                    if self.agents[agent as usize].alive {
                        self.originate(agent as usize);
                        self.reschedule(agent as usize);
                    }
                }
                Event::Deliver { to, from, slot } => self.deliver(to as usize, from as usize, slot),
                Event::Tick(agent) => self.tick(agent as usize, at),
            }
            if self.events.is_multiple_of(1 << 16) {
                let wall = Instant::now();
                if self.wall_deadline.is_some_and(|deadline| wall > deadline) {
                    self.stopped_by = Some("wall-clock limit");
                    return false;
                }
                if let Some(limit) = self.memory_limit
                    && process_memory("VmRSS:").is_some_and(|rss| rss > limit)
                {
                    self.stopped_by = Some("memory limit");
                    return false;
                }
                if let Some((every, last)) = &mut self.progress
                    && wall.duration_since(*last) >= *every
                {
                    *last = wall;
                    eprintln!(
                        "  … {:.3} s simulated, {:.1} M events, {} messages in flight",
                        self.now.as_secs_f64(),
                        self.events as f64 / 1e6,
                        self.queue.len()
                    );
                }
            }
        }
        self.advance_to(until.max(self.now));
        true
    }

    /// Time moves on: every event at the current instant has run, so the affected paths can
    /// be checked.
    fn advance_to(&mut self, next: Duration) {
        let due = self.tracker.as_ref().is_some_and(|tracker| {
            !tracker.dirty_list.is_empty() && self.now >= tracker.last_check + REROUTE_RESOLUTION
        });
        if due {
            self.check_reroutes();
        }
        self.now = next;
    }

    fn session_up(&mut self, a: usize, b: usize) {
        for (me, peer) in [(a, b), (b, a)] {
            if !self.agents[me].alive {
                continue;
            }
            let peer_id = self.agents[peer].id;
            let now = self.now;
            let agent = &mut self.agents[me];
            let started = Instant::now();
            let outputs = agent.router.on_session_up(peer_id, now);
            agent.busy += started.elapsed();
            self.handle(me, outputs);
            self.reschedule(me);
        }
    }

    fn tick(&mut self, agent: usize, at: Duration) {
        let state = &mut self.agents[agent];
        if !state.alive || state.tick_at != Some(at) {
            return; // superseded by an earlier tick, or dead
        }
        state.tick_at = None;
        let started = Instant::now();
        let outputs = state.router.on_tick(self.now);
        let elapsed = started.elapsed();
        state.busy += elapsed;
        self.timings.tick.record_duration(elapsed);
        self.handle(agent, outputs);
        self.reschedule(agent);
    }

    fn deliver(&mut self, to: usize, from: usize, slot: u32) {
        let Some(message) = self.in_flight.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        self.free_slots.push(slot);
        if !self.agents[to].alive {
            self.undeliverable += 1;
            return;
        }
        let from_id = self.agents[from].id;
        let now = self.now;
        let outputs = match message {
            Message::Hello(hello) => {
                let agent = &mut self.agents[to];
                let started = Instant::now();
                let outputs = agent.router.on_hello(from_id, hello, now);
                let elapsed = started.elapsed();
                agent.busy += elapsed;
                self.timings.hello.record_duration(elapsed);
                outputs
            }
            Message::Originator(originator) => {
                let (requested, performed) = (
                    self.agents[to].router.verifications_performed(),
                    self.cache.performed(to),
                );
                let agent = &mut self.agents[to];
                let started = Instant::now();
                let outputs = agent.router.on_originator(from_id, originator, now);
                let elapsed = started.elapsed();
                agent.busy += elapsed;
                let histogram = if self.cache.performed(to) > performed {
                    &mut self.timings.originator_verified
                } else if agent.router.verifications_performed() > requested {
                    &mut self.timings.originator_cached
                } else {
                    &mut self.timings.originator_duplicate
                };
                histogram.record_duration(elapsed);
                outputs
            }
            // Data and any other message type: not routing's business here.
            _ => Vec::new(),
        };
        self.agents[to].traffic.received += 1;
        self.handle(to, outputs);
        self.reschedule(to);
    }

    fn reschedule(&mut self, agent: usize) {
        let state = &mut self.agents[agent];
        if !state.alive {
            return;
        }
        let deadline = state.router.next_deadline().max(self.now);
        if state.tick_at.is_none_or(|queued| deadline < queued) {
            state.tick_at = Some(deadline);
            self.queue.push(deadline, Event::Tick(agent as u32));
        }
    }

    fn handle(&mut self, agent: usize, outputs: Vec<Output>) {
        for output in outputs {
            match output {
                Output::SendHello { peer, hello } => self.send(agent, peer, Message::Hello(hello)),
                Output::Forward { peer, originator } => {
                    self.send(agent, peer, Message::Originator(originator))
                }
                Output::NeighbourDead { peer, .. } => {
                    if let Some(&peer) = self.index.get(&peer) {
                        self.deaths.push((self.now, agent as u32, peer));
                    }
                }
                Output::RouteChanged {
                    destination,
                    old_next_hop,
                    new_next_hop,
                } => self.route_changed(agent, destination, old_next_hop.is_some(), new_next_hop.is_some()),
                Output::Rejected { reason, .. } => {
                    *self.rejections.entry(reason.label()).or_default() += 1;
                }
                Output::OriginateDue => {
                    if std::mem::take(&mut self.agents[agent].defer_next_advertisement) {
                        let micros = self.desync_interval.as_micros() as u64;
                        let delay = Duration::from_micros(self.desync_rng.below(micros.max(1)));
                        self.queue.push(self.now + delay, Event::Originate(agent as u32));
                    } else {
                        self.originate(agent);
                    }
                }
            }
        }
    }

    fn originate(&mut self, agent: usize) {
        let now = self.now;
        let state = &mut self.agents[agent];
        let started = Instant::now();
        let result = state.router.originate(now, &state.signer);
        let elapsed = started.elapsed();
        state.busy += elapsed;
        self.slice().originated += 1;
        self.timings.originate.record_duration(elapsed);
        match result {
            Ok(outputs) => self.handle(agent, outputs),
            Err(_) => self.originate_errors += 1,
        }
    }

    fn slice(&mut self) -> &mut Slice {
        let index = (self.now.as_micros() / SLICE.as_micros()) as usize;
        if self.timeline.len() <= index {
            self.timeline.resize(index + 1, Slice::default());
        }
        &mut self.timeline[index]
    }

    fn route_changed(&mut self, agent: usize, destination: NodeId, had: bool, has: bool) {
        let slice = self.slice();
        slice.route_changes += 1;
        if had && !has {
            slice.route_losses += 1;
        }
        let everyone = self.agents.len() as u32 - 1;
        let state = &mut self.agents[agent];
        match (had, has) {
            (false, true) => {
                state.reachable += 1;
                if state.reachable == everyone {
                    self.complete += 1;
                    if self.complete == self.agents.len() {
                        if self.converged_at.is_none() {
                            self.converged_at = Some(self.now);
                            self.sent_before_convergence = Some(Slice::total(&self.timeline));
                        }
                        self.complete_since = Some(self.now);
                    }
                }
            }
            (true, false) => {
                if state.reachable == everyone {
                    self.complete -= 1;
                    self.complete_since = None;
                }
                state.reachable -= 1;
                self.route_losses += 1;
            }
            _ => {}
        }
        if let Some(tracker) = &mut self.tracker
            && let Some(&destination) = self.index.get(&destination)
        {
            let changed = &mut tracker.changed[destination as usize];
            if changed.is_empty() {
                tracker.dirty_list.push(destination);
            }
            changed.push(agent as u32);
        }
    }

    fn send(&mut self, from: usize, to: NodeId, message: Message) {
        let Some(&to) = self.index.get(&to) else {
            self.undeliverable += 1;
            return;
        };
        let Some(link) = self.agents[from]
            .links
            .iter()
            .find(|link| link.peer == to)
            .copied()
        else {
            self.undeliverable += 1; // no such link: the router addressed a non-neighbour
            return;
        };
        self.scratch.clear();
        if encode_frame(&message, &mut self.scratch).is_err() {
            self.decode_errors += 1;
            return;
        }
        let len = self.scratch.len() as u64;
        self.sent += 1;
        if self.sent.is_multiple_of(self.decode_every) {
            let started = Instant::now();
            let decoded = decode_frame(&self.scratch);
            let elapsed = started.elapsed();
            self.decode_checks += 1;
            let is_originator = matches!(message, Message::Originator(_));
            match decoded {
                Ok((decoded, used)) if decoded == message && used == self.scratch.len() => {
                    if is_originator {
                        self.timings.decode_originator.record_duration(elapsed);
                    }
                }
                _ => self.decode_errors += 1,
            }
        }
        let traffic = &mut self.agents[from].traffic;
        match message {
            Message::Hello(_) => {
                traffic.hello_messages += 1;
                traffic.hello_bytes += len;
            }
            _ => {
                traffic.originator_messages += 1;
                traffic.originator_bytes += len;
            }
        }
        let infinite = matches!(&message, Message::Originator(o) if o.envelope.path_cost == u32::MAX);
        if let Message::Originator(_) = &message {
            let slice = self.slice();
            slice.adverts += 1;
            slice.advert_bytes += len;
            slice.infinite += u64::from(infinite);
        }
        if self.loss > 0.0 && self.loss_rng.next_f64() < self.loss {
            self.lost_messages += 1;
            return;
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.in_flight[slot as usize] = Some(message);
                slot
            }
            None => {
                self.in_flight.push(Some(message));
                (self.in_flight.len() - 1) as u32
            }
        };
        self.queue.push(
            self.now + link.latency,
            Event::Deliver {
                to,
                from: from as u32,
                slot,
            },
        );
    }

    /// Where the chain of next hops from `source` towards `destination` ends. An agent marked
    /// in `dead` ends it as `Dead`. Results are memoised per destination in `self.memo`, which
    /// the caller clears with [`Mesh::clear_memo`] before moving to another destination.
    pub fn follow(&mut self, source: usize, destination: usize, dead: &[bool]) -> PathEnd {
        let target = self.agents[destination].id;
        let mut stack: Vec<usize> = Vec::new();
        let mut at = source;
        let end = loop {
            if at == destination {
                break PathEnd::Reached;
            }
            if dead[at] {
                break PathEnd::Dead;
            }
            match self.memo[at] {
                MEMO_UNKNOWN => {}
                MEMO_VISITING => break PathEnd::Loop,
                code => break memo_end(code).unwrap_or(PathEnd::Loop),
            }
            self.memo[at] = MEMO_VISITING;
            self.touched.push(at as u32);
            stack.push(at);
            match self.agents[at].router.next_hop(&target) {
                None => break PathEnd::NoRoute,
                Some(next) => match self.index.get(&next) {
                    Some(&next) => at = next as usize,
                    None => break PathEnd::NoRoute,
                },
            }
        };
        for node in stack {
            self.memo[node] = memo_code(end);
        }
        end
    }

    pub fn clear_memo(&mut self) {
        for node in self.touched.drain(..) {
            self.memo[node as usize] = MEMO_UNKNOWN;
        }
    }

    /// The whole path from `source` towards `destination` (no memo), and where it ends.
    fn walk(&mut self, source: usize, destination: usize, dead: &[bool], path: &mut Vec<u32>) -> PathEnd {
        let target = self.agents[destination].id;
        path.clear();
        let mut at = source;
        loop {
            if path.len() > self.agents.len() || path.contains(&(at as u32)) {
                return PathEnd::Loop;
            }
            path.push(at as u32);
            if at == destination {
                return PathEnd::Reached;
            }
            if dead[at] {
                return PathEnd::Dead;
            }
            match self.agents[at]
                .router
                .next_hop(&target)
                .and_then(|next| self.index.get(&next))
            {
                Some(&next) => at = next as usize,
                None => return PathEnd::NoRoute,
            }
        }
    }

    /// Kills `victims` silently (a crash: no session ends, their neighbours only notice that
    /// the hellos stop). Messages already on the wire still arrive. Before that, every
    /// `(source, destination)` pair of surviving agents whose forwarding path goes through a
    /// victim is recorded, and followed from then on. Returns how many pairs that is.
    pub fn kill(&mut self, victims: &[usize]) -> usize {
        let n = self.agents.len();
        let mut dead = vec![false; n];
        for &victim in victims {
            dead[victim] = true;
        }
        let mut pairs: Vec<Vec<PairState>> = vec![Vec::new(); n];
        let mut paths: Vec<Vec<Vec<u32>>> = vec![Vec::new(); n];
        let mut affected = 0;
        let mut path = Vec::new();
        for destination in 0..n {
            if dead[destination] || !self.agents[destination].alive {
                continue;
            }
            for source in 0..n {
                if source == destination || dead[source] || !self.agents[source].alive {
                    continue;
                }
                if self.follow(source, destination, &dead) == PathEnd::Dead {
                    pairs[destination].push(PairState {
                        source: source as u32,
                        valid: false,
                        first_valid: None,
                        valid_since: None,
                        flaps: 0,
                    });
                    affected += 1;
                }
            }
            self.clear_memo();
            for pair in &pairs[destination] {
                self.walk(pair.source as usize, destination, &dead, &mut path);
                paths[destination].push(path.clone());
            }
        }
        for &victim in victims {
            self.agents[victim].alive = false;
        }
        self.tracker = Some(RerouteTracker {
            dead,
            pairs,
            paths,
            changed: vec![Vec::new(); n],
            dirty_list: Vec::new(),
            mark: vec![false; n],
            last_check: self.now,
            invalid: affected,
            loops: 0,
        });
        affected
    }

    fn check_reroutes(&mut self) {
        let Some(mut tracker) = self.tracker.take() else {
            return;
        };
        tracker.last_check = self.now;
        let dirty = std::mem::take(&mut tracker.dirty_list);
        let mut path = Vec::new();
        for &destination in &dirty {
            let d = destination as usize;
            let changed = std::mem::take(&mut tracker.changed[d]);
            for &agent in &changed {
                tracker.mark[agent as usize] = true;
            }
            let mut pairs = std::mem::take(&mut tracker.pairs[d]);
            let mut paths = std::mem::take(&mut tracker.paths[d]);
            for (pair, last_path) in pairs.iter_mut().zip(paths.iter_mut()) {
                if !last_path.iter().any(|&agent| tracker.mark[agent as usize]) {
                    continue;
                }
                let end = self.walk(pair.source as usize, d, &tracker.dead, &mut path);
                std::mem::swap(last_path, &mut path);
                if end == PathEnd::Loop {
                    tracker.loops += 1;
                }
                let valid = end == PathEnd::Reached;
                if valid && !pair.valid {
                    pair.valid = true;
                    pair.valid_since = Some(self.now);
                    pair.first_valid.get_or_insert(self.now);
                    tracker.invalid -= 1;
                } else if !valid && pair.valid {
                    pair.valid = false;
                    pair.valid_since = None;
                    pair.flaps += 1;
                    tracker.invalid += 1;
                }
            }
            for &agent in &changed {
                tracker.mark[agent as usize] = false;
            }
            tracker.pairs[d] = pairs;
            tracker.paths[d] = paths;
            // Keep the allocation for the next changes.
            tracker.changed[d] = changed;
            tracker.changed[d].clear();
        }
        tracker.dirty_list = dirty;
        tracker.dirty_list.clear();
        self.tracker = Some(tracker);
    }

    /// Affected pairs whose path does not (yet) avoid the dead agents, as of the last check.
    pub fn unrerouted_pairs(&self) -> usize {
        self.tracker.as_ref().map_or(0, |tracker| tracker.invalid)
    }

    /// Checks the affected paths now, whatever the resolution.
    pub fn flush_reroute_checks(&mut self) {
        if self
            .tracker
            .as_ref()
            .is_some_and(|tracker| !tracker.dirty_list.is_empty())
        {
            self.check_reroutes();
        }
    }

    /// Every affected pair, and how many forwarding loops the checks met.
    pub fn reroute_pairs(&self) -> (Vec<PairState>, u64) {
        self.tracker.as_ref().map_or((Vec::new(), 0), |tracker| {
            (tracker.pairs.iter().flatten().copied().collect(), tracker.loops)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::verify::generate_keys;

    fn mk_mesh(topology: &Topology, boot_spread: Duration) -> Mesh {
        let (signers, trusted) = generate_keys(topology.len()).unwrap();
        let cache = Rc::new(VerifyCache::new(topology.len(), trusted, 1024));
        let config = MeshConfig {
            router: RouterConfig::default(),
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            loss: 0.0,
            boot_spread,
            session_setup_latencies: 2,
            session_jitter: Duration::from_millis(100),
            decode_every: 1,
            seed: 1,
        };
        Mesh::new(topology, signers, cache, &config)
    }

    #[test]
    fn the_id_hasher_spreads_node_ids() {
        let map: HashMap<NodeId, u32, BuildHasherDefault<IdHasher>> =
            (0..100).map(|i| (crate::verify::node_id(i), i as u32)).collect();
        assert_eq!(map.len(), 100);
        assert_eq!(map.get(&crate::verify::node_id(42)), Some(&42));
    }

    #[test]
    fn a_small_grid_converges_with_real_signatures_verified_once_per_advertisement() {
        let topology = Topology::grid(9);
        let mut mesh = mk_mesh(&topology, Duration::from_millis(200));
        assert!(mesh.run_until(Duration::from_secs(3)));
        let converged = mesh.converged_at.expect("converges");
        assert!(converged < Duration::from_secs(2), "{converged:?}");
        assert_eq!(mesh.complete_agents(), 9);
        assert_eq!(mesh.decode_errors + mesh.originate_errors, 0);
        assert!(
            mesh.decode_checks > 1000,
            "every frame was decoded again and matched"
        );
        // Every agent asked for verifications; the mesh performed each distinct one once.
        let cache = mesh.cache();
        assert!((0..9).all(|agent| cache.requested(agent) == mesh.router(agent).verifications_performed()));
        assert!(cache.total_performed() < cache.total_requested());
        // And every path is loop-free and complete.
        let none = vec![false; 9];
        for destination in 0..9 {
            for source in 0..9 {
                assert_eq!(mesh.follow(source, destination, &none), PathEnd::Reached);
            }
            mesh.clear_memo();
        }
    }

    #[test]
    fn killing_the_centre_of_a_grid_is_detected_by_its_four_neighbours_and_routed_around() {
        let topology = Topology::grid(9); // the centre, 4, is on every path between 1 and 7
        let mut mesh = mk_mesh(&topology, Duration::ZERO);
        assert!(mesh.run_until(Duration::from_secs(3)));
        let kill_at = mesh.now();
        let affected = mesh.kill(&[4]);
        assert!(affected >= 2, "1→7 and 7→1 at least, got {affected}");
        assert!(mesh.run_until(kill_at + Duration::from_secs(3)));
        mesh.flush_reroute_checks();
        let mut detectors: Vec<u32> = mesh
            .deaths
            .iter()
            .filter(|(when, _, peer)| *when > kill_at && *peer == 4)
            .map(|(_, at, _)| *at)
            .collect();
        detectors.sort_unstable();
        assert_eq!(detectors, [1, 3, 5, 7]);
        for (when, _, _) in &mesh.deaths {
            let detection = *when - kill_at;
            assert!(detection <= Duration::from_millis(310), "{detection:?}");
        }
        let (pairs, loops) = mesh.reroute_pairs();
        assert_eq!(loops, 0);
        assert!(pairs.iter().all(|pair| pair.valid), "{pairs:?}");
        assert_eq!(mesh.unrerouted_pairs(), 0);
    }

    #[test]
    fn agents_started_together_advertise_together_until_their_phases_are_spread() {
        let topology = Topology::grid(16);
        let mut mesh = mk_mesh(&topology, Duration::ZERO);
        assert!(mesh.run_until(Duration::from_millis(2500)));
        let busy_slices = |mesh: &Mesh, from: usize, to: usize| {
            mesh.timeline[from..to.min(mesh.timeline.len())]
                .iter()
                .filter(|slice| slice.originated > 0)
                .count()
        };
        // Locked together by the cold start (neighbours appearing within 100 ms): at most two
        // 100 ms slices of each second.
        assert!(busy_slices(&mesh, 5, 15) <= 2, "{:?}", &mesh.timeline[5..15]);
        mesh.desync_phases(Duration::from_secs(1), 1);
        assert!(mesh.run_until(Duration::from_secs(4)));
        assert!(busy_slices(&mesh, 30, 40) >= 6, "{:?}", &mesh.timeline[30..40]);
    }

    #[test]
    fn frames_are_counted_at_their_encoded_size() {
        let topology = Topology::grid(2);
        let mut mesh = mk_mesh(&topology, Duration::ZERO);
        assert!(mesh.run_until(Duration::from_secs(2)));
        let traffic = mesh.traffic(0);
        assert!(traffic.originator_messages > 0);
        // A frame header, the envelope and lengths, the signed body, a 3309-byte signature.
        let per_message = traffic.originator_bytes / traffic.originator_messages;
        assert!(
            (3309 + 8 + 9 + 55..3309 + 8 + 9 + 55 + 36 * 2 + 32).contains(&per_message),
            "{per_message}"
        );
    }
}
