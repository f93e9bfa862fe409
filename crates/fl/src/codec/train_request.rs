//! The aggregator's training request, as it travels on the agents' train flow: what a
//! participant needs to train one round, signed by the aggregator's node key under
//! `SigningContext::FlControl`.
//!
//! Layout (integers and floats big-endian), version 2:
//!
//! ```text
//! magic "X6FT" | version u8 = 2
//! job_uid_len u8 | job_uid            (1..=128 bytes, UTF-8)
//! round u32
//! aggregator_len u8 | aggregator      (node name, 1..=253 bytes)
//! key_epoch u32                       (epoch of the aggregator key that signed)
//! base_digest [32]                    (SHA-256 of `values`, model::digest)
//! kind u8 (0 LR, 1 MLP) | hidden u32 | input u32 | classes u32
//! dataset u8 (0 iris, 1 digits, 2 linkTelemetry: each agent's own windows)
//! local_epochs u32 | batch_size u32 | learning_rate f64 | seed u64
//! traced u8 (0 none, 1: trace_id [16] | span_id [8] | flags u8)   (version 2 only)
//! participants u16 | each: len u8 | node name
//! dim u32 | values dim × f32
//! signature_len u16 | signature
//! ```
//!
//! Version 1 (without the trace context) is still read, so agents of the previous release
//! take part in rounds during a rolling upgrade. The signature covers every byte before
//! `signature_len`, the trace context included. Every length is checked against
//! the bytes present before anything is read or allocated, so arbitrary bytes give an error.
use x0tta6bl4_crypto::SigningKey;

use super::fields::{Reader, append_signature, put_string, put_values};
use super::{MAX_NAME_LEN, MAX_PARTICIPANTS, MAX_UID_LEN, MessageError};
use crate::dataset::DatasetName;
use crate::model::{ModelKind, ModelShape};

pub const MAGIC: [u8; 4] = *b"X6FT";
pub const VERSION: u8 = 2;
/// The version before the trace context, still accepted.
const VERSION_UNTRACED: u8 = 1;
/// Width of an MLP's hidden layer, bounded so a request cannot ask for a huge network.
pub const MAX_HIDDEN: u32 = 65_536;

/// What a job trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobDataset {
    /// A dataset shipped with the agent: every agent splits it alike by the job's seed, each
    /// participant trains on its shard and the aggregator evaluates on the held-out part.
    Shipped(DatasetName),
    /// Each agent's own recorded link windows (the agent's `linkTelemetry` dataset): a
    /// participant trains on its own, the aggregator evaluates on the held-out part of its own.
    LinkTelemetry,
}

/// The aggregator's round span, so a participant's training span joins the round's trace
/// (W3C trace-context fields, binary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// W3C trace flags (bit 0: sampled).
    pub flags: u8,
}

/// One round's training request.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainRequest {
    /// metadata.uid of the FLTrainingRound.
    pub job_uid: String,
    pub round: u32,
    /// The aggregator's node name (whose key signs).
    pub aggregator: String,
    pub key_epoch: u32,
    pub base_digest: [u8; 32],
    pub shape: ModelShape,
    pub dataset: JobDataset,
    pub local_epochs: u32,
    pub batch_size: u32,
    pub learning_rate: f64,
    /// Seeds the data split and local training; derived from the job UID.
    pub seed: u64,
    /// The aggregator's round span, when it exports traces.
    pub trace: Option<TraceContext>,
    /// Every participant, in order: a participant's position is its shard index.
    pub participants: Vec<String>,
    /// The global model to train from.
    pub values: Vec<f32>,
}

