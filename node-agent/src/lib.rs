//! The node agent. `x0tta6bl4-node-agent --config PATH` (what the operator's DaemonSet runs)
//! joins the mesh: post-quantum neighbour sessions, signed routing, multi-hop delivery of the
//! agents' own traffic, and /metrics, /healthz, /readyz, /status and /ping. The admin
//! subcommands (`authority init`, `keys init`, `endorse`) set up identities for standalone
//! meshes and tests.
//!
//! Layout: `runtime` wires the parts; `mesh` is the actor that owns the sans-IO router;
//! `session` and `dialer` are the network edge; `rotation` replaces the node key on schedule; `identity` and `peers` are the traits a
//! cluster plugs its sources into; `endorsements`, `ping`, `convergence` and `settings` are
//! sans IO and tested on their own.
#![forbid(unsafe_code)]

pub mod admin;
pub mod chaos;
pub mod cli;
pub mod clock;
pub mod convergence;
pub mod datapath;
pub mod dialer;
pub mod endorsements;
pub mod fl;
pub mod identity;
pub mod kube_source;
pub mod links;
pub mod mesh;
pub mod metrics;
pub mod peers;
pub mod ping;
pub mod revocations;
pub mod rotation;
pub mod runtime;
pub mod session;
pub mod settings;
pub mod status;
pub mod test_faults;
pub mod watch_cache;
pub mod workload_api;
