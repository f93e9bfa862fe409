//! Aggregation rules over participants' update vectors. Every rule returns the aggregate and,
//! for each participant, what became of its update (accepted, down-weighted or rejected, with
//! the reason), so the operator can list the updates a round did not use as sent.
//!
//! The robust rules' parameters are checked against the number of updates actually present
//! and refused with a typed error when the rule's guarantee cannot hold: they are never
//! quietly weakened to fit.
use std::fmt;

mod bulyan;
mod clipping;
mod coordinate;
mod fedavg;
mod hierarchical;
mod krum;

pub use bulyan::bulyan;
pub use clipping::centered_clipping;
pub use coordinate::{median, trimmed_mean};
pub use fedavg::fedavg;
pub use hierarchical::{Zone, aggregate_hierarchical};
pub use krum::{krum, multi_krum, pairwise_squared_distances};

/// One participant's update as the aggregator sees it (already verified).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Contribution<'a> {
    pub participant: &'a str,
    /// Examples trained on; only FedAvg weighs by it, since a Byzantine participant can claim
    /// any count.
    pub examples: u64,
    pub values: &'a [f32],
}

/// What became of one update.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Used as sent; `weight` is its share of the aggregate.
    Accepted { weight: f64 },
    /// Used, but with less influence than an ordinary update: clipped, or trimmed in most
    /// coordinates.
    DownWeighted { weight: f64, reason: String },
    /// Not used at all.
    Rejected { reason: String },
}

impl Verdict {
    pub fn weight(&self) -> f64 {
        match self {
            Verdict::Accepted { weight } | Verdict::DownWeighted { weight, .. } => *weight,
            Verdict::Rejected { .. } => 0.0,
        }
    }

    pub fn is_rejected(&self) -> bool {
        matches!(self, Verdict::Rejected { .. })
    }

    pub fn is_accepted(&self) -> bool {
        matches!(self, Verdict::Accepted { .. })
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Accepted { weight } => write!(f, "accepted (weight {weight:.3})"),
            Verdict::DownWeighted { weight, reason } => {
                write!(f, "down-weighted to {weight:.3}: {reason}")
            }
            Verdict::Rejected { reason } => write!(f, "rejected: {reason}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub participant: String,
    pub verdict: Verdict,
}

/// A rule's result: the aggregated update and one outcome per contribution, in input order.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    pub values: Vec<f32>,
    pub outcomes: Vec<Outcome>,
}

impl Aggregate {
    pub fn rejected(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| o.verdict.is_rejected())
    }
}

/// The aggregation rules (the CRD's `AggregationRule`, with their parameters).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rule {
    /// McMahan et al. 2017: mean weighted by example counts.
    FedAvg,
    /// Coordinate-wise median (Yin et al. 2018), tolerating `f` Byzantine updates.
    Median { f: usize },
    /// Coordinate-wise trimmed mean (Yin et al. 2018): drop the `f` largest and `f` smallest
    /// values of each coordinate (β = f/n) and average the rest.
    TrimmedMean { f: usize },
    /// Blanchard et al. 2017.
    Krum { f: usize },
    /// Blanchard et al. 2017: average of the `m` best-scored updates; `None` means m = n − f.
    MultiKrum { f: usize, m: Option<usize> },
    /// El Mhamdi et al. 2018.
    Bulyan { f: usize },
    /// Karimireddy et al. 2021: `iterations` clipping steps of radius `tau` around the center.
    CenteredClipping { tau: f32, iterations: usize },
}

