//! What the report binaries `fl-bench` and `fl-matrix` share: the rules they tabulate, the
//! line saying how a report was generated, and writing a report into a Markdown file in
//! place of its previous version (or to stdout).
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use x0tta6bl4_fl::aggregate::Rule;

/// Every aggregation rule, in the order of the reports' columns and rows: the Byzantine-robust
/// ones told `f` (Bulyan `bulyan_f`, which may have to be smaller), centered clipping with
/// radius `tau` and `iterations` steps.
pub fn rules(f: usize, bulyan_f: usize, tau: f32, iterations: usize) -> Vec<Rule> {
    vec![
        Rule::FedAvg,
        Rule::Median { f },
        Rule::TrimmedMean { f },
        Rule::Krum { f },
        Rule::MultiKrum { f, m: None },
        Rule::Bulyan { f: bulyan_f },
        Rule::CenteredClipping { tau, iterations },
    ]
}

/// "Generated <UTC minute> by `cargo run --release -p x0tta6bl4-fl-bench --bin <bin> -- <this
/// process's arguments>` in <seconds since `started`> s", for the caller to finish.
pub fn generated_by(bin: &str, started: Instant) -> String {
    let command = std::env::args().skip(1).collect::<Vec<_>>().join(" ");
    format!(
        "Generated {} by `cargo run --release -p x0tta6bl4-fl-bench --bin {bin} -- {command}` in {:.0} s",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        started.elapsed().as_secs_f64()
    )
}

/// `existing` with the level-2 section that starts with `heading` (up to the next level-2
/// heading or the end) replaced by `section`, or with `section` appended after a blank line.
pub fn replace_heading_section(existing: &str, heading: &str, section: &str) -> String {
    match existing.find(heading) {
        Some(start) => {
            let after = start + heading.len();
            let end = existing[after..]
                .find("\n## ")
                .map_or(existing.len(), |e| after + e + 1);
            format!("{}{}{}", &existing[..start], section, &existing[end..])
        }
        None => {
            let sep = if existing.ends_with("\n\n") || existing.is_empty() {
                ""
            } else if existing.ends_with('\n') {
                "\n"
            } else {
                "\n\n"
            };
            format!("{existing}{sep}{section}")
        }
    }
}

/// `existing` with the block from `begin` to `end` (markers included) replaced by `section`,
/// which carries its own markers, keeping one blank line before what follows; or with
/// `section` appended when the markers are not both there in order.
pub fn replace_between_markers(existing: &str, begin: &str, end: &str, section: &str) -> String {
    match (existing.find(begin), existing.find(end)) {
        (Some(b), Some(e)) if b < e => {
            let rest = existing[e + end.len()..].trim_start_matches('\n');
            let gap = if rest.is_empty() { "" } else { "\n" };
            format!("{}{section}{gap}{rest}", &existing[..b])
        }
        _ => format!("{existing}\n{section}"),
    }
}

/// Writes the report `section` into the Markdown file `out`, as `splice` places it in the
/// file's current text (empty when the file does not exist), and says so on stderr; prints
/// it to stdout when there is no file.
pub fn write_or_print(out: Option<&Path>, section: &str, splice: impl FnOnce(&str) -> String) -> Result<()> {
    match out {
        Some(path) => {
            let existing = std::fs::read_to_string(path).unwrap_or_default();
            std::fs::write(path, splice(&existing)).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
        None => print!("{section}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_heading_section_is_replaced_up_to_the_next_heading_or_appended() {
        let doc = "# T\n\n## A\nold\n\n## B\nkept\n";
        assert_eq!(
            replace_heading_section(doc, "## A", "## A\nnew\n\n"),
            "# T\n\n## A\nnew\n\n## B\nkept\n"
        );
        assert_eq!(
            replace_heading_section("# T\n\n## A\nold\n", "## A", "## A\nnew\n"),
            "# T\n\n## A\nnew\n"
        );
        assert_eq!(
            replace_heading_section("# T\n", "## A", "## A\n"),
            "# T\n\n## A\n"
        );
        assert_eq!(replace_heading_section("# T", "## A", "## A\n"), "# T\n\n## A\n");
        assert_eq!(replace_heading_section("", "## A", "## A\n"), "## A\n");
    }

    #[test]
    fn a_marked_block_is_replaced_keeping_one_blank_line_or_appended() {
        let (b, e) = ("<!-- b -->", "<!-- e -->");
        let doc = "intro\n<!-- b -->\nold\n<!-- e -->\n\n\nafter\n";
        assert_eq!(
            replace_between_markers(doc, b, e, "<!-- b -->\nnew\n<!-- e -->\n"),
            "intro\n<!-- b -->\nnew\n<!-- e -->\n\nafter\n"
        );
        assert_eq!(
            replace_between_markers(
                "intro\n<!-- b -->\nold\n<!-- e -->\n",
                b,
                e,
                "<!-- b -->\n<!-- e -->\n"
            ),
            "intro\n<!-- b -->\n<!-- e -->\n"
        );
        assert_eq!(replace_between_markers("intro\n", b, e, "x\n"), "intro\n\nx\n");
    }

    #[test]
    fn every_rule_once_in_the_report_order() {
        let names: Vec<&str> = rules(2, 1, 0.5, 3).iter().map(Rule::name).collect();
        assert_eq!(
            names,
            [
                "fedavg",
                "median",
                "trimmedMean",
                "krum",
                "multiKrum",
                "bulyan",
                "centeredClipping"
            ]
        );
        assert_eq!(rules(2, 1, 0.5, 3)[5], Rule::Bulyan { f: 1 });
    }
}
