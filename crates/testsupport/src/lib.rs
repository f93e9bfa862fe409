//! What the tests that run real node agents share: the agent's tests (`node-agent/tests`), the
//! e2e suite (`e2e/`) and the load generator (`crates/loadgen`).
//!
//! - [`wait`]: polling a condition with a deadline, failing with what was awaited and the last
//!   thing seen (never a fixed sleep as synchronisation);
//! - [`config`]: the agent's configuration, built from the typed [`AgentConfig`] with
//!   test-friendly defaults, and written as the file the agent reads;
//! - [`identity`]: authorities, node keys and endorsements made with the agent binary's admin
//!   subcommands;
//! - [`scratch`]: a scratch directory of one test, with its identities, configurations and logs;
//! - [`process`]: an agent as a child process (standalone or cluster mode, optionally inside a
//!   network namespace), killed on drop;
//! - [`loopback`]: loopback addresses of their own per test and run, and agents started on them;
//! - [`http`] and [`status`]: plain HTTP/1.1 requests, `/status` and `/metrics` read;
//! - [`netns`]: network namespaces and veth pairs for the root-only tests, and the check that
//!   such a test may run.
//!
//! [`AgentConfig`]: x0tta6bl4_api::agent_config::AgentConfig
#![forbid(unsafe_code)]

pub mod config;
pub mod http;
pub mod identity;
pub mod loopback;
pub mod netns;
pub mod process;
pub mod scratch;
pub mod status;
pub mod wait;

pub use config::{METRICS_PORT, NAMESPACE, SESSION_PORT, TRUST_DOMAIN, TestConfig};
pub use http::{free_port, get};
pub use identity::{Admin, NodeFiles};
pub use loopback::{loopback, loopback_metrics, start_on_loopback};
pub use netns::{Namespaces, ip, management_veth, veth_link};
pub use process::{Agent, AgentSpec};
pub use scratch::Scratch;
pub use status::{alive_neighbours, counter, counter_sum, metric_sum, neighbour_cost, ping, routes, status};
pub use wait::{TimedOut, try_wait_for, try_wait_until, wait_for, wait_until};

/// Runs `command`, panicking with `what` and its error output unless it succeeds; returns its
/// standard output.
#[track_caller]
pub fn run(command: &mut std::process::Command, what: &str) -> String {
    let output = match command.output() {
        Ok(output) => output,
        Err(error) => panic!("{what}: cannot run: {error}"),
    };
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
