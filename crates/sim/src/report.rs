//! Tables of outcomes (Markdown, readable on a terminal too), and updating a generated block
//! inside `docs/BENCHMARKS.md` without touching the text around it.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::scenario::{Outcome, Spread};
use crate::stats::Histogram;

/// The heading the generated blocks live under.
pub const SECTION: &str = "## Simulated meshes";

fn ms(duration: Option<Duration>) -> String {
    duration.map_or("–".to_owned(), |d| format!("{:.0}", d.as_secs_f64() * 1e3))
}

fn spread(spread: &Spread) -> String {
    format!("{} / {}", ms(spread.p50), ms(spread.p99))
}

fn micros(nanos: Option<u64>) -> String {
    nanos.map_or("–".to_owned(), |n| {
        let us = n as f64 / 1e3;
        if us < 10.0 {
            format!("{us:.1}")
        } else {
            format!("{us:.0}")
        }
    })
}

fn p50_p99(histogram: &Histogram) -> String {
    format!(
        "{} / {}",
        micros(histogram.percentile(50.0)),
        micros(histogram.percentile(99.0))
    )
}

fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

fn mib(bytes: f64) -> String {
    format!("{:.1}", bytes / (1024.0 * 1024.0))
}

/// The topology, marked when seqno requests were off (the baseline they are measured
/// against).
fn topology_label(outcome: &Outcome) -> String {
    if outcome.scenario.seqno_requests {
        outcome.scenario.topology.to_string()
    } else {
        format!("{} (no seqno requests)", outcome.scenario.topology)
    }
}

fn run_label(outcome: &Outcome) -> String {
    format!(
        "| {} | {} | {} ms ",
        topology_label(outcome),
        outcome.scenario.nodes,
        outcome.scenario.originator_interval.as_millis()
    )
}

/// Failure detection and reroute.
pub fn routing_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| topology | N | originator interval | mean degree | diameter (mean hops) | killed | detection p50 / p99 (ms) | detections | reroute p50 / p99 (ms) | first valid p99 (ms) | affected pairs | not rerouted | loops |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for outcome in outcomes {
        let _ = writeln!(
            out,
            "{}| {:.1} | {} ({:.1}) | {} | {} | {}/{} | {} | {} | {} | {} | {} |",
            run_label(outcome),
            outcome.mean_degree,
            outcome.diameter,
            outcome.mean_hops,
            outcome.victims.len(),
            spread(&outcome.detection),
            outcome.detection.count,
            outcome.expected_detections,
            spread(&outcome.reroute),
            ms(outcome.reroute_first.p99),
            outcome.affected_pairs,
            outcome.unrerouted,
            outcome.loops,
        );
    }
    out
}

/// What the cold start cost: every agent started within the boot spread.
pub fn cold_start_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| topology | N | originator interval | all routes after last start (s): first / for good | adverts sent / agent until first complete | MB sent / agent until then | peak adverts / agent / s (100 ms) | peak MB / agent / s | originations / agent until then |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for outcome in outcomes {
        let n = outcome.scenario.nodes as f64;
        let slice = crate::mesh::SLICE.as_secs_f64();
        let peak = outcome
            .timeline
            .iter()
            .max_by_key(|s| s.advert_bytes)
            .copied()
            .unwrap_or_default();
        let converged = outcome.converged_after_last_boot.map_or_else(
            || {
                format!(
                    "no ({:.1}% of routes, stopped)",
                    outcome.reachable_fraction * 100.0
                )
            },
            |d| {
                let stable = outcome
                    .complete_since_at_kill
                    .map_or("not at kill".to_owned(), |s| format!("{:.2}", s.as_secs_f64()));
                format!("{:.2} / {stable}", d.as_secs_f64())
            },
        );
        let _ = writeln!(
            out,
            "{}| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} |",
            run_label(outcome),
            converged,
            outcome.cold_start.adverts as f64 / n,
            outcome.cold_start.advert_bytes as f64 / n / 1e6,
            peak.adverts as f64 / n / slice,
            peak.advert_bytes as f64 / n / slice / 1e6,
            outcome.cold_start.originated as f64 / n,
        );
    }
    out
}

