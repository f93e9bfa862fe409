//! Centered clipping (Karimireddy, He and Jaggi 2021, "Learning from History for Byzantine
//! Robust Optimization"): starting from a center v (the previous round's aggregate, which
//! plays the role of the paper's momentum), repeat L times
//!
//! v ← v + (1/n) Σ_i (x_i − v) · min(1, τ / ‖x_i − v‖)
//!
//! so each update moves the result by at most τ/n, however far away it is.
use super::{Aggregate, AggregationError, Contribution, Rule, Verdict, check_inputs, outcome};

pub fn centered_clipping(
    contributions: &[Contribution],
    center: &[f32],
    tau: f32,
    iterations: usize,
) -> Result<Aggregate, AggregationError> {
    let dim = check_inputs(contributions)?;
    Rule::CenteredClipping { tau, iterations }.check(contributions.len())?;
    if center.len() != dim {
        return Err(AggregationError::DimensionMismatch {
            participant: "(center)".into(),
            expected: dim,
            got: center.len(),
        });
    }
    let n = contributions.len() as f64;
    let mut v: Vec<f64> = center.iter().map(|&x| x as f64).collect();
    let mut factors = vec![1f64; contributions.len()];
    let mut distances = vec![0f64; contributions.len()];
    let mut step = vec![0f64; dim];
    for _ in 0..iterations {
        step.iter_mut().for_each(|s| *s = 0.0);
        for (k, c) in contributions.iter().enumerate() {
            let distance = c
                .values
                .iter()
                .zip(&v)
                .map(|(&x, &vj)| (x as f64 - vj).powi(2))
                .sum::<f64>()
                .sqrt();
            let factor = if distance > tau as f64 {
                tau as f64 / distance
            } else {
                1.0
            };
            distances[k] = distance;
            factors[k] = factor;
            let scale = factor / n;
            for ((s, &x), &vj) in step.iter_mut().zip(c.values).zip(&v) {
                *s += (x as f64 - vj) * scale;
            }
        }
        v.iter_mut().zip(&step).for_each(|(vj, s)| *vj += s);
    }
    let outcomes = contributions
        .iter()
        .enumerate()
        .map(|(k, c)| {
            let weight = factors[k] / n;
            let verdict = if factors[k] < 1.0 {
                Verdict::DownWeighted {
                    weight,
                    reason: format!(
                        "clipped by factor {:.2} (distance {:.3e} from the center, radius τ = {tau})",
                        factors[k], distances[k]
                    ),
                }
            } else {
                Verdict::Accepted { weight }
            };
            outcome(c, verdict)
        })
        .collect();
    Ok(Aggregate {
        values: v.into_iter().map(|x| x as f32).collect(),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_support::{assert_close, contributions, names};

    #[test]
    fn one_clipping_step_hand_worked() {
        // Center (0, 0), τ = 1. x0 = (3, 4) is at distance 5: factor 1/5, contributes
        // (0.6, 0.8). x1 = (0, 0.5) is within τ: factor 1. v = ((0.6, 0.8) + (0, 0.5)) / 2
        // = (0.3, 0.65).
        let v = vec![vec![3.0, 4.0], vec![0.0, 0.5]];
        let n = names(2);
        let agg = centered_clipping(&contributions(&n, &v), &[0.0, 0.0], 1.0, 1).unwrap();
        assert_close(&agg.values, &[0.3, 0.65]);
        assert_eq!(
            agg.outcomes[0].verdict,
            Verdict::DownWeighted {
                weight: 0.1,
                reason: "clipped by factor 0.20 (distance 5.000e0 from the center, radius τ = 1)".into()
            }
        );
        assert_eq!(agg.outcomes[1].verdict, Verdict::Accepted { weight: 0.5 });
    }

    #[test]
    fn a_second_iteration_recenters_hand_worked() {
        // From v1 = (0.3, 0.65): x0 − v1 = (2.7, 3.35), ‖·‖ = √18.5125 = 4.302615, factor
        // 0.232417, clipped (0.627525, 0.778596). x1 − v1 = (−0.3, −0.15), ‖·‖ = 0.335 < 1,
        // kept. v2 = v1 + ((0.627525, 0.778596) + (−0.3, −0.15)) / 2 = (0.463763, 0.964298).
        let v = vec![vec![3.0, 4.0], vec![0.0, 0.5]];
        let n = names(2);
        let agg = centered_clipping(&contributions(&n, &v), &[0.0, 0.0], 1.0, 2).unwrap();
        assert_close(&agg.values, &[0.463763, 0.964298]);
        assert!((agg.outcomes[0].verdict.weight() - 0.232417 / 2.0).abs() < 1e-6);
    }

    #[test]
    fn the_center_must_match_the_updates() {
        let v = vec![vec![1.0, 2.0]];
        let n = names(1);
        assert!(matches!(
            centered_clipping(&contributions(&n, &v), &[0.0], 1.0, 1),
            Err(AggregationError::DimensionMismatch { .. })
        ));
    }
}
