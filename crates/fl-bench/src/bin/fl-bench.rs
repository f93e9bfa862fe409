//! Aggregation benchmark: time per rule against a plain summation over the same buffers in the
//! same run, and the process's peak memory against the bytes of the updates held.
//!
//! cargo run --release -p x0tta6bl4-fl-bench --bin fl-bench -- --out docs/BENCHMARKS.md
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;
use x0tta6bl4_fl::aggregate::{Contribution, Rule, aggregate};
use x0tta6bl4_fl_bench as report;

#[derive(Parser, Debug)]
#[command(about = "Time each aggregation rule against a plain sum of the same updates")]
struct Args {
    /// Numbers of updates.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 100, 1000])]
    n: Vec<usize>,
    /// Update dimensions.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10_000, 1_000_000])]
    d: Vec<usize>,
    /// Skip (n, d) whose updates alone would exceed this many GiB.
    #[arg(long, default_value_t = 8.0)]
    max_gib: f64,
    /// Keep repeating a measurement until this many seconds have passed (at most 15 runs);
    /// the median is reported.
    #[arg(long, default_value_t = 1.0)]
    min_seconds: f64,
    /// Markdown file whose "## Federated aggregation" section is (re)written; stdout if absent.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const HEADING: &str = "## Federated aggregation";

/// A cheap deterministic fill in [−1, 1) (xorshift64*): generating 10⁹ values with a
/// cryptographic or distribution-shaped RNG would dominate the run.
fn fill(buf: &mut [f32], mut state: u64) {
    for x in buf {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        *x = (r >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
    }
}

fn plain_sum(vectors: &[Vec<f32>], out: &mut [f32]) {
    out.iter_mut().for_each(|o| *o = 0.0);
    for v in vectors {
        for (o, x) in out.iter_mut().zip(v) {
            *o += x;
        }
    }
}

/// `run` returns the time of the part it measures, so that bookkeeping around it (reading
/// /proc for the memory figures) is not counted.
fn median_time(min_seconds: f64, mut run: impl FnMut() -> Duration) -> Duration {
    let mut times = Vec::new();
    let start = Instant::now();
    while times.len() < 15 && (times.is_empty() || start.elapsed().as_secs_f64() < min_seconds) {
        times.push(run());
    }
    times.sort();
    times[times.len() / 2]
}

/// Peak resident set size (VmHWM) in bytes.
fn peak_rss() -> Option<u64> {
    status_field("VmHWM:")
}

fn current_rss() -> Option<u64> {
    status_field("VmRSS:")
}

fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0, "5" to clear_refs), so that the next
/// reading is the peak of what runs after this call.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// f = 20% of n, the largest share every rule can be asked to tolerate except Bulyan, which
/// gets the largest f it allows (n ≥ 4f + 3) when that is smaller.
fn rules(n: usize) -> Vec<Rule> {
    let f = n / 5;
    report::rules(f, f.min(n.saturating_sub(3) / 4), 1.0, 3)
}

fn rule_label(rule: &Rule) -> String {
    match rule {
        Rule::FedAvg => "fedavg".into(),
        Rule::Median { f } | Rule::TrimmedMean { f } | Rule::Krum { f } | Rule::Bulyan { f } => {
            format!("{} (f = {f})", rule.name())
        }
        Rule::MultiKrum { f, .. } => format!("multiKrum (f = {f}, m = n − f)"),
        Rule::CenteredClipping { tau, iterations } => {
            format!("centeredClipping (τ = {tau}, {iterations} iterations)")
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let mut report = String::new();
    let mut skipped = Vec::new();
    let can_reset = reset_peak_rss();
    for &d in &args.d {
        for &n in &args.n {
            let bytes = (n * d * 4) as f64;
            if bytes > args.max_gib * (1u64 << 30) as f64 {
                skipped.push(format!(
                    "n = {n}, d = {d}: the updates alone are {:.1} GiB, over --max-gib {}",
                    bytes / (1u64 << 30) as f64,
                    args.max_gib
                ));
                continue;
            }
            let vectors: Vec<Vec<f32>> = (0..n)
                .map(|i| {
                    let mut v = vec![0f32; d];
                    fill(&mut v, 0x9E37_79B9_7F4A_7C15 ^ (i as u64 + 1));
                    v
                })
                .collect();
            let names: Vec<String> = (0..n).map(|i| format!("p{i}")).collect();
            let contributions: Vec<Contribution> = vectors
                .iter()
                .zip(&names)
                .enumerate()
                .map(|(i, (v, name))| Contribution {
                    participant: name,
                    examples: 50 + i as u64 % 7,
                    values: v,
                })
                .collect();
            let mut out = vec![0f32; d];
            let sum = median_time(args.min_seconds, || {
                let t = Instant::now();
                plain_sum(black_box(&vectors), &mut out);
                black_box(&out);
                t.elapsed()
            });
            eprintln!(
                "n = {n:>4}, d = {d:>7}: plain sum {:.3} ms",
                sum.as_secs_f64() * 1e3
            );
            writeln!(
                report,
                "\n**n = {n}, d = {d}** ({:.1} MiB of updates; plain sum {:.3} ms)\n",
                bytes / (1u64 << 20) as f64,
                sum.as_secs_f64() * 1e3
            )?;
            writeln!(
                report,
                "| rule | time (ms) | × plain sum | peak memory / updates |"
            )?;
            writeln!(report, "|---|---:|---:|---:|")?;
            for rule in rules(n) {
                let mut extra: Option<u64> = None;
                let time = median_time(args.min_seconds, || {
                    let before = reset_peak_rss().then(current_rss).flatten();
                    let t = Instant::now();
                    let result = aggregate(&rule, black_box(&contributions), None)
                        .expect("the benchmark's parameters hold");
                    black_box(&result);
                    drop(result);
                    let elapsed = t.elapsed();
                    if let (Some(before), Some(peak)) = (before, peak_rss()) {
                        let grown = peak.saturating_sub(before);
                        extra = Some(extra.map_or(grown, |e| e.max(grown)));
                    }
                    elapsed
                });
                let ratio = time.as_secs_f64() / sum.as_secs_f64();
                let memory = extra.map_or("n/a".into(), |e| format!("{:.3}", (bytes + e as f64) / bytes));
                eprintln!(
                    "    {:<40} {:>12.3} ms  {ratio:>8.2}×  peak/updates {memory}",
                    rule_label(&rule),
                    time.as_secs_f64() * 1e3
                );
                writeln!(
                    report,
                    "| {} | {:.3} | {ratio:.2} | {memory} |",
                    rule_label(&rule),
                    time.as_secs_f64() * 1e3
                )?;
            }
        }
    }

    let mut section = String::new();
    writeln!(section, "{HEADING}\n")?;
    writeln!(
        section,
        "{}, single-threaded, on the 2-core / 24 GiB development machine.\n",
        report::generated_by("fl-bench", started)
    )?;
    writeln!(
        section,
        "Each figure is the median of repeated runs (at least {} s or 15 runs, at least one). \"× plain sum\" divides by a plain `out[j] += v[j]` over the same n buffers measured in the same run. \"peak memory / updates\" is (updates + the most the process's resident memory grew during the rule) / updates, the growth being VmHWM after the rule minus VmRSS before it, with VmHWM reset before each run through /proc/self/clear_refs: 1.000 means the rule needed nothing beyond the updates it was given, 2.000 that it needed as much again.{}",
        args.min_seconds,
        if can_reset {
            ""
        } else {
            " The peak could not be reset on this kernel, so it is not reported."
        }
    )?;
    section.push_str(&report);
    if !skipped.is_empty() {
        writeln!(section, "\nSkipped:")?;
        for s in &skipped {
            writeln!(section, "- {s}")?;
        }
    }

    // Replace only our own section (up to the next level-2 heading or the end).
    report::write_or_print(args.out.as_deref(), &section, |existing| {
        report::replace_heading_section(existing, HEADING, &section)
    })
}