/// Wall time per router call, in the steady-state window.
pub fn latency_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| topology | N | originator interval | hello | advert, duplicate | advert, first copy (shared verification) | advert, verified for real | advert as a real agent sees it | originate (ML-DSA-65 sign) | tick |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for outcome in outcomes {
        let timings = &outcome.timings;
        let _ = writeln!(
            out,
            "{}| {} | {} | {} | {} | {} | {} | {} |",
            run_label(outcome),
            p50_p99(&timings.hello),
            p50_p99(&timings.originator_duplicate),
            p50_p99(&timings.originator_cached),
            p50_p99(&timings.originator_verified),
            p50_p99(&outcome.real_agent_originator_latency()),
            p50_p99(&timings.originate),
            p50_p99(&timings.tick),
        );
    }
    out
}

/// Traffic, verifications, CPU and memory per agent, and what the simulation cost.
pub fn load_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| topology | N | originator interval | messages / agent / s | KB / agent / s (busiest) | advert frame (B) | verifications / agent / s asked (performed) | CPU / agent, measured mean (max) | CPU / agent, every verification real, mean (max) | router memory / agent, estimate (MiB) | simulator RSS / N (MiB) | events | wall (s) | wall s / simulated s |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for outcome in outcomes {
        let rss = outcome.rss_bytes.map_or("–".to_owned(), |rss| {
            mib(rss as f64 / outcome.scenario.nodes as f64)
        });
        let _ = writeln!(
            out,
            "{}| {:.0} | {:.0} ({:.0}) | {:.0} | {:.0} ({:.1}) | {} ({}) | {} ({}) | {} | {} | {:.1} M | {:.0} | {:.1} |",
            run_label(outcome),
            outcome.messages_per_agent_s,
            outcome.bytes_per_agent_s / 1e3,
            outcome.max_bytes_per_agent_s / 1e3,
            outcome.originator_frame_bytes,
            outcome.verifications_requested_per_agent_s,
            outcome.verifications_performed_per_agent_s,
            percent(outcome.cpu_measured.0),
            percent(outcome.cpu_measured.1),
            percent(outcome.cpu_real.0),
            percent(outcome.cpu_real.1),
            mib(outcome.memory_per_agent_estimate),
            rss,
            outcome.events as f64 / 1e6,
            outcome.wall.as_secs_f64(),
            outcome.wall_per_simulated_second(),
        );
    }
    out
}

/// Mesh-wide advertisement traffic per 100 ms of simulated time, per agent per second.
pub fn timeline_table(outcome: &Outcome) -> String {
    let n = outcome.scenario.nodes as f64;
    let per_agent_s = |count: u64| count as f64 / n / crate::mesh::SLICE.as_secs_f64();
    let mut out = format!(
        "{} N={} interval {} ms (last start {:.2} s, converged {}, kill {}):\n\n\
         | from (s) | adverts / agent / s | of which infinite | MB / agent / s | originations / agent / s | route changes / agent / s | route losses |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
        outcome.scenario.topology,
        outcome.scenario.nodes,
        outcome.scenario.originator_interval.as_millis(),
        outcome.last_boot.as_secs_f64(),
        outcome
            .converged_after_last_boot
            .map_or("never".to_owned(), |d| format!(
                "{:.2} s",
                (outcome.last_boot + d).as_secs_f64()
            )),
        outcome
            .kill_at
            .map_or("never".to_owned(), |d| format!("{:.2} s", d.as_secs_f64())),
    );
    for (index, slice) in outcome.timeline.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {:.1} | {:.0} | {:.0} | {:.2} | {:.1} | {:.0} | {} |",
            index as f64 * crate::mesh::SLICE.as_secs_f64(),
            per_agent_s(slice.adverts),
            per_agent_s(slice.infinite),
            per_agent_s(slice.advert_bytes) / 1e6,
            per_agent_s(slice.originated),
            per_agent_s(slice.route_changes),
            slice.route_losses,
        );
    }
    out
}