impl TrainRequest {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::with_capacity(160 + 4 * self.values.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        put_string(&mut out, &self.job_uid, MAX_UID_LEN, "job UID")?;
        out.extend_from_slice(&self.round.to_be_bytes());
        put_string(&mut out, &self.aggregator, MAX_NAME_LEN, "aggregator")?;
        out.extend_from_slice(&self.key_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_digest);
        let (kind, hidden) = match self.shape.kind {
            ModelKind::LogisticRegression => (0u8, 0u32),
            ModelKind::Mlp { hidden } => (
                1,
                u32::try_from(hidden).map_err(|_| MessageError::BadField("hidden"))?,
            ),
        };
        out.push(kind);
        out.extend_from_slice(&hidden.to_be_bytes());
        for n in [self.shape.input, self.shape.classes] {
            let n = u32::try_from(n).map_err(|_| MessageError::BadField("shape"))?;
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.push(match self.dataset {
            JobDataset::Shipped(DatasetName::Iris) => 0,
            JobDataset::Shipped(DatasetName::Digits) => 1,
            JobDataset::LinkTelemetry => 2,
        });
        out.extend_from_slice(&self.local_epochs.to_be_bytes());
        out.extend_from_slice(&self.batch_size.to_be_bytes());
        out.extend_from_slice(&self.learning_rate.to_be_bytes());
        out.extend_from_slice(&self.seed.to_be_bytes());
        match &self.trace {
            None => out.push(0),
            Some(trace) => {
                out.push(1);
                out.extend_from_slice(&trace.trace_id);
                out.extend_from_slice(&trace.span_id);
                out.push(trace.flags);
            }
        }
        if self.participants.len() > MAX_PARTICIPANTS {
            return Err(MessageError::BadField("participants"));
        }
        let count =
            u16::try_from(self.participants.len()).map_err(|_| MessageError::BadField("participants"))?;
        out.extend_from_slice(&count.to_be_bytes());
        for name in &self.participants {
            put_string(&mut out, name, MAX_NAME_LEN, "participant")?;
        }
        put_values(&mut out, &self.values)?;
        Ok(out)
    }

    /// Signs with the aggregator's node key and returns the wire bytes.
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>, MessageError> {
        append_signature(self.signed_bytes()?, key)
    }

    /// Parses wire bytes into the request, the signed prefix's length and the signature. The
    /// caller verifies the signature before using anything in the request.
    pub fn decode(bytes: &[u8]) -> Result<(TrainRequest, usize, &[u8]), MessageError> {
        let (mut r, version) = Reader::open_any(bytes, MAGIC, &[VERSION_UNTRACED, VERSION])?;
        let job_uid = r.string(MAX_UID_LEN, "job UID")?;
        let round = r.u32()?;
        let aggregator = r.string(MAX_NAME_LEN, "aggregator")?;
        let key_epoch = r.u32()?;
        let base_digest: [u8; 32] = r.array()?;
        let kind = r.u8()?;
        let hidden = r.u32()?;
        let input = usize::try_from(r.u32()?).map_err(|_| MessageError::BadField("shape"))?;
        let classes = usize::try_from(r.u32()?).map_err(|_| MessageError::BadField("shape"))?;
        // A logistic regression has no hidden layer: its `hidden` is 0, so that every request
        // has one encoding.
        let kind = match (kind, hidden) {
            (0, 0) => ModelKind::LogisticRegression,
            (1, 1..=MAX_HIDDEN) => ModelKind::Mlp {
                hidden: usize::try_from(hidden).map_err(|_| MessageError::BadField("hidden"))?,
            },
            _ => return Err(MessageError::BadField("model kind")),
        };
        let dataset = match r.u8()? {
            0 => JobDataset::Shipped(DatasetName::Iris),
            1 => JobDataset::Shipped(DatasetName::Digits),
            2 => JobDataset::LinkTelemetry,
            _ => return Err(MessageError::BadField("dataset")),
        };
        let local_epochs = r.u32()?;
        let batch_size = r.u32()?;
        let learning_rate = r.f64()?;
        let seed = r.u64()?;
        let traced = version != VERSION_UNTRACED
            && match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(MessageError::BadField("trace")),
            };
        let trace = if traced {
            Some(TraceContext {
                trace_id: r.array()?,
                span_id: r.array()?,
                flags: r.u8()?,
            })
        } else {
            None
        };
        let count = usize::from(r.u16()?);
        if count > MAX_PARTICIPANTS {
            return Err(MessageError::BadField("participants"));
        }
        let mut participants = Vec::with_capacity(count.min(bytes.len()));
        for _ in 0..count {
            participants.push(r.string(MAX_NAME_LEN, "participant")?);
        }
        let values = r.values()?;
        let (signed_len, signature) = r.signature()?;
        let request = TrainRequest {
            job_uid,
            round,
            aggregator,
            key_epoch,
            base_digest,
            shape: ModelShape::new(kind, input, classes),
            dataset,
            local_epochs,
            batch_size,
            learning_rate,
            seed,
            trace,
            participants,
            values,
        };
        Ok((request, signed_len, signature))
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use proptest::prelude::*;
    use x0tta6bl4_crypto::SigningContext;

    fn request(values: Vec<f32>, participants: Vec<String>, mlp: Option<usize>) -> TrainRequest {
        let kind = mlp.map_or(ModelKind::LogisticRegression, |hidden| ModelKind::Mlp { hidden });
        TrainRequest {
            job_uid: "0b5e-uid".into(),
            round: 3,
            aggregator: "node-a".into(),
            key_epoch: 2,
            base_digest: crate::model::digest(&values),
            shape: ModelShape::new(kind, 4, 3),
            dataset: JobDataset::Shipped(DatasetName::Iris),
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.5,
            seed: 42,
            trace: None,
            participants,
            values,
        }
    }

    #[test]
    fn the_trace_context_round_trips_is_signed_and_version_1_is_still_read() {
        let key = SigningKey::generate().unwrap();
        let untraced = request(vec![0.25; 15], vec!["node-a".into()], None);
        let traced = TrainRequest {
            trace: Some(TraceContext {
                trace_id: [7; 16],
                span_id: [9; 8],
                flags: 1,
            }),
            ..untraced.clone()
        };
        let bytes = traced.sign(&key).unwrap();
        let (decoded, signed_len, _) = TrainRequest::decode(&bytes).unwrap();
        assert_eq!(decoded, traced);
        let plain = untraced.signed_bytes().unwrap();
        assert_eq!(
            signed_len,
            plain.len() + 25,
            "flag byte 1 and 25 bytes of context"
        );
        // The same request as the previous release wrote it: version 1, no trace byte.
        let traced_at = plain.len() - 4 * 15 - 4 - (2 + 1 + 6) - 1;
        assert_eq!(plain[traced_at], 0);
        let mut v1 = plain.clone();
        v1.remove(traced_at);
        v1[4] = 1;
        v1.extend_from_slice(&0u16.to_be_bytes());
        let (old, _, _) = TrainRequest::decode(&v1).unwrap();
        assert_eq!(old, untraced);
        // A trace flag other than 0 or 1 is refused rather than read two ways.
        let mut odd = plain;
        odd[traced_at] = 2;
        odd.extend_from_slice(&0u16.to_be_bytes());
        assert_eq!(
            TrainRequest::decode(&odd).unwrap_err(),
            MessageError::BadField("trace")
        );
        assert_eq!(
            TrainRequest::decode(&[b'X', b'6', b'F', b'T', 3]).unwrap_err(),
            MessageError::UnsupportedVersion(3)
        );
    }

    #[test]
    fn a_signed_request_verifies_and_a_changed_byte_does_not() {
        let key = SigningKey::generate().unwrap();
        let req = request(vec![0.25; 15], vec!["node-a".into(), "node-b".into()], None);
        let bytes = req.sign(&key).unwrap();
        let (decoded, signed_len, signature) = TrainRequest::decode(&bytes).unwrap();
        assert_eq!(decoded, req);
        let verifying = key.verifying_key();
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
        let mut tampered = bytes.clone();
        tampered[signed_len - 1] ^= 1;
        let (_, len, sig) = TrainRequest::decode(&tampered).unwrap();
        assert!(
            verifying
                .verify(SigningContext::FlControl, &tampered[..len], sig)
                .is_err()
        );
    }

    #[test]
    fn each_dataset_has_its_code_and_an_unknown_code_is_refused() {
        let req = request(vec![0.5; 15], vec!["a".into()], None);
        let encode = |dataset| {
            let mut bytes = TrainRequest {
                dataset,
                ..req.clone()
            }
            .signed_bytes()
            .unwrap();
            bytes.extend_from_slice(&0u16.to_be_bytes());
            bytes
        };
        let iris = encode(JobDataset::Shipped(DatasetName::Iris));
        let telemetry = encode(JobDataset::LinkTelemetry);
        let differ: Vec<usize> = (0..iris.len()).filter(|&i| iris[i] != telemetry[i]).collect();
        let [at] = differ[..] else {
            panic!("one byte names the dataset: {differ:?}")
        };
        assert_eq!((iris[at], telemetry[at]), (0, 2));
        assert_eq!(encode(JobDataset::Shipped(DatasetName::Digits))[at], 1);
        let (decoded, _, _) = TrainRequest::decode(&telemetry).unwrap();
        assert_eq!(decoded.dataset, JobDataset::LinkTelemetry);
        for code in [3u8, 0x80, 0xff] {
            let mut unknown = telemetry.clone();
            unknown[at] = code;
            assert_eq!(
                TrainRequest::decode(&unknown).unwrap_err(),
                MessageError::BadField("dataset"),
                "code {code}"
            );
        }
    }

    #[test]
    fn integers_and_floats_are_big_endian() {
        let req = request(vec![1.0], vec!["a".into()], None);
        let bytes = req.signed_bytes().unwrap();
        let round_at = 5 + 1 + req.job_uid.len();
        assert_eq!(bytes[round_at..round_at + 4], [0, 0, 0, 3]);
        // dim 1, then 1.0f32.
        assert_eq!(bytes[bytes.len() - 8..], [0, 0, 0, 1, 0x3f, 0x80, 0, 0]);
    }

    #[test]
    fn a_model_kind_is_read_with_its_hidden_width_and_only_one_encoding_decodes() {
        let lr = request(vec![0.5; 15], vec!["a".into()], None);
        let mut bytes = lr.signed_bytes().unwrap();
        bytes.extend_from_slice(&0u16.to_be_bytes());
        // kind u8 | hidden u32 follow magic, version, UID, round, aggregator, epoch, digest.
        let kind_at = 5 + 1 + lr.job_uid.len() + 4 + 1 + lr.aggregator.len() + 4 + 32;
        assert_eq!(bytes[kind_at..kind_at + 5], [0, 0, 0, 0, 0]);
        assert_eq!(TrainRequest::decode(&bytes).unwrap().0, lr);
        let field = |kind: u8, hidden: u32| {
            let mut changed = bytes.clone();
            changed[kind_at] = kind;
            changed[kind_at + 1..kind_at + 5].copy_from_slice(&hidden.to_be_bytes());
            TrainRequest::decode(&changed).map(|(request, _, _)| request.shape.kind)
        };
        assert_eq!(field(1, 7), Ok(ModelKind::Mlp { hidden: 7 }));
        assert_eq!(field(1, MAX_HIDDEN), Ok(ModelKind::Mlp { hidden: 65_536 }));
        let refused = Err(MessageError::BadField("model kind"));
        for (kind, hidden) in [(0, 1), (0, 0x0100_0000), (1, 0), (1, MAX_HIDDEN + 1), (2, 0)] {
            assert_eq!(field(kind, hidden), refused, "kind {kind}, hidden {hidden}");
        }
    }

    #[test]
    fn truncations_and_trailing_bytes_are_errors() {
        let req = request(vec![1.0; 15], vec!["a".into()], Some(2));
        let mut bytes = req.signed_bytes().unwrap();
        bytes.extend_from_slice(&0u16.to_be_bytes());
        assert!(TrainRequest::decode(&bytes).is_ok());
        for cut in 0..bytes.len() {
            assert!(TrainRequest::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        bytes.push(0);
        assert_eq!(
            TrainRequest::decode(&bytes).unwrap_err(),
            MessageError::TrailingBytes(1)
        );
    }

    proptest! {
        #[test]
        fn encoding_round_trips(
            values in proptest::collection::vec(-1e3f32..1e3, 0..64),
            names in proptest::collection::vec("[a-z][a-z0-9-]{0,20}", 1..8),
            mlp in proptest::option::of(1usize..64),
        ) {
            let req = request(values, names, mlp);
            let mut bytes = req.signed_bytes().unwrap();
            bytes.extend_from_slice(&3u16.to_be_bytes());
            bytes.extend_from_slice(&[7, 8, 9]);
            let (decoded, signed_len, signature) = TrainRequest::decode(&bytes).unwrap();
            prop_assert_eq!(decoded, req);
            prop_assert_eq!(signed_len, bytes.len() - 5);
            prop_assert_eq!(signature, &[7u8, 8, 9][..]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = TrainRequest::decode(&bytes);
            let mut prefixed = MAGIC.to_vec();
            prefixed.push(VERSION);
            prefixed.extend_from_slice(&bytes);
            let _ = TrainRequest::decode(&prefixed);
        }
    }
}
