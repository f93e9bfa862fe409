//! A node's identifier in the mesh: the SHA-256 of its SPIFFE ID. It stays the same across key
//! rotations (routes do not churn when a key rolls over); which key speaks for it at each key
//! epoch is what endorsements establish. The type itself is the wire's [`NodeId`] (one type
//! from the frame to the key store); this crate only says how it is derived.
use sha2::{Digest, Sha256};

pub use x0tta6bl4_wire::NodeId;

/// The identifier of the node with this SPIFFE ID (`spiffe://<trust domain>/...`).
pub fn node_id_for(spiffe_id: &str) -> NodeId {
    NodeId(Sha256::digest(spiffe_id.as_bytes()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_is_the_sha256_of_the_spiffe_id() {
        // `printf %s <id> | sha256sum`
        assert_eq!(
            node_id_for("spiffe://x0.local/ns/ns1/mesh/demo/node/node-a").to_string(),
            "b7e296c6a6e1207163724099afda5f18d4e8722760c2d8cd96927e0a6da24041"
        );
    }
}
