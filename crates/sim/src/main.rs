//! `x0tta6bl4-sim`: runs the simulated-mesh benchmarks and prints (or writes) their tables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use sha2::{Digest as _, Sha256};
use x0tta6bl4_sim::scenario::{self, Scenario};
use x0tta6bl4_sim::topology::TopologyKind;
use x0tta6bl4_sim::{report, shape};

/// Simulates meshes of agents running the real routing state machine, kills some agents, and
/// measures detection and reroute times, per-message latency, traffic, CPU and memory.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Mesh sizes.
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000,2000")]
    nodes: Vec<usize>,
    /// Topologies: geometric (random geometric graph), grid (4 neighbours), peering (the
    /// agents' bounded-peering rule with its defaults).
    #[arg(long, value_delimiter = ',', default_value = "geometric,grid")]
    topology: Vec<TopologyKind>,
    /// Seed of the topology, link latencies, start times and victims.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Target mean degree of geometric graphs.
    #[arg(long, default_value_t = 7.0)]
    degree: f64,
    /// One-way link latency range in ms, `min,max` (each link gets a fixed draw).
    #[arg(long, value_delimiter = ',', default_value = "1,5")]
    latency_ms: Vec<f64>,
    /// Probability that a message is lost.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Agents killed at once.
    #[arg(long, default_value_t = 5)]
    kill: usize,
    /// Originator (advertisement) intervals to compare, in ms.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    originator_interval_ms: Vec<u64>,
    /// Seqno requests on, off, or both (`on,off`: each run twice, the second the baseline the
    /// requests are measured against).
    #[arg(long, value_delimiter = ',', default_value = "on", value_parser = parse_on_off)]
    seqno_requests: Vec<bool>,
    /// Agents start at random times within this many ms (0: all at once).
    #[arg(long, default_value_t = 0)]
    boot_spread_ms: u64,
    /// Each neighbour session comes up a random delay below this many ms after both ends have
    /// started (each link gets its own hello phase).
    #[arg(long, default_value_t = 100)]
    session_jitter_ms: u64,
    /// Keep the advertisement phases the cold start leaves (by default each agent's phase is
    /// moved to a random point of the interval after convergence, the jitter the routing
    /// crate does not have).
    #[arg(long)]
    no_desync: bool,
    /// Quiet time between convergence and the kill, in originator intervals: the advertisements
    /// of the cold start (made before any link's RTT was measured) take two rounds to wash
    /// out. Its last interval is the steady-state measurement window.
    #[arg(long, default_value_t = 2.5)]
    settle_intervals: f64,
    /// Give up on convergence this many ms after the last agent started.
    #[arg(long, default_value_t = 10_000)]
    converge_limit_ms: u64,
    /// Give up on detections and reroutes this many ms after the kill.
    #[arg(long, default_value_t = 4000)]
    observe_ms: u64,
    /// Wall-clock limit of each run, in seconds.
    #[arg(long, default_value_t = 1500)]
    max_wall_s: u64,
    /// Resident-memory limit of the process, in GiB: a run that passes it stops.
    #[arg(long, default_value_t = 16.0)]
    max_rss_gib: f64,
    /// Decode one sent frame in this many again and check it equals the message delivered
    /// (1: every frame; every frame is always encoded, and its length counted).
    #[arg(long, default_value_t = 16)]
    decode_every: u64,
    /// Also print, per run, the advertisement traffic per 100 ms of simulated time.
    #[arg(long)]
    timeline: bool,
    /// Where finished runs are kept; a run with exactly the same parameters is taken from here
    /// instead of being run again.
    #[arg(long, default_value = "target/sim-results")]
    results_dir: PathBuf,
    /// Run everything again, ignoring the kept runs.
    #[arg(long)]
    fresh: bool,
    /// Write the tables into this Markdown file, in the block named by --label under
    /// "## Simulated meshes" (created, or replaced in place).
    #[arg(long)]
    markdown: Option<PathBuf>,
    /// Name of the generated block in the Markdown file.
    #[arg(long, default_value = "default")]
    label: String,
    /// Only build each topology and report its shape (degree, diameter, hops, and for the
    /// peering rule the agents a join moves), without simulating: for meshes larger than the
    /// simulator holds here.
    #[arg(long)]
    graph_only: bool,
}

/// Where a finished run's rows are kept: named by what was run, and a digest of every
/// parameter, so a changed parameter never reuses an old run.
fn cache_file(dir: &Path, scenario: &Scenario) -> PathBuf {
    let mut key = scenario.clone();
    key.progress = None;
    let digest = Sha256::digest(format!("{key:?}").as_bytes());
    let short: String = digest.iter().take(6).map(|byte| format!("{byte:02x}")).collect();
    dir.join(format!(
        "{}-n{}-i{}-s{}{}-{short}.rows",
        scenario.topology,
        scenario.nodes,
        scenario.originator_interval.as_millis(),
        scenario.seed,
        if scenario.seqno_requests { "" } else { "-noreq" }
    ))
}

