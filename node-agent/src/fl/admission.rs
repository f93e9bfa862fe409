//! Admitting a participant's update: verified against every key the trust store holds endorsed
//! for it at the moment the update arrives.
use std::collections::HashMap;

use x0tta6bl4_crypto::mldsa::VerifyingKey;
use x0tta6bl4_fl::update::ModelUpdate;
use x0tta6bl4_fl::validate::{Rejection as Refusal, UpdateValidator};

use super::FlContext;

/// Every currently endorsed key of each participant.
pub fn participant_keys(ctx: &FlContext, participants: &[String]) -> HashMap<String, Vec<VerifyingKey>> {
    let now = crate::clock::unix_seconds();
    let trust = ctx
        .trust
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    participants
        .iter()
        .map(|p| {
            let node = ctx.node_id(p);
            (
                p.clone(),
                trust.valid_keys(&node, now).into_iter().cloned().collect(),
            )
        })
        .collect()
}

/// Admits `bytes` under the participant keys the trust store holds now, not those the round
/// started with: a key endorsed since (a rotation) is accepted, and a key the mesh authority
/// revoked since is refused. Looking them up costs a copy of each participant's keys (about
/// 2 KB each), small beside the signature check that follows.
pub fn admit_with_fresh_keys(
    validator: &mut UpdateValidator,
    bytes: &[u8],
    keys: impl FnOnce() -> HashMap<String, Vec<VerifyingKey>>,
) -> Result<ModelUpdate, Refusal> {
    validator.set_keys(keys());
    validator.admit(bytes)
}

/// A two-value update of job "uid" signed by `key`, as the tests of admission send it.
#[cfg(test)]
pub(crate) fn signed_update(
    key: &x0tta6bl4_crypto::mldsa::SigningKey,
    participant: &str,
    round: u32,
    base: u8,
) -> Vec<u8> {
    ModelUpdate {
        round_uid: "uid".into(),
        round,
        participant: participant.into(),
        base_digest: [base; 32],
        examples: 10,
        values: vec![1.0, -2.0],
    }
    .sign(key)
    .unwrap()
    .encode()
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_crypto::mldsa::SigningKey;
    use x0tta6bl4_fl::validate::{RejectionReason, RoundExpectations};

    fn update(key: &SigningKey, participant: &str) -> Vec<u8> {
        signed_update(key, participant, 1, 1)
    }

    #[test]
    fn an_update_is_judged_by_the_keys_held_when_it_arrives_not_when_the_round_started() {
        let key = SigningKey::generate().unwrap();
        let started_with = HashMap::from([("b".to_owned(), vec![key.verifying_key().clone()])]);
        let mut validator =
            UpdateValidator::with_keys(RoundExpectations::new("uid", 1, [1; 32], 2), started_with.clone());
        // The key was revoked since the round started: the trust store holds no key of b now.
        let refused = admit_with_fresh_keys(&mut validator, &update(&key, "b"), HashMap::new).unwrap_err();
        assert_ne!(refused.reason, RejectionReason::Duplicate);
        // c rotated since the round started: its new key is accepted.
        let rotated = SigningKey::generate().unwrap();
        let mut validator = UpdateValidator::with_keys(
            RoundExpectations::new("uid", 1, [1; 32], 2),
            HashMap::from([("c".to_owned(), vec![key.verifying_key().clone()])]),
        );
        let fresh = || HashMap::from([("c".to_owned(), vec![rotated.verifying_key().clone()])]);
        assert_eq!(
            admit_with_fresh_keys(&mut validator, &update(&rotated, "c"), fresh)
                .unwrap()
                .participant,
            "c"
        );
    }
}