impl Rule {
    pub fn name(&self) -> &'static str {
        match self {
            Rule::FedAvg => "fedavg",
            Rule::Median { .. } => "median",
            Rule::TrimmedMean { .. } => "trimmedMean",
            Rule::Krum { .. } => "krum",
            Rule::MultiKrum { .. } => "multiKrum",
            Rule::Bulyan { .. } => "bulyan",
            Rule::CenteredClipping { .. } => "centeredClipping",
        }
    }

    /// Checks that the rule's guarantee can hold with `n` updates.
    pub fn check(&self, n: usize) -> Result<(), AggregationError> {
        let refuse = |f: usize, requirement: &'static str, holds: bool| {
            if holds {
                Ok(())
            } else {
                Err(AggregationError::TooFewUpdates {
                    rule: self.name(),
                    n,
                    f,
                    requirement,
                })
            }
        };
        match *self {
            Rule::FedAvg => Ok(()),
            Rule::Median { f } => refuse(f, "n > 2f", n > 2 * f),
            Rule::TrimmedMean { f } => refuse(f, "n > 2f", n > 2 * f),
            Rule::Krum { f } => refuse(f, "n > 2f + 2", n > 2 * f + 2),
            Rule::MultiKrum { f, m } => {
                refuse(f, "n > 2f + 2", n > 2 * f + 2)?;
                match m {
                    Some(m) if m == 0 || m > n => Err(AggregationError::InvalidParameter(format!(
                        "multiKrum m = {m} must be in 1..=n (n = {n})"
                    ))),
                    _ => Ok(()),
                }
            }
            Rule::Bulyan { f } => refuse(f, "n >= 4f + 3", n >= 4 * f + 3),
            Rule::CenteredClipping { tau, iterations } => {
                if !(tau.is_finite() && tau > 0.0) || iterations == 0 {
                    Err(AggregationError::InvalidParameter(format!(
                        "centeredClipping needs tau > 0 and at least one iteration, got tau = {tau}, iterations = {iterations}"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AggregationError {
    #[error("no updates to aggregate")]
    Empty,
    #[error("{participant} sent {got} values, expected {expected}")]
    DimensionMismatch {
        participant: String,
        expected: usize,
        got: usize,
    },
    #[error("{rule} with f = {f} needs {requirement}, but only n = {n} updates are available")]
    TooFewUpdates {
        rule: &'static str,
        n: usize,
        f: usize,
        requirement: &'static str,
    },
    #[error("{0}")]
    InvalidParameter(String),
    #[error("zone {zone}: {source}")]
    Zone {
        zone: String,
        source: Box<AggregationError>,
    },
}

/// Applies `rule`. `center` is centered clipping's reference point (the previous round's
/// aggregate, its momentum); the other rules ignore it, and `None` means the zero vector.
pub fn aggregate(
    rule: &Rule,
    contributions: &[Contribution],
    center: Option<&[f32]>,
) -> Result<Aggregate, AggregationError> {
    match *rule {
        Rule::FedAvg => fedavg(contributions),
        Rule::Median { f } => median(contributions, f),
        Rule::TrimmedMean { f } => trimmed_mean(contributions, f),
        Rule::Krum { f } => krum(contributions, f),
        Rule::MultiKrum { f, m } => multi_krum(contributions, f, m),
        Rule::Bulyan { f } => bulyan(contributions, f),
        Rule::CenteredClipping { tau, iterations } => {
            let dim = contributions.first().map_or(0, |c| c.values.len());
            let zero;
            let center = match center {
                Some(c) => c,
                None => {
                    zero = vec![0.0; dim];
                    &zero
                }
            };
            centered_clipping(contributions, center, tau, iterations)
        }
    }
}

/// Common input checks: at least one update, all of one dimension. Returns the dimension.
fn check_inputs(contributions: &[Contribution]) -> Result<usize, AggregationError> {
    let first = contributions.first().ok_or(AggregationError::Empty)?;
    let dim = first.values.len();
    if let Some(bad) = contributions.iter().find(|c| c.values.len() != dim) {
        return Err(AggregationError::DimensionMismatch {
            participant: bad.participant.to_string(),
            expected: dim,
            got: bad.values.len(),
        });
    }
    Ok(dim)
}

fn outcome(c: &Contribution, verdict: Verdict) -> Outcome {
    Outcome {
        participant: c.participant.to_string(),
        verdict,
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::Contribution;

    /// Contributions named p0, p1, … from literal vectors, one example each.
    pub fn contributions<'a>(names: &'a [String], vectors: &'a [Vec<f32>]) -> Vec<Contribution<'a>> {
        names
            .iter()
            .zip(vectors)
            .map(|(n, v)| Contribution {
                participant: n,
                examples: 1,
                values: v,
            })
            .collect()
    }

    pub fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("p{i}")).collect()
    }

    pub fn assert_close(actual: &[f32], expected: &[f32]) {
        assert_eq!(actual.len(), expected.len(), "{actual:?} vs {expected:?}");
        for (a, e) in actual.iter().zip(expected) {
            assert!((a - e).abs() < 1e-5, "{actual:?} vs {expected:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_that_cannot_hold_are_refused_not_weakened() {
        let too_few =
            |rule: Rule, n: usize| matches!(rule.check(n), Err(AggregationError::TooFewUpdates { .. }));
        assert!(too_few(Rule::Krum { f: 2 }, 6)); // needs n > 6
        assert!(Rule::Krum { f: 2 }.check(7).is_ok());
        assert!(too_few(Rule::MultiKrum { f: 1, m: None }, 4));
        assert!(too_few(Rule::Bulyan { f: 2 }, 10)); // needs n >= 11
        assert!(Rule::Bulyan { f: 2 }.check(11).is_ok());
        assert!(too_few(Rule::TrimmedMean { f: 3 }, 6));
        assert!(Rule::TrimmedMean { f: 3 }.check(7).is_ok());
        assert!(too_few(Rule::Median { f: 2 }, 4));
        assert!(matches!(
            Rule::MultiKrum { f: 0, m: Some(0) }.check(5),
            Err(AggregationError::InvalidParameter(_))
        ));
        assert!(matches!(
            Rule::CenteredClipping {
                tau: 0.0,
                iterations: 1
            }
            .check(5),
            Err(AggregationError::InvalidParameter(_))
        ));
        let message = Rule::Bulyan { f: 2 }.check(10).unwrap_err().to_string();
        assert_eq!(
            message,
            "bulyan with f = 2 needs n >= 4f + 3, but only n = 10 updates are available"
        );
    }

    #[test]
    fn every_rule_refuses_empty_and_ragged_input() {
        let rules = [
            Rule::FedAvg,
            Rule::Median { f: 0 },
            Rule::TrimmedMean { f: 0 },
            Rule::Krum { f: 0 },
            Rule::MultiKrum { f: 0, m: None },
            Rule::Bulyan { f: 0 },
            Rule::CenteredClipping {
                tau: 1.0,
                iterations: 1,
            },
        ];
        let a = [1.0f32, 2.0];
        let b = [1.0f32];
        let ragged = [
            Contribution {
                participant: "a",
                examples: 1,
                values: &a,
            },
            Contribution {
                participant: "b",
                examples: 1,
                values: &b,
            },
            Contribution {
                participant: "c",
                examples: 1,
                values: &a,
            },
        ];
        for rule in rules {
            assert_eq!(
                aggregate(&rule, &[], None),
                Err(AggregationError::Empty),
                "{rule:?}"
            );
            assert!(
                matches!(
                    aggregate(&rule, &ragged, None),
                    Err(AggregationError::DimensionMismatch { ref participant, .. }) if participant == "b"
                ),
                "{rule:?}"
            );
        }
    }
}
