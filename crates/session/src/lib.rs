//! Neighbour sessions between agents.
//!
//! Construction (no home-made primitives or combiners):
//! - TLS 1.3 via rustls with the aws-lc-rs provider and the hybrid key-exchange group
//!   X25519MLKEM768, mutually authenticated with per-process X.509 keys (Ed25519) that
//!   prove possession in the handshake but carry no identity;
//! - identity: each side then sends its endorsement (the mesh authority's ML-DSA-65 signature
//!   over its node key and SPIFFE ID) and an ML-DSA-65 signature over the TLS exporter value
//!   (RFC 8446 §7.5; used as a channel binding as in RFC 9266), so a signature proves the key's
//!   holder is the endpoint of *this* TLS session and cannot be relayed to another.
//! - with `requirePostQuantum`, only X25519MLKEM768 is offered and accepted, so a classical-only
//!   peer cannot complete a handshake, and a negotiated classical group is refused again after.
#![forbid(unsafe_code)]

pub mod binding;
pub mod in_memory;
pub mod svid;
pub mod tls;

pub use binding::{Identity, PeerIdentity};

/// Why a session was refused; each has a metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("key exchange {0} is not post-quantum and the mesh requires post-quantum")]
    ClassicalKeyExchange(String),
    #[error("peer authentication failed: {0}")]
    Authentication(&'static str),
    #[error("certificate generation: {0}")]
    Certificate(String),
    #[error(transparent)]
    Crypto(#[from] x0tta6bl4_crypto::Error),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Tls(_) => "tls",
            Error::ClassicalKeyExchange(_) => "classical_key_exchange",
            Error::Authentication(_) => "authentication",
            Error::Certificate(_) => "certificate",
            Error::Crypto(_) => "crypto",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
