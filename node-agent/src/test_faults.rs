//! Adversarial faults set by hand, for the agent's own test suites. They exist only in a test
//! build: the node agent's `test-faults` feature, which its tests (through a dev-dependency)
//! and the e2e build (`e2e/run.sh`) turn on. A production build (`make build`, the images,
//! `make demo`) does not compile any of it: its agents act out an adversarial behaviour only
//! when a ChaosExperiment of their own mesh asks them to, through the chaos executor.
//!
//! In a test build:
//! - `--test-fault ACTION=VALUE` (`byzantineUpdate=signFlip|scaling|noise|labelFlip|alie|ipm`,
//!   `falseMetric=PERCENT`; repeatable): the base behaviour the executor overlays experiments
//!   on, from the agent's start;
//! - `--test-key-exchange classical`: offer and accept only X25519 (an agent without
//!   post-quantum support);
//! - `--fl-straggle D`: hold each trained FL update this long before sending it;
//! - `POST /chaos/forged-update?job=NAME&round=K&kind=unsigned|tampered` on the fault endpoint
//!   (`--fault-api`): the FL participant sends, once, an update in this agent's name that the
//!   job's aggregator must refuse, and answers once it is sent, or why not.
//!
//! Without the feature, [`TestArgs`] has no flags: every accessor answers "honest".
use std::time::Duration;

use crate::chaos::behaviour::Behaviour;

/// Key-exchange groups a test agent may be limited to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TestKeyExchange {
    /// Offer and accept only X25519, like an agent without post-quantum support.
    Classical,
}

/// The test flags of `run` (hidden; present only in a test build).
#[cfg(feature = "test-faults")]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TestArgs {
    /// An adversarial fault this agent acts out from its start, through the chaos executor.
    #[arg(long = "test-fault", hide = true, value_parser = faults::parse_test_fault)]
    pub faults: Vec<faults::TestFault>,
    /// Restrict the key exchange regardless of the config.
    #[arg(long = "test-key-exchange", hide = true)]
    pub key_exchange: Option<TestKeyExchange>,
    /// Hold each trained update this long before sending it (a straggler).
    #[arg(long = "fl-straggle", hide = true, value_parser = parse_duration)]
    pub fl_straggle: Option<Duration>,
}

/// The test flags of `run`: none in a production build.
#[cfg(not(feature = "test-faults"))]
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TestArgs {}

#[cfg(feature = "test-faults")]
fn parse_duration(text: &str) -> Result<Duration, String> {
    x0tta6bl4_api::duration::parse(text).map_err(|e| e.to_string())
}

impl TestArgs {
    /// What the agent acts out with no experiment active.
    pub fn base_behaviour(&self) -> Behaviour {
        #[cfg(feature = "test-faults")]
        return faults::from_test_faults(&self.faults);
        #[cfg(not(feature = "test-faults"))]
        Behaviour::default()
    }

    pub fn key_exchange(&self) -> Option<TestKeyExchange> {
        #[cfg(feature = "test-faults")]
        return self.key_exchange;
        #[cfg(not(feature = "test-faults"))]
        None
    }

    pub fn fl_straggle(&self) -> Option<Duration> {
        #[cfg(feature = "test-faults")]
        return self.fl_straggle;
        #[cfg(not(feature = "test-faults"))]
        None
    }
}

/// Forged-update requests from the fault endpoint to the FL participant.
#[cfg(feature = "test-faults")]
pub type ForgeryRequests = tokio::sync::mpsc::Receiver<forgery::ForgeRequest>;
/// Forged-update requests: a production build has no way to ask for one.
#[cfg(not(feature = "test-faults"))]
#[derive(Debug)]
pub struct ForgeryRequests;

#[cfg(feature = "test-faults")]
pub mod faults;
#[cfg(feature = "test-faults")]
pub mod forgery;
