//! What the aggregator does with received bytes before it uses anything in them: size limit,
//! parse, signature, then the round's expectations. Every refusal is a typed reason the
//! operator records against the participant.
use std::collections::{HashMap, HashSet};
use std::fmt;

use x0tta6bl4_crypto::mldsa::{SIGNATURE_LEN, SigningContext, VerifyingKey};

use crate::update::{DecodeError, MAX_PARTICIPANT_LEN, MAX_ROUND_UID_LEN, ModelUpdate, SignedUpdate};

/// What a round expects of every update.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundExpectations {
    pub round_uid: String,
    pub round: u32,
    /// Digest of the global model distributed for this round.
    pub base_digest: [u8; 32],
    /// Parameter count of the model.
    pub dim: usize,
    /// Larger payloads are refused before parsing.
    pub max_payload_bytes: usize,
}

impl RoundExpectations {
    /// Expectations whose payload limit is the largest well-formed signed update of `dim`
    /// values: anything bigger cannot be valid, so it is refused unread.
    pub fn new(round_uid: impl Into<String>, round: u32, base_digest: [u8; 32], dim: usize) -> Self {
        Self {
            round_uid: round_uid.into(),
            round,
            base_digest,
            dim,
            max_payload_bytes: ModelUpdate::encoded_len(
                MAX_ROUND_UID_LEN,
                MAX_PARTICIPANT_LEN,
                dim,
                SIGNATURE_LEN,
            ),
        }
    }
}

/// Why an update was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RejectionReason {
    Oversized { bytes: usize, limit: usize },
    Malformed(DecodeError),
    UnknownParticipant,
    MissingSignature,
    BadSignature,
    WrongRoundUid { got: String },
    WrongRound { expected: u32, got: u32 },
    WrongBaseModel { got: [u8; 32] },
    WrongDimension { expected: usize, got: usize },
    NonFinite { index: usize, value: f32 },
    ZeroExamples,
    Duplicate,
}

impl RejectionReason {
    /// A short stable keyword for status fields and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "Oversized",
            Self::Malformed(_) => "Malformed",
            Self::UnknownParticipant => "UnknownParticipant",
            Self::MissingSignature => "MissingSignature",
            Self::BadSignature => "BadSignature",
            Self::WrongRoundUid { .. } => "WrongRoundUID",
            Self::WrongRound { .. } => "WrongRound",
            Self::WrongBaseModel { .. } => "WrongBaseModel",
            Self::WrongDimension { .. } => "WrongDimension",
            Self::NonFinite { .. } => "NonFinite",
            Self::ZeroExamples => "ZeroExamples",
            Self::Duplicate => "Duplicate",
        }
    }
}

impl fmt::Display for RejectionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Oversized { bytes, limit } => {
                write!(f, "payload of {bytes} bytes exceeds the {limit}-byte limit")
            }
            Self::Malformed(e) => write!(f, "malformed update: {e}"),
            Self::UnknownParticipant => write!(f, "not a participant of this round"),
            Self::MissingSignature => write!(f, "unsigned"),
            Self::BadSignature => write!(f, "ML-DSA-65 signature does not verify"),
            Self::WrongRoundUid { got } => write!(f, "for another job (round UID {got})"),
            Self::WrongRound { expected, got } => {
                write!(f, "for round {got}, the current round is {expected}")
            }
            Self::WrongBaseModel { got } => write!(
                f,
                "trained from model sha256:{}, not the current global model",
                hex::encode(&got[..8])
            ),
            Self::WrongDimension { expected, got } => {
                write!(f, "{got} values, the model has {expected}")
            }
            Self::NonFinite { index, value } => write!(f, "value {value} at index {index}"),
            Self::ZeroExamples => write!(f, "claims zero training examples"),
            Self::Duplicate => write!(f, "second update from this participant in this round"),
        }
    }
}

