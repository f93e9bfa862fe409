//! Writes the CRD YAML generated from the Rust types into each directory given, one file per
//! CRD (`make crds` passes `crds/` and the chart's `crds/`). With `--check`, compares instead
//! and fails on any difference, naming the stale file (CI's drift check).
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;

/// Writes (or with --check compares) the CRDs generated from the API types.
#[derive(Parser)]
#[command(name = "crdgen")]
struct Args {
    /// Compare with the files in each directory instead of writing; fail naming any stale one.
    #[arg(long)]
    check: bool,
    /// Directories to write into (created if missing) or to check.
    #[arg(required = true, value_name = "DIR")]
    dirs: Vec<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let check = args.check;
    let mut stale = Vec::new();
    for dir in &args.dirs {
        let dir: &Path = dir;
        if !check && let Err(e) = std::fs::create_dir_all(dir) {
            eprintln!("cannot create {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        for crd in x0tta6bl4_operator::crds::all() {
            let name = crd.metadata.name.clone().expect("a generated CRD has a name");
            let path = dir.join(format!("{name}.yaml"));
            let text = x0tta6bl4_operator::crds::to_yaml(&crd);
            if check {
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    stale.push(path.display().to_string());
                }
            } else if let Err(e) = std::fs::write(&path, text) {
                eprintln!("cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if stale.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "generated CRDs differ from the checked-in files (run `make crds`): {}",
            stale.join(", ")
        );
        ExitCode::FAILURE
    }
}
