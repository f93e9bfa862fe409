//! Attack matrix: simulated federated training under every attack × aggregation rule ×
//! Byzantine fraction, reporting final test accuracy, written as Markdown into docs/FL.md
//! (between the fl-matrix markers, so the surrounding text is kept).
//!
//! cargo run --release -p x0tta6bl4-fl-bench --bin fl-matrix -- --out docs/FL.md
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use x0tta6bl4_fl::aggregate::{AggregationError, Rule};
use x0tta6bl4_fl::byzantine::Attack;
use x0tta6bl4_fl::dataset::DatasetName;
use x0tta6bl4_fl::model::ModelKind;
use x0tta6bl4_fl::simulation::{Federation, RunConfig, RunResult, SimError, run};
use x0tta6bl4_fl::training::TrainConfig;
use x0tta6bl4_fl_bench as report;

#[derive(Parser, Debug)]
#[command(about = "Byzantine attack matrix over simulated federated rounds")]
struct Args {
    #[arg(long, default_value_t = 20)]
    participants: usize,
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Dirichlet concentration of the non-IID split.
    #[arg(long, default_value_t = 1.0)]
    alpha: f64,
    /// lr (logistic regression) or mlp.
    #[arg(long, default_value = "mlp")]
    model: String,
    #[arg(long, default_value_t = 32)]
    hidden: usize,
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 0.5)]
    learning_rate: f64,
    #[arg(long, default_value_t = 4.0)]
    sign_flip_magnitude: f32,
    #[arg(long, default_value_t = 10.0)]
    scale_factor: f32,
    #[arg(long, default_value_t = 0.1)]
    noise_sigma: f32,
    #[arg(long, default_value_t = 0.1)]
    ipm_epsilon: f32,
    /// Centered clipping radius τ and iterations.
    #[arg(long, default_value_t = 0.5)]
    cc_tau: f32,
    #[arg(long, default_value_t = 3)]
    cc_iterations: usize,
    /// Byzantine fractions, in percent.
    #[arg(long, value_delimiter = ',', default_values_t = vec![10, 20, 30])]
    fractions: Vec<usize>,
    /// Sign, encode and verify every update (ML-DSA-65), as on the mesh.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    signed: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Markdown file to update; printed to stdout when absent.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

const BEGIN: &str = "<!-- fl-matrix:begin -->";
const END: &str = "<!-- fl-matrix:end -->";

fn rules(f: usize, args: &Args) -> Vec<Rule> {
    report::rules(f, f, args.cc_tau, args.cc_iterations)
}

fn attacks(args: &Args) -> Vec<Attack> {
    vec![
        Attack::None,
        Attack::SignFlip {
            magnitude: args.sign_flip_magnitude,
        },
        Attack::Scaling {
            factor: args.scale_factor,
        },
        Attack::Noise {
            sigma: args.noise_sigma,
        },
        Attack::LabelFlip,
        Attack::Alie,
        Attack::Ipm {
            epsilon: args.ipm_epsilon,
        },
    ]
}

enum Cell {
    Done(RunResult),
    Refused(String),
}

