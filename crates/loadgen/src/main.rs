//! `mesh-load`: the real node agent (`x0tta6bl4-node-agent`, standalone file mode) living in a
//! synthetic mesh, for issue 4's benchmark "agent resident memory in a 1000-node mesh".
//!
//! For each mesh size N a fresh agent is started and given `--degree` neighbour sessions, each
//! a distinct endorsed identity completing TLS 1.3 (X25519MLKEM768) and the ML-DSA-65 binding.
//! The other N − 1 − degree nodes exist only as what the neighbours forward: every node has its
//! own ML-DSA-65 key endorsed by the mesh authority; each session announces all N − 1
//! endorsements, keeps hellos going every 100 ms, and forwards every synthetic node's signed
//! advertisement once per originator interval (1 s) with the envelope (hops, path cost) its
//! distance in a small-world topology implies. Each advertisement is signed once per round and
//! the same signed bytes go out on every session, so the agent verifies each once and drops
//! the copies as duplicates, as in a real mesh. Advertisements are spread over the interval
//! (originators are not synchronised in a real mesh either).
//!
//! Before the figures are taken the agent must hold N − 1 routes (its /status). Memory is
//! VmRSS and VmHWM of the agent's process after the last round, read before anything asks for
//! its /status (whose JSON for 1000 routes is itself an allocation); a baseline agent with no
//! peers runs the same time in the same invocation. CPU is the agent's utime + stime over the
//! rounds after the warm-up, per second of wall time.
mod agent;
mod peer;
mod synthetic;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_crypto::keyfile::StoredKey;
use x0tta6bl4_session::binding::Identity;
use x0tta6bl4_session::tls::{self, KeyExchangePolicy, TlsKey};
use x0tta6bl4_wire::{EndorsementAnnounce, Message, NodeId, Originator};

use x0tta6bl4_testsupport::loopback::loopback_sessions;
use x0tta6bl4_testsupport::process::log_tail;
use x0tta6bl4_testsupport::status::status_async;
use x0tta6bl4_testsupport::{Agent, Scratch, alive_neighbours, counter, counter_sum, routes, try_wait_until};

use crate::agent::{AgentFiles, Memory};
use crate::peer::Session;
use crate::synthetic::{AGENT_NAME, LINK_COST, Node, TRUST_DOMAIN, Topology};

/// The agent's originator interval (`originatorInterval` in its configuration).
const ORIGINATOR_INTERVAL: Duration = Duration::from_secs(1);
/// Each round's advertisements go out in this many slices spread over the interval.
const SLICES_PER_ROUND: u32 = 50;
/// How long the agent gets to start, and the sessions to settle (endorsements admitted,
/// neighbours alive), before the run is declared failed.
const SETTLE_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);
/// After the last round, how long the queues may take to drain.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// The agent's memory and CPU in synthetic meshes of real post-quantum sessions.
#[derive(Parser, Debug)]
#[command(name = "mesh-load")]
struct Args {
    /// The node agent binary under test.
    #[arg(long)]
    agent_bin: PathBuf,
    /// Mesh sizes, the agent included; one fresh agent each (plus the baseline without peers).
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000")]
    nodes: Vec<usize>,
    /// Neighbour sessions to the agent (its degree in the synthetic mesh).
    #[arg(long, default_value_t = 7)]
    degree: usize,
    /// Originator rounds per mesh size (one per originator interval, 1 s).
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Rounds before the CPU window opens (routes are still forming).
    #[arg(long, default_value_t = 5)]
    warmup_rounds: u32,
    /// Hard wall-clock limit of each agent run, in seconds.
    #[arg(long, default_value_t = 180)]
    time_limit: u64,
    /// Seed of the synthetic topology.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// What one agent run measured.
#[derive(Debug, Default)]
struct Outcome {
    /// Mesh size including the agent (1: the baseline, no peers).
    nodes: usize,
    sessions: usize,
    /// After the last round, before /status was asked.
    memory: Memory,
    /// VmHWM after one /status request (its JSON lists every route).
    hwm_after_status_kib: u64,
    /// Largest VmRSS sampled at the start of each round.
    rss_max_sampled_kib: u64,
    /// VmRSS at the start of each round (does it level off?).
    rss_series_kib: Vec<u64>,
    /// Agent CPU time per wall-clock second over the measured rounds (1.0 = one core).
    cpu_cores: f64,
    cpu_window_secs: f64,
    rounds: u32,
    /// Wall time the rounds took (rounds × 1 s if the agent kept up).
    rounds_secs: f64,
    routes: usize,
    /// Mean hop count of the agent's routes (a plausibility check of the synthetic topology).
    mean_route_hops: f64,
    known_nodes: u64,
    alive_neighbours: usize,
    verifications: f64,
    duplicates: f64,
    frames_dropped: f64,
    neighbour_losses: f64,
    route_changes: f64,
    /// Mean RTT the agent measured on its links at the end, ms.
    mean_link_rtt_ms: f64,
    /// Advertisements the agent forwarded to the harness, all sessions.
    originators_from_agent: u64,
    hellos_from_agent: u64,
    hellos_not_queued: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mesh-load: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // A signal ends the run future, whose drop kills the agent (Agent::drop).
        tokio::select! {
            result = bench(&args) => result,
            signal = signals() => Err(anyhow::anyhow!("interrupted by {signal}")),
        }
    });
    // Key generation and signing run on blocking threads: do not wait for them on the way out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("mesh-load: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn signals() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// What every run shares: the mesh authority, the agent's key, the synthetic nodes.
