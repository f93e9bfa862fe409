//! The aggregator's training request, as it travels on [`TRAIN_FLOW`]: what a participant
//! needs to train one round, signed by the aggregator's node key under
//! `SigningContext::FlControl`. (Updates travel as `x0tta6bl4_fl::update::SignedUpdate` bytes.)
//!
//! Layout (integers little-endian), version 1:
//!
//! ```text
//! magic "X6FT" | version u8 = 1
//! job_uid_len u8 | job_uid            (1..=128 bytes, UTF-8)
//! round u32
//! aggregator_len u8 | aggregator      (node name, 1..=253 bytes)
//! key_epoch u32                       (epoch of the aggregator key that signed)
//! base_digest [32]                    (SHA-256 of `values`, model::digest)
//! kind u8 (0 LR, 1 MLP) | hidden u32 | input u32 | classes u32
//! dataset u8 (0 iris, 1 digits, 2 linkTelemetry: each agent's own windows)
//! local_epochs u32 | batch_size u32 | learning_rate f64 | seed u64
//! participants u16 | each: len u8 | node name
//! dim u32 | values dim × f32
//! signature_len u16 | signature
//! ```
//!
//! The signature covers every byte before `signature_len`. Every length is checked against
//! the bytes present before anything is read or allocated, so arbitrary bytes give an error.
//!
//! [`TRAIN_FLOW`]: x0tta6bl4_api::fl_protocol::TRAIN_FLOW
use x0tta6bl4_crypto::SigningContext;
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_fl::dataset::DatasetName;
use x0tta6bl4_fl::model::{ModelKind, ModelShape};

use super::job::JobDataset;

