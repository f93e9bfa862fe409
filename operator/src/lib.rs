//! The x0tta6bl4 operator: reconcilers for MeshNetwork, FLTrainingRound and ChaosExperiment.
#![forbid(unsafe_code)]

pub mod admission_only;
pub mod context;
pub mod controllers;
pub mod crds;
pub mod error;
pub mod flround;
pub mod leader;
pub mod mesh;
pub mod meshnode;
pub mod metrics;
pub mod startup;
