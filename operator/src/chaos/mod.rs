//! The ChaosExperiment controller: the operator's side of the fault-and-measure loop. It
//! chooses the targets ([`targets`]), checks the blast radius ([`blast_radius`]) and the mesh's
//! steady state, writes the fault entries and their window into the experiment's status (the
//! agents install and remove them, see [`plan`] for the contract), measures what the agents
//! report and judges the result ([`measure`], and [`byzantine`] for poisoned FL updates).
//! [`reconcile`] is the IO around [`plan`].
pub mod blast_radius;
pub mod byzantine;
pub mod key_expiry;
pub mod measure;
pub mod plan;
pub mod reconcile;
pub mod targets;
