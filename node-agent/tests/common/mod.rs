//! The agent's process-level tests run on `x0tta6bl4-testsupport` (agents as child processes,
//! identities from the admin subcommands, configurations from the typed AgentConfig, waiting
//! with deadlines); this binds it to this package's binary.
#![allow(dead_code)]

pub mod ebpf_ring;

pub use x0tta6bl4_testsupport::*;

pub const BIN: &str = env!("CARGO_BIN_EXE_x0tta6bl4-node-agent");

/// A scratch directory for test `name`, whose agents run this package's binary.
pub fn scratch(name: &str) -> Scratch {
    Scratch::new(BIN, name)
}

/// For the `#[ignore]`d network-namespace tests: fails unless run by `make netns`.
#[track_caller]
pub fn require_netns() {
    netns::require_netns("make netns");
}
