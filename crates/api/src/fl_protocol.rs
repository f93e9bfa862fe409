//! The contract between the operator and the agents for a federated job, in one place.
//!
//! 1. The operator selects the participants and the aggregator and writes them into the
//!    FLTrainingRound status with phase `Running`.
//! 2. The aggregator agent (it watches FLTrainingRounds of its mesh) runs the rounds: round
//!    `k` sends the global model to every participant over the mesh ([`TRAIN_FLOW`]), the
//!    participants answer with signed updates ([`UPDATE_FLOW`]; in a hierarchical job to their
//!    zone's aggregator, which sends the zone's aggregate as a signed report on [`ZONE_FLOW`]),
//!    and it writes the outcome into
//!    the ConfigMap [`round_config_map`]`(job, k)`: the unsealed [`RoundRecord`] under
//!    [`RECORD_KEY`] and the new model under [`MODEL_KEY`], labelled [`JOB_LABEL`] and
//!    [`ROUND_LABEL`] and owned by the FLTrainingRound (deleting the job removes them).
//! 3. The operator seals each record into the hash chain ([`SEALED_KEY`] in the same
//!    ConfigMap, the newest in the status) and completes the job after `spec.rounds`.
//!
//! [`RoundRecord`]: crate::fl_record::RoundRecord

/// Label naming the FLTrainingRound a ConfigMap belongs to.
pub const JOB_LABEL: &str = "x0tta6bl4.io/flround";
/// Label with the round number of a round ConfigMap.
pub const ROUND_LABEL: &str = "x0tta6bl4.io/round";
/// The aggregator's record of the round (JSON of an unsealed `RoundRecord`).
pub const RECORD_KEY: &str = "record.json";
/// The record sealed into the chain by the operator (JSON of a `RoundRecord`).
pub const SEALED_KEY: &str = "sealed.json";
/// Written by the aggregator instead of a record when a round could not be aggregated (the
/// rule's precondition failed, too few updates): why. The operator fails the job with it.
pub const ERROR_KEY: &str = "error.txt";
/// The global model after the round: binaryData, little-endian f32.
pub const MODEL_KEY: &str = "model.f32";
/// Largest model a round ConfigMap carries (ConfigMaps are limited to 1 MiB).
pub const MAX_MODEL_BYTES: usize = 900 * 1024;
/// Round records kept in the status; all of them stay in their round ConfigMaps.
pub const STATUS_RECORDS: usize = 20;

/// Mesh flow of a training request (aggregator → participant).
pub const TRAIN_FLOW: u32 = 0x464C_0001;
/// Mesh flow of a signed update (participant → aggregator, or → its zone's aggregator in a
/// hierarchical job).
pub const UPDATE_FLOW: u32 = 0x464C_0002;
/// Mesh flow of a signed zone report (a zone's aggregator → the job's aggregator).
pub const ZONE_FLOW: u32 = 0x464C_0003;

/// The ConfigMap of round `round` of job `job`.
pub fn round_config_map(job: &str, round: i32) -> String {
    format!("{job}-round-{round}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_config_maps_are_named_after_job_and_round() {
        assert_eq!(round_config_map("demo-round", 7), "demo-round-round-7");
        const {
            assert!(
                TRAIN_FLOW < 0xFFFF_FF00 && UPDATE_FLOW < 0xFFFF_FF00 && ZONE_FLOW < 0xFFFF_FF00,
                "below the agent's reserved flows"
            )
        };
    }
}
