//! Post-quantum identities of x0tta6bl4 agents.
//!
//! Every primitive comes from liboqs (through the `oqs` crate): ML-DSA-65 (FIPS 204) signatures
//! and ML-KEM-768 (FIPS 203) key encapsulation. Nothing here invents a primitive or a combiner;
//! message types are separated with FIPS 204's own context string.
#![forbid(unsafe_code)]

pub mod endorsement;
pub mod keyfile;
pub mod keyring;
pub mod mldsa;
pub mod mlkem;
pub mod model_digest;
pub mod node_id;
mod reader;
pub mod revocation;

pub use mldsa::{Signature, SigningContext, SigningKey, VerifyingKey};
pub use node_id::{NodeId, node_id_for};

/// Errors of this crate. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("liboqs: {0}")]
    Oqs(#[from] oqs::Error),
    #[error("{what} has {actual} bytes, expected {expected}")]
    Length {
        what: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("signature does not verify")]
    BadSignature,
    #[error("key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("endorsement rejected: {0}")]
    Endorsement(&'static str),
    #[error("revocation list rejected: {0}")]
    Revocation(&'static str),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
