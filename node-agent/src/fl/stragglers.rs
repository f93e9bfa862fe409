//! Updates that miss their round (`spec.stragglerPolicy`). With `drop` a late update is judged
//! by the current round like any other and refused as being for the wrong round. With
//! `acceptStale` the aggregator keeps the last `maxStaleness` rounds open: a late update is
//! verified against the round it was trained for (signature, base model, one per participant),
//! then used in the current round, weighted down by `staleWeightPercent` once per round of
//! staleness, unless its participant also sent a fresh update.
use std::collections::{BTreeMap, HashMap};

use x0tta6bl4_api::fl_round::{StragglerMode, StragglerPolicy};
use x0tta6bl4_crypto::mldsa::VerifyingKey;
use x0tta6bl4_fl::update::ModelUpdate;
use x0tta6bl4_fl::validate::{Rejection, UpdateValidator};

/// How stale an update may be and how much it still counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StalePolicy {
    pub max_staleness: u32,
    pub weight_percent: u32,
}

impl StalePolicy {
    /// `None` for `drop`.
    pub fn from_spec(policy: &StragglerPolicy) -> Option<Self> {
        (policy.mode == StragglerMode::AcceptStale && policy.max_staleness > 0).then(|| StalePolicy {
            max_staleness: u32::try_from(policy.max_staleness).unwrap_or(1),
            weight_percent: u32::try_from(policy.stale_weight_percent)
                .unwrap_or(100)
                .clamp(1, 100),
        })
    }

    /// The factor an update `staleness` rounds old is scaled by: (percent / 100)^staleness.
    pub fn weight(&self, staleness: u32) -> f32 {
        let per_round = self.weight_percent as f32 / 100.0;
        per_round.powi(i32::try_from(staleness).unwrap_or(i32::MAX))
    }
}

/// A late update admitted for a past round, waiting to be used in the current one.
#[derive(Debug, Clone, PartialEq)]
pub struct Stale {
    pub update: ModelUpdate,
    /// Rounds between the one it was trained for and the current one.
    pub staleness: u32,
    pub weight: f32,
}

impl Stale {
    /// The update's values scaled by its weight: every rule, robust or not, then sees a
    /// shorter step from it (FedAvg alone would weigh by examples, which a participant claims).
    pub fn weighted_values(&self) -> Vec<f32> {
        self.update.values.iter().map(|v| v * self.weight).collect()
    }

    /// Why it counts less, for the round record.
    pub fn reason(&self, current: u32) -> String {
        format!(
            "Stale: trained on round {}'s model, used in round {current} with weight {:.3}",
            self.update.round, self.weight
        )
    }
}

/// What became of a late update.
#[derive(Debug)]
pub enum Late {
    /// Verified for its round; use it (unless a fresh update of its participant arrives).
    Admitted(Stale),
    /// Its round is still open but the update does not verify for it.
    Refused { round: u32, rejection: Rejection },
    /// No open round for it (drop policy, or older than maxStaleness): judge it as current.
    NotOpen,
}

/// The recent rounds' validators, kept while their late updates may still be used.
pub struct OpenRounds {
    policy: Option<StalePolicy>,
    rounds: BTreeMap<u32, UpdateValidator>,
}

impl OpenRounds {
    pub fn new(policy: Option<StalePolicy>) -> Self {
        Self {
            policy,
            rounds: BTreeMap::new(),
        }
    }

    /// Keeps a finished round's validator (it remembers who already contributed to that round,
    /// so nobody is counted twice for it) and forgets rounds too old to matter from the next
    /// round on.
    pub fn close(&mut self, validator: UpdateValidator) {
        let Some(policy) = self.policy else {
            return;
        };
        let round = validator.expectations().round;
        self.rounds.insert(round, validator);
        let oldest = (round + 1).saturating_sub(policy.max_staleness);
        self.rounds.retain(|r, _| *r >= oldest);
    }

