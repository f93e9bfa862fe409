//! One measured run: a cold start until every agent has a route to every other, a quiet
//! period, then K agents killed at once, measuring how fast their neighbours notice and how
//! fast every route through them moves elsewhere.

use std::mem::size_of;
use std::rc::Rc;
use std::time::{Duration, Instant};

use x0tta6bl4_routing::{Candidate, NeighbourStatus, RouterConfig};
use x0tta6bl4_wire::Originator;

use crate::mesh::{Mesh, MeshConfig, Slice, Timings, Traffic, process_memory};
use crate::rng::Rng;
use crate::stats::{Histogram, percentile};
use crate::topology::{Topology, TopologyKind};
use crate::verify::{VerifyCache, generate_keys};

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub nodes: usize,
    pub topology: TopologyKind,
    pub seed: u64,
    /// Target mean degree of geometric graphs.
    pub degree: f64,
    pub latency: (Duration, Duration),
    pub loss: f64,
    /// Agents killed at once.
    pub kill: usize,
    pub originator_interval: Duration,
    /// Routers ask for a newer sequence number when only unfeasible routes are left
    /// (`RouterConfig::seqno_requests`); off for the baseline they are measured against.
    pub seqno_requests: bool,
    /// Agents start at uniformly random times within this window (0: all at once).
    pub boot_spread: Duration,
    /// Each neighbour session comes up after a random delay below this (its own hello phase).
    pub session_jitter: Duration,
    /// After convergence, move every agent's advertisement phase to a random point of the
    /// interval (see [`Mesh::desync_phases`]).
    pub desync: bool,
    /// Quiet time between convergence and the kill; its last originator interval is the
    /// steady-state window in which traffic, latency and CPU are measured.
    pub settle: Duration,
    /// Give up waiting for convergence this long after the last agent started.
    pub converge_limit: Duration,
    /// Give up waiting for detections and reroutes this long after the kill.
    pub observe: Duration,
    /// Stop the run when it has taken this much wall-clock time...
    pub max_wall: Duration,
    /// ...or when the process's resident memory passes this many bytes.
    pub max_rss: Option<u64>,
    /// Decode one sent frame in this many again and check it (1: every frame).
    pub decode_every: u64,
    /// Print progress to stderr this often (wall clock).
    pub progress: Option<Duration>,
}

/// p50 and p99 of a set of durations, and how many there were.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub count: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
    pub max: Option<Duration>,
}

impl Spread {
    fn of(mut samples: Vec<Duration>) -> Self {
        Spread {
            count: samples.len(),
            p50: percentile(&mut samples, 50.0),
            p99: percentile(&mut samples, 99.0),
            max: samples.last().copied(),
        }
    }
}

