//! The digest that names a model everywhere (training requests, signed updates, round records,
//! the ConfigMap a model is fetched from): SHA-256 over the parameter count (u64, little-endian)
//! and then every f32 parameter (little-endian). One definition, shared by the agents that
//! train and the operator's command that hands a model out.
use sha2::{Digest as _, Sha256};

pub fn model_digest(params: &[f32]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((params.len() as u64).to_le_bytes());
    for p in params {
        hasher.update(p.to_le_bytes());
    }
    hasher.finalize().into()
}

/// The parameters as little-endian f32 bytes (how a round ConfigMap stores a model).
pub fn params_to_le_bytes(params: &[f32]) -> Vec<u8> {
    params.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The parameters stored as little-endian f32 bytes (a round ConfigMap's `model.f32`); `None`
/// unless the length is a whole number of f32s.
pub fn params_from_le_bytes(bytes: &[u8]) -> Option<Vec<f32>> {
    bytes.len().is_multiple_of(4).then(|| {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_covers_the_count_and_every_bit_of_every_value() {
        let a = model_digest(&[1.0, 2.0]);
        assert_ne!(a, model_digest(&[1.0, 2.0, 0.0]), "the count is hashed");
        assert_ne!(a, model_digest(&[1.0, f32::from_bits(2.0f32.to_bits() + 1)]));
        assert_eq!(
            a,
            model_digest(&params_from_le_bytes(&[0, 0, 128, 63, 0, 0, 0, 64]).unwrap())
        );
        assert_eq!(params_from_le_bytes(&[0, 0, 128]), None);
        let model = vec![0.5f32, -1.25, 3.0];
        assert_eq!(params_from_le_bytes(&params_to_le_bytes(&model)), Some(model));
    }
}
