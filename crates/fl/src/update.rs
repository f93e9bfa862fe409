//! The wire form of a model update and its ML-DSA-65 signature.
//!
//! Layout (all integers little-endian), version 1:
//!
//! ```text
//! magic "X6FU" | version u8 = 1
//! round_uid_len u8 | round_uid (UTF-8, 1..=128 bytes)
//! round u32
//! participant_len u8 | participant (UTF-8, 1..=253 bytes: a DNS subdomain, a node name)
//! base_digest [32]  (SHA-256 of the global model the update was trained from)
//! examples u64
//! dim u32 | values dim × f32
//! signature_len u16 | signature
//! ```
//!
//! The signed message is every byte before `signature_len`, signed under
//! `SigningContext::ModelUpdate`. Every field is length-prefixed or fixed-size, so the bytes
//! determine the round UID, round, participant and base digest unambiguously: a signature made
//! for one round, participant or base model verifies for no other.
use x0tta6bl4_crypto::mldsa::{SigningContext, SigningKey};

pub const MAGIC: [u8; 4] = *b"X6FU";
pub const VERSION: u8 = 1;
pub const MAX_ROUND_UID_LEN: usize = 128;
pub const MAX_PARTICIPANT_LEN: usize = 253;
/// Bytes of an encoding other than the variable strings, the values and the signature.
const FIXED_LEN: usize = 4 + 1 + 1 + 4 + 1 + 32 + 8 + 4 + 2;

/// An update as a participant states it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelUpdate {
    /// metadata.uid of the FLTrainingRound.
    pub round_uid: String,
    pub round: u32,
    /// The participant's node name, as listed in the round's participants.
    pub participant: String,
    pub base_digest: [u8; 32],
    /// Local examples trained on (FedAvg's weight).
    pub examples: u64,
    /// `local − global`, flattened.
    pub values: Vec<f32>,
}

impl ModelUpdate {
    /// The update as an aggregation rule takes it.
    pub fn contribution(&self) -> crate::aggregate::Contribution<'_> {
        self.contribution_with(&self.values)
    }

    /// The update's participant and examples with other values (a stale update scaled down).
    pub fn contribution_with<'a>(&'a self, values: &'a [f32]) -> crate::aggregate::Contribution<'a> {
        crate::aggregate::Contribution {
            participant: &self.participant,
            examples: self.examples,
            values,
        }
    }
}

/// An update with its detached signature (empty when unsigned).
#[derive(Debug, Clone, PartialEq)]
pub struct SignedUpdate {
    pub update: ModelUpdate,
    pub signature: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("round UID must be 1..={MAX_ROUND_UID_LEN} bytes, is {0}")]
    RoundUid(usize),
    #[error("participant must be 1..={MAX_PARTICIPANT_LEN} bytes, is {0}")]
    Participant(usize),
    #[error("{0} values do not fit a u32 length")]
    TooManyValues(usize),
    #[error("a {0}-byte signature does not fit a u16 length")]
    SignatureTooLong(usize),
    #[error("signing failed: {0}")]
    Signing(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: needed {needed} bytes at offset {offset}, {available} left")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("not a model update (bad magic)")]
    BadMagic,
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("{field} is empty, too long or not UTF-8")]
    BadString { field: &'static str },
    #[error("{0} bytes after the signature")]
    TrailingBytes(usize),
}

impl ModelUpdate {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let uid = self.round_uid.as_bytes();
        if uid.is_empty() || uid.len() > MAX_ROUND_UID_LEN {
            return Err(EncodeError::RoundUid(uid.len()));
        }
        let participant = self.participant.as_bytes();
        if participant.is_empty() || participant.len() > MAX_PARTICIPANT_LEN {
            return Err(EncodeError::Participant(participant.len()));
        }
        let dim =
            u32::try_from(self.values.len()).map_err(|_| EncodeError::TooManyValues(self.values.len()))?;
        let mut out = Vec::with_capacity(FIXED_LEN + uid.len() + participant.len() + 4 * self.values.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(uid.len() as u8);
        out.extend_from_slice(uid);
        out.extend_from_slice(&self.round.to_le_bytes());
        out.push(participant.len() as u8);
        out.extend_from_slice(participant);
        out.extend_from_slice(&self.base_digest);
        out.extend_from_slice(&self.examples.to_le_bytes());
        out.extend_from_slice(&dim.to_le_bytes());
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        Ok(out)
    }