/// Everything measured in one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    pub mean_degree: f64,
    pub diameter: u32,
    pub mean_hops: f64,
    pub topology_attempts: u32,
    /// Set when the run did not finish, and why.
    pub incomplete: Option<String>,
    pub last_boot: Duration,
    /// Convergence time after the last agent started.
    pub converged_after_last_boot: Option<Duration>,
    /// Share of (source, destination) pairs with a route when convergence was declared or
    /// given up on.
    pub reachable_fraction: f64,
    /// Mesh-wide advertisement totals from the start to the first convergence (to the end of
    /// the run if it never converged).
    pub cold_start: Slice,
    /// Routes lost between convergence and the kill.
    pub route_losses_while_quiet: u64,
    /// Since when, at the kill, every agent had had a route to every other without a break
    /// (after the last start).
    pub complete_since_at_kill: Option<Duration>,
    pub victims: Vec<usize>,
    pub expected_detections: usize,
    pub detection: Spread,
    pub undetected: usize,
    /// `NeighbourDead` for a neighbour that was alive, over the whole run.
    pub false_deaths: usize,
    pub affected_pairs: usize,
    /// Time from the kill until the pair's path avoided the dead agents for good.
    pub reroute: Spread,
    /// Time from the kill until the pair's path first avoided them.
    pub reroute_first: Spread,
    pub unrerouted: usize,
    pub reroute_flaps: u64,
    pub loops: u64,
    pub window: Duration,
    pub timings: Timings,
    /// Per agent per second of the steady-state window.
    pub messages_per_agent_s: f64,
    pub bytes_per_agent_s: f64,
    pub originator_bytes_per_agent_s: f64,
    pub max_bytes_per_agent_s: f64,
    pub originator_frame_bytes: f64,
    pub verifications_requested_per_agent_s: f64,
    pub verifications_performed_per_agent_s: f64,
    /// Share of one core spent in the router, as measured (shared verifications cost a cache
    /// lookup), mean and busiest agent.
    pub cpu_measured: (f64, f64),
    /// The same with every requested verification charged at the measured ML-DSA-65 verify
    /// time (what a real agent spends).
    pub cpu_real: (f64, f64),
    pub verify_time: Histogram,
    pub memory_per_agent_estimate: f64,
    pub rss_bytes: Option<u64>,
    /// The process's peak resident memory so far (over every run of this process).
    pub peak_rss_bytes: Option<u64>,
    /// Wall time of each phase (set-up, cold start, quiet period, failure).
    pub phase_walls: Vec<(&'static str, Duration)>,
    pub rejections: Vec<(&'static str, u64)>,
    /// Seqno requests over all agents, by outcome.
    pub seqno_requests: Vec<(&'static str, u64)>,
    /// Sent frames decoded again and compared with the message delivered, and how many
    /// failed that (or failed to encode, or to be signed).
    pub wire_checks: u64,
    pub wire_errors: u64,
    /// Mesh-wide counts per 100 ms of simulated time.
    pub timeline: Vec<Slice>,
    /// When the victims were killed.
    pub kill_at: Option<Duration>,
    pub simulated: Duration,
    pub events: u64,
    pub setup_wall: Duration,
    pub wall: Duration,
}

impl Outcome {
    /// Wall-clock seconds per simulated second, the set-up (key generation) excluded.
    pub fn wall_per_simulated_second(&self) -> f64 {
        (self.wall - self.setup_wall).as_secs_f64() / self.simulated.as_secs_f64().max(1e-9)
    }

    /// Per-message router latency as a real agent would see it: duplicates as measured, and
    /// every advertisement it asks to verify at the cost of one measured with a real
    /// verification inside.
    pub fn real_agent_originator_latency(&self) -> Histogram {
        let mut mix = self.timings.originator_duplicate.clone();
        let verified = &self.timings.originator_verified;
        let asked = self.timings.originator_cached.count() + verified.count();
        if verified.count() > 0 {
            mix.merge_scaled(verified, asked as f64 / verified.count() as f64);
        }
        mix
    }
}

/// Bytes one router holds, estimated from what its public queries show: per destination its
/// entry, a route entry per neighbour offering a path, and one stored advertisement per
/// distinct sequence number offered (a real agent decodes its own copy: signed bytes,
/// signature and parsed body); the dedup cache at its fill level; the neighbour table.
fn router_memory_estimate(mesh: &Mesh, agent: usize, dedup_entries: u64) -> f64 {
    // Map nodes and per-destination state (window, feasibility, advertised, selection).
    const DESTINATION: usize = 64 + 32 + 160;
    // A BTreeMap entry: key, value and about a third of a node's overhead.
    const ROUTE_ENTRY: usize = 32 + 32 + 24;
    // HashMap entry ((NodeId, u64) → digest) + control byte at 7/8 load + the FIFO entry.
    const DEDUP_ENTRY: usize = (32 + 8 + 32 + 1) * 8 / 7 + 40;
    const NEIGHBOUR: usize = 32 + 512;
    let router = mesh.router(agent);
    let mut bytes = router.neighbours().len() * (NEIGHBOUR + size_of::<NeighbourStatus>());
    for destination in 0..mesh.len() {
        let candidates: Vec<Candidate> = router.candidates(&mesh.id(destination));
        if candidates.is_empty() {
            continue;
        }
        bytes += DESTINATION + candidates.len() * ROUTE_ENTRY;
        let mut seqs: Vec<u64> = candidates.iter().map(|candidate| candidate.seq).collect();
        seqs.sort_unstable();
        seqs.dedup();
        let body = router.originator_body(&mesh.id(destination));
        let body_heap = body.map_or(0, |body| body.endpoint.len() + body.neighbours.len() * 36);
        let signed = body.map_or(0, |body| 55 + body.endpoint.len() + body.neighbours.len() * 36);
        let message = size_of::<Originator>() + body_heap + signed + 3309 + 2 * 32;
        // The stored messages by seq, plus the newest one kept for its body.
        bytes += (seqs.len() + 1) * message;
    }
    bytes as f64 + dedup_entries as f64 * DEDUP_ENTRY as f64
}

fn draw_victims(topology: &Topology, count: usize, seed: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed, 4);
    let count = count.min(topology.len().saturating_sub(2));
    let mut victims = Vec::new();
    for _ in 0..1000 {
        victims = rng.sample(topology.len(), count);
        let mut removed = vec![false; topology.len()];
        for &victim in &victims {
            removed[victim] = true;
        }
        // Kill only what leaves the survivors connected: every affected pair then has a
        // route to find, and a pair left unrerouted is the protocol's fault.
        if topology.is_connected_without(&removed) {
            break;
        }
    }
    victims
}

/// Runs one scenario to the end (or to its wall-clock limit).
pub fn run(scenario: &Scenario) -> anyhow::Result<Outcome> {
    let wall_started = Instant::now();
    let n = scenario.nodes;
    let topology = Topology::build(scenario.topology, n, scenario.degree, scenario.seed);
    let (signers, trusted) = generate_keys(n)?;
    let cache = Rc::new(VerifyCache::new(n, trusted, (4 * n).max(4096)));
    let router = RouterConfig {
        originator_interval: scenario.originator_interval,
        seqno_requests: scenario.seqno_requests,
        ..RouterConfig::default()
    };
    let neighbour_timeout = router.neighbour_timeout;
    let dedup_capacity = router.dedup_cache_size as u64;
    let config = MeshConfig {
        router,
        latency: scenario.latency,
        loss: scenario.loss,
        boot_spread: scenario.boot_spread,
        session_setup_latencies: 2,
        session_jitter: scenario.session_jitter,
        decode_every: scenario.decode_every,
        seed: scenario.seed,
    };
    let mut mesh = Mesh::new(&topology, signers, cache, &config);
    mesh.set_wall_deadline(Some(wall_started + scenario.max_wall));
    mesh.set_memory_limit(scenario.max_rss);
    mesh.set_progress(scenario.progress);
    let setup_wall = wall_started.elapsed();
    let mut outcome = Outcome {
        scenario: scenario.clone(),
        mean_degree: topology.mean_degree(),
        diameter: topology.diameter(),
        mean_hops: topology.mean_distance(),
        topology_attempts: topology.attempts,
        incomplete: None,
        last_boot: mesh.last_boot(),
        converged_after_last_boot: None,
        reachable_fraction: 0.0,
        route_losses_while_quiet: 0,
        cold_start: Slice::default(),
        complete_since_at_kill: None,
        victims: Vec::new(),
        expected_detections: 0,
        detection: Spread::default(),
        undetected: 0,
        false_deaths: 0,
        affected_pairs: 0,
        reroute: Spread::default(),
        reroute_first: Spread::default(),
        unrerouted: 0,
        reroute_flaps: 0,
        loops: 0,
        window: Duration::ZERO,
        timings: Timings::default(),
        messages_per_agent_s: 0.0,
        bytes_per_agent_s: 0.0,
        originator_bytes_per_agent_s: 0.0,
        max_bytes_per_agent_s: 0.0,
        originator_frame_bytes: 0.0,
        verifications_requested_per_agent_s: 0.0,
        verifications_performed_per_agent_s: 0.0,
        cpu_measured: (0.0, 0.0),
        cpu_real: (0.0, 0.0),
        verify_time: Histogram::default(),
        memory_per_agent_estimate: 0.0,
        rss_bytes: None,
        peak_rss_bytes: None,
        phase_walls: vec![("set-up", setup_wall)],
        rejections: Vec::new(),
        seqno_requests: Vec::new(),
        wire_checks: 0,
        wire_errors: 0,
        timeline: Vec::new(),
        kill_at: None,
        simulated: Duration::ZERO,
        events: 0,
        setup_wall,
        wall: Duration::ZERO,
    };
    let step = Duration::from_millis(10);
    let finish = |mut outcome: Outcome, mesh: &Mesh, why: Option<String>| {
        outcome.incomplete = why;
        outcome.simulated = mesh.now();
        outcome.events = mesh.events;
        outcome.rejections = mesh.rejections.iter().map(|(k, v)| (*k, *v)).collect();
        outcome.seqno_requests = mesh.seqno_requests();
        outcome.verify_time = mesh.cache().verify_times();
        outcome.wire_checks = mesh.decode_checks;
        outcome.timeline = mesh.timeline.clone();
        outcome.cold_start = mesh
            .sent_before_convergence
            .unwrap_or_else(|| Slice::total(&mesh.timeline));
        outcome.wire_errors = mesh.decode_errors + mesh.originate_errors;
        outcome.wall = wall_started.elapsed();
        outcome.peak_rss_bytes = process_memory("VmHWM:");
        // The phase the run ended in takes the wall time not accounted for yet.
        let names = ["set-up", "cold start", "quiet period", "failure"];
        let accounted: Duration = outcome.phase_walls.iter().map(|(_, wall)| *wall).sum();
        let last = outcome.wall.saturating_sub(accounted);
        let name = names.get(outcome.phase_walls.len()).copied().unwrap_or("failure");
        outcome.phase_walls.push((name, last));
        outcome
    };
    let out_of_time = |mesh: &Mesh, phase: &str| {
        Some(format!(
            "{} ({} s, {:.1} GiB) reached {phase}, at {:.3} s simulated",
            mesh.stopped_by.unwrap_or("limit"),
            scenario.max_wall.as_secs(),
            scenario.max_rss.unwrap_or(0) as f64 / (1u64 << 30) as f64,
            mesh.now().as_secs_f64()
        ))
    };

    // 1. Cold start.
    let give_up = mesh.last_boot() + scenario.converge_limit;
    while mesh.converged_at.is_none() && mesh.now() < give_up {
        let next = mesh.now() + step;
        if !mesh.run_until(next) {
            outcome.reachable_fraction = mesh.total_routes() as f64 / (n * (n - 1)).max(1) as f64;
            let why = out_of_time(&mesh, "before convergence");
            return Ok(finish(outcome, &mesh, why));
        }
    }
    outcome.reachable_fraction = mesh.total_routes() as f64 / (n * (n - 1)).max(1) as f64;
    outcome
        .phase_walls
        .push(("cold start", wall_started.elapsed() - setup_wall));
    outcome.converged_after_last_boot = mesh.converged_at.map(|at| at.saturating_sub(mesh.last_boot()));
    let converged = mesh.converged_at.unwrap_or(mesh.now());

    // 2. Quiet period; its last interval is the steady-state window.
    if scenario.desync {
        mesh.desync_phases(scenario.originator_interval, scenario.seed);
    }
    let kill_at = converged + scenario.settle;
    let window_start = kill_at - scenario.originator_interval.min(scenario.settle);
    let losses_at_convergence = mesh.route_losses;
    if !mesh.run_until(window_start) {
        let why = out_of_time(&mesh, "while settling");
        return Ok(finish(outcome, &mesh, why));
    }
    let traffic_before: Vec<Traffic> = (0..n).map(|agent| mesh.traffic(agent)).collect();
    let busy_before: Vec<Duration> = (0..n).map(|agent| mesh.busy(agent)).collect();
    let asked_before: Vec<u64> = (0..n).map(|agent| mesh.cache().requested(agent)).collect();
    let done_before = mesh.cache().total_performed();
    mesh.timings = Timings::default();
    if !mesh.run_until(kill_at) {
        let why = out_of_time(&mesh, "in the steady-state window");
        return Ok(finish(outcome, &mesh, why));
    }
    outcome.route_losses_while_quiet = mesh.route_losses - losses_at_convergence;
    outcome.complete_since_at_kill = mesh.complete_since.map(|at| at.saturating_sub(mesh.last_boot()));
    outcome.window = kill_at - window_start;
    outcome.timings = mesh.timings.clone();
    let seconds = outcome.window.as_secs_f64();
    let verify_mean = mesh.cache().verify_times().mean().unwrap_or(0.0) * 1e-9;
    let mut traffic_sum = Traffic::default();
    let mut max_bytes = 0u64;
    let (mut cpu_sum, mut cpu_max, mut real_sum, mut real_max) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
    let mut asked_sum = 0u64;
    for agent in 0..n {
        let traffic = mesh.traffic(agent).minus(&traffic_before[agent]);
        traffic_sum.hello_messages += traffic.hello_messages;
        traffic_sum.hello_bytes += traffic.hello_bytes;
        traffic_sum.originator_messages += traffic.originator_messages;
        traffic_sum.originator_bytes += traffic.originator_bytes;
        traffic_sum.request_messages += traffic.request_messages;
        traffic_sum.request_bytes += traffic.request_bytes;
        max_bytes = max_bytes.max(traffic.bytes());
        let busy = (mesh.busy(agent) - busy_before[agent]).as_secs_f64();
        let asked = mesh.cache().requested(agent) - asked_before[agent];
        asked_sum += asked;
        cpu_sum += busy;
        cpu_max = cpu_max.max(busy);
        // Charge every verification the agent asked for; its measured busy time already
        // holds the real ones performed for it and a cache lookup for the others.
        let real = busy + asked as f64 * verify_mean;
        real_sum += real;
        real_max = real_max.max(real);
    }
    let per_agent_s = |total: f64| total / n as f64 / seconds;
    outcome.messages_per_agent_s = per_agent_s(traffic_sum.messages() as f64);
    outcome.bytes_per_agent_s = per_agent_s(traffic_sum.bytes() as f64);
    outcome.originator_bytes_per_agent_s = per_agent_s(traffic_sum.originator_bytes as f64);
    outcome.max_bytes_per_agent_s = max_bytes as f64 / seconds;
    outcome.originator_frame_bytes =
        traffic_sum.originator_bytes as f64 / traffic_sum.originator_messages.max(1) as f64;
    outcome.verifications_requested_per_agent_s = per_agent_s(asked_sum as f64);
    outcome.verifications_performed_per_agent_s =
        per_agent_s((mesh.cache().total_performed() - done_before) as f64);
    outcome.cpu_measured = (per_agent_s(cpu_sum), cpu_max / seconds);
    outcome.cpu_real = (per_agent_s(real_sum), real_max / seconds);
    let sample: Vec<usize> = Rng::new(scenario.seed, 5).sample(n, 32.min(n));
    outcome.memory_per_agent_estimate = sample
        .iter()
        .map(|&agent| {
            let dedup = mesh.cache().requested(agent).min(dedup_capacity);
            router_memory_estimate(&mesh, agent, dedup)
        })
        .sum::<f64>()
        / sample.len().max(1) as f64;
    outcome.rss_bytes = process_memory("VmRSS:");

    let before_kill: Duration = outcome.phase_walls.iter().map(|(_, wall)| *wall).sum();
    outcome
        .phase_walls
        .push(("quiet period", wall_started.elapsed() - before_kill));

    // 3. The kill.
    let victims = draw_victims(&topology, scenario.kill, scenario.seed);
    let mut is_victim = vec![false; n];
    for &victim in &victims {
        is_victim[victim] = true;
    }
    let expected: Vec<(usize, usize)> = victims
        .iter()
        .flat_map(|&victim| {
            mesh.neighbours(victim)
                .filter(|&neighbour| !is_victim[neighbour])
                .map(move |neighbour| (neighbour, victim))
                .collect::<Vec<_>>()
        })
        .collect();
    outcome.expected_detections = expected.len();
    outcome.affected_pairs = mesh.kill(&victims);
    outcome.kill_at = Some(kill_at);
    outcome.victims = victims;
    let deadline = kill_at + scenario.observe;
    let quiet_after = kill_at + neighbour_timeout + scenario.latency.1 * 2;
    let mut all_done_at: Option<Duration> = None;
    loop {
        let next = mesh.now() + step;
        if !mesh.run_until(next) {
            outcome.incomplete = out_of_time(&mesh, "after the kill");
            break;
        }
        mesh.flush_reroute_checks();
        let detected = mesh
            .deaths
            .iter()
            .filter(|(when, _, peer)| *when >= kill_at && is_victim[*peer as usize])
            .count();
        let done = detected >= expected.len() && mesh.unrerouted_pairs() == 0 && mesh.now() >= quiet_after;
        match (done, all_done_at) {
            (true, None) => all_done_at = Some(mesh.now()),
            (false, Some(_)) => all_done_at = None,
            _ => {}
        }
        // Once everything is rerouted, watch a little longer for routes that break again.
        if all_done_at.is_some_and(|at| mesh.now() >= at + Duration::from_millis(200))
            || mesh.now() >= deadline
        {
            break;
        }
    }
    mesh.flush_reroute_checks();

    let mut detections = Vec::new();
    for &(neighbour, victim) in &expected {
        let first = mesh
            .deaths
            .iter()
            .filter(|(when, at, peer)| {
                *when >= kill_at && *at as usize == neighbour && *peer as usize == victim
            })
            .map(|(when, _, _)| *when - kill_at)
            .min();
        match first {
            Some(detection) => detections.push(detection),
            None => outcome.undetected += 1,
        }
    }
    outcome.detection = Spread::of(detections);
    outcome.false_deaths = mesh
        .deaths
        .iter()
        .filter(|(_, _, peer)| !is_victim[*peer as usize])
        .count();
    let (pairs, loops) = mesh.reroute_pairs();
    outcome.loops = loops;
    outcome.reroute_flaps = pairs.iter().map(|pair| u64::from(pair.flaps)).sum();
    outcome.unrerouted = pairs.iter().filter(|pair| !pair.valid).count();
    outcome.reroute = Spread::of(
        pairs
            .iter()
            .filter_map(|pair| pair.valid_since.map(|at| at - kill_at))
            .collect(),
    );
    outcome.reroute_first = Spread::of(
        pairs
            .iter()
            .filter_map(|pair| pair.first_valid.map(|at| at - kill_at))
            .collect(),
    );
    let why = outcome.incomplete.take();
    Ok(finish(outcome, &mesh, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_geometric_mesh_converges_detects_and_reroutes_within_the_bounds() {
        let scenario = Scenario {
            nodes: 40,
            topology: TopologyKind::Geometric,
            seed: 1,
            degree: 6.0,
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            loss: 0.0,
            kill: 2,
            originator_interval: Duration::from_secs(1),
            seqno_requests: true,
            boot_spread: Duration::from_millis(500),
            session_jitter: Duration::from_millis(100),
            desync: true,
            settle: Duration::from_millis(2500),
            converge_limit: Duration::from_secs(5),
            observe: Duration::from_secs(3),
            max_wall: Duration::from_secs(60),
            max_rss: None,
            decode_every: 1,
            progress: None,
        };
        let outcome = run(&scenario).unwrap();
        assert!(outcome.incomplete.is_none(), "{:?}", outcome.incomplete);
        assert!(outcome.wire_checks > 0);
        assert_eq!(outcome.wire_errors, 0);
        assert!(outcome.converged_after_last_boot.is_some());
        assert_eq!(outcome.reachable_fraction, 1.0);
        assert_eq!(outcome.undetected, 0);
        assert_eq!(outcome.detection.count, outcome.expected_detections);
        assert!(outcome.detection.max.unwrap() <= Duration::from_millis(310));
        assert!(outcome.affected_pairs > 0);
        assert_eq!(outcome.unrerouted, 0);
        assert_eq!(outcome.loops, 0);
        // The worst case the routing crate documents: timeout + one originator interval +
        // hops × latency.
        assert!(outcome.reroute.max.unwrap() <= Duration::from_millis(1300 + 5 * 20));
        assert!(outcome.verifications_performed_per_agent_s < outcome.verifications_requested_per_agent_s);
    }
}
