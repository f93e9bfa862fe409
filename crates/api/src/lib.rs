//! API types of the `x0tta6bl4.io/v1alpha1` custom resources.
//!
//! Shared by the operator, the node agent and the e2e tests; the node agent depends on this
//! crate and never on the operator. Doc comments on spec fields are written for the user of
//! `kubectl explain`, because they become the CRD schema descriptions.
#![forbid(unsafe_code)]
// kube-derive's repeated `printcolumn(type_ = ...)` arguments trip this lint; they are distinct columns.
#![allow(clippy::duplicated_attributes)]

pub mod agent_config;
pub mod chaos;
pub mod condition;
pub mod duration;
pub mod fl_protocol;
pub mod fl_record;
pub mod fl_round;
pub mod labels;
pub mod mesh_network;
pub mod mesh_node;
pub mod peering;

pub use chaos::{ChaosExperiment, ChaosExperimentSpec, ChaosExperimentStatus};
pub use fl_round::{FLTrainingRound, FLTrainingRoundSpec, FLTrainingRoundStatus};
pub use mesh_network::{MeshNetwork, MeshNetworkSpec, MeshNetworkStatus, PeeringStatus};
pub use mesh_node::{MeshNode, MeshNodeSpec, MeshNodeStatus};

/// The API group of every custom resource of this project.
pub const GROUP: &str = "x0tta6bl4.io";
/// The only served version so far.
pub const VERSION: &str = "v1alpha1";

/// A problem found in a spec that the schema admitted, with the JSON path of the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// Path of the offending field, for example `spec.routing.helloInterval`.
    pub field: String,
    /// What is wrong with it, written for the person who applied the object.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Joins field errors into one condition message, in field order, so the user sees all of them.
pub fn join_field_errors(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A reference to another object in the same namespace.
#[derive(
    serde::Serialize, serde::Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq,
)]
pub struct LocalObjectRef {
    /// Name of the referenced object, in the same namespace as this one.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
