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
