//! The FLTrainingRound controller: participant selection, the round chain, and the reconciler
//! that writes them into the job's status (the agents do the training; see
//! `x0tta6bl4_api::fl_protocol`).
pub mod chain;
pub mod failover;
pub mod reconcile;
pub mod select;