struct Bench<'a> {
    args: &'a Args,
    authority: SigningKey,
    agent_key: StoredKey,
    agent_id: NodeId,
    nodes: Vec<Node>,
    scratch: Scratch,
    ticks_per_second: u64,
    threads: usize,
}

async fn bench(args: &Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.agent_bin.is_file(),
        "no agent binary at {}",
        args.agent_bin.display()
    );
    anyhow::ensure!(
        args.rounds > args.warmup_rounds,
        "--rounds must exceed --warmup-rounds"
    );
    let largest = args.nodes.iter().copied().max().unwrap_or(1);
    anyhow::ensure!(largest <= 4096, "at most 4096 nodes");
    let threads = std::thread::available_parallelism().map_or(1, usize::from);
    let started = Instant::now();
    let (authority, agent_key, nodes) = tokio::task::spawn_blocking(move || {
        let authority = SigningKey::generate()?;
        let agent_key = StoredKey {
            key: SigningKey::generate()?,
            epoch: 1,
            created_unix: synthetic::unix_seconds(),
        };
        let nodes = synthetic::generate_nodes(
            largest.saturating_sub(1),
            &authority,
            synthetic::unix_seconds(),
            threads,
        )?;
        anyhow::Ok((authority, agent_key, nodes))
    })
    .await??;
    eprintln!(
        "mesh-load: {} synthetic identities endorsed in {:.1} s",
        nodes.len(),
        started.elapsed().as_secs_f64()
    );
    let scratch = Scratch::new(&args.agent_bin, "mesh-load");
    let bench = Bench {
        args,
        authority,
        agent_key,
        agent_id: synthetic::node_id(AGENT_NAME),
        nodes,
        scratch,
        ticks_per_second: agent::clock_ticks_per_second(),
        threads,
    };
    let mut outcomes = Vec::new();
    for (index, nodes) in std::iter::once(1).chain(args.nodes.iter().copied()).enumerate() {
        let run_index = u8::try_from(index + 1).unwrap_or(u8::MAX);
        let limit = Duration::from_secs(args.time_limit);
        let outcome = tokio::time::timeout(limit, bench.run(nodes, run_index))
            .await
            .with_context(|| format!("the {nodes}-node run exceeded --time-limit {} s", args.time_limit))??;
        print_outcome(&outcome);
        outcomes.push(outcome);
    }
    print_table(args, &outcomes);
    if let Some(path) = &args.json {
        write_json(path, args, &outcomes)?;
    }
    Ok(())
}

