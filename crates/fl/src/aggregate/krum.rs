//! Krum and Multi-Krum (Blanchard et al. 2017).
//!
//! Score of update i: the sum of its squared distances to its n − f − 2 nearest other updates.
//! Krum returns the update with the lowest score; Multi-Krum averages the m lowest-scored.
//!
//! All n² squared distances come from one Gram matrix, ‖a − b‖² = ‖a‖² + ‖b‖² − 2 a·b, so the
//! O(n²·d) work is a matrix product (matrixmultiply's blocked SIMD kernels via ndarray) rather
//! than n² separate passes over the vectors.
use ndarray::{Array2, ArrayView2};

use super::{Aggregate, AggregationError, Contribution, Outcome, Rule, Verdict, check_inputs, outcome};

/// Squared Euclidean distances between all pairs, as an n×n row-major matrix (f64).
///
/// The vectors are copied a block of coordinates at a time into an n × width matrix X_b and the
/// Gram matrix accumulates G += X_b X_bᵀ; each block's product is in f32 (the updates' own
/// precision) and the sum over blocks in f64, which bounds the rounding error of the
/// ‖a‖² + ‖b‖² − 2a·b cancellation by one block's worth instead of the whole vector's.
pub fn pairwise_squared_distances(vectors: &[&[f32]]) -> Vec<f64> {
    let n = vectors.len();
    let dim = vectors.first().map_or(0, |v| v.len());
    let mut gram = vec![0f64; n * n];
    // About 8 MiB of X_b, never wider than 16384 coordinates, and at most a quarter of the
    // updates' own size, so the copy adds little to the memory the updates already take.
    let width_max = (2 * 1024 * 1024 / n.max(1))
        .clamp(64, 16 * 1024)
        .min((dim / 4).max(64));
    let mut block = vec![0f32; n * width_max];
    let mut product = Array2::<f32>::zeros((n, n));
    for start in (0..dim).step_by(width_max) {
        let width = width_max.min(dim - start);
        for (i, v) in vectors.iter().enumerate() {
            block[i * width..(i + 1) * width].copy_from_slice(&v[start..start + width]);
        }
        let x = ArrayView2::from_shape((n, width), &block[..n * width]).expect("n × width fits");
        ndarray::linalg::general_mat_mul(1.0, &x, &x.t(), 0.0, &mut product);
        for (g, p) in gram.iter_mut().zip(product.iter()) {
            *g += *p as f64;
        }
    }
    let mut distances = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..n {
            if i != j {
                // Rounding can push the distance of near-identical vectors slightly below 0.
                distances[i * n + j] = (gram[i * n + i] + gram[j * n + j] - 2.0 * gram[i * n + j]).max(0.0);
            }
        }
    }
    distances
}

/// Krum scores of `members` (indices into the n×n `distances`), each against the other
/// members only, summing the `neighbours` smallest squared distances.
pub(super) fn scores(distances: &[f64], n: usize, members: &[usize], neighbours: usize) -> Vec<f64> {
    let mut row = Vec::with_capacity(members.len());
    members
        .iter()
        .map(|&i| {
            row.clear();
            row.extend(members.iter().filter(|&&j| j != i).map(|&j| distances[i * n + j]));
            let k = neighbours.min(row.len());
            if k == 0 {
                return 0.0;
            }
            if k < row.len() {
                row.select_nth_unstable_by(k - 1, f64::total_cmp);
            }
            row[..k].iter().sum()
        })
        .collect()
}

/// Positions (into `scores`) ordered by ascending score, ties by position, so the choice is a
/// function of the inputs alone.
pub(super) fn ranked(scores: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    order
}

pub fn krum(contributions: &[Contribution], f: usize) -> Result<Aggregate, AggregationError> {
    check_inputs(contributions)?;
    Rule::Krum { f }.check(contributions.len())?;
    select_and_average(contributions, f, 1, "the selected")
}

pub fn multi_krum(
    contributions: &[Contribution],
    f: usize,
    m: Option<usize>,
) -> Result<Aggregate, AggregationError> {
    check_inputs(contributions)?;
    Rule::MultiKrum { f, m }.check(contributions.len())?;
    let m = m.unwrap_or(contributions.len() - f);
    select_and_average(contributions, f, m, "the last selected")
}