/// A refusal: the reason and, when the bytes named one, the claimed participant. A claim from
/// an update whose signature did not verify is only a claim, and is reported as such.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub claimed_participant: Option<String>,
    pub reason: RejectionReason,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.claimed_participant {
            Some(p) => write!(f, "{p}: {}", self.reason),
            None => write!(f, "{}", self.reason),
        }
    }
}

/// Admits the updates of one round: verifies each before anything in it is used and admits
/// at most one per participant.
#[derive(Debug)]
pub struct UpdateValidator {
    expect: RoundExpectations,
    keys: HashMap<String, Vec<VerifyingKey>>,
    admitted: HashSet<String>,
}

impl UpdateValidator {
    /// `keys`: the round's selected participants and their ML-DSA-65 public keys.
    pub fn new(expect: RoundExpectations, keys: HashMap<String, VerifyingKey>) -> Self {
        Self::with_keys(
            expect,
            keys.into_iter().map(|(name, key)| (name, vec![key])).collect(),
        )
    }

    /// `keys`: every currently endorsed key of each participant. An update names its
    /// participant, not the key epoch it was signed under, and a participant that rotates its
    /// key during a round has two endorsed keys for a while: either signature is accepted.
    pub fn with_keys(expect: RoundExpectations, keys: HashMap<String, Vec<VerifyingKey>>) -> Self {
        Self {
            expect,
            keys,
            admitted: HashSet::new(),
        }
    }

    /// Replaces the participants' keys (a key endorsed since the round started), keeping who
    /// has been admitted.
    pub fn set_keys(&mut self, keys: HashMap<String, Vec<VerifyingKey>>) {
        self.keys = keys;
    }

    /// What this validator expects (its round).
    pub fn expectations(&self) -> &RoundExpectations {
        &self.expect
    }

    /// Participants admitted so far.
    pub fn admitted(&self) -> impl Iterator<Item = &str> {
        self.admitted.iter().map(String::as_str)
    }

    /// Checks `bytes` and returns the verified update. The signature is checked before the
    /// round fields, so an unauthenticated claim is never taken for a stale one; and a
    /// participant is marked as seen only once its update is admitted, so a forgery sent in
    /// its name cannot lock it out.
    pub fn admit(&mut self, bytes: &[u8]) -> Result<ModelUpdate, Rejection> {
        let reject = |participant: Option<&str>, reason| Rejection {
            claimed_participant: participant.map(str::to_owned),
            reason,
        };
        if bytes.len() > self.expect.max_payload_bytes {
            return Err(reject(
                None,
                RejectionReason::Oversized {
                    bytes: bytes.len(),
                    limit: self.expect.max_payload_bytes,
                },
            ));
        }
        let (signed, signed_len) =
            SignedUpdate::decode(bytes).map_err(|e| reject(None, RejectionReason::Malformed(e)))?;
        let SignedUpdate { update, signature } = signed;
        let who = Some(update.participant.as_str());
        let Some(keys) = self.keys.get(&update.participant).filter(|k| !k.is_empty()) else {
            return Err(reject(who, RejectionReason::UnknownParticipant));
        };
        if signature.is_empty() {
            return Err(reject(who, RejectionReason::MissingSignature));
        }
        if !keys.iter().any(|key| {
            key.verify(SigningContext::ModelUpdate, &bytes[..signed_len], &signature)
                .is_ok()
        }) {
            return Err(reject(who, RejectionReason::BadSignature));
        }
        let reason = if update.round_uid != self.expect.round_uid {
            Some(RejectionReason::WrongRoundUid {
                got: update.round_uid.clone(),
            })
        } else if update.round != self.expect.round {
            Some(RejectionReason::WrongRound {
                expected: self.expect.round,
                got: update.round,
            })
        } else if update.base_digest != self.expect.base_digest {
            Some(RejectionReason::WrongBaseModel {
                got: update.base_digest,
            })
        } else if update.values.len() != self.expect.dim {
            Some(RejectionReason::WrongDimension {
                expected: self.expect.dim,
                got: update.values.len(),
            })
        } else if let Some((index, &value)) = update.values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            Some(RejectionReason::NonFinite { index, value })
        } else if update.examples == 0 {
            Some(RejectionReason::ZeroExamples)
        } else if self.admitted.contains(&update.participant) {
            Some(RejectionReason::Duplicate)
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(reject(who, reason));
        }
        self.admitted.insert(update.participant.clone());
        Ok(update)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_crypto::mldsa::SigningKey;

