//! ML-DSA-65 signing and verification with FIPS 204 context strings.
use std::sync::OnceLock;

use oqs::sig::{Algorithm, Sig};
use zeroize::Zeroizing;

use crate::{Error, Result};

/// Length of an ML-DSA-65 public key.
pub const PUBLIC_KEY_LEN: usize = 1952;
/// Length of an ML-DSA-65 secret key.
pub const SECRET_KEY_LEN: usize = 4032;
/// Length of an ML-DSA-65 signature.
pub const SIGNATURE_LEN: usize = 3309;

/// What a signature is for. Each variant is a distinct FIPS 204 context string, so a signature
/// made for one message type never verifies as another (an originator message replayed as a
/// model update, say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningContext {
    /// Routing advertisements flooded through the mesh.
    Originator,
    /// A node's proof that it holds its key, bound to one TLS session's exporter value.
    SessionBinding,
    /// A federated-learning model update.
    ModelUpdate,
    /// The mesh authority's endorsement of a node key.
    Endorsement,
    /// A federated-learning control message (the aggregator's training request).
    FlControl,
    /// The mesh authority's list of revoked node keys.
    Revocation,
}

impl SigningContext {
    /// The FIPS 204 context string (at most 255 bytes).
    pub fn as_bytes(self) -> &'static [u8] {
        match self {
            SigningContext::Originator => b"x0tta6bl4/v1/originator",
            SigningContext::SessionBinding => b"x0tta6bl4/v1/session-binding",
            SigningContext::ModelUpdate => b"x0tta6bl4/v1/model-update",
            SigningContext::Endorsement => b"x0tta6bl4/v1/endorsement",
            SigningContext::FlControl => b"x0tta6bl4/v1/fl-control",
            SigningContext::Revocation => b"x0tta6bl4/v1/revocation",
        }
    }
}

fn ml_dsa() -> &'static Sig {
    static SIG: OnceLock<Sig> = OnceLock::new();
    SIG.get_or_init(|| {
        oqs::init();
        Sig::new(Algorithm::MlDsa65).expect("liboqs is built with ML-DSA-65")
    })
}

/// A public ML-DSA-65 key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct VerifyingKey(Vec<u8>);

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use sha2::Digest;
        write!(
            f,
            "VerifyingKey(sha256:{})",
            hex::encode(&sha2::Sha256::digest(&self.0)[..8])
        )
    }
}

impl VerifyingKey {
    /// Takes the encoded public key, checking its length.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(Error::Length {
                what: "ML-DSA-65 public key",
                expected: PUBLIC_KEY_LEN,
                actual: bytes.len(),
            });
        }
        Ok(Self(bytes.to_vec()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Verifies `signature` over `message` made for `context`.
    pub fn verify(&self, context: SigningContext, message: &[u8], signature: &[u8]) -> Result<()> {
        verify_raw(&self.0, context.as_bytes(), message, signature)
    }
}

/// Verification with an arbitrary context string (the NIST known-answer tests use their own).
pub fn verify_with_context(
    public_key: &[u8],
    context: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<()> {
    verify_raw(public_key, context, message, signature)
}

fn verify_raw(public_key: &[u8], context: &[u8], message: &[u8], signature: &[u8]) -> Result<()> {
    let sig = ml_dsa();
    let public_key = sig.public_key_from_bytes(public_key).ok_or(Error::Length {
        what: "ML-DSA-65 public key",
        expected: PUBLIC_KEY_LEN,
        actual: public_key.len(),
    })?;
    // A wrong-length signature is a bad signature, not a programming error.
    let signature = sig.signature_from_bytes(signature).ok_or(Error::BadSignature)?;
    sig.verify_with_ctx_str(message, signature, context, public_key)
        .map_err(|_| Error::BadSignature)
}

/// A detached signature.
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(pub Vec<u8>);

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({} bytes)", self.0.len())
    }
}