fn select_and_average(
    contributions: &[Contribution],
    f: usize,
    m: usize,
    threshold_name: &str,
) -> Result<Aggregate, AggregationError> {
    let n = contributions.len();
    let dim = contributions[0].values.len();
    let vectors: Vec<&[f32]> = contributions.iter().map(|c| c.values).collect();
    let distances = pairwise_squared_distances(&vectors);
    let members: Vec<usize> = (0..n).collect();
    let scores = scores(&distances, n, &members, n - f - 2);
    let order = ranked(&scores);
    let selected = &order[..m];
    let threshold = scores[selected[m - 1]];
    let mut values = vec![0f32; dim];
    let share = 1.0 / m as f32;
    for &i in selected {
        for (o, v) in values.iter_mut().zip(contributions[i].values) {
            *o += share * v;
        }
    }
    let mut verdicts: Vec<Option<Verdict>> = vec![None; n];
    for &i in selected {
        verdicts[i] = Some(Verdict::Accepted {
            weight: 1.0 / m as f64,
        });
    }
    let outcomes: Vec<Outcome> = contributions
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let verdict = verdicts[i].take().unwrap_or_else(|| Verdict::Rejected {
                reason: format!(
                    "krum score {:.4e} above {threshold_name} {:.4e}",
                    scores[i], threshold
                ),
            });
            outcome(c, verdict)
        })
        .collect();
    Ok(Aggregate { values, outcomes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_support::{assert_close, contributions, names};

    #[test]
    fn distances_by_matrix_product_match_the_direct_sums() {
        // Wider than one block (16384 for small n), with a pair of identical vectors.
        let dim = 40_000;
        let v: Vec<Vec<f32>> = (0..4)
            .map(|i| {
                (0..dim)
                    .map(|j| (((i % 3) * 7 + j * 13) % 29) as f32 / 29.0 - 0.5)
                    .collect()
            })
            .collect();
        let refs: Vec<&[f32]> = v.iter().map(Vec::as_slice).collect();
        let d = pairwise_squared_distances(&refs);
        for i in 0..4 {
            for j in 0..4 {
                let direct: f64 = v[i]
                    .iter()
                    .zip(&v[j])
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                assert!((d[i * 4 + j] - direct).abs() < 1e-6 * (1.0 + direct), "{i},{j}");
            }
        }
        // v0 and v3 coincide (i % 3 == 0 for both).
        assert!(d[3] < 1e-6);
    }

    #[test]
    fn krum_hand_worked() {
        // n = 5, f = 1: each score sums the n − f − 2 = 2 smallest squared distances.
        // Points 0, 1, 2, 3, 10 on a line.
        //   0: {1, 4, 9, 100}   → 1 + 4  = 5
        //   1: {1, 1, 4, 81}    → 1 + 1  = 2
        //   2: {4, 1, 1, 64}    → 1 + 1  = 2
        //   3: {9, 4, 1, 49}    → 1 + 4  = 5
        //  10: {100, 81, 64, 49} → 49 + 64 = 113
        // Lowest score 2, tie between 1 and 2 broken by order: Krum returns (1).
        let v = vec![vec![0.0], vec![1.0], vec![2.0], vec![3.0], vec![10.0]];
        let n = names(5);
        let agg = krum(&contributions(&n, &v), 1).unwrap();
        assert_close(&agg.values, &[1.0]);
        assert_eq!(agg.outcomes[1].verdict, Verdict::Accepted { weight: 1.0 });
        assert_eq!(
            agg.outcomes[4].verdict,
            Verdict::Rejected {
                reason: "krum score 1.1300e2 above the selected 2.0000e0".into()
            }
        );
        assert_eq!(agg.rejected().count(), 4);
    }

    #[test]
    fn multi_krum_hand_worked() {
        // Unit square corners a(0,0) b(1,0) c(0,1) d(1,1) and an outlier e(5,5); n = 5, f = 1,
        // 2 nearest. Squared distances: ab 1, ac 1, ad 2, ae 50, bc 2, bd 1, be 41, cd 1, ce 41,
        // de 32. Scores: a 1+1 = 2, b 1+1 = 2, c 1+1 = 2, d 1+1 = 2, e 32+41 = 73.
        // m = n − f = 4 selects a..d; their mean is (0.5, 0.5).
        let v = vec![
            vec![0.0, 0.0],
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![1.0, 1.0],
            vec![5.0, 5.0],
        ];
        let n = names(5);
        let agg = multi_krum(&contributions(&n, &v), 1, None).unwrap();
        assert_close(&agg.values, &[0.5, 0.5]);
        for i in 0..4 {
            assert_eq!(agg.outcomes[i].verdict, Verdict::Accepted { weight: 0.25 });
        }
        assert_eq!(
            agg.outcomes[4].verdict,
            Verdict::Rejected {
                reason: "krum score 7.3000e1 above the last selected 2.0000e0".into()
            }
        );
        // m = 2: the two best-ranked, a and b (ties by order): ((0 + 1) / 2, 0) = (0.5, 0).
        let two = multi_krum(&contributions(&n, &v), 1, Some(2)).unwrap();
        assert_close(&two.values, &[0.5, 0.0]);
    }

    #[test]
    fn krum_refuses_too_few_updates() {
        let v = vec![vec![0.0]; 4];
        let n = names(4);
        // f = 1 needs n > 4.
        assert!(matches!(
            krum(&contributions(&n, &v), 1),
            Err(AggregationError::TooFewUpdates {
                requirement: "n > 2f + 2",
                ..
            })
        ));
    }
}