impl Bench<'_> {
    /// One agent, a mesh of `nodes` (1: no peers at all).
    async fn run(&self, nodes: usize, run_index: u8) -> anyhow::Result<Outcome> {
        let args = self.args;
        let dir = self.scratch.dir.join(format!("run-{run_index}-{nodes}"));
        let files = AgentFiles::write(&dir, &self.authority, &self.agent_key)?;
        // This invocation's loopback address of this run (127.<run>.<run index>.10), so
        // concurrent invocations and the agent's own tests never share an address.
        let address = loopback_sessions(run_index, 0).ip();

        // Everything signed before the agent starts, so the harness's signing does not compete
        // with the agent for the CPU while it is measured.
        let prepared = if nodes > 1 {
            let topology = Topology::new(nodes, args.degree, args.seed)?;
            eprintln!(
                "mesh-load: N={nodes}: signing {} rounds of {} advertisements (the farthest arrives with hop count {})",
                args.rounds,
                nodes - 1,
                topology.eccentricity() + 1
            );
            let started = Instant::now();
            let rounds = tokio::task::block_in_place(|| {
                synthetic::sign_rounds(&self.nodes, &topology, self.agent_id, args.rounds, self.threads)
            })?;
            eprintln!("mesh-load: signed in {:.1} s", started.elapsed().as_secs_f64());
            Some((topology, rounds))
        } else {
            None
        };

        let mut agent = files.spawn(&args.agent_bin, address, dir.join("agent.log"))?;
        let result = match &prepared {
            None => self.idle(&mut agent).await,
            Some((topology, rounds)) => self.mesh(&mut agent, nodes, topology, rounds).await,
        };
        if result.is_err() {
            eprintln!(
                "mesh-load: the agent's log ends with:\n{}",
                log_tail(&agent.log, 40)
            );
        }
        result
    }

    /// The baseline: the agent alone, running as long as a loaded run's rounds.
    async fn idle(&self, agent: &mut Agent) -> anyhow::Result<Outcome> {
        wait_for_agent(agent, |_| Ok(())).await?;
        let mut rss_max = 0;
        let mut rss_series = Vec::new();
        let mut ticker = tokio::time::interval(ORIGINATOR_INTERVAL);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut cpu_start = None;
        for round in 0..self.args.rounds {
            ticker.tick().await;
            agent.check_running()?;
            if round == self.args.warmup_rounds {
                cpu_start = Some((agent::cpu_ticks(agent.pid())?, Instant::now()));
            }
            let rss = Memory::of(agent.pid())?.rss_kib;
            rss_series.push(rss);
            rss_max = rss_max.max(rss);
        }
        ticker.tick().await;
        let (cpu_cores, cpu_window_secs) = self.cpu_since(agent, cpu_start)?;
        let memory = Memory::of(agent.pid())?;
        let status = status_async(agent.metrics).await?;
        Ok(Outcome {
            nodes: 1,
            memory,
            hwm_after_status_kib: Memory::of(agent.pid())?.hwm_kib,
            rss_max_sampled_kib: rss_max.max(memory.rss_kib),
            rss_series_kib: rss_series,
            cpu_cores,
            cpu_window_secs,
            rounds: self.args.rounds,
            rounds_secs: started.elapsed().as_secs_f64(),
            routes: routes(&status).len(),
            known_nodes: status["known_nodes"].as_u64().unwrap_or(0),
            ..Outcome::default()
        })
    }

    fn cpu_since(&self, agent: &Agent, start: Option<(u64, Instant)>) -> anyhow::Result<(f64, f64)> {
        let (ticks, at) = start.context("the CPU window never opened")?;
        let used = agent::cpu_ticks(agent.pid())?.saturating_sub(ticks) as f64 / self.ticks_per_second as f64;
        let wall = at.elapsed().as_secs_f64();
        Ok((used / wall, wall))
    }

    /// The agent in a mesh of `nodes`: sessions, endorsements, hellos, then the rounds.
    async fn mesh(
        &self,
        agent: &mut Agent,
        nodes: usize,
        topology: &Topology,
        rounds: &[Vec<Originator>],
    ) -> anyhow::Result<Outcome> {
        let args = self.args;
        wait_for_agent(agent, |_| Ok(())).await?;

        let connector = TlsConnector::from(tls::client_config(
            &TlsKey::generate()?,
            KeyExchangePolicy::PostQuantumOnly,
        )?);
        let mut trust = TrustStore::new(TRUST_DOMAIN, vec![self.authority.verifying_key().clone()]);
        let cancel = CancellationToken::new();
        // Aborted when dropped: every exit path stops the session tasks.
        let mut tasks = JoinSet::new();
        let _stop = cancel.clone().drop_guard();
        let id_of = |index: usize| {
            if index == 0 {
                self.agent_id
            } else {
                self.nodes[index - 1].id
            }
        };
        let mut sessions = Vec::new();
        for &neighbour in &topology.neighbours {
            let node = &self.nodes[neighbour - 1];
            let identity = Identity {
                key: SigningKey::from_parts(node.key.verifying_key().as_bytes(), node.key.secret_bytes())?,
                endorsement: node.endorsement.clone(),
            };
            let stream = peer::connect(
                agent.listen,
                &connector,
                &identity,
                &mut trust,
                self.agent_id,
                synthetic::unix_seconds(),
            )
            .await
            .with_context(|| format!("session of {}", node.name))?;
            let costs = topology.adjacency[neighbour]
                .iter()
                .map(|&n| (id_of(n), LINK_COST))
                .collect();
            let session = Session::start(stream, costs, &cancel, &mut tasks);
            // What an agent sends on a new session before any advertisement: its own
            // endorsement first, then every other one it knows.
            let own = std::iter::once(&node.endorsement_bytes);
            let others = self.nodes[..nodes - 1]
                .iter()
                .filter(|other| other.id != node.id)
                .map(|other| &other.endorsement_bytes);
            for bytes in own.chain(others) {
                let frame = Message::EndorsementAnnounce(EndorsementAnnounce {
                    endorsement: bytes.clone(),
                })
                .to_frame()?;
                session.bulk.send(frame).await.context("a session closed")?;
            }
            sessions.push(session);
        }
        let degree = sessions.len();
        let settled = wait_for_agent(agent, |status| {
            let known = status["known_nodes"].as_u64().unwrap_or(0);
            let alive = alive_neighbours(status).len();
            if known == u64::try_from(nodes)? && alive == degree {
                Ok(())
            } else {
                bail!("{known}/{nodes} endorsements known, {alive}/{degree} neighbours alive")
            }
        })
        .await;
        check_sessions(&sessions)?;
        settled?;
        eprintln!("mesh-load: N={nodes}: {degree} sessions up, {nodes} endorsements known; rounds start");

        // The rounds: slice s of round r carries originators [s·M/S, (s+1)·M/S) on every session.
        let count = nodes - 1;
        let slices = usize::try_from(SLICES_PER_ROUND)?;
        let mut ticker = tokio::time::interval(ORIGINATOR_INTERVAL / SLICES_PER_ROUND);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut cpu_start = None;
        let mut rss_max = 0;
        let mut rss_series = Vec::new();
        for (round, originators) in rounds.iter().enumerate() {
            if round == usize::try_from(args.warmup_rounds)? {
                cpu_start = Some((agent::cpu_ticks(agent.pid())?, Instant::now()));
            }
            let rss = Memory::of(agent.pid())?.rss_kib;
            rss_series.push(rss);
            rss_max = rss_max.max(rss);
            agent.check_running()?;
            check_sessions(&sessions)?;
            for slice in 0..slices {
                ticker.tick().await;
                for origin in (slice * count / slices + 1)..=((slice + 1) * count / slices) {
                    let originator = &originators[origin - 1];
                    for (index, session) in sessions.iter().enumerate() {
                        let Some(envelope) = topology.envelope(index, origin) else {
                            continue;
                        };
                        let frame = Message::Originator(originator.with_envelope(envelope)).to_frame()?;
                        session.bulk.send(frame).await.context("a session closed")?;
                    }
                }
            }
        }
        // Wait out the last slice's interval, then for the queues to drain into the agent.
        ticker.tick().await;
        let drain_started = Instant::now();
        while sessions.iter().any(|s| s.bulk.capacity() < s.bulk.max_capacity()) {
            if drain_started.elapsed() > DRAIN_DEADLINE {
                bail!("the agent did not take the last round within {DRAIN_DEADLINE:?}");
            }
            ticker.tick().await;
        }
        let rounds_secs = started.elapsed().as_secs_f64();
        let (cpu_cores, cpu_window_secs) = self.cpu_since(agent, cpu_start)?;
        let memory = Memory::of(agent.pid())?;
        agent.check_running()?;
        check_sessions(&sessions)?;

        let status = status_async(agent.metrics).await?;
        let hwm_after_status_kib = Memory::of(agent.pid())?.hwm_kib;
        let routes = routes(&status).len();
        let sum = |f: fn(&peer::SessionStats) -> u64| sessions.iter().map(|s| f(&s.stats)).sum::<u64>();
        use std::sync::atomic::Ordering::Relaxed;
        let outcome = Outcome {
            nodes,
            sessions: degree,
            memory,
            hwm_after_status_kib,
            rss_max_sampled_kib: rss_max.max(memory.rss_kib),
            rss_series_kib: rss_series,
            cpu_cores,
            cpu_window_secs,
            rounds: args.rounds,
            rounds_secs,
            routes,
            mean_route_hops: mean_of(&status, "routes", "hop_count"),
            known_nodes: status["known_nodes"].as_u64().unwrap_or(0),
            alive_neighbours: alive_neighbours(&status).len(),
            verifications: counter(&status, "x0_agent_originator_verifications_total", ""),
            duplicates: counter(&status, "x0_agent_routing_rejections_total", "reason=duplicate"),
            frames_dropped: counter_sum(&status, "x0_agent_frames_dropped_total"),
            neighbour_losses: counter_sum(&status, "x0_agent_neighbour_losses_total"),
            route_changes: counter(&status, "x0_agent_route_changes_total", ""),
            mean_link_rtt_ms: mean_of(&status, "neighbours", "rtt_ms"),
            originators_from_agent: sum(|s| s.originators_in.load(Relaxed)),
            hellos_from_agent: sum(|s| s.hellos_in.load(Relaxed)),
            hellos_not_queued: sum(|s| s.hellos_not_queued.load(Relaxed)),
        };
        if routes != count {
            bail!(
                "the agent holds {routes} routes, expected {count}; rejections: {}, dropped frames: {}",
                status["counters"]["x0_agent_routing_rejections_total"],
                status["counters"]["x0_agent_frames_dropped_total"]
            );
        }
        cancel.cancel();
        Ok(outcome)
    }
}

