//! An in-process, discrete-event simulator of an x0tta6bl4 mesh: the real routing state
//! machine ([`x0tta6bl4_routing::Router`]) of every agent, the real wire format on every
//! message, real ML-DSA-65 signatures, over simulated links and simulated time.
//!
//! - [`topology`]: random geometric and grid graphs, seeded.
//! - [`mesh`]: the agents, links (latency, loss), the event queue, and the bookkeeping that
//!   follows forwarding paths after a failure.
//! - [`memory`]: the process's resident memory, which bounds a run.
//! - [`verify`]: real keys and signatures; one verification shared by every agent that
//!   receives the same signed bytes, with per-agent counts of what was asked and performed.
//! - [`scenario`]: cold start, quiet period, K agents killed at once; what is measured.
//! - [`report`]: the tables, and the generated block in `docs/BENCHMARKS.md`.
#![forbid(unsafe_code)]

pub mod memory;
pub mod mesh;
pub mod queue;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod shape;
pub mod stats;
pub mod topology;
pub mod verify;
