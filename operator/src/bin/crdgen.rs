//! Writes the CRD YAML generated from the Rust types into each directory given, one file per
//! CRD (`make crds` passes `crds/` and the chart's `crds/`). With `--check`, compares instead
//! and fails on any difference, naming the stale file (CI's drift check).
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let check = args.first().is_some_and(|a| a == "--check");
    if check {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("usage: crdgen [--check] DIR...");
        return ExitCode::from(2);
    }
    let mut stale = Vec::new();
    for dir in &args {
        let dir = Path::new(dir);
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