/// The mean of `field` over the entries of the status's list `list` that have it (0 if none).
fn mean_of(status: &serde_json::Value, list: &str, field: &str) -> f64 {
    let values: Vec<f64> = status[list]
        .as_array()
        .map(|entries| entries.iter().filter_map(|e| e[field].as_f64()).collect())
        .unwrap_or_default();
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn check_sessions(sessions: &[Session]) -> anyhow::Result<()> {
    for (index, session) in sessions.iter().enumerate() {
        if let Some(error) = session.stats.error() {
            bail!("session {index}: {error}");
        }
    }
    Ok(())
}

/// Polls /status until `ready` accepts it (or the agent exits, or the deadline passes).
async fn wait_for_agent(
    agent: &mut Agent,
    ready: impl Fn(&serde_json::Value) -> anyhow::Result<()>,
) -> anyhow::Result<serde_json::Value> {
    let metrics = agent.metrics;
    let ready = &ready;
    // An exited agent ends the wait at once: the look succeeds, with the error as its value.
    let look = || {
        let running = agent.check_running();
        async move {
            if let Err(exited) = running {
                return Ok(Err(exited.into()));
            }
            match status_async(metrics).await {
                Ok(status) => match ready(&status) {
                    Ok(()) => Ok(Ok(status)),
                    Err(why) => Err(why.to_string()),
                },
                Err(why) => Err(why.to_string()),
            }
        }
    };
    try_wait_until("the agent to be ready", SETTLE_DEADLINE, POLL, look).await?
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_outcome(outcome: &Outcome) {
    eprintln!(
        "mesh-load: N={}: VmRSS {:.1} MiB, VmHWM {:.1} MiB ({:.1} after /status), CPU {:.1}% of a core, {} routes, {} verifications, rounds took {:.1} s",
        outcome.nodes,
        mib(outcome.memory.rss_kib),
        mib(outcome.memory.hwm_kib),
        mib(outcome.hwm_after_status_kib),
        outcome.cpu_cores * 100.0,
        outcome.routes,
        outcome.verifications,
        outcome.rounds_secs
    );
}

fn print_table(args: &Args, outcomes: &[Outcome]) {
    let baseline = outcomes.first().map_or(0, |o| o.memory.rss_kib);
    println!(
        "| Mesh (nodes) | Sessions | Routes at the agent | VmRSS | VmHWM | VmRSS over baseline | VmHWM after one /status | Agent CPU | Verifications | Rounds |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for o in outcomes {
        let label = if o.nodes == 1 {
            "baseline (no peers)".to_owned()
        } else {
            o.nodes.to_string()
        };
        let growth = if o.nodes == 1 {
            "—".to_owned()
        } else {
            format!("+{:.1} MiB", mib(o.memory.rss_kib.saturating_sub(baseline)))
        };
        println!(
            "| {label} | {} | {} | {:.1} MiB | {:.1} MiB | {growth} | {:.1} MiB | {:.1}% of a core | {} | {} in {:.1} s |",
            o.sessions,
            o.routes,
            mib(o.memory.rss_kib),
            mib(o.memory.hwm_kib),
            mib(o.hwm_after_status_kib),
            o.cpu_cores * 100.0,
            o.verifications,
            o.rounds,
            o.rounds_secs,
        );
    }
    println!(
        "\n(degree {}, {} rounds of 1 s, CPU over the last {} rounds; seed {})",
        args.degree,
        args.rounds,
        args.rounds - args.warmup_rounds,
        args.seed
    );
}

fn write_json(path: &Path, args: &Args, outcomes: &[Outcome]) -> anyhow::Result<()> {
    let runs: Vec<_> = outcomes
        .iter()
        .map(|o| {
            json!({
                "nodes": o.nodes,
                "sessions": o.sessions,
                "vm_rss_kib": o.memory.rss_kib,
                "vm_hwm_kib": o.memory.hwm_kib,
                "vm_hwm_after_status_kib": o.hwm_after_status_kib,
                "vm_rss_max_sampled_kib": o.rss_max_sampled_kib,
                "vm_rss_per_round_kib": o.rss_series_kib,
                "cpu_cores": o.cpu_cores,
                "cpu_window_secs": o.cpu_window_secs,
                "rounds": o.rounds,
                "rounds_secs": o.rounds_secs,
                "routes": o.routes,
                "mean_route_hops": o.mean_route_hops,
                "known_nodes": o.known_nodes,
                "alive_neighbours": o.alive_neighbours,
                "originator_verifications": o.verifications,
                "duplicates_dropped": o.duplicates,
                "frames_dropped": o.frames_dropped,
                "neighbour_losses": o.neighbour_losses,
                "route_changes": o.route_changes,
                "mean_link_rtt_ms": o.mean_link_rtt_ms,
                "originators_from_agent": o.originators_from_agent,
                "hellos_from_agent": o.hellos_from_agent,
                "hellos_not_queued": o.hellos_not_queued,
            })
        })
        .collect();
    let document = json!({
        "agent_bin": args.agent_bin.display().to_string(),
        "degree": args.degree,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup_rounds,
        "seed": args.seed,
        "runs": runs,
    });
    std::fs::write(path, serde_json::to_string_pretty(&document)?)
        .with_context(|| format!("writing {}", path.display()))
}
