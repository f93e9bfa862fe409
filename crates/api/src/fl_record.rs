//! The audit record of a federated job: one [`RoundRecord`] per round, linked into a hash
//! chain (each record's `hash` covers its content and the previous record's hash), so a record
//! changed or dropped after the fact breaks every hash after it. The operator appends records
//! as rounds finish; `x0tta6bl4-operator verify-chain` checks a chain.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The hash that precedes the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An update the aggregator did not use as sent, and why.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Rejection {
    /// The participant (node name) the update came from, or claimed to.
    pub participant: String,
    /// Why (bad signature, wrong round, Krum score, ...).
    pub reason: String,
}

/// What one round did.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoundRecord {
    /// 1-based round number.
    pub round: i32,
    /// The agents asked to train.
    pub participants: Vec<String>,
    /// Whose updates went into the aggregate.
    pub accepted: Vec<String>,
    /// Updates refused or left out, with the reason.
    #[serde(default)]
    pub rejected: Vec<Rejection>,
    /// Updates used with less influence than an ordinary one (clipped, trimmed, stale), and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down_weighted: Vec<Rejection>,
    /// Mean test loss of the new global model, as a decimal string.
    pub loss: String,
    /// Test accuracy of the new global model, in percent, as a decimal string.
    pub accuracy: String,
    /// Wall time of the round in milliseconds.
    pub duration_ms: i64,
    /// SHA-256 (hex) of the new global model's parameters.
    pub model_digest: String,
    /// The previous record's `hash` ([`GENESIS`] for the first round).
    pub previous: String,
    /// SHA-256 (hex) of `previous` and this record's content.
    pub hash: String,
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("round {round}: expected round {expected} (a record is missing or out of order)")]
    Order { round: i32, expected: i32 },
    #[error("round {round}: it names {found} as the previous hash, the chain has {expected}")]
    Link {
        round: i32,
        found: String,
        expected: String,
    },
    #[error("round {round}: its content hashes to {computed}, the record says {recorded}")]
    Content {
        round: i32,
        computed: String,
        recorded: String,
    },
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

impl RoundRecord {
    /// The hash of this record's content after `previous`: SHA-256 over a length-prefixed
    /// encoding of every field but `hash`, so no two different records share an input.
    pub fn compute_hash(&self) -> String {
        let mut hasher = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hasher.update((bytes.len() as u64).to_be_bytes());
            hasher.update(bytes);
        };
        field(b"x0tta6bl4 fl round record v1");
        field(self.previous.as_bytes());
        field(&self.round.to_be_bytes());
        for list in [&self.participants, &self.accepted] {
            field(&(list.len() as u64).to_be_bytes());
            for name in list {
                field(name.as_bytes());
            }
        }
        field(&(self.rejected.len() as u64).to_be_bytes());
        for rejection in &self.rejected {
            field(rejection.participant.as_bytes());
            field(rejection.reason.as_bytes());
        }
        field(self.loss.as_bytes());
        field(self.accuracy.as_bytes());
        field(&self.duration_ms.to_be_bytes());
        field(self.model_digest.as_bytes());
        // Appended only when present, so a record without any hashes as it always did.
        if !self.down_weighted.is_empty() {
            field(b"down-weighted");
            field(&(self.down_weighted.len() as u64).to_be_bytes());
            for entry in &self.down_weighted {
                field(entry.participant.as_bytes());
                field(entry.reason.as_bytes());
            }
        }
        hex(&hasher.finalize())
    }

    /// Links this record after `previous` (the last record's hash, or [`GENESIS`]).
    pub fn seal(mut self, previous: &str) -> Self {
        self.previous = previous.to_owned();
        self.hash = self.compute_hash();
        self
    }
}

/// Checks that `records` are rounds `first_round, first_round + 1, ...`, each linked to the one
/// before (the first to `previous`), and that no content was changed. Returns the last hash.
pub fn verify_chain(records: &[RoundRecord], first_round: i32, previous: &str) -> Result<String, ChainError> {
    let mut expected_previous = previous.to_owned();
    for (offset, record) in records.iter().enumerate() {
        let expected = first_round + offset as i32;
        if record.round != expected {
            return Err(ChainError::Order {
                round: record.round,
                expected,
            });
        }
        if record.previous != expected_previous {
            return Err(ChainError::Link {
                round: record.round,
                found: record.previous.clone(),
                expected: expected_previous,
            });
        }
        let computed = record.compute_hash();
        if computed != record.hash {
            return Err(ChainError::Content {
                round: record.round,
                computed,
                recorded: record.hash.clone(),
            });
        }
        expected_previous = record.hash.clone();
    }
    Ok(expected_previous)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(round: i32, accuracy: &str) -> RoundRecord {
        RoundRecord {
            round,
            participants: vec!["a".into(), "b".into(), "c".into()],
            accepted: vec!["a".into(), "b".into()],
            rejected: vec![Rejection {
                participant: "c".into(),
                reason: "bad signature".into(),
            }],
            down_weighted: Vec::new(),
            loss: "0.41".into(),
            accuracy: accuracy.into(),
            duration_ms: 1200,
            model_digest: "ab".repeat(32),
            previous: String::new(),
            hash: String::new(),
        }
    }

    fn chain(n: i32) -> Vec<RoundRecord> {
        let mut previous = GENESIS.to_owned();
        (1..=n)
            .map(|round| {
                let sealed = record(round, "90.0").seal(&previous);
                previous = sealed.hash.clone();
                sealed
            })
            .collect()
    }

    #[test]
    fn a_sealed_chain_verifies_and_returns_its_head() {
        let records = chain(3);
        assert_eq!(verify_chain(&records, 1, GENESIS), Ok(records[2].hash.clone()));
        assert_eq!(records[0].hash.len(), 64);
        assert_ne!(records[0].hash, records[1].hash, "the round number is hashed");
    }

    #[test]
    fn a_changed_record_a_dropped_record_and_a_relinked_record_are_each_caught() {
        let mut changed = chain(3);
        changed[1].accuracy = "99.0".into();
        assert!(matches!(
            verify_chain(&changed, 1, GENESIS),
            Err(ChainError::Content { round: 2, .. })
        ));

        let mut dropped = chain(3);
        dropped.remove(1);
        assert!(matches!(
            verify_chain(&dropped, 1, GENESIS),
            Err(ChainError::Order {
                round: 3,
                expected: 2
            })
        ));

        // Rewriting round 2 and resealing it still breaks the link to round 3.
        let mut resealed = chain(3);
        let previous = resealed[0].hash.clone();
        resealed[1] = record(2, "99.0").seal(&previous);
        assert!(matches!(
            verify_chain(&resealed, 1, GENESIS),
            Err(ChainError::Link { round: 3, .. })
        ));
    }

    #[test]
    fn moving_a_name_between_lists_changes_the_hash() {
        let mut a = record(1, "90.0");
        let mut b = a.clone();
        b.accepted.push("c".into());
        b.rejected.clear();
        a = a.seal(GENESIS);
        b = b.seal(GENESIS);
        assert_ne!(a.hash, b.hash);
    }
}
