//! A node's identifier in the mesh: the SHA-256 of its SPIFFE ID. It stays the same across key
//! rotations (routes do not churn when a key rolls over); which key speaks for it at each key
//! epoch is what endorsements establish.
use sha2::{Digest, Sha256};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The identifier of the node with this SPIFFE ID (`spiffe://<trust domain>/...`).
    pub fn for_identity(spiffe_id: &str) -> Self {
        Self(Sha256::digest(spiffe_id.as_bytes()).into())
    }
}

impl std::fmt::Display for NodeId {
    /// The first 8 bytes in hex: enough to tell nodes apart in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NodeId({self})")
    }
}
