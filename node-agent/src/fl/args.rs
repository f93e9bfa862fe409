//! The agent's federated-learning command-line settings.
use std::path::PathBuf;

/// The agent's federated-learning settings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct FlArgs {
    /// Standalone: the FLTrainingRound (YAML or JSON, with its status) this agent takes part
    /// in; re-read when it changes, and removing it stops the job.
    #[arg(long, env = "X0_FL_JOB")]
    pub fl_job: Option<PathBuf>,
    /// Standalone: where the aggregator writes round results (default: `fl-results` next to
    /// the job file).
    #[arg(long, env = "X0_FL_RESULTS")]
    pub fl_results: Option<PathBuf>,
    /// Test only: hold each trained update this long before sending it (a straggler).
    #[arg(long, hide = true, value_parser = humantime_millis)]
    pub fl_straggle: Option<std::time::Duration>,
}

fn humantime_millis(text: &str) -> Result<std::time::Duration, String> {
    x0tta6bl4_api::duration::parse(text).map_err(|e| e.to_string())
}
