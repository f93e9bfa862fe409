//! A model update as a participant states it, with its detached ML-DSA-65 signature.
//!
//! Its byte format (big-endian, like every federated message) is [`crate::codec::update`]:
//! [`ModelUpdate::signed_bytes`], [`ModelUpdate::sign`], [`SignedUpdate::encode`] and
//! [`SignedUpdate::decode`]. Its constants and error types are re-exported here.
pub use crate::codec::MessageError as DecodeError;
pub use crate::codec::MessageError as EncodeError;
pub use crate::codec::update::{MAGIC, MAX_PARTICIPANT_LEN, MAX_ROUND_UID_LEN, VERSION};

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
