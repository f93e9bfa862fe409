//! ML-KEM-768 through liboqs. Neighbour sessions get their hybrid X25519 + ML-KEM-768 key
//! exchange from rustls (TLS 1.3 group X25519MLKEM768); this module exists for the known-answer
//! tests and for benchmarking liboqs' own ML-KEM speed beside the session setup.
use std::sync::OnceLock;

use oqs::kem::{Algorithm, Kem};
use zeroize::Zeroizing;

use crate::Result;

fn ml_kem() -> &'static Kem {
    static KEM: OnceLock<Kem> = OnceLock::new();
    KEM.get_or_init(|| {
        oqs::init();
        Kem::new(Algorithm::MlKem768).expect("liboqs is built with ML-KEM-768")
    })
}

/// An ML-KEM-768 key pair: (encapsulation key, decapsulation key).
pub fn keypair() -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let (public, secret) = ml_kem().keypair()?;
    Ok((public.into_vec(), Zeroizing::new(secret.into_vec())))
}

/// The deterministic key generation of FIPS 203 from the 64-byte seed d ‖ z.
pub fn keypair_from_seed(seed: &[u8]) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let kem = ml_kem();
    let seed = kem.keypair_seed_from_bytes(seed).ok_or(crate::Error::Length {
        what: "ML-KEM-768 seed",
        expected: kem.length_keypair_seed(),
        actual: seed.len(),
    })?;
    let (public, secret) = kem.keypair_derand(seed)?;
    Ok((public.into_vec(), Zeroizing::new(secret.into_vec())))
}

/// Encapsulates to `public`: (ciphertext, shared secret).
pub fn encapsulate(public: &[u8]) -> Result<(Vec<u8>, Zeroizing<Vec<u8>>)> {
    let kem = ml_kem();
    let public = kem.public_key_from_bytes(public).ok_or(crate::Error::Length {
        what: "ML-KEM-768 encapsulation key",
        expected: kem.length_public_key(),
        actual: public.len(),
    })?;
    let (ciphertext, shared) = kem.encapsulate(public)?;
    Ok((ciphertext.into_vec(), Zeroizing::new(shared.into_vec())))
}

/// Decapsulates `ciphertext`. A tampered ciphertext yields FIPS 203's implicit-rejection key,
/// never an error, so the caller learns nothing; the session then fails its key confirmation.
pub fn decapsulate(secret: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let kem = ml_kem();
    let length_error = |what, expected: usize, actual| crate::Error::Length {
        what,
        expected,
        actual,
    };
    let secret_ref = kem.secret_key_from_bytes(secret).ok_or_else(|| {
        length_error(
            "ML-KEM-768 decapsulation key",
            kem.length_secret_key(),
            secret.len(),
        )
    })?;
    let ciphertext_ref = kem
        .ciphertext_from_bytes(ciphertext)
        .ok_or_else(|| length_error("ML-KEM-768 ciphertext", kem.length_ciphertext(), ciphertext.len()))?;
    Ok(Zeroizing::new(
        kem.decapsulate(secret_ref, ciphertext_ref)?.into_vec(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_agree_and_a_tampered_ciphertext_does_not() {
        let (public, secret) = keypair().unwrap();
        let (ciphertext, shared) = encapsulate(&public).unwrap();
        assert_eq!(decapsulate(&secret, &ciphertext).unwrap(), shared);
        let mut tampered = ciphertext.clone();
        tampered[0] ^= 1;
        assert_ne!(decapsulate(&secret, &tampered).unwrap(), shared);
        assert!(decapsulate(&secret, &ciphertext[1..]).is_err());
    }
}