fn parse_on_off(value: &str) -> Result<bool, String> {
    match value {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("expected on or off, not {other:?}")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let [low, high] = args.latency_ms[..] else {
        bail!("--latency-ms takes min,max");
    };
    let latency = (
        Duration::from_secs_f64(low / 1e3),
        Duration::from_secs_f64(high / 1e3),
    );
    let command = std::iter::once("cargo run --release -p x0tta6bl4-sim --".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    if args.graph_only {
        return graph_only(&args, &command);
    }
    std::fs::create_dir_all(&args.results_dir)
        .with_context(|| format!("creating {}", args.results_dir.display()))?;
    let mut runs = Vec::new();
    for &interval in &args.originator_interval_ms {
        for &topology in &args.topology {
            for (&nodes, &seqno_requests) in args
                .nodes
                .iter()
                .flat_map(|nodes| args.seqno_requests.iter().map(move |requests| (nodes, requests)))
            {
                let scenario = Scenario {
                    nodes,
                    topology,
                    seed: args.seed,
                    degree: args.degree,
                    latency,
                    loss: args.loss,
                    kill: args.kill,
                    originator_interval: Duration::from_millis(interval),
                    seqno_requests,
                    boot_spread: Duration::from_millis(args.boot_spread_ms),
                    desync: !args.no_desync,
                    session_jitter: Duration::from_millis(args.session_jitter_ms),
                    settle: Duration::from_millis(interval).mul_f64(args.settle_intervals),
                    converge_limit: Duration::from_millis(args.converge_limit_ms),
                    observe: Duration::from_millis(args.observe_ms),
                    max_wall: Duration::from_secs(args.max_wall_s),
                    max_rss: Some((args.max_rss_gib * (1u64 << 30) as f64) as u64),
                    decode_every: args.decode_every,
                    progress: Some(Duration::from_secs(15)),
                };
                let cached = cache_file(&args.results_dir, &scenario);
                let kept = if args.fresh {
                    None
                } else {
                    std::fs::read_to_string(&cached)
                        .ok()
                        .and_then(|text| report::RunRows::from_text(&text))
                };
                let rows = match kept {
                    Some(rows) => {
                        eprintln!(
                            "{topology} N={nodes} interval {interval} ms requests {seqno_requests}: kept from {}",
                            cached.display()
                        );
                        rows
                    }
                    None => {
                        eprintln!(
                            "running {topology} N={nodes} originator interval {interval} ms, seqno requests {seqno_requests} …"
                        );
                        let outcome = scenario::run(&scenario)?;
                        eprintln!(
                            "  done in {:.0} s wall ({:.1} s simulated, {:.1} wall s per simulated s){}",
                            outcome.wall.as_secs_f64(),
                            outcome.simulated.as_secs_f64(),
                            outcome.wall_per_simulated_second(),
                            outcome
                                .incomplete
                                .as_ref()
                                .map_or(String::new(), |why| format!(": {why}"))
                        );
                        if args.timeline {
                            eprintln!("{}", report::timeline_table(&outcome));
                        }
                        let rows = report::RunRows::of(&outcome);
                        std::fs::write(&cached, rows.to_text())
                            .with_context(|| format!("writing {}", cached.display()))?;
                        rows
                    }
                };
                eprint!("{}", report::tables(std::slice::from_ref(&rows)));
                runs.push(rows);
                if let Some(path) = &args.markdown {
                    write_markdown(path, &args.label, &command, &runs)?;
                }
            }
        }
    }
    println!("{}", report::tables(&runs));
    Ok(())
}

/// `--graph-only`: each topology's shape, printed and written to the Markdown block.
fn graph_only(args: &Args, command: &str) -> anyhow::Result<()> {
    let mut shapes = Vec::new();
    for &topology in &args.topology {
        for &nodes in &args.nodes {
            eprintln!("shape of {topology} N={nodes} …");
            shapes.push(shape::measure(topology, nodes, args.degree, args.seed));
        }
    }
    let table = shape::table(&shapes);
    if let Some(path) = &args.markdown {
        let body = format!(
            "Command: `{command}`, run on {}.\n\n{table}",
            chrono::Utc::now().format("%Y-%m-%d")
        );
        report::update_markdown(path, &args.label, &body)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{table}");
    Ok(())
}

/// Writes the tables so far into the Markdown file (after every run, so an interrupted
/// invocation leaves what it finished).
fn write_markdown(path: &Path, label: &str, command: &str, runs: &[report::RunRows]) -> anyhow::Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|name| name.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let body = format!(
        "Command: `{command}`, run on {} ({cpu}, {} cores, single-threaded simulation).\n\n{}",
        chrono::Utc::now().format("%Y-%m-%d"),
        std::thread::available_parallelism().map_or(0, usize::from),
        report::tables(runs)
    );
    report::update_markdown(path, label, &body).with_context(|| format!("writing {}", path.display()))
}