pub const MAGIC: [u8; 4] = *b"X6FT";
pub const VERSION: u8 = 1;
pub const MAX_UID_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 253;
/// More participants than one request names is not a round this agent runs.
pub const MAX_PARTICIPANTS: usize = 1024;
/// Width of an MLP's hidden layer, bounded so a request cannot ask for a huge network.
pub const MAX_HIDDEN: u32 = 65_536;

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
    /// Every participant, in order: a participant's position is its shard index.
    pub participants: Vec<String>,
    /// The global model to train from.
    pub values: Vec<f32>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("truncated at offset {0}")]
    Truncated(usize),
    #[error("not a training request (bad magic)")]
    BadMagic,
    #[error("unsupported version {0}")]
    UnsupportedVersion(u8),
    #[error("{0} is empty, too long or not UTF-8")]
    BadString(&'static str),
    #[error("bad field {0}")]
    BadField(&'static str),
    #[error("{0} bytes after the signature")]
    TrailingBytes(usize),
    #[error("signing failed: {0}")]
    Signing(String),
}

impl TrainRequest {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Result<Vec<u8>, MessageError> {
        let mut out = Vec::with_capacity(160 + 4 * self.values.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        put_string(&mut out, &self.job_uid, MAX_UID_LEN, "job UID")?;
        out.extend_from_slice(&self.round.to_le_bytes());
        put_string(&mut out, &self.aggregator, MAX_NAME_LEN, "aggregator")?;
        out.extend_from_slice(&self.key_epoch.to_le_bytes());
        out.extend_from_slice(&self.base_digest);
        let (kind, hidden) = match self.shape.kind {
            ModelKind::LogisticRegression => (0u8, 0u32),
            ModelKind::Mlp { hidden } => (
                1,
                u32::try_from(hidden).map_err(|_| MessageError::BadField("hidden"))?,
            ),
        };
        out.push(kind);
        out.extend_from_slice(&hidden.to_le_bytes());
        for n in [self.shape.input, self.shape.classes] {
            let n = u32::try_from(n).map_err(|_| MessageError::BadField("shape"))?;
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(match self.dataset {
            JobDataset::Shipped(DatasetName::Iris) => 0,
            JobDataset::Shipped(DatasetName::Digits) => 1,
            JobDataset::LinkTelemetry => 2,
        });
        out.extend_from_slice(&self.local_epochs.to_le_bytes());
        out.extend_from_slice(&self.batch_size.to_le_bytes());
        out.extend_from_slice(&self.learning_rate.to_le_bytes());
        out.extend_from_slice(&self.seed.to_le_bytes());
        if self.participants.len() > MAX_PARTICIPANTS {
            return Err(MessageError::BadField("participants"));
        }
        out.extend_from_slice(&(self.participants.len() as u16).to_le_bytes());
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
        let mut r = Reader::open(bytes, MAGIC, VERSION)?;
        let job_uid = r.string(MAX_UID_LEN, "job UID")?;
        let round = r.u32()?;
        let aggregator = r.string(MAX_NAME_LEN, "aggregator")?;
        let key_epoch = r.u32()?;
        let base_digest: [u8; 32] = r
            .take(32)?
            .try_into()
            .map_err(|_| MessageError::Truncated(r.offset))?;
        let kind = r.u8()?;
        let hidden = r.u32()?;
        let input = r.u32()? as usize;
        let classes = r.u32()? as usize;
        let kind = match kind {
            0 => ModelKind::LogisticRegression,
            1 if (1..=MAX_HIDDEN).contains(&hidden) => ModelKind::Mlp {
                hidden: hidden as usize,
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
        let learning_rate = f64::from_le_bytes(r.array()?);
        let seed = u64::from_le_bytes(r.array()?);
        let count = u16::from_le_bytes(r.array()?) as usize;
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
            participants,
            values,
        };
        Ok((request, signed_len, signature))
    }
}

pub(super) fn put_string(
    out: &mut Vec<u8>,
    s: &str,
    max: usize,
    field: &'static str,
) -> Result<(), MessageError> {
    if s.is_empty() || s.len() > max {
        return Err(MessageError::BadString(field));
    }
    out.push(s.len() as u8);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends the values as `dim u32 | dim × f32`.
pub(super) fn put_values(out: &mut Vec<u8>, values: &[f32]) -> Result<(), MessageError> {
    let dim = u32::try_from(values.len()).map_err(|_| MessageError::BadField("dim"))?;
    out.extend_from_slice(&dim.to_le_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(())
}

/// Signs `signed` with the node key under the federated control context and appends
/// `signature_len u16 | signature`.
pub(super) fn append_signature(mut signed: Vec<u8>, key: &SigningKey) -> Result<Vec<u8>, MessageError> {
    let signature = key
        .sign(SigningContext::FlControl, &signed)
        .map_err(|e| MessageError::Signing(e.to_string()))?;
    signed.extend_from_slice(&(signature.0.len() as u16).to_le_bytes());
    signed.extend_from_slice(&signature.0);
    Ok(signed)
}

pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader past the magic and version, which must be `magic` and `version`.
    pub(super) fn open(bytes: &'a [u8], magic: [u8; 4], version: u8) -> Result<Self, MessageError> {
        let mut r = Reader { bytes, offset: 0 };
        if r.take(4)? != magic {
            return Err(MessageError::BadMagic);
        }
        let found = r.u8()?;
        if found != version {
            return Err(MessageError::UnsupportedVersion(found));
        }
        Ok(r)
    }

    /// `dim u32 | dim × f32`, the length checked against the bytes present before anything is
    /// allocated (`dim` is the sender's claim).
    pub(super) fn values(&mut self) -> Result<Vec<f32>, MessageError> {
        let dim = self.u32()? as usize;
        let raw = self.take(dim.checked_mul(4).ok_or(MessageError::Truncated(self.offset))?)?;
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    /// The signed prefix's length and the signature, which must end the message.
    pub(super) fn signature(&mut self) -> Result<(usize, &'a [u8]), MessageError> {
        let signed_len = self.offset;
        let sig_len = u16::from_le_bytes(self.array()?) as usize;
        let signature = self.take(sig_len)?;
        if self.offset != self.bytes.len() {
            return Err(MessageError::TrailingBytes(self.bytes.len() - self.offset));
        }
        Ok((signed_len, signature))
    }

    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        if n > self.bytes.len() - self.offset {
            return Err(MessageError::Truncated(self.offset));
        }
        let out = &self.bytes[self.offset..self.offset + n];
        self.offset += n;
        Ok(out)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let offset = self.offset;
        self.take(N)?
            .try_into()
            .map_err(|_| MessageError::Truncated(offset))
    }

    pub(super) fn u8(&mut self) -> Result<u8, MessageError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u32(&mut self) -> Result<u32, MessageError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(super) fn string(&mut self, max: usize, field: &'static str) -> Result<String, MessageError> {
        let len = self.u8()? as usize;
        if len == 0 || len > max {
            return Err(MessageError::BadString(field));
        }
        std::str::from_utf8(self.take(len)?)
            .map(str::to_owned)
            .map_err(|_| MessageError::BadString(field))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(values: Vec<f32>, participants: Vec<String>, mlp: Option<usize>) -> TrainRequest {
        let kind = mlp.map_or(ModelKind::LogisticRegression, |hidden| ModelKind::Mlp { hidden });
        TrainRequest {
            job_uid: "0b5e-uid".into(),
            round: 3,
            aggregator: "node-a".into(),
            key_epoch: 2,
            base_digest: x0tta6bl4_fl::model::digest(&values),
            shape: ModelShape::new(kind, 4, 3),
            dataset: JobDataset::Shipped(DatasetName::Iris),
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.5,
            seed: 42,
            participants,
            values,
        }
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
            bytes.extend_from_slice(&0u16.to_le_bytes());
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
    fn truncations_and_trailing_bytes_are_errors() {
        let req = request(vec![1.0; 15], vec!["a".into()], Some(2));
        let mut bytes = req.signed_bytes().unwrap();
        bytes.extend_from_slice(&0u16.to_le_bytes());
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
            bytes.extend_from_slice(&3u16.to_le_bytes());
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
