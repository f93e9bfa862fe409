//! Federated learning for x0tta6bl4.
//!
//! - [`dataset`]: shipped datasets, held-out split, seeded Dirichlet non-IID split.
//! - [`model`] and [`training`]: logistic regression and a one-hidden-layer MLP trained with
//!   candle; parameters travel as one flat `Vec<f32>`.
//! - [`update`] and [`validate`]: a participant's update, signed with ML-DSA-65 under
//!   `SigningContext::ModelUpdate`, and the checks an aggregator runs before using one.
//! - [`aggregate`]: FedAvg, median, trimmed mean, Krum, Multi-Krum, Bulyan, centered clipping
//!   and hierarchical (per-zone) aggregation, each with per-participant outcomes.
//! - [`byzantine`]: attacks for tests and chaos experiments.
//! - [`codec`]: the byte formats of the messages agents exchange for a round (training
//!   request, signed update, zone report, the chunks they travel in), big-endian, decoded
//!   without panics.
//! - [`simulation`]: whole rounds in-process, for the attack matrix and tests.
//!
//! The `fl-bench` and `fl-matrix` report binaries live in the `x0tta6bl4-fl-bench` crate.
pub mod aggregate;
pub mod byzantine;
pub mod codec;
pub mod dataset;
pub mod model;
pub mod simulation;
pub mod training;
pub mod update;
pub mod validate;
