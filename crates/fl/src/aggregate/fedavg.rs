//! FedAvg (McMahan et al. 2017): Σ_i (n_i / Σ_j n_j) · x_i, with n_i the examples behind x_i.
use super::{Aggregate, AggregationError, Contribution, Verdict, check_inputs, outcome};

pub fn fedavg(contributions: &[Contribution]) -> Result<Aggregate, AggregationError> {
    let dim = check_inputs(contributions)?;
    let total: f64 = contributions.iter().map(|c| c.examples as f64).sum();
    if total <= 0.0 {
        return Err(AggregationError::InvalidParameter(
            "fedavg needs a positive total example count".into(),
        ));
    }
    let mut values = vec![0f32; dim];
    let mut outcomes = Vec::with_capacity(contributions.len());
    for c in contributions {
        let weight = c.examples as f64 / total;
        // One fused multiply-add pass per update over the output: the same memory traffic as
        // a plain sum, which is what keeps FedAvg within a small factor of it.
        let w = weight as f32;
        for (o, v) in values.iter_mut().zip(c.values) {
            *o += w * v;
        }
        outcomes.push(outcome(c, Verdict::Accepted { weight }));
    }
    Ok(Aggregate { values, outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_support::assert_close;

    #[test]
    fn weights_by_examples_hand_worked() {
        // x_a = (1, 2) with 1 example, x_b = (4, -1) with 3 examples: weights 1/4 and 3/4.
        // coordinate 0: 0.25·1 + 0.75·4 = 3.25; coordinate 1: 0.25·2 + 0.75·(−1) = −0.25.
        let (a, b) = ([1.0f32, 2.0], [4.0f32, -1.0]);
        let agg = fedavg(&[
            Contribution {
                participant: "a",
                examples: 1,
                values: &a,
            },
            Contribution {
                participant: "b",
                examples: 3,
                values: &b,
            },
        ])
        .unwrap();
        assert_close(&agg.values, &[3.25, -0.25]);
        assert_eq!(agg.outcomes[0].verdict, Verdict::Accepted { weight: 0.25 });
        assert_eq!(agg.outcomes[1].verdict, Verdict::Accepted { weight: 0.75 });
    }

    #[test]
    fn zero_total_examples_is_an_error() {
        let a = [1.0f32];
        assert!(matches!(
            fedavg(&[Contribution {
                participant: "a",
                examples: 0,
                values: &a
            }]),
            Err(AggregationError::InvalidParameter(_))
        ));
    }
}