    const UID: &str = "6d1f0c3a-9a4e-4b8e-9d61-1f2e3d4c5b6a";

    struct Fixture {
        alice: SigningKey,
        mallory: SigningKey,
        validator: UpdateValidator,
    }

    fn fixture() -> Fixture {
        let alice = SigningKey::generate().unwrap();
        let bob = SigningKey::generate().unwrap();
        let mallory = SigningKey::generate().unwrap();
        let keys = HashMap::from([
            ("alice".to_string(), alice.verifying_key().clone()),
            ("bob".to_string(), bob.verifying_key().clone()),
        ]);
        Fixture {
            alice,
            mallory,
            validator: UpdateValidator::new(RoundExpectations::new(UID, 3, [7; 32], 4), keys),
        }
    }

    fn update(participant: &str) -> ModelUpdate {
        ModelUpdate {
            round_uid: UID.into(),
            round: 3,
            participant: participant.into(),
            base_digest: [7; 32],
            examples: 50,
            values: vec![0.1, -0.2, 0.3, 0.0],
        }
    }

    fn signed_bytes(update: ModelUpdate, key: &SigningKey) -> Vec<u8> {
        update.sign(key).unwrap().encode().unwrap()
    }

    fn reason(result: Result<ModelUpdate, Rejection>) -> RejectionReason {
        result.unwrap_err().reason
    }

    #[test]
    fn a_signed_update_for_this_round_is_admitted_once() {
        let mut fx = fixture();
        let bytes = signed_bytes(update("alice"), &fx.alice);
        assert_eq!(fx.validator.admit(&bytes).unwrap(), update("alice"));
        assert_eq!(reason(fx.validator.admit(&bytes)), RejectionReason::Duplicate);
        assert_eq!(fx.validator.admitted().collect::<Vec<_>>(), vec!["alice"]);
    }

    #[test]
    fn unsigned_forged_and_tampered_updates_are_rejected() {
        let mut fx = fixture();
        let unsigned = SignedUpdate {
            update: update("alice"),
            signature: vec![],
        };
        assert_eq!(
            reason(fx.validator.admit(&unsigned.encode().unwrap())),
            RejectionReason::MissingSignature
        );
        // Mallory signs in Bob's name with her own key.
        let forged = signed_bytes(update("bob"), &fx.mallory);
        let rejection = fx.validator.admit(&forged).unwrap_err();
        assert_eq!(rejection.reason, RejectionReason::BadSignature);
        assert_eq!(rejection.claimed_participant.as_deref(), Some("bob"));
        // One value changed in transit.
        let mut tampered = signed_bytes(update("alice"), &fx.alice);
        let first_value = tampered.len() - 2 - SIGNATURE_LEN - 16;
        tampered[first_value] ^= 1;
        assert_eq!(
            reason(fx.validator.admit(&tampered)),
            RejectionReason::BadSignature
        );
        // The forgeries did not use up Alice's or Bob's one submission.
        assert!(
            fx.validator
                .admit(&signed_bytes(update("alice"), &fx.alice))
                .is_ok()
        );
        // A signature made for another message type does not verify as a model update.
        let message = update("alice").signed_bytes().unwrap();
        let routing_sig = fx.alice.sign(SigningContext::Originator, &message).unwrap().0;
        let other_context = SignedUpdate {
            update: update("alice"),
            signature: routing_sig,
        }
        .encode()
        .unwrap();
        let mut fresh = fixture();
        let keys = HashMap::from([("alice".to_string(), fx.alice.verifying_key().clone())]);
        fresh.validator = UpdateValidator::new(RoundExpectations::new(UID, 3, [7; 32], 4), keys);
        assert_eq!(
            reason(fresh.validator.admit(&other_context)),
            RejectionReason::BadSignature
        );
    }