    /// Judges an update that claims `claimed`, a round before `current`. `keys` refreshes a
    /// round's participant keys when a signature fails (a key endorsed after the round began).
    pub fn admit(
        &mut self,
        bytes: &[u8],
        claimed: u32,
        current: u32,
        keys: impl FnOnce() -> HashMap<String, Vec<VerifyingKey>>,
    ) -> Late {
        let Some(policy) = self.policy else {
            return Late::NotOpen;
        };
        let staleness = current.saturating_sub(claimed);
        let Some(validator) = self
            .rounds
            .get_mut(&claimed)
            .filter(|_| staleness >= 1 && staleness <= policy.max_staleness)
        else {
            return Late::NotOpen;
        };
        let result = super::admission::admit_with_fresh_keys(validator, bytes, keys);
        match result {
            Ok(update) => Late::Admitted(Stale {
                update,
                staleness,
                weight: policy.weight(staleness),
            }),
            Err(rejection) => Late::Refused {
                round: claimed,
                rejection,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_crypto::mldsa::SigningKey;
    use x0tta6bl4_fl::validate::{RejectionReason, RoundExpectations};

    fn policy(mode: &str, max: i32, percent: i32) -> Option<StalePolicy> {
        StalePolicy::from_spec(
            &serde_norway::from_str(&format!(
                "{{mode: {mode}, maxStaleness: {max}, staleWeightPercent: {percent}}}"
            ))
            .unwrap(),
        )
    }

    use crate::fl::admission::signed_update as signed;

    /// The trust store's keys as the admission looks them up: b's one key.
    fn keys_of(key: &SigningKey) -> impl FnOnce() -> HashMap<String, Vec<VerifyingKey>> + '_ {
        move || HashMap::from([("b".to_string(), vec![key.verifying_key().clone()])])
    }

    fn validator(round: u32, key: &SigningKey) -> UpdateValidator {
        UpdateValidator::new(
            RoundExpectations::new("uid", round, [round as u8; 32], 2),
            HashMap::from([("b".to_string(), key.verifying_key().clone())]),
        )
    }

    #[test]
    fn the_weight_halves_per_round_of_staleness_and_drop_keeps_nothing_open() {
        let half = policy("acceptStale", 2, 50).unwrap();
        assert_eq!((half.weight(1), half.weight(2)), (0.5, 0.25));
        assert_eq!(policy("drop", 2, 50), None);
        let key = SigningKey::generate().unwrap();
        let mut dropped = OpenRounds::new(None);
        dropped.close(validator(1, &key));
        assert!(matches!(
            dropped.admit(&signed(&key, "b", 1, 1), 1, 2, keys_of(&key)),
            Late::NotOpen
        ));
    }

    #[test]
    fn a_late_update_is_verified_for_its_own_round_used_once_and_expires() {
        let key = SigningKey::generate().unwrap();
        let mut open = OpenRounds::new(policy("acceptStale", 1, 50));
        open.close(validator(1, &key));
        let late = signed(&key, "b", 1, 1);
        let Late::Admitted(stale) = open.admit(&late, 1, 2, keys_of(&key)) else {
            panic!("round 1's update is admitted in round 2")
        };
        assert_eq!((stale.staleness, stale.weight), (1, 0.5));
        assert_eq!(stale.weighted_values(), vec![0.5, -1.0]);
        assert_eq!(
            stale.reason(2),
            "Stale: trained on round 1's model, used in round 2 with weight 0.500"
        );
        // The same update again: that round already has b's update.
        assert!(matches!(
            open.admit(&late, 1, 2, keys_of(&key)),
            Late::Refused { round: 1, rejection } if rejection.reason == RejectionReason::Duplicate
        ));
        // Trained on a model other than round 1's.
        let mut other = OpenRounds::new(policy("acceptStale", 1, 50));
        other.close(validator(1, &key));
        assert!(matches!(
            other.admit(&signed(&key, "b", 1, 9), 1, 2, keys_of(&key)),
            Late::Refused { rejection, .. } if rejection.reason.code() == "WrongBaseModel"
        ));
        // Two rounds late with maxStaleness 1: round 1 is closed to it.
        open.close(validator(2, &key));
        assert!(matches!(
            open.admit(&signed(&key, "b", 1, 1), 1, 3, keys_of(&key)),
            Late::NotOpen
        ));
    }

    #[test]
    fn a_key_endorsed_after_the_round_began_is_fetched_once_a_signature_fails() {
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let mut open = OpenRounds::new(policy("acceptStale", 1, 100));
        open.close(validator(1, &old));
        let refreshed = || HashMap::from([("b".to_string(), vec![new.verifying_key().clone()])]);
        assert!(matches!(
            open.admit(&signed(&new, "b", 1, 1), 1, 2, refreshed),
            Late::Admitted(Stale { weight, .. }) if weight == 1.0
        ));
    }
}