fn main() -> Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    let model = match args.model.as_str() {
        "lr" => ModelKind::LogisticRegression,
        "mlp" => ModelKind::Mlp { hidden: args.hidden },
        other => anyhow::bail!("--model must be lr or mlp, not {other}"),
    };
    let federation = Federation::new(DatasetName::Digits, args.participants, args.alpha, 0.2, args.seed)
        .context("splitting the dataset")?;
    let local = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch,
        learning_rate: args.learning_rate,
        seed: args.seed,
    };
    let config = |rule: Rule, attack: Attack, byzantine: usize| RunConfig {
        model,
        rounds: args.rounds,
        local,
        byzantine,
        attack,
        rule,
        signed: args.signed,
        seed: args.seed,
    };
    let simulate = |rule: Rule, attack: Attack, byzantine: usize| -> Result<Cell> {
        match run(&federation, &config(rule, attack, byzantine)) {
            Ok(r) => Ok(Cell::Done(r)),
            Err(SimError::Aggregation(e @ AggregationError::TooFewUpdates { .. })) => {
                Ok(Cell::Refused(e.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    };

    let baseline = match simulate(Rule::FedAvg, Attack::None, 0)? {
        Cell::Done(r) => r.final_accuracy(),
        Cell::Refused(why) => anyhow::bail!("the honest baseline was refused: {why}"),
    };
    eprintln!("honest FedAvg baseline: {:.1}%", 100.0 * baseline);

    let n = args.participants;
    let rule_names: Vec<&str> = rules(0, &args).iter().map(Rule::name).collect();
    let mut table = String::new();
    writeln!(table, "| attack | Byzantine | {} |", rule_names.join(" | "))?;
    writeln!(table, "|---|---|{}", "---:|".repeat(rule_names.len()))?;
    let mut detection = String::new();
    writeln!(detection, "| attack | {} |", rule_names.join(" | "))?;
    writeln!(detection, "|---|{}", "---:|".repeat(rule_names.len()))?;
    let mut refusals = Vec::new();
    for attack in attacks(&args) {
        let mut detection_row = Vec::new();
        for &percent in &args.fractions {
            let f = (n * percent).div_ceil(100);
            let mut cells = Vec::new();
            for rule in rules(f, &args) {
                let t = Instant::now();
                let cell = simulate(rule, attack, f)?;
                let text = match &cell {
                    Cell::Done(r) if r.diverged_at.is_some() => {
                        eprintln!(
                            "{:>10} {percent:>2}% {:>16}: diverged",
                            attack.name(),
                            rule.name()
                        );
                        format!("diverged (round {})", r.diverged_at.unwrap_or(0) + 1)
                    }
                    Cell::Done(r) => {
                        let acc = 100.0 * r.final_accuracy();
                        eprintln!(
                            "{:>10} {percent:>2}% {:>16}: {acc:5.1}% ({:.1}s)",
                            attack.name(),
                            rule.name(),
                            t.elapsed().as_secs_f64()
                        );
                        // Bold: within 5 points of the honest FedAvg run.
                        if (100.0 * baseline - acc) <= 5.0 {
                            format!("**{acc:.1}**")
                        } else {
                            format!("{acc:.1}")
                        }
                    }
                    Cell::Refused(why) => {
                        if !refusals.contains(why) {
                            refusals.push(why.clone());
                        }
                        "refused".into()
                    }
                };
                cells.push(text);
                if percent == *args.fractions.last().unwrap_or(&0) {
                    detection_row.push(match &cell {
                        Cell::Done(r) => {
                            let last = r.rounds.last().expect("at least one round");
                            format!("{}/{f} · {}", last.byzantine_flagged, last.honest_flagged)
                        }
                        Cell::Refused(_) => "refused".into(),
                    });
                }
            }
            writeln!(
                table,
                "| {} | {percent}% (f = {f}) | {} |",
                attack.name(),
                cells.join(" | ")
            )?;
        }
        writeln!(detection, "| {} | {} |", attack.name(), detection_row.join(" | "))?;
    }

    let mut section = String::new();
    writeln!(section, "{BEGIN}")?;
    writeln!(
        section,
        "{} (1 core).\n",
        report::generated_by("fl-matrix", started)
    )?;
    writeln!(
        section,
        "Setup: UCI digits (1797 × 64, 10 classes), 20% held out (stratified), the rest split over {n} participants by Dirichlet(α = {}); model: {}; {} rounds of {} local epoch(s), batch {}, SGD learning rate {}; every update {}. Byzantine participants are chosen by the seed and the rules are told f = their number. Attacks: sign-flip {}, scaling {}, noise {}, label-flip {}, ALIE {} (z_max from n and f, omniscient), IPM {} (omniscient). Centered clipping: τ = {}, {} iterations, centered on the previous round's aggregate.\n",
        args.alpha,
        model.label(),
        args.rounds,
        args.epochs,
        args.batch,
        args.learning_rate,
        if args.signed {
            "ML-DSA-65 signed, encoded and verified"
        } else {
            "passed in memory (unsigned)"
        },
        attacks(&args)[1].describe(),
        attacks(&args)[2].describe(),
        attacks(&args)[3].describe(),
        attacks(&args)[4].describe(),
        attacks(&args)[5].describe(),
        attacks(&args)[6].describe(),
        args.cc_tau,
        args.cc_iterations,
    )?;
    writeln!(
        section,
        "Final test accuracy (%). Honest FedAvg run (no Byzantine participants): **{:.1}**. Bold: within 5 points of it.\n",
        100.0 * baseline
    )?;
    section.push_str(&table);
    if !refusals.is_empty() {
        writeln!(
            section,
            "\n\"refused\": the rule's precondition does not hold, and it is not weakened to fit:"
        )?;
        for why in &refusals {
            writeln!(section, "- {why}")?;
        }
    }
    writeln!(
        section,
        "\nFlagged updates in the last round at {}% Byzantine (Byzantine flagged / f · honest flagged; flagged = rejected or down-weighted):\n",
        args.fractions.last().unwrap_or(&0)
    )?;
    section.push_str(&detection);
    writeln!(section, "{END}")?;

    // Keep one blank line between the generated block and what follows.
    report::write_or_print(args.out.as_deref(), &section, |existing| {
        report::replace_between_markers(existing, BEGIN, END, &section)
    })
}
