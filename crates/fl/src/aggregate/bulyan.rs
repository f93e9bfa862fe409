//! Bulyan (El Mhamdi et al. 2018), with Krum as the selection rule.
//!
//! 1. Selection: θ = n − 2f times, run Krum on the updates not yet selected and move its
//!    choice into the selection set S.
//! 2. Aggregation: for each coordinate, take the β = θ − 2f values of S closest to the
//!    coordinate's median over S and average them.
//!
//! Needs n ≥ 4f + 3. The pairwise distances are computed once, for all n updates; each Krum
//! round re-scores the remaining updates against each other only.
use std::cmp::Ordering;

use super::coordinate::{Entry, Usage, columnwise, usage_outcomes};
use super::krum::{pairwise_squared_distances, ranked, scores};
use super::{Aggregate, AggregationError, Contribution, Rule, Verdict, check_inputs, outcome};

pub fn bulyan(contributions: &[Contribution], f: usize) -> Result<Aggregate, AggregationError> {
    let dim = check_inputs(contributions)?;
    let n = contributions.len();
    Rule::Bulyan { f }.check(n)?;
    let theta = n - 2 * f;
    let beta = theta - 2 * f;

    let vectors: Vec<&[f32]> = contributions.iter().map(|c| c.values).collect();
    let distances = pairwise_squared_distances(&vectors);
    let mut remaining: Vec<usize> = (0..n).collect();
    let mut selected = Vec::with_capacity(theta);
    // Each update's Krum score in the last round it took part in, for the rejection reasons.
    let mut last_score = vec![0f64; n];
    let mut last_threshold = 0f64;
    for _ in 0..theta {
        // Krum's n − f − 2 neighbours, counted in the remaining set. In the last rounds this
        // reaches 0 (|R| = 2f + 1 when n = 4f + 3), where every score would be 0 and the
        // choice arbitrary; one neighbour keeps the choice informed. The bound on what a
        // selected Byzantine update can do comes from step 2 either way.
        let neighbours = remaining.len().saturating_sub(f + 2).max(1);
        let s = scores(&distances, n, &remaining, neighbours);
        for (k, &i) in remaining.iter().enumerate() {
            last_score[i] = s[k];
        }
        let best = ranked(&s)[0];
        last_threshold = s[best];
        selected.push(remaining.remove(best));
    }

    let chosen: Vec<&[f32]> = selected.iter().map(|&i| vectors[i]).collect();
    let (values, usage) = columnwise(&chosen, dim, |col, usage| {
        column_closest_to_median(col, beta, usage)
    });

    let mut outcomes: Vec<_> = contributions
        .iter()
        .map(|c| {
            outcome(
                c,
                Verdict::Rejected {
                    reason: String::new(),
                },
            )
        })
        .collect();
    for &i in &remaining {
        outcomes[i].verdict = Verdict::Rejected {
            reason: format!(
                "not among the θ = {theta} selected by iterated Krum: score {:.4e} above the last selected {:.4e}",
                last_score[i], last_threshold
            ),
        };
    }
    // `columnwise` numbered the selected updates by their position in `selected`, which is
    // the numbering `usage_outcomes` takes with `members = selected`.
    for (i, o) in usage_outcomes(contributions, &selected, &usage, dim) {
        outcomes[i] = o;
    }
    Ok(Aggregate { values, outcomes })
}

fn median_value(col: &mut [Entry]) -> f32 {
    let n = col.len();
    let mid = n / 2;
    let cmp = |a: &Entry, b: &Entry| a.0.total_cmp(&b.0);
    col.select_nth_unstable_by(mid, cmp);
    let upper = col[mid].0;
    if n % 2 == 1 {
        upper
    } else {
        let lower = col[..mid].iter().map(|e| e.0).fold(f32::NEG_INFINITY, f32::max);
        ((lower as f64 + upper as f64) / 2.0) as f32
    }
}

