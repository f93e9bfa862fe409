//! `x0-datapath`: the datapath outside the agent.
//! - `bench`: per-packet cost of each classifier against the empty one (BPF_PROG_TEST_RUN).
//! - `hold`: attach to one or more interfaces, optionally set one fault, print `ready`, and keep the
//!   filters until SIGTERM or SIGINT (then detach). The kernel tests run it as the "agent" they
//!   kill, to check what survives a killed loader and what its successor cleans up.
use std::io::Write as _;
use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use x0tta6bl4_datapath::{
    Datapath, DatapathConfig, DatapathMaps as _, Directions, Fault, bench, monotonic_now_ns,
};

#[derive(Parser)]
#[command(name = "x0-datapath", about = "x0tta6bl4 eBPF datapath tools")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure the per-packet cost of each classifier against the empty classifier.
    Bench {
        /// Runs per measurement (the kernel reports the mean time per run).
        #[arg(long, default_value_t = 1_000_000)]
        repeat: u32,
        /// Measurements per case; the median is reported.
        #[arg(long, default_value_t = 9)]
        rounds: usize,
    },
    /// Attach to interfaces and hold the filters until SIGTERM or SIGINT.
    Hold {
        /// An interface to attach to (repeatable: one object, its maps shared by all).
        #[arg(long = "interface", required = true)]
        interfaces: Vec<String>,
        /// A mesh port (repeatable, at most four).
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// Set a fault on this peer once attached.
        #[arg(long)]
        fault_peer: Option<IpAddr>,
        /// Drop probability of the fault.
        #[arg(long, default_value_t = 0.0)]
        drop: f64,
        /// Partition of the fault: none, from-peer, to-peer or both.
        #[arg(long, default_value = "none")]
        partition: Directions,
        /// How long the fault lasts, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        fault_ms: u64,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench { repeat, rounds } => run_bench(repeat, rounds),
        Command::Hold {
            interfaces,
            ports,
            fault_peer,
            drop,
            partition,
            fault_ms,
        } => hold(interfaces, ports, fault_peer, drop, partition, fault_ms),
    }
}

fn run_bench(repeat: u32, rounds: usize) -> anyhow::Result<()> {
    let results = bench::run(repeat, rounds).context("benchmark")?;
    println!(
        "BPF_PROG_TEST_RUN, {repeat} runs per measurement, median of {rounds} rounds; kernel {}",
        kernel_release()
    );
    println!();
    println!("| case | program | ns/packet | empty ns/packet | added ns/packet | verdict |");
    println!("| --- | --- | ---: | ---: | ---: | --- |");
    for m in &results {
        let verdict = match m.verdict {
            bench::TC_ACT_OK => "pass",
            bench::TC_ACT_SHOT => "drop",
            _ => "other",
        };
        println!(
            "| {} | {} | {} | {} | {} | {verdict} |",
            m.case, m.program, m.program_ns, m.empty_ns, m.added_ns
        );
    }
    Ok(())
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn hold(
    interfaces: Vec<String>,
    ports: Vec<u16>,
    fault_peer: Option<IpAddr>,
    drop: f64,
    partition: Directions,
    fault_ms: u64,
) -> anyhow::Result<()> {
    use nix::sys::signal::{SigSet, Signal};
    // Blocked before anything else, so a signal sent right after `ready` is waited for, not
    // fatal.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block().context("block SIGTERM and SIGINT")?;

    let mut datapath = Datapath::attach(&DatapathConfig {
        interfaces,
        ports,
        edt: false,
    })?;
    if let Some(peer) = fault_peer {
        let expires_at_ns =
            monotonic_now_ns().saturating_add(Duration::from_millis(fault_ms).as_nanos() as u64);
        datapath.set_fault(
            peer,
            Fault {
                drop_probability: drop,
                partition,
                ..Fault::until(expires_at_ns)
            },
        )?;
        println!("fault expires_at_ns={expires_at_ns}");
    }
    println!("ready");
    std::io::stdout().flush()?;
    let signal = signals.wait().context("wait for a signal")?;
    datapath.detach()?;
    println!("detached after {signal:?}");
    Ok(())
}
