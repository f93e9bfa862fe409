//! The mesh's eBPF datapath.
//!
//! Two tc (clsact) classifiers, written in C in `ebpf/` and compiled by `build.rs`, count each
//! peer's mesh packets per direction and apply faults (loss, partition, corruption, delay) read
//! from a map; every fault carries an expiry that the programs check themselves, so a fault
//! ends on time even if the agent that set it was killed.
//!
//! Code that uses the datapath depends on [`DatapathMaps`]: [`Datapath`] is the kernel
//! implementation (aya, netlink tc filters), [`FakeMaps`] the in-memory one for tests of the
//! agent, routing and chaos logic.
#![deny(unsafe_code)]

pub mod abi;
pub mod bench;
mod error;
mod fake;
mod kernel;
mod model;
mod route;

pub use error::DatapathError;
pub use fake::FakeMaps;
pub use kernel::{
    Datapath, DatapathConfig, FILTER_HANDLE, FILTER_PRIORITY, interface_with_address, monotonic_now_ns,
};
pub use model::{DatapathMaps, Direction, Directions, Fault, PeerTotals, PeerTraffic, totals_by_peer};
pub use route::route_interface;

/// The compiled datapath object (BTF included), embedded so the agent ships as one binary.
pub fn object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mesh_datapath.o"))
}

/// An object with the datapath's program and map names whose programs the verifier rejects:
/// for tests of the broken-object path.
pub fn rejected_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rejected.o"))
}