    #[test]
    fn signed_updates_that_do_not_fit_the_round_are_rejected_with_the_reason() {
        let mut fx = fixture();
        let alice = |f: &dyn Fn(&mut ModelUpdate)| {
            let mut u = update("alice");
            f(&mut u);
            signed_bytes(u, &fx.alice)
        };
        let cases: Vec<(Vec<u8>, RejectionReason)> = vec![
            (
                alice(&|u| u.round_uid = "another-job".into()),
                RejectionReason::WrongRoundUid {
                    got: "another-job".into(),
                },
            ),
            (
                alice(&|u| u.round = 2),
                RejectionReason::WrongRound { expected: 3, got: 2 },
            ),
            (
                alice(&|u| u.base_digest = [8; 32]),
                RejectionReason::WrongBaseModel { got: [8; 32] },
            ),
            (
                alice(&|u| u.values.push(1.0)),
                RejectionReason::WrongDimension { expected: 4, got: 5 },
            ),
            (
                alice(&|u| u.values[2] = f32::INFINITY),
                RejectionReason::NonFinite {
                    index: 2,
                    value: f32::INFINITY,
                },
            ),
            (alice(&|u| u.examples = 0), RejectionReason::ZeroExamples),
        ];
        for (bytes, expected) in cases {
            assert_eq!(reason(fx.validator.admit(&bytes)), expected);
        }
        let nan = alice(&|u| u.values[0] = f32::NAN);
        assert!(matches!(
            reason(fx.validator.admit(&nan)),
            RejectionReason::NonFinite { index: 0, .. }
        ));
        let stranger = signed_bytes(update("carol"), &fx.mallory);
        assert_eq!(
            reason(fx.validator.admit(&stranger)),
            RejectionReason::UnknownParticipant
        );
        assert!(matches!(
            reason(fx.validator.admit(b"X6FU")),
            RejectionReason::Malformed(DecodeError::Truncated { .. })
        ));
        let huge = vec![0u8; fx.validator.expect.max_payload_bytes + 1];
        assert!(matches!(
            reason(fx.validator.admit(&huge)),
            RejectionReason::Oversized { .. }
        ));
        // None of these consumed Alice's submission.
        assert!(
            fx.validator
                .admit(&signed_bytes(update("alice"), &fx.alice))
                .is_ok()
        );
    }

    #[test]
    fn an_update_signed_under_either_endorsed_key_of_a_rotating_participant_is_admitted() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let expect = RoundExpectations::new(UID, 3, [7; 32], 4);
        let mut validator = UpdateValidator::new(
            expect.clone(),
            HashMap::from([("alice".to_string(), new.verifying_key().clone())]),
        );
        // Signed just before Alice rotated; the round's keys were taken after.
        let before_rotation = signed_bytes(update("alice"), &old);
        assert_eq!(
            reason(validator.admit(&before_rotation)),
            RejectionReason::BadSignature
        );
        validator.set_keys(HashMap::from([(
            "alice".to_string(),
            vec![new.verifying_key().clone(), old.verifying_key().clone()],
        )]));
        assert!(validator.admit(&before_rotation).is_ok());
        assert_eq!(validator.expectations(), &expect);
        let mut fresh = UpdateValidator::with_keys(expect, HashMap::from([("alice".to_string(), vec![])]));
        assert_eq!(
            reason(fresh.admit(&signed_bytes(update("alice"), &new))),
            RejectionReason::UnknownParticipant,
            "a participant with no endorsed key"
        );
    }

    #[test]
    fn reasons_read_well_in_a_status_list() {
        let r = Rejection {
            claimed_participant: Some("node-b".into()),
            reason: RejectionReason::WrongRound { expected: 4, got: 3 },
        };
        assert_eq!(r.to_string(), "node-b: for round 3, the current round is 4");
        assert_eq!(r.reason.code(), "WrongRound");
    }
}
