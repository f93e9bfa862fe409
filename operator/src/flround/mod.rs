//! The FLTrainingRound controller: participant selection, the round chain, and the reconciler
//! that writes them into the job's status (the agents do the training; see
//! `x0tta6bl4_api::fl_protocol`). It follows the MeshNetwork controller's pipeline: validate →
//! plan (pure, [`plan`]) → apply ([`apply`]) → status ([`status`]); [`reconcile`] is the IO
//! around them and [`observe`] its reads.
pub mod apply;
pub mod chain;
pub mod failover;
pub mod observe;
pub mod plan;
pub mod reconcile;
pub mod rounds;
pub mod select;
pub mod status;