/// Mean of the `beta` values closest to the column's median (ties by participant order).
fn column_closest_to_median(col: &mut [Entry], beta: usize, usage: &mut Usage) -> f32 {
    let median = median_value(col);
    if beta < col.len() {
        let by_closeness = |a: &Entry, b: &Entry| -> Ordering {
            (a.0 - median)
                .abs()
                .total_cmp(&(b.0 - median).abs())
                .then(a.1.cmp(&b.1))
        };
        col.select_nth_unstable_by(beta - 1, by_closeness);
    }
    let mut sum = 0f64;
    for e in &col[..beta] {
        sum += e.0 as f64;
        usage.share[e.1 as usize] += 1.0 / beta as f64;
        usage.used[e.1 as usize] += 1;
    }
    (sum / beta as f64) as f32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_support::{assert_close, contributions, names};

    fn entries(values: &[f32]) -> Vec<Entry> {
        values.iter().enumerate().map(|(i, &v)| (v, i as u32)).collect()
    }

    #[test]
    fn the_coordinate_step_averages_the_beta_closest_to_the_median() {
        // {0, 2, 3, 7, 9}: median 3, distances 3, 1, 0, 4, 6. β = 3 keeps 3, 2 and 0:
        // (3 + 2 + 0) / 3 = 5/3.
        let mut usage = Usage {
            share: vec![0.0; 5],
            used: vec![0; 5],
        };
        let mut col = entries(&[0.0, 2.0, 3.0, 7.0, 9.0]);
        let v = column_closest_to_median(&mut col, 3, &mut usage);
        assert!((v - 5.0 / 3.0).abs() < 1e-6);
        assert_eq!(usage.used, vec![1, 1, 1, 0, 0]);
        // {1, 2, 6, 10}: median (2 + 6) / 2 = 4, distances 3, 2, 2, 6. β = 2 keeps 2 and 6: 4.
        let mut usage = Usage {
            share: vec![0.0; 4],
            used: vec![0; 4],
        };
        let mut col = entries(&[1.0, 2.0, 6.0, 10.0]);
        assert!((column_closest_to_median(&mut col, 2, &mut usage) - 4.0).abs() < 1e-6);
    }

    #[test]
    fn bulyan_hand_worked() {
        // n = 7, f = 1: θ = 5 selected by iterated Krum, then β = 3 closest to the median.
        // Values p0..p6 = 0, 1, 2, 3, 4, 100, −50 (squared distances are squared gaps).
        // Round 1, |R| = 7, 4 neighbours:
        //   0: 1+4+9+16 = 30, 1: 1+1+4+9 = 15, 2: 1+1+4+4 = 10, 3: 15, 4: 30,
        //   100: 9216+9409+9604+9801 = 38030, −50: 2500+2601+2704+2809 = 10614 → p2.
        // Round 2, |R| = 6, 3 neighbours: 0: 1+9+16 = 26, 1: 1+4+9 = 14, 3: 14, 4: 26,
        //   100: 9216+9409+9801 = 28426, −50: 2500+2601+2809 = 7910 → p1 (tie with p3).
        // Round 3, |R| = 5, 2 neighbours: 0: 9+16 = 25, 3: 1+9 = 10, 4: 1+16 = 17,
        //   100: 9216+9409 = 18625, −50: 2500+2809 = 5309 → p3.
        // Round 4, |R| = 4, 1 neighbour: 0: 16, 4: 16, 100: 9216, −50: 2500 → p0 (tie with p4).
        // Round 5, |R| = 3, max(3 − 3, 1) = 1 neighbour: 4: min(9216, 2916) = 2916,
        //   100: 9216, −50: 2916 → p4 (tie with p6).
        // S = {0, 1, 2, 3, 4}: median 2, the three closest are 1, 2, 3 → 2.
        let v: Vec<Vec<f32>> = [0.0, 1.0, 2.0, 3.0, 4.0, 100.0, -50.0]
            .iter()
            .map(|&x| vec![x])
            .collect();
        let n = names(7);
        let agg = bulyan(&contributions(&n, &v), 1).unwrap();
        assert_close(&agg.values, &[2.0]);
        assert_eq!(
            agg.outcomes[5].verdict,
            Verdict::Rejected {
                reason: "not among the θ = 5 selected by iterated Krum: score 9.2160e3 above the last selected 2.9160e3".into()
            }
        );
        assert!(agg.outcomes[6].verdict.is_rejected());
        // Of the selected, 0 and 4 were trimmed in the only coordinate: rejected too.
        assert!(agg.outcomes[0].verdict.is_rejected());
        assert!(agg.outcomes[4].verdict.is_rejected());
        for i in 1..4 {
            assert!((agg.outcomes[i].verdict.weight() - 1.0 / 3.0).abs() < 1e-12);
        }
    }

    #[test]
    fn bulyan_needs_4f_plus_3() {
        let v = vec![vec![0.0]; 10];
        let n = names(10);
        assert!(matches!(
            bulyan(&contributions(&n, &v), 2),
            Err(AggregationError::TooFewUpdates {
                requirement: "n >= 4f + 3",
                n: 10,
                f: 2,
                ..
            })
        ));
    }
}
