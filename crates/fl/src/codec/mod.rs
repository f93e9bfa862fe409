//! The byte formats of the federated messages agents send each other over the mesh, without IO:
//! the aggregator's [`train_request`], a participant's signed model [`update`], a zone
//! aggregator's [`zone_report`], and the [`chunks`] every federated message travels in (a mesh
//! data message carries at most 64 KiB, a request or an update carries the whole model).
//!
//! Every integer and float is big-endian, as in `x0tta6bl4-wire`. The decoders are fed
//! unauthenticated bytes from the network: every length is checked against the bytes present
//! before anything is read or allocated, and arbitrary bytes give an error, never a panic
//! (`fuzz/` has a cargo-fuzz target per decoder; `tests/codec_untrusted_bytes.rs` feeds them
//! random and mutated inputs on stable).
pub mod chunks;
mod fields;
pub mod train_request;
pub mod update;
pub mod zone_report;

/// Longest job UID carried (`metadata.uid`).
pub const MAX_UID_LEN: usize = 128;
/// Longest node name carried.
pub const MAX_NAME_LEN: usize = 253;
/// More participants than one message names is not a round an agent runs.
pub const MAX_PARTICIPANTS: usize = 1024;
// Counts travel as u16.
const _: () = assert!(MAX_PARTICIPANTS <= u16::MAX as usize);

/// Why a signed federated message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("truncated: needed {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("not this kind of message (bad magic)")]
    BadMagic,
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("{0} is empty, too long or not UTF-8")]
    BadString(&'static str),
    #[error("bad field {0}")]
    BadField(&'static str),
    #[error("{0} bytes after the signature")]
    TrailingBytes(usize),
    #[error("signing failed: {0}")]
    Signing(String),
}
