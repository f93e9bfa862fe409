//! Folding the aggregator's round results into the job's status (pure): each new round's
//! record is sealed after the chain head, in round order; a gap waits for the missing round.
use x0tta6bl4_api::FLTrainingRoundStatus;
use x0tta6bl4_api::fl_protocol::STATUS_RECORDS;
use x0tta6bl4_api::fl_record::{GENESIS, RoundRecord};

/// One round's result as the aggregator wrote it, and its seal if the operator made one.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundResult {
    pub config_map: String,
    pub record: RoundRecord,
    pub sealed: Option<RoundRecord>,
}

/// A record the operator sealed in this pass, to be written back next to the result.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSeal {
    pub config_map: String,
    pub sealed: RoundRecord,
}

/// Seals the results that follow `status.completed_rounds` in order, and updates the status
/// (counts, accuracy, model, records, chain head). Results already sealed are taken as they
/// are, so an operator restarted mid-job rebuilds the same chain.
pub fn advance(status: &mut FLTrainingRoundStatus, results: &[RoundResult]) -> Vec<NewSeal> {
    let mut seals = Vec::new();
    loop {
        let next = status.completed_rounds + 1;
        let Some(result) = results.iter().find(|r| r.record.round == next) else {
            break;
        };
        let head = if status.chain_head.is_empty() {
            GENESIS.to_owned()
        } else {
            status.chain_head.clone()
        };
        let sealed = match &result.sealed {
            Some(sealed) if sealed.previous == head && sealed.hash == sealed.compute_hash() => sealed.clone(),
            _ => {
                let sealed = result.record.clone().seal(&head);
                seals.push(NewSeal {
                    config_map: result.config_map.clone(),
                    sealed: sealed.clone(),
                });
                sealed
            }
        };
        status.completed_rounds = next;
        status.accepted = sealed.accepted.len() as i32;
        status.rejected = sealed.rejected.len() as i32;
        status.accuracy = format!("{}%", sealed.accuracy);
        status.model_digest = sealed.model_digest.clone();
        status.model_config_map = result.config_map.clone();
        status.chain_head = sealed.hash.clone();
        status.records.push(sealed);
        let excess = status.records.len().saturating_sub(STATUS_RECORDS);
        status.records.drain(..excess);
    }
    seals
}

#[cfg(test)]
pub(super) mod tests {
    use x0tta6bl4_api::fl_record::verify_chain;

    use super::*;

    /// The record an aggregator writes for `round`, every update of `participants` accepted.
    pub fn round_record(round: i32, participants: &[&str]) -> RoundRecord {
        let participants: Vec<String> = participants.iter().map(|p| p.to_string()).collect();
        RoundRecord {
            round,
            accepted: participants.clone(),
            participants,
            rejected: Vec::new(),
            down_weighted: Vec::new(),
            loss: "0.5".into(),
            accuracy: format!("{}", 80 + round),
            duration_ms: 100,
            model_digest: format!("{round:064x}"),
            previous: String::new(),
            hash: String::new(),
        }
    }

    fn result(round: i32) -> RoundResult {
        RoundResult {
            config_map: format!("job-round-{round}"),
            record: round_record(round, &["a", "b"]),
            sealed: None,
        }
    }

    #[test]
    fn rounds_are_sealed_in_order_and_a_gap_waits() {
        let mut status = FLTrainingRoundStatus::default();
        let seals = advance(&mut status, &[result(1), result(3)]);
        assert_eq!(seals.len(), 1, "round 3 waits for round 2");
        assert_eq!(status.completed_rounds, 1);
        assert_eq!(status.accuracy, "81%");
        let seals = advance(&mut status, &[result(1), result(2), result(3)]);
        assert_eq!(seals.len(), 2);
        assert_eq!(status.completed_rounds, 3);
        assert_eq!(status.model_config_map, "job-round-3");
        assert_eq!(
            verify_chain(&status.records, 1, GENESIS),
            Ok(status.chain_head.clone())
        );
    }

    #[test]
    fn a_restarted_operator_rebuilds_the_same_chain_from_the_seals() {
        let mut first = FLTrainingRoundStatus::default();
        let mut results = vec![result(1), result(2)];
        for seal in advance(&mut first, &results) {
            let result = results
                .iter_mut()
                .find(|r| r.config_map == seal.config_map)
                .unwrap();
            result.sealed = Some(seal.sealed);
        }
        let mut rebuilt = FLTrainingRoundStatus::default();
        assert!(advance(&mut rebuilt, &results).is_empty(), "nothing sealed twice");
        assert_eq!(rebuilt.chain_head, first.chain_head);
        // A seal that no longer matches its chain position is not trusted: sealed again.
        results[1].sealed.as_mut().unwrap().accuracy = "99".into();
        let mut again = FLTrainingRoundStatus::default();
        assert_eq!(advance(&mut again, &results).len(), 1);
        assert_eq!(
            again.chain_head, first.chain_head,
            "the recomputed seal is the same"
        );
    }

    #[test]
    fn the_status_keeps_only_the_newest_records() {
        let mut status = FLTrainingRoundStatus::default();
        let results: Vec<RoundResult> = (1..=STATUS_RECORDS as i32 + 5).map(result).collect();
        advance(&mut status, &results);
        assert_eq!(status.records.len(), STATUS_RECORDS);
        assert_eq!(status.records[0].round, 6);
        assert_eq!(
            verify_chain(&status.records, 6, &status.records[0].previous),
            Ok(status.chain_head.clone())
        );
    }
}
