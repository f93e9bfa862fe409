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
}
