//! Federated learning for x0tta6bl4.
//!
//! - [`dataset`]: shipped datasets, held-out split, seeded Dirichlet non-IID split.
//! - [`model`] and [`training`]: logistic regression and a one-hidden-layer MLP trained with
//!   candle; parameters travel as one flat `Vec<f32>`.
//! - [`update`] and [`validate`]: the signed wire form of an update (ML-DSA-65 under
//!   `SigningContext::ModelUpdate`) and the checks an aggregator runs before using one.
//! - [`aggregate`]: FedAvg, median, trimmed mean, Krum, Multi-Krum, Bulyan, centered clipping
//!   and hierarchical (per-zone) aggregation, each with per-participant outcomes.
//! - [`byzantine`]: attacks for tests and chaos experiments.
//! - [`simulation`]: whole rounds in-process, for the attack matrix and tests.
//! - [`report`]: what the `fl-bench` and `fl-matrix` binaries share to write their reports.
pub mod aggregate;
pub mod byzantine;
pub mod dataset;
pub mod model;
pub mod report;
pub mod simulation;
pub mod training;
pub mod update;
pub mod validate;
