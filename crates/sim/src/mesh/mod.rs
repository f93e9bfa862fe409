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
//!
//! Here: the configuration, the agents and the [`Mesh`] itself, its constructor and accessors.
//! - `events`: the event loop, and the counting it does.
//! - `paths`: following the chains of next hops.
//! - `failures`: killing agents, and tracking the reroutes around them.
//! - `traffic`: what is counted, per agent and mesh-wide.
//! - `id_hasher`: the hasher of the maps keyed by node id.

mod events;
mod failures;
mod id_hasher;
mod paths;
mod traffic;

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use x0tta6bl4_routing::{NodeId, Router, RouterConfig};
use x0tta6bl4_wire::Message;

use crate::queue::EventQueue;
use crate::rng::Rng;
use crate::topology::Topology;
use crate::verify::{SimSigner, SimVerifier, VerifyCache};
use events::Event;
use failures::RerouteTracker;
use id_hasher::IdMap;
use paths::MEMO_UNKNOWN;

pub use crate::memory::process_memory;
pub use failures::{PairState, REROUTE_RESOLUTION};
pub use id_hasher::IdHasher;
pub use paths::PathEnd;
pub use traffic::{SLICE, Slice, Timings, Traffic};

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

    /// Seqno requests sent, received and passed on, over all agents, by outcome.
    pub fn seqno_requests(&self) -> Vec<(&'static str, u64)> {
        let mut total: std::collections::BTreeMap<&'static str, u64> = std::collections::BTreeMap::new();
        for agent in &self.agents {
            for (outcome, count) in &agent.router.counters().seqno_requests {
                *total.entry(outcome.label()).or_default() += count;
            }
        }
        total.into_iter().collect()
    }

    pub fn busy(&self, agent: usize) -> Duration {
        self.agents[agent].busy
    }

    pub fn queued_events(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod testing {
    use super::*;
    use crate::verify::generate_keys;

    pub(super) fn mk_mesh(topology: &Topology, boot_spread: Duration) -> Mesh {
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
}
