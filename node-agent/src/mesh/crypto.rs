//! The router's signing and verifying, by this agent's key and trust store: the adaptors
//! between the sans-IO router's traits and the crypto crate.
use std::sync::{Arc, PoisonError, RwLock};

use x0tta6bl4_crypto::SigningContext;
use x0tta6bl4_crypto::endorsement::{Refusal as TrustRefusal, TrustStore};
use x0tta6bl4_routing::{OriginatorSigner, OriginatorVerifier, SignError, VerifyError};
use x0tta6bl4_wire::NodeId;

use crate::clock::unix_seconds;
use crate::identity::CurrentIdentity;

/// Verifies originator messages with the keys the trust store admitted (ML-DSA-65 under the
/// originator context, validity at the wall clock).
pub struct TrustVerifier {
    pub trust: Arc<RwLock<TrustStore>>,
}

impl OriginatorVerifier for TrustVerifier {
    fn verify(
        &self,
        originator: &NodeId,
        key_epoch: u32,
        signed_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        let trust = self.trust.read().unwrap_or_else(PoisonError::into_inner);
        trust
            .verify(
                SigningContext::Originator,
                originator,
                key_epoch,
                signed_bytes,
                signature,
                unix_seconds(),
            )
            .map_err(|refusal| match refusal {
                TrustRefusal::UnknownKey => VerifyError::UnknownKey,
                TrustRefusal::Expired => VerifyError::ExpiredKey,
                TrustRefusal::BadSignature => VerifyError::BadSignature,
                TrustRefusal::Revoked => VerifyError::RevokedKey,
            })
    }
}

/// Signs this node's advertisements with its key, under the originator context.
pub struct NodeSigner {
    pub identity: CurrentIdentity,
}

impl OriginatorSigner for NodeSigner {
    fn key_epoch(&self) -> u32 {
        self.identity.get().endorsement.key_epoch
    }

    fn sign(&self, signed_bytes: &[u8]) -> Result<Vec<u8>, SignError> {
        self.identity
            .get()
            .key
            .sign(SigningContext::Originator, signed_bytes)
            .map(|signature| signature.0)
            .map_err(|error| SignError(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOW: NodeId = NodeId([1; 32]);

    #[test]
    fn the_verifier_maps_trust_store_refusals_to_routing_reasons() {
        let authority = x0tta6bl4_crypto::SigningKey::generate().unwrap();
        let trust = Arc::new(RwLock::new(TrustStore::new(
            "x0.local",
            vec![authority.verifying_key().clone()],
        )));
        let verifier = TrustVerifier { trust };
        assert_eq!(
            verifier.verify(&LOW, 1, b"advert", &[0; 10]),
            Err(VerifyError::UnknownKey)
        );
    }
}
