//! The MeshNetwork reconciler: validate → build (pure) → apply → status.
pub mod apply;
pub mod authority;
pub mod build;
pub mod reconcile;
pub mod revocation;
pub mod status;