/// An ML-DSA-65 key pair. The secret half is zeroed on drop and never printed.
pub struct SigningKey {
    public: VerifyingKey,
    secret: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl SigningKey {
    /// Generates a fresh key pair from liboqs' system randomness.
    pub fn generate() -> Result<Self> {
        let (public, secret) = ml_dsa().keypair()?;
        Ok(Self {
            public: VerifyingKey(public.into_vec()),
            secret: Zeroizing::new(secret.into_vec()),
        })
    }

    /// Rebuilds a key pair from its encoded halves (a key file).
    pub fn from_parts(public: &[u8], secret: &[u8]) -> Result<Self> {
        if secret.len() != SECRET_KEY_LEN {
            return Err(Error::Length {
                what: "ML-DSA-65 secret key",
                expected: SECRET_KEY_LEN,
                actual: secret.len(),
            });
        }
        let key = Self {
            public: VerifyingKey::from_bytes(public)?,
            secret: Zeroizing::new(secret.to_vec()),
        };
        // A pair whose halves do not match would sign garbage: prove they match once, here.
        let probe = key.sign(SigningContext::SessionBinding, b"x0tta6bl4 key pair check")?;
        key.public
            .verify(
                SigningContext::SessionBinding,
                b"x0tta6bl4 key pair check",
                &probe.0,
            )
            .map_err(|_| Error::KeyFile {
                path: String::new(),
                reason: "public and secret key do not belong together".into(),
            })?;
        Ok(key)
    }

    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The encoded secret key, for a key file or a Kubernetes Secret. Never log it.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// Signs `message` for `context` (hedged signing, as FIPS 204 recommends).
    pub fn sign(&self, context: SigningContext, message: &[u8]) -> Result<Signature> {
        let sig = ml_dsa();
        let secret = sig.secret_key_from_bytes(&self.secret).ok_or(Error::Length {
            what: "ML-DSA-65 secret key",
            expected: SECRET_KEY_LEN,
            actual: self.secret.len(),
        })?;
        Ok(Signature(
            sig.sign_with_ctx_str(message, context.as_bytes(), secret)?
                .into_vec(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_context_message_and_key() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let signature = key.sign(SigningContext::Originator, b"route").unwrap();
        assert_eq!(signature.0.len(), SIGNATURE_LEN);
        let public = key.verifying_key();
        assert!(
            public
                .verify(SigningContext::Originator, b"route", &signature.0)
                .is_ok()
        );
        assert!(
            public
                .verify(SigningContext::ModelUpdate, b"route", &signature.0)
                .is_err(),
            "context separates"
        );
        assert!(
            public
                .verify(SigningContext::Originator, b"routf", &signature.0)
                .is_err()
        );
        assert!(
            other
                .verifying_key()
                .verify(SigningContext::Originator, b"route", &signature.0)
                .is_err()
        );
    }

    #[test]
    fn malformed_signatures_and_keys_are_errors_not_panics() {
        let key = SigningKey::generate().unwrap();
        let public = key.verifying_key();
        for bad in [
            vec![],
            vec![0u8; 10],
            vec![0u8; SIGNATURE_LEN],
            vec![0xff; SIGNATURE_LEN + 1],
        ] {
            assert!(matches!(
                public.verify(SigningContext::Originator, b"m", &bad),
                Err(Error::BadSignature)
            ));
        }
        assert!(matches!(
            VerifyingKey::from_bytes(&[1, 2, 3]),
            Err(Error::Length { .. })
        ));
    }

    #[test]
    fn debug_output_never_shows_the_secret_key() {
        let key = SigningKey::generate().unwrap();
        let printed = format!("{key:?}");
        assert!(printed.contains("<redacted>"));
        assert!(!printed.contains(&hex::encode(&key.secret_bytes()[..16])));
    }

    #[test]
    fn halves_of_different_pairs_are_refused() {
        let a = SigningKey::generate().unwrap();
        let b = SigningKey::generate().unwrap();
        assert!(SigningKey::from_parts(a.verifying_key().as_bytes(), a.secret_bytes()).is_ok());
        assert!(SigningKey::from_parts(a.verifying_key().as_bytes(), b.secret_bytes()).is_err());
    }
}