/// `label count` pairs, comma-separated.
fn counts(list: &[(&'static str, u64)]) -> String {
    list.iter()
        .map(|(label, count)| format!("{label} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs that did not finish, and anything unexpected.
pub fn notes(outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    for outcome in outcomes {
        let name = format!(
            "{} N={} interval {} ms",
            topology_label(outcome),
            outcome.scenario.nodes,
            outcome.scenario.originator_interval.as_millis()
        );
        if let Some(why) = &outcome.incomplete {
            let _ = writeln!(out, "- {name}: **incomplete**: {why}.");
        }
        if outcome.undetected > 0 || outcome.false_deaths > 0 {
            let _ = writeln!(
                out,
                "- {name}: {} dead neighbours never detected, {} live neighbours declared dead.",
                outcome.undetected, outcome.false_deaths
            );
        }
        if outcome.route_losses_while_quiet > 0 || outcome.reroute_flaps > 0 {
            let _ = writeln!(
                out,
                "- {name}: {} routes lost between convergence and the kill, {} rerouted paths broke again.",
                outcome.route_losses_while_quiet, outcome.reroute_flaps
            );
        }
        let _ = writeln!(
            out,
            "- {name}: wall time by phase: {}; simulator peak RSS {} MiB.",
            outcome
                .phase_walls
                .iter()
                .map(|(phase, wall)| format!("{phase} {:.0} s", wall.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(", "),
            outcome.peak_rss_bytes.map_or("–".to_owned(), |rss| format!(
                "{:.0}",
                rss as f64 / (1 << 20) as f64
            )),
        );
        if outcome.wire_errors > 0 {
            let _ = writeln!(
                out,
                "- {name}: **{} wire errors** (frames that did not decode back to the message sent, or failed to encode or sign).",
                outcome.wire_errors
            );
        }
        let verify = &outcome.verify_time;
        if verify.count() > 0 && outcome.incomplete.is_none() {
            let _ = writeln!(
                out,
                "- {name}: {} real ML-DSA-65 verifications (p50 {} µs); {} sent frames decoded again, all equal; rejections: {}.",
                verify.count(),
                micros(verify.percentile(50.0)),
                outcome.wire_checks,
                counts(&outcome.rejections)
            );
        }
        if !outcome.seqno_requests.is_empty() {
            let _ = writeln!(
                out,
                "- {name}: seqno requests (all agents, whole run): {}.",
                counts(&outcome.seqno_requests)
            );
        }
    }
    out
}

/// One run's rows of every table, so that finished runs can be kept on disk and the tables
/// assembled again from runs of several invocations (a run of the 1000-agent mesh takes a
/// quarter of an hour; an interrupted invocation should not lose the runs it finished).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRows {
    pub cold_start: String,
    pub routing: String,
    pub latency: String,
    pub load: String,
    pub notes: String,
}

const SECTION_BREAK: &str = "\n@@@\n";

/// A table without its two header lines.
fn body(table: String) -> String {
    table.lines().skip(2).map(|line| format!("{line}\n")).collect()
}

impl RunRows {
    pub fn of(outcome: &Outcome) -> Self {
        let one = std::slice::from_ref(outcome);
        RunRows {
            cold_start: body(cold_start_table(one)),
            routing: body(routing_table(one)),
            latency: body(latency_table(one)),
            load: body(load_table(one)),
            notes: notes(one),
        }
    }

    pub fn to_text(&self) -> String {
        [
            &self.cold_start,
            &self.routing,
            &self.latency,
            &self.load,
            &self.notes,
        ]
        .map(String::as_str)
        .join(SECTION_BREAK)
    }

    pub fn from_text(text: &str) -> Option<Self> {
        let mut sections = text.split(SECTION_BREAK).map(str::to_owned);
        let rows = RunRows {
            cold_start: sections.next()?,
            routing: sections.next()?,
            latency: sections.next()?,
            load: sections.next()?,
            notes: sections.next()?,
        };
        sections.next().is_none().then_some(rows)
    }
}

/// Every table, for a set of runs.
pub fn tables(runs: &[RunRows]) -> String {
    let join = |header: String, rows: &dyn Fn(&RunRows) -> &String| {
        header + &runs.iter().map(|run| rows(run).as_str()).collect::<String>()
    };
    format!(
        "Cold start:\n\n{}\n\
         Failure detection and reroute (the victims killed at once, silently):\n\n{}\n\
         Router wall time per call in the steady-state window, µs p50 / p99:\n\n{}\n\
         Load per agent in the steady-state window, and the cost of the simulation:\n\n{}\n{}",
        join(cold_start_table(&[]), &|run| &run.cold_start),
        join(routing_table(&[]), &|run| &run.routing),
        join(latency_table(&[]), &|run| &run.latency),
        join(load_table(&[]), &|run| &run.load),
        runs.iter().map(|run| run.notes.as_str()).collect::<String>(),
    )
}

fn markers(label: &str) -> (String, String) {
    (
        format!("<!-- x0tta6bl4-sim:{label}:begin (generated: do not edit by hand) -->"),
        format!("<!-- x0tta6bl4-sim:{label}:end -->"),
    )
}

/// The document with the block named `label` replaced by `body`: in place if it exists,
/// otherwise at the end of the [`SECTION`] (which is appended if missing).
pub fn with_block(document: &str, label: &str, body: &str) -> String {
    let (begin, end) = markers(label);
    let block = format!("{begin}\n{}\n{end}", body.trim_end());
    if let Some(start) = document.find(&begin)
        && let Some(stop) = document[start..]
            .find(&end)
            .map(|offset| start + offset + end.len())
    {
        return format!("{}{block}{}", &document[..start], &document[stop..]);
    }
    match document.find(SECTION) {
        Some(section) => {
            let after = section + SECTION.len();
            let next = document[after..]
                .find("\n## ")
                .map_or(document.len(), |offset| after + offset + 1);
            let (head, tail) = document.split_at(next);
            format!("{}\n\n{block}\n\n{}", head.trim_end(), tail)
                .trim_end()
                .to_owned()
                + "\n"
        }
        None => format!("{}\n\n{SECTION}\n\n{block}\n", document.trim_end()),
    }
}

/// Writes `body` as the block `label` of the Markdown file at `path`.
pub fn update_markdown(path: &Path, label: &str, body: &str) -> std::io::Result<()> {
    let document = std::fs::read_to_string(path).unwrap_or_default();
    std::fs::write(path, with_block(&document, label, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_appended_under_a_new_section_and_then_replaced_in_place() {
        let original = "# Benchmarks\n\n## Primitives\n\ntext\n";
        let first = with_block(original, "a", "one");
        assert!(first.starts_with(original.trim_end()));
        assert!(first.contains("## Simulated meshes\n\n<!-- x0tta6bl4-sim:a:begin"));
        let analysis = first.replace(
            "one\n<!-- x0tta6bl4-sim:a:end -->",
            "one\n<!-- x0tta6bl4-sim:a:end -->\n\nWhy it breaks.",
        );
        let second = with_block(&analysis, "a", "two");
        assert!(second.contains("two") && !second.contains("one"));
        assert!(
            second.contains("Why it breaks."),
            "text outside the block is kept"
        );
        assert_eq!(second.matches(SECTION).count(), 1);
    }

    #[test]
    fn run_rows_survive_a_round_trip_through_text() {
        let rows = RunRows {
            cold_start: "| a |\n".to_owned(),
            routing: "| b |\n".to_owned(),
            latency: String::new(),
            load: "| d |\n".to_owned(),
            notes: "- e\n".to_owned(),
        };
        assert_eq!(RunRows::from_text(&rows.to_text()), Some(rows.clone()));
        assert_eq!(RunRows::from_text("| a |\n"), None);
        let tables = tables(&[rows.clone(), rows]);
        assert_eq!(tables.matches("| b |").count(), 2);
        assert!(tables.contains("| topology | N |"));
    }

    #[test]
    fn a_new_block_goes_to_the_end_of_the_section_not_the_end_of_the_file() {
        let document = "## Simulated meshes\n\nintro\n\n## Later\n\nmore\n";
        let updated = with_block(document, "b", "table");
        let block = updated.find("x0tta6bl4-sim:b:begin").unwrap();
        assert!(updated.find("intro").unwrap() < block);
        assert!(block < updated.find("## Later").unwrap());
        assert!(updated.ends_with("more\n"));
    }
}
