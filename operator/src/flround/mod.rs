//! The FLTrainingRound controller's parts that do not talk to the API server.
pub mod select;
