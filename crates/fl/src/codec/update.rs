//! A participant's model update as it travels to the aggregator, with its ML-DSA-65 signature
//! ([`ModelUpdate`] and [`SignedUpdate`] are defined in [`crate::update`]).
//!
//! Layout (integers and floats big-endian), version 1:
//!
//! ```text
//! magic "X6FU" | version u8 = 1
//! round_uid_len u8 | round_uid        (1..=128 bytes, UTF-8)
//! round u32
//! participant_len u8 | participant    (node name, 1..=253 bytes)
//! base_digest [32]                    (SHA-256 of the global model the update was trained from)
//! examples u64
//! dim u32 | values dim × f32
//! signature_len u16 | signature
//! ```
//!
//! The signed message is every byte before `signature_len`, signed under
//! `SigningContext::ModelUpdate`. Every field is length-prefixed or fixed-size, so the bytes
//! determine the round UID, round, participant and base digest unambiguously: a signature made
//! for one round, participant or base model verifies for no other. Every length is checked
//! against the bytes present before anything is read or allocated, so arbitrary bytes give an
//! error, never a panic or a huge allocation.
use x0tta6bl4_crypto::{SigningContext, SigningKey};

use super::fields::{Reader, put_signature, put_string, put_values};
use super::{MAX_NAME_LEN, MAX_UID_LEN, MessageError};
use crate::update::{ModelUpdate, SignedUpdate};

pub const MAGIC: [u8; 4] = *b"X6FU";
pub const VERSION: u8 = 1;
pub const MAX_ROUND_UID_LEN: usize = MAX_UID_LEN;
/// A DNS subdomain: a node name.
pub const MAX_PARTICIPANT_LEN: usize = MAX_NAME_LEN;
/// Bytes of an encoding other than the variable strings, the values and the signature.
const FIXED_LEN: usize = 4 + 1 + 1 + 4 + 1 + 32 + 8 + 4 + 2;

impl ModelUpdate {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::with_capacity(Self::encoded_len(
            self.round_uid.len(),
            self.participant.len(),
            self.values.len(),
            0,
        ));
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        put_string(&mut out, &self.round_uid, MAX_ROUND_UID_LEN, "round UID")?;
        out.extend_from_slice(&self.round.to_be_bytes());
        put_string(&mut out, &self.participant, MAX_PARTICIPANT_LEN, "participant")?;
        out.extend_from_slice(&self.base_digest);
        out.extend_from_slice(&self.examples.to_be_bytes());
        put_values(&mut out, &self.values)?;
        Ok(out)
    }

    /// Signs with the participant's ML-DSA-65 key under `SigningContext::ModelUpdate`.
    pub fn sign(self, key: &SigningKey) -> Result<SignedUpdate, MessageError> {
        let message = self.signed_bytes()?;
        let signature = key
            .sign(SigningContext::ModelUpdate, &message)
            .map_err(|e| MessageError::Signing(e.to_string()))?;
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
    pub fn encode(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = self.update.signed_bytes()?;
        put_signature(&mut out, &self.signature)?;
        Ok(out)
    }

    /// Parses an encoding, checking every length against the bytes present before reading or
    /// allocating, so arbitrary input yields an error, never a panic or a huge allocation.
    /// Returns the update and the length of its signed prefix.
    pub fn decode(bytes: &[u8]) -> Result<(SignedUpdate, usize), MessageError> {
        let mut r = Reader::open(bytes, MAGIC, VERSION)?;
        let round_uid = r.string(MAX_ROUND_UID_LEN, "round UID")?;
        let round = r.u32()?;
        let participant = r.string(MAX_PARTICIPANT_LEN, "participant")?;
        let base_digest = r.array()?;
        let examples = r.u64()?;
        let values = r.values()?;
        let (signed_len, signature) = r.signature()?;
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
                signature: signature.to_vec(),
            },
            signed_len,
        ))
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
        assert_eq!(&bytes[after_uid..after_uid + 4], &7u32.to_be_bytes());
        assert_eq!(bytes[after_uid + 4], 6);
        assert_eq!(&bytes[bytes.len() - 4..], &[0, 2, 0xAA, 0xBB]);
        assert_eq!(bytes.len(), ModelUpdate::encoded_len(36, 6, 3, 2));
        let (back, signed_len) = SignedUpdate::decode(&bytes).unwrap();
        assert_eq!(back, signed);
        assert_eq!(signed_len, bytes.len() - 4);
    }

    /// Every integer and float is big-endian: the bytes at known offsets, written out.
    #[test]
    fn integers_and_floats_are_big_endian() {
        let mut u = update();
        u.round_uid = "u".into();
        u.participant = "p".into();
        u.round = 0x0102_0304;
        u.examples = 0x0506_0708_090a_0b0c;
        u.values = vec![0.5, -1.25];
        let bytes = SignedUpdate {
            update: u,
            signature: vec![0xEE; 0x0102],
        }
        .encode()
        .unwrap();
        // magic, version, uid_len 1, "u"
        assert_eq!(&bytes[..7], b"X6FU\x01\x01u");
        assert_eq!(&bytes[7..11], &[0x01, 0x02, 0x03, 0x04], "round");
        assert_eq!(&bytes[11..13], b"\x01p", "participant");
        // 13..45: the base digest.
        assert_eq!(
            &bytes[45..53],
            &[0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c],
            "examples"
        );
        assert_eq!(&bytes[53..57], &[0, 0, 0, 2], "dim");
        assert_eq!(&bytes[57..61], &[0x3f, 0x00, 0x00, 0x00], "0.5f32");
        assert_eq!(&bytes[61..65], &[0xbf, 0xa0, 0x00, 0x00], "-1.25f32");
        assert_eq!(&bytes[65..67], &[0x01, 0x02], "signature_len");
        assert_eq!(bytes.len(), 67 + 0x0102);
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
        assert_eq!(SignedUpdate::decode(&wrong_magic), Err(MessageError::BadMagic));
        let mut wrong_version = bytes.clone();
        wrong_version[4] = 2;
        assert_eq!(
            SignedUpdate::decode(&wrong_version),
            Err(MessageError::UnsupportedVersion(2))
        );
        let mut zero_uid = bytes.clone();
        zero_uid[5] = 0;
        assert_eq!(
            SignedUpdate::decode(&zero_uid),
            Err(MessageError::BadString("round UID"))
        );
        bytes.push(0);
        assert_eq!(SignedUpdate::decode(&bytes), Err(MessageError::TrailingBytes(1)));
        assert_eq!(
            SignedUpdate::decode(b"X6FU\x01"),
            Err(MessageError::Truncated {
                offset: 5,
                needed: 1,
                available: 0
            })
        );
        let mut empty_uid = update();
        empty_uid.round_uid.clear();
        assert_eq!(
            empty_uid.signed_bytes(),
            Err(MessageError::BadString("round UID"))
        );
        let mut long_participant = update();
        long_participant.participant = "n".repeat(MAX_PARTICIPANT_LEN + 1);
        assert_eq!(
            long_participant.signed_bytes(),
            Err(MessageError::BadString("participant"))
        );
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
        bytes[dim_at..dim_at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            SignedUpdate::decode(&bytes),
            Err(MessageError::Truncated {
                offset: dim_at + 4,
                needed: 4 * u32::MAX as usize,
                available: 4 * 3 + 2,
            })
        );
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