    /// Signs with the participant's ML-DSA-65 key under `SigningContext::ModelUpdate`.
    pub fn sign(self, key: &SigningKey) -> Result<SignedUpdate, EncodeError> {
        let message = self.signed_bytes()?;
        let signature = key
            .sign(SigningContext::ModelUpdate, &message)
            .map_err(|e| EncodeError::Signing(e.to_string()))?;
        Ok(SignedUpdate {
            update: self,
            signature: signature.0,
        })
    }

    /// Length of the encoding of an update with these sizes, for payload limits.
    pub fn encoded_len(round_uid: usize, participant: usize, dim: usize, signature: usize) -> usize {
        FIXED_LEN + round_uid + participant + 4 * dim + signature
    }
}

impl SignedUpdate {
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = self.update.signed_bytes()?;
        let len = u16::try_from(self.signature.len())
            .map_err(|_| EncodeError::SignatureTooLong(self.signature.len()))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&self.signature);
        Ok(out)
    }

    /// Parses an encoding, checking every length against the bytes present before reading or
    /// allocating, so arbitrary input yields an error, never a panic or a huge allocation.
    /// Returns the update and the length of its signed prefix.
    pub fn decode(bytes: &[u8]) -> Result<(SignedUpdate, usize), DecodeError> {
        let mut r = Reader { bytes, offset: 0 };
        if r.take(4)? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let round_uid = r.string("round UID", MAX_ROUND_UID_LEN)?;
        let round = u32::from_le_bytes(r.array()?);
        let participant = r.string("participant", MAX_PARTICIPANT_LEN)?;
        let base_digest: [u8; 32] = r.array()?;
        let examples = u64::from_le_bytes(r.array()?);
        let dim = u32::from_le_bytes(r.array()?) as usize;
        // Checked before allocating: `dim` is attacker-chosen.
        let raw = r.take(dim.checked_mul(4).ok_or(DecodeError::Truncated {
            offset: r.offset,
            needed: usize::MAX,
            available: bytes.len() - r.offset,
        })?)?;
        let values = raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let signed_len = r.offset;
        let sig_len = u16::from_le_bytes(r.array()?) as usize;
        let signature = r.take(sig_len)?.to_vec();
        if r.offset != bytes.len() {
            return Err(DecodeError::TrailingBytes(bytes.len() - r.offset));
        }
        Ok((
            SignedUpdate {
                update: ModelUpdate {
                    round_uid,
                    round,
                    participant,
                    base_digest,
                    examples,
                    values,
                },
                signature,
            },
            signed_len,
        ))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let available = self.bytes.len() - self.offset;
        if n > available {
            return Err(DecodeError::Truncated {
                offset: self.offset,
                needed: n,
                available,
            });
        }
        let out = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = self.u8()? as usize;
        if len == 0 || len > max {
            return Err(DecodeError::BadString { field });
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| DecodeError::BadString { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn update() -> ModelUpdate {
        ModelUpdate {
            round_uid: "3f1c2a7e-0000-4000-8000-000000000001".into(),
            round: 7,
            participant: "node-a".into(),
            base_digest: [9; 32],
            examples: 120,
            values: vec![0.5, -1.25, 3.0],
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let signed = SignedUpdate {
            update: update(),
            signature: vec![0xAA, 0xBB],
        };
        let bytes = signed.encode().unwrap();
        assert_eq!(&bytes[..5], b"X6FU\x01");
        assert_eq!(bytes[5], 36);
        let after_uid = 6 + 36;
        assert_eq!(&bytes[after_uid..after_uid + 4], &7u32.to_le_bytes());
        assert_eq!(bytes[after_uid + 4], 6);
        assert_eq!(&bytes[bytes.len() - 4..], &[2, 0, 0xAA, 0xBB]);
        assert_eq!(bytes.len(), ModelUpdate::encoded_len(36, 6, 3, 2));
        let (back, signed_len) = SignedUpdate::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        assert_eq!(signed_len, bytes.len() - 4);
    }

    #[test]
    fn bad_headers_are_typed_errors() {
        let mut bytes = SignedUpdate {
            update: update(),
            signature: vec![],
        }
        .encode()
        .unwrap();
        let mut wrong_magic = bytes.clone();
        wrong_magic[0] = b'Y';
        assert_eq!(SignedUpdate::decode(&wrong_magic), Err(DecodeError::BadMagic));
        let mut wrong_version = bytes.clone();
        wrong_version[4] = 2;
        assert_eq!(
            SignedUpdate::decode(&wrong_version),
            Err(DecodeError::UnsupportedVersion(2))
        );
        bytes.push(0);
        assert_eq!(SignedUpdate::decode(&bytes), Err(DecodeError::TrailingBytes(1)));
        let mut empty_uid = update();
        empty_uid.round_uid.clear();
        assert_eq!(empty_uid.signed_bytes(), Err(EncodeError::RoundUid(0)));
    }

    #[test]
    fn a_huge_declared_dimension_is_refused_without_allocating() {
        let mut bytes = SignedUpdate {
            update: update(),
            signature: vec![],
        }
        .encode()
        .unwrap();
        let dim_at = 6 + 36 + 4 + 1 + 6 + 32 + 8;
        bytes[dim_at..dim_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            SignedUpdate::decode(&bytes),
            Err(DecodeError::Truncated { .. })
        ));
    }

    fn arb_update() -> impl Strategy<Value = SignedUpdate> {
        (
            "[a-z0-9-]{1,128}",
            any::<u32>(),
            "[a-z0-9.-]{1,253}",
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::vec(any::<f32>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(round_uid, round, participant, base_digest, examples, values, signature)| SignedUpdate {
                    update: ModelUpdate {
                        round_uid,
                        round,
                        participant,
                        base_digest,
                        examples,
                        values,
                    },
                    signature,
                },
            )
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_identity(signed in arb_update()) {
            let bytes = signed.encode().unwrap();
            let (back, _) = SignedUpdate::decode(&bytes).unwrap();
            // Compare bit patterns: NaN payloads must survive too.
            prop_assert_eq!(&back.update.round_uid, &signed.update.round_uid);
            prop_assert_eq!(back.update.round, signed.update.round);
            prop_assert_eq!(&back.update.participant, &signed.update.participant);
            prop_assert_eq!(back.update.base_digest, signed.update.base_digest);
            prop_assert_eq!(back.update.examples, signed.update.examples);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&back.update.values), bits(&signed.update.values));
            prop_assert_eq!(back.signature, signed.signature);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // The encoding is canonical: whatever decodes re-encodes to the same bytes.
            if let Ok((signed, _)) = SignedUpdate::decode(&bytes) {
                prop_assert_eq!(signed.encode().unwrap(), bytes);
            }
        }

        #[test]
        fn decoding_a_mutated_update_never_panics(
            signed in arb_update(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = signed.encode().unwrap();
            for (at, value) in flips {
                let i = at % bytes.len();
                bytes[i] = value;
            }
            for input in [&bytes[..], &bytes[..cut % (bytes.len() + 1)]] {
                if let Ok((decoded, _)) = SignedUpdate::decode(input) {
                    prop_assert_eq!(decoded.encode().unwrap(), input.to_vec());
                }
            }
        }
    }
}
