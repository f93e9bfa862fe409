//! Admitting a participant's update: verified against every key the trust store holds endorsed
//! for it now, and once more with fresh keys if one was endorsed since the round started.
use std::collections::HashMap;

use x0tta6bl4_crypto::mldsa::VerifyingKey;
use x0tta6bl4_fl::update::ModelUpdate;
use x0tta6bl4_fl::validate::{Rejection as Refusal, RejectionReason, UpdateValidator};

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

/// Admits `bytes`; if the signature does not verify under the keys the round started with,
/// looks the participant's keys up again (one endorsed since) and tries once more.
pub fn admit_with_fresh_keys(
    validator: &mut UpdateValidator,
    bytes: &[u8],
    keys: impl FnOnce() -> HashMap<String, Vec<VerifyingKey>>,
) -> Result<ModelUpdate, Refusal> {
    match validator.admit(bytes) {
        Err(refusal)
            if matches!(
                refusal.reason,
                RejectionReason::BadSignature | RejectionReason::UnknownParticipant
            ) =>
        {
            validator.set_keys(keys());
            validator.admit(bytes)
        }
        result => result,
    }
}
