//! A zone aggregator's report to the job's global aggregator: the zone's aggregate of one
//! round (or why it has none) and what became of each member's update, signed by the zone
//! aggregator's node key under `SigningContext::FlControl` (the magic tells it apart from a
//! [`TrainRequest`](super::train_request::TrainRequest) under the same context).
//!
//! Layout (integers and floats big-endian), version 1:
//!
//! ```text
//! magic "X6FZ" | version u8 = 1
//! job_uid_len u8 | job_uid            (1..=128 bytes, UTF-8)
//! round u32
//! zone_len u8 | zone                  (label value, 1..=63 bytes)
//! aggregator_len u8 | zone_aggregator (node name, 1..=253 bytes)
//! key_epoch u32                       (epoch of the zone aggregator key that signed)
//! base_digest [32]                    (the round's global model digest)
//! examples u64                        (examples behind the admitted updates)
//! error_len u16 | error               (0..=512 bytes; non-empty iff dim = 0)
//! outcomes u16 (0..=1024) | each:
//!     len u8 | participant            (node name, 1..=253 bytes)
//!     verdict u8 (0 accepted, 1 down-weighted, 2 rejected)
//!     for 1 and 2: reason_len u16 | reason (1..=512 bytes)
//! dim u32 | values dim × f32          (the zone's aggregate; dim = 0 iff error is set)
//! signature_len u16 | signature
//! ```
//!
//! The signature covers every byte before `signature_len`. Every length is checked against
//! the bytes present before anything is read or allocated, so arbitrary bytes give an error.
//! Values need not be finite here: the receiver checks them.
use x0tta6bl4_crypto::SigningKey;

use super::fields::{Reader, append_signature, put_string, put_text, put_values};
use super::{MAX_NAME_LEN, MAX_PARTICIPANTS, MAX_UID_LEN, MessageError};

pub const MAGIC: [u8; 4] = *b"X6FZ";
pub const VERSION: u8 = 1;
/// Longest reason or error text carried.
pub const MAX_REASON_LEN: usize = 512;
/// A zone is a label value.
const MAX_ZONE_LEN: usize = 63;
// Their lengths travel as u16.
const _: () = assert!(MAX_REASON_LEN <= u16::MAX as usize);

/// One zone's result for one round.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneReport {
    /// metadata.uid of the FLTrainingRound.
    pub job_uid: String,
    pub round: u32,
    /// The zone (a label value).
    pub zone: String,
    /// The zone aggregator's node name (whose key signs).
    pub zone_aggregator: String,
    /// Epoch of the key that signed.
    pub key_epoch: u32,
    /// The round's global model digest.
    pub base_digest: [u8; 32],
    /// Examples behind the admitted updates.
    pub examples: u64,
    /// Why the zone has no aggregate (its rule refused, nothing arrived); empty when `values` is set.
    pub error: String,
    /// What became of each member's update (at most `MAX_PARTICIPANTS`).
    pub outcomes: Vec<MemberOutcome>,
    /// The zone's aggregated update (empty iff `error` is set).
    pub values: Vec<f32>,
}

/// What became of one zone member's update.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberOutcome {
    pub participant: String,
    pub verdict: MemberVerdict,
}

/// The zone rule's verdict on an update; reasons are 1..=[`MAX_REASON_LEN`] bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum MemberVerdict {
    Accepted,
    DownWeighted(String),
    Rejected(String),
}

impl ZoneReport {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, MessageError> {
        if self.error.is_empty() == self.values.is_empty() {
            return Err(MessageError::BadField("error xor values"));
        }
        let mut out =
            Vec::with_capacity(128 + self.error.len() + 64 * self.outcomes.len() + 4 * self.values.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        put_string(&mut out, &self.job_uid, MAX_UID_LEN, "job UID")?;
        out.extend_from_slice(&self.round.to_be_bytes());
        put_string(&mut out, &self.zone, MAX_ZONE_LEN, "zone")?;
        put_string(&mut out, &self.zone_aggregator, MAX_NAME_LEN, "zone aggregator")?;
        out.extend_from_slice(&self.key_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_digest);
        out.extend_from_slice(&self.examples.to_be_bytes());
        put_text(&mut out, &self.error, MAX_REASON_LEN, false, "error")?;
        if self.outcomes.len() > MAX_PARTICIPANTS {
            return Err(MessageError::BadField("outcomes"));
        }
        let count = u16::try_from(self.outcomes.len()).map_err(|_| MessageError::BadField("outcomes"))?;
        out.extend_from_slice(&count.to_be_bytes());
        for outcome in &self.outcomes {
            put_string(&mut out, &outcome.participant, MAX_NAME_LEN, "participant")?;
            match &outcome.verdict {
                MemberVerdict::Accepted => out.push(0),
                MemberVerdict::DownWeighted(reason) => {
                    out.push(1);
                    put_text(&mut out, reason, MAX_REASON_LEN, true, "reason")?;
                }
                MemberVerdict::Rejected(reason) => {
                    out.push(2);
                    put_text(&mut out, reason, MAX_REASON_LEN, true, "reason")?;
                }
            }
        }
        put_values(&mut out, &self.values)?;
        Ok(out)
    }

    /// Signs with the zone aggregator's node key and returns the wire bytes.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, MessageError> {
        append_signature(self.signed_bytes()?, key)
    }

    /// Parses wire bytes into the report, the signed prefix's length and the signature. The
    /// caller verifies the signature before using anything in the report.
    pub fn decode(bytes: &[u8]) -> Result<(ZoneReport, usize, &[u8]), MessageError> {
        let mut r = Reader::open(bytes, MAGIC, VERSION)?;
        let job_uid = r.string(MAX_UID_LEN, "job UID")?;
        let round = r.u32()?;
        let zone = r.string(MAX_ZONE_LEN, "zone")?;
        let zone_aggregator = r.string(MAX_NAME_LEN, "zone aggregator")?;
        let key_epoch = r.u32()?;
        let base_digest: [u8; 32] = r.array()?;
        let examples = r.u64()?;
        let error = r.text(MAX_REASON_LEN, false, "error")?;
        let count = usize::from(r.u16()?);
        if count > MAX_PARTICIPANTS {
            return Err(MessageError::BadField("outcomes"));
        }
        let mut outcomes = Vec::with_capacity(count.min(bytes.len()));
        for _ in 0..count {
            let participant = r.string(MAX_NAME_LEN, "participant")?;
            let verdict = match r.u8()? {
                0 => MemberVerdict::Accepted,
                1 => MemberVerdict::DownWeighted(r.text(MAX_REASON_LEN, true, "reason")?),
                2 => MemberVerdict::Rejected(r.text(MAX_REASON_LEN, true, "reason")?),
                _ => return Err(MessageError::BadField("verdict")),
            };
            outcomes.push(MemberOutcome { participant, verdict });
        }
        let values = r.values()?;
        if error.is_empty() == values.is_empty() {
            return Err(MessageError::BadField("error xor values"));
        }
        let (signed_len, signature) = r.signature()?;
        let report = ZoneReport {
            job_uid,
            round,
            zone,
            zone_aggregator,
            key_epoch,
            base_digest,
            examples,
            error,
            outcomes,
            values,
        };
        Ok((report, signed_len, signature))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use x0tta6bl4_crypto::SigningContext;

    fn report(values: Vec<f32>, error: &str) -> ZoneReport {
        ZoneReport {
            job_uid: "0b5e-uid".into(),
            round: 7,
            zone: "eu-west-1a".into(),
            zone_aggregator: "node-z".into(),
            key_epoch: 3,
            base_digest: [0xab; 32],
            examples: 1_234_567,
            error: error.into(),
            outcomes: vec![
                MemberOutcome {
                    participant: "node-a".into(),
                    verdict: MemberVerdict::Accepted,
                },
                MemberOutcome {
                    participant: "node-b".into(),
                    verdict: MemberVerdict::DownWeighted("far from the zone median".into()),
                },
                MemberOutcome {
                    participant: "node-c".into(),
                    verdict: MemberVerdict::Rejected("norm 41.2 above the bound".into()),
                },
            ],
            values,
        }
    }

    /// A valid message with a dummy signature (no key needed).
    fn unsigned_wire(report: &ZoneReport) -> Vec<u8> {
        let mut bytes = report.signed_bytes().unwrap();
        bytes.extend_from_slice(&3u16.to_be_bytes());
        bytes.extend_from_slice(&[7, 8, 9]);
        bytes
    }

    /// Decoding never panics, and whatever decodes re-encodes to the same signed bytes.
    fn check_decode(bytes: &[u8]) {
        if let Ok((decoded, signed_len, signature)) = ZoneReport::decode(bytes) {
            assert_eq!(decoded.signed_bytes().unwrap(), &bytes[..signed_len]);
            assert_eq!(signature, &bytes[signed_len + 2..]);
        }
    }

    #[test]
    fn a_signed_report_verifies_and_any_changed_byte_does_not() {
        let key = SigningKey::generate().unwrap();
        let verifying = key.verifying_key();
        for rep in [
            report(vec![0.25, -1.5, f32::NAN, 3.0], ""),
            report(vec![], "krum refused: 2 updates, needs 5"),
        ] {
            let bytes = rep.sign(&key).unwrap();
            let (decoded, signed_len, signature) = ZoneReport::decode(&bytes).unwrap();
            // NaN != NaN: compare the encodings, then the rest.
            assert_eq!(decoded.signed_bytes().unwrap(), rep.signed_bytes().unwrap());
            assert_eq!(decoded.values.len(), rep.values.len());
            assert_eq!(
                ZoneReport {
                    values: vec![],
                    error: String::new(),
                    ..decoded.clone()
                },
                ZoneReport {
                    values: vec![],
                    error: String::new(),
                    ..rep.clone()
                }
            );
            assert_eq!(decoded.error, rep.error);
            assert_eq!(signed_len, rep.signed_bytes().unwrap().len());
            assert!(
                verifying
                    .verify(SigningContext::FlControl, &bytes[..signed_len], signature)
                    .is_ok()
            );
            assert!(
                verifying
                    .verify(SigningContext::ModelUpdate, &bytes[..signed_len], signature)
                    .is_err(),
                "another context does not verify"
            );
            let mut verified = 0;
            for at in 0..signed_len {
                let mut tampered = bytes.clone();
                tampered[at] ^= 1;
                // A flip either breaks the encoding or changes the signed bytes.
                if let Ok((_, len, sig)) = ZoneReport::decode(&tampered) {
                    verified += 1;
                    assert!(
                        verifying
                            .verify(SigningContext::FlControl, &tampered[..len], sig)
                            .is_err(),
                        "byte {at} flipped still verifies"
                    );
                }
            }
            // Most flips (in strings, digest, counts, values) still decode: the signature is what refuses them.
            assert!(verified > signed_len / 2, "{verified} of {signed_len}");
        }
    }

    #[test]
    fn integers_and_floats_are_big_endian() {
        let rep = report(vec![1.0], "");
        let bytes = rep.signed_bytes().unwrap();
        let round_at = 5 + 1 + rep.job_uid.len();
        assert_eq!(bytes[round_at..round_at + 4], [0, 0, 0, 7]);
        // dim 1, then 1.0f32.
        assert_eq!(bytes[bytes.len() - 8..], [0, 0, 0, 1, 0x3f, 0x80, 0, 0]);
    }

    #[test]
    fn a_report_round_trips_without_nans() {
        let rep = report(vec![1.0, -0.0, 1e-30, f32::MAX], "");
        let bytes = unsigned_wire(&rep);
        let (decoded, signed_len, signature) = ZoneReport::decode(&bytes).unwrap();
        assert_eq!(decoded, rep);
        assert_eq!(signed_len, bytes.len() - 5);
        assert_eq!(signature, &[7u8, 8, 9][..]);
        let none = ZoneReport {
            outcomes: vec![],
            ..report(vec![], "nothing arrived")
        };
        assert_eq!(ZoneReport::decode(&unsigned_wire(&none)).unwrap().0, none);
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        for rep in [report(vec![1.0; 5], ""), report(vec![], "refused")] {
            let mut bytes = unsigned_wire(&rep);
            assert!(ZoneReport::decode(&bytes).is_ok());
            for cut in 0..bytes.len() {
                assert!(ZoneReport::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            bytes.push(0);
            assert_eq!(
                ZoneReport::decode(&bytes).unwrap_err(),
                MessageError::TrailingBytes(1)
            );
        }
    }

    #[test]
    fn a_train_request_is_not_a_zone_report() {
        let mut bytes = unsigned_wire(&report(vec![1.0], ""));
        bytes[..4].copy_from_slice(&crate::codec::train_request::MAGIC);
        assert_eq!(ZoneReport::decode(&bytes).unwrap_err(), MessageError::BadMagic);
        let mut bytes = unsigned_wire(&report(vec![1.0], ""));
        bytes[4] = 2;
        assert_eq!(
            ZoneReport::decode(&bytes).unwrap_err(),
            MessageError::UnsupportedVersion(2)
        );
    }

    #[test]
    fn random_and_mutated_inputs_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x7a0e_5e90);
        let valid = [
            unsigned_wire(&report(vec![0.5; 3], "")),
            unsigned_wire(&report(vec![], "no quorum")),
        ];
        let mut decoded = 0;
        for i in 0..6000 {
            let mut bytes = match i % 3 {
                // Random bytes, with and without the magic and version.
                0 => {
                    let len = rng.random_range(0..256);
                    let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                    if rng.random_bool(0.5) {
                        let mut prefixed = MAGIC.to_vec();
                        prefixed.push(VERSION);
                        prefixed.append(&mut bytes);
                        bytes = prefixed;
                    }
                    bytes
                }
                _ => valid[rng.random_range(0..valid.len())].clone(),
            };
            if i % 3 != 0 {
                for _ in 0..rng.random_range(1..=4) {
                    let at = rng.random_range(0..bytes.len());
                    match rng.random_range(0..5) {
                        0 => bytes[at] ^= 1 << rng.random_range(0..8),
                        1 => bytes[at] = rng.random(),
                        2 => bytes[at] = [0, 0xff, 0x7f, 0x80][rng.random_range(0..4)],
                        3 => bytes.insert(at, rng.random()),
                        _ => {
                            bytes.remove(at);
                        }
                    }
                    if bytes.is_empty() {
                        break;
                    }
                }
            }
            decoded += usize::from(ZoneReport::decode(&bytes).is_ok());
            check_decode(&bytes);
        }
        // Some mutations (a value byte, a digest byte) still decode: the check above ran.
        assert!(decoded > 0);
    }

    #[test]
    fn oversized_or_empty_fields_are_refused() {
        let ok = report(vec![1.0], "");
        assert!(ok.signed_bytes().is_ok());
        let long = |n| "x".repeat(n);
        let at_limit = ZoneReport {
            job_uid: long(MAX_UID_LEN),
            zone: long(MAX_ZONE_LEN),
            zone_aggregator: long(MAX_NAME_LEN),
            outcomes: (0..MAX_PARTICIPANTS)
                .map(|i| MemberOutcome {
                    participant: format!("node-{i}"),
                    verdict: MemberVerdict::Rejected(long(MAX_REASON_LEN)),
                })
                .collect(),
            ..ok.clone()
        };
        let bytes = unsigned_wire(&at_limit);
        assert_eq!(ZoneReport::decode(&bytes).unwrap().0, at_limit);
        let refused = |rep: ZoneReport, why: MessageError| {
            assert_eq!(rep.signed_bytes().unwrap_err(), why, "{rep:?}");
        };
        use MessageError::{BadField, BadString};
        for (job_uid, zone, zone_aggregator, field) in [
            (long(MAX_UID_LEN + 1), "z".into(), "n".into(), "job UID"),
            (String::new(), "z".into(), "n".into(), "job UID"),
            ("u".into(), long(MAX_ZONE_LEN + 1), "n".into(), "zone"),
            ("u".into(), String::new(), "n".into(), "zone"),
            ("u".into(), "z".into(), long(MAX_NAME_LEN + 1), "zone aggregator"),
            ("u".into(), "z".into(), String::new(), "zone aggregator"),
        ] {
            refused(
                ZoneReport {
                    job_uid,
                    zone,
                    zone_aggregator,
                    ..ok.clone()
                },
                BadString(field),
            );
        }
        refused(report(vec![], &long(MAX_REASON_LEN + 1)), BadString("error"));
        let with_outcome = |participant: String, verdict| ZoneReport {
            outcomes: vec![MemberOutcome { participant, verdict }],
            ..ok.clone()
        };
        refused(
            with_outcome(long(MAX_NAME_LEN + 1), MemberVerdict::Accepted),
            BadString("participant"),
        );
        refused(
            with_outcome(String::new(), MemberVerdict::Accepted),
            BadString("participant"),
        );
        for verdict in [
            MemberVerdict::DownWeighted(long(MAX_REASON_LEN + 1)),
            MemberVerdict::Rejected(long(MAX_REASON_LEN + 1)),
            MemberVerdict::DownWeighted(String::new()),
            MemberVerdict::Rejected(String::new()),
        ] {
            refused(with_outcome("node-a".into(), verdict), BadString("reason"));
        }
        let mut too_many = at_limit.clone();
        too_many.outcomes.push(too_many.outcomes[0].clone());
        refused(too_many, BadField("outcomes"));
    }

    #[test]
    fn error_and_values_are_exclusive() {
        let refused = MessageError::BadField("error xor values");
        let both = report(vec![1.0], "refused");
        assert_eq!(both.signed_bytes().unwrap_err(), refused);
        let neither = report(vec![], "");
        assert_eq!(neither.signed_bytes().unwrap_err(), refused);

        // On the wire too: `dim` and the values are the last signed fields.
        let mut both = report(vec![], "refused").signed_bytes().unwrap();
        both.truncate(both.len() - 4);
        both.extend_from_slice(&1u32.to_be_bytes());
        both.extend_from_slice(&1.0f32.to_be_bytes());
        both.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(ZoneReport::decode(&both).unwrap_err(), refused);
        let mut neither = report(vec![1.0], "").signed_bytes().unwrap();
        neither.truncate(neither.len() - 8);
        neither.extend_from_slice(&0u32.to_be_bytes());
        neither.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(ZoneReport::decode(&neither).unwrap_err(), refused);
    }
}
