//! Coordinate-wise rules (Yin et al. 2018): each coordinate is aggregated independently from
//! the n values the participants sent for it.
//!
//! Updates arrive as n separate vectors, so a coordinate's values are strided across memory.
//! The walk below copies a block of coordinates from every vector into a small column-major
//! buffer (one sequential read per vector per block) and then works column by column inside
//! the cache, instead of n scattered reads per coordinate. Per column, selection
//! (`select_nth_unstable`, O(n)) replaces sorting.
use std::cmp::Ordering;

use super::{Aggregate, AggregationError, Contribution, Outcome, Rule, Verdict, check_inputs, outcome};

/// A value and the index of the participant that sent it.
pub(super) type Entry = (f32, u32);

fn by_value(a: &Entry, b: &Entry) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// How much of the aggregate each participant carries, accumulated column by column.
pub(super) struct Usage {
    /// Σ over coordinates of this participant's share of that coordinate's value.
    pub share: Vec<f64>,
    /// Coordinates where this participant's value was used at all.
    pub used: Vec<u64>,
}

/// Runs `combine` on every coordinate's column of (value, participant) entries. `combine`
/// returns the coordinate's aggregate and records, through the `Usage`, whose values it used.
pub(super) fn columnwise(
    vectors: &[&[f32]],
    dim: usize,
    mut combine: impl FnMut(&mut [Entry], &mut Usage) -> f32,
) -> (Vec<f32>, Usage) {
    let n = vectors.len();
    let mut usage = Usage {
        share: vec![0.0; n],
        used: vec![0; n],
    };
    let mut out = vec![0f32; dim];
    // About 256 KiB of entries per block: fits L2 with room for the output.
    let block = (32 * 1024 / n.max(1)).clamp(1, 4096);
    let mut buf: Vec<Entry> = vec![(0.0, 0); block * n];
    for start in (0..dim).step_by(block) {
        let width = block.min(dim - start);
        for (i, v) in vectors.iter().enumerate() {
            for (c, &x) in v[start..start + width].iter().enumerate() {
                buf[c * n + i] = (x, i as u32);
            }
        }
        for c in 0..width {
            out[start + c] = combine(&mut buf[c * n..(c + 1) * n], &mut usage);
        }
    }
    (out, usage)
}

/// The median of a column (mean of the two middle values when n is even), recording each
/// middle value's share.
pub(super) fn column_median(col: &mut [Entry], usage: &mut Usage) -> f32 {
    let n = col.len();
    let mid = n / 2;
    col.select_nth_unstable_by(mid, by_value);
    let upper = col[mid];
    if n % 2 == 1 {
        usage.share[upper.1 as usize] += 1.0;
        usage.used[upper.1 as usize] += 1;
        upper.0
    } else {
        let lower = *col[..mid].iter().max_by(|a, b| by_value(a, b)).expect("n >= 2");
        for e in [lower, upper] {
            usage.share[e.1 as usize] += 0.5;
            usage.used[e.1 as usize] += 1;
        }
        ((lower.0 as f64 + upper.0 as f64) / 2.0) as f32
    }
}

/// Mean of a column without its `f` smallest and `f` largest values.
pub(super) fn column_trimmed_mean(col: &mut [Entry], f: usize, usage: &mut Usage) -> f32 {
    let n = col.len();
    let kept = n - 2 * f;
    let middle: &mut [Entry] = if f == 0 {
        col
    } else {
        // After these two selections, col[f..f+kept] holds the values ranked f..n−f.
        col.select_nth_unstable_by(f, by_value);
        let rest = &mut col[f..];
        if kept < rest.len() {
            rest.select_nth_unstable_by(kept, by_value);
        }
        &mut col[f..f + kept]
    };
    let mut sum = 0f64;
    for e in middle.iter() {
        sum += e.0 as f64;
        usage.share[e.1 as usize] += 1.0 / kept as f64;
        usage.used[e.1 as usize] += 1;
    }
    (sum / kept as f64) as f32
}

/// Turns per-participant usage into outcomes. An update counts as down-weighted when it
/// carries less than half the weight an even split of the aggregate would give it (the
/// fingerprint of an outlier trimmed almost everywhere), rejected when it was never used.
pub(super) fn usage_outcomes(
    contributions: &[Contribution],
    members: &[usize],
    usage: &Usage,
    dim: usize,
) -> Vec<(usize, Outcome)> {
    let even = 1.0 / members.len() as f64;
    members
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let weight = if dim == 0 { even } else { usage.share[k] / dim as f64 };
            let trimmed = if dim == 0 {
                0.0
            } else {
                100.0 * (1.0 - usage.used[k] as f64 / dim as f64)
            };
            let verdict = if dim > 0 && usage.used[k] == 0 {
                Verdict::Rejected {
                    reason: "trimmed in every coordinate".into(),
                }
            } else if weight < even / 2.0 {
                Verdict::DownWeighted {
                    weight,
                    reason: format!(
                        "trimmed in {trimmed:.0}% of coordinates (weight {weight:.3}, an even share is {even:.3})"
                    ),
                }
            } else {
                Verdict::Accepted { weight }
            };
            (i, outcome(&contributions[i], verdict))
        })
        .collect()
}

pub fn median(contributions: &[Contribution], f: usize) -> Result<Aggregate, AggregationError> {
    let dim = check_inputs(contributions)?;
    Rule::Median { f }.check(contributions.len())?;
    let vectors: Vec<&[f32]> = contributions.iter().map(|c| c.values).collect();
    let (values, usage) = columnwise(&vectors, dim, column_median);
    Ok(finish(contributions, values, &usage, dim))
}

pub fn trimmed_mean(contributions: &[Contribution], f: usize) -> Result<Aggregate, AggregationError> {
    let dim = check_inputs(contributions)?;
    Rule::TrimmedMean { f }.check(contributions.len())?;
    let vectors: Vec<&[f32]> = contributions.iter().map(|c| c.values).collect();
    let (values, usage) = columnwise(&vectors, dim, |col, usage| column_trimmed_mean(col, f, usage));
    Ok(finish(contributions, values, &usage, dim))
}

fn finish(contributions: &[Contribution], values: Vec<f32>, usage: &Usage, dim: usize) -> Aggregate {
    let members: Vec<usize> = (0..contributions.len()).collect();
    let outcomes = usage_outcomes(contributions, &members, usage, dim)
        .into_iter()
        .map(|(_, o)| o)
        .collect();
    Aggregate { values, outcomes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::test_support::{assert_close, contributions, names};

    #[test]
    fn median_hand_worked() {
        // Coordinate 0: {1, 2, 3, 4, 100} → 3 (p2). Coordinate 1: {5, −1, 0, 2, −50} sorted
        // {−50, −1, 0, 2, 5} → 0 (p2). Coordinate 2: {0, 0, 7, 1, 1} sorted {0, 0, 1, 1, 7} → 1,
        // and the selection with ties broken by index picks p3.
        let v = vec![
            vec![1.0, 5.0, 0.0],
            vec![2.0, -1.0, 0.0],
            vec![3.0, 0.0, 7.0],
            vec![4.0, 2.0, 1.0],
            vec![100.0, -50.0, 1.0],
        ];
        let n = names(5);
        let agg = median(&contributions(&n, &v), 2).unwrap();
        assert_close(&agg.values, &[3.0, 0.0, 1.0]);
        // p2 supplied 2 of 3 coordinates, p3 one, the rest none: an even share is 0.2, so
        // p0, p1 and p4 are rejected (never used).
        assert_eq!(agg.outcomes[2].verdict.weight(), 2.0 / 3.0);
        assert_eq!(agg.outcomes[3].verdict.weight(), 1.0 / 3.0);
        assert!(agg.outcomes[4].verdict.is_rejected());
    }

    #[test]
    fn median_of_an_even_count_is_the_midpoint() {
        // {1, 9, 3, 5} sorted {1, 3, 5, 9}: (3 + 5) / 2 = 4.
        let v = vec![vec![1.0], vec![9.0], vec![3.0], vec![5.0]];
        let n = names(4);
        let agg = median(&contributions(&n, &v), 1).unwrap();
        assert_close(&agg.values, &[4.0]);
        assert_eq!(agg.outcomes[2].verdict.weight(), 0.5);
        assert_eq!(agg.outcomes[3].verdict.weight(), 0.5);
    }

    #[test]
    fn trimmed_mean_hand_worked() {
        // n = 5, f = 1: drop the smallest and the largest value of each coordinate.
        // Coordinate 0: {10, 1, 2, 3, −20} → drop −20 and 10 → (1 + 2 + 3) / 3 = 2.
        // Coordinate 1: {0, 4, 4, 4, 100} → drop 0 and 100 → 4.
        let v = vec![
            vec![10.0, 0.0],
            vec![1.0, 4.0],
            vec![2.0, 4.0],
            vec![3.0, 4.0],
            vec![-20.0, 100.0],
        ];
        let n = names(5);
        let agg = trimmed_mean(&contributions(&n, &v), 1).unwrap();
        assert_close(&agg.values, &[2.0, 4.0]);
        // p1..p3 are kept in both coordinates, each 1/3 of each: weight 1/3.
        // p0 (largest, then smallest) and p4 (smallest, then largest) are trimmed in both.
        for i in 1..4 {
            assert!((agg.outcomes[i].verdict.weight() - 1.0 / 3.0).abs() < 1e-12);
        }
        assert!(agg.outcomes[4].verdict.is_rejected());
        assert_eq!(
            agg.outcomes[0].verdict,
            Verdict::Rejected {
                reason: "trimmed in every coordinate".into()
            }
        );
        // With f = 0 it is the plain mean: (10 + 1 + 2 + 3 − 20) / 5 = −0.8.
        let plain = trimmed_mean(&contributions(&n, &v), 0).unwrap();
        assert_close(&plain.values[..1], &[-0.8]);
    }

    #[test]
    fn partially_trimmed_updates_are_down_weighted_with_the_share_trimmed() {
        // n = 5, f = 1, 4 coordinates. p4 is the largest in coordinates 0..3 (trimmed there)
        // and middling in coordinate 3, so it carries (1/3) / 4 = 0.083 < half of 0.2.
        let v = vec![
            vec![0.0, 0.0, 0.0, 0.0],
            vec![1.0, 1.0, 1.0, 1.0],
            vec![2.0, 2.0, 2.0, 3.0],
            vec![3.0, 3.0, 3.0, 4.0],
            vec![9.0, 9.0, 9.0, 2.0],
        ];
        let n = names(5);
        let agg = trimmed_mean(&contributions(&n, &v), 1).unwrap();
        match &agg.outcomes[4].verdict {
            Verdict::DownWeighted { weight, reason } => {
                assert!((weight - 1.0 / 12.0).abs() < 1e-12);
                assert!(reason.starts_with("trimmed in 75% of coordinates"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn blocks_do_not_change_the_result() {
        // More coordinates than one block holds: compare against a per-coordinate sort.
        let n = 7;
        let dim = 10_000;
        let v: Vec<Vec<f32>> = (0..n)
            .map(|i| (0..dim).map(|j| ((i * 31 + j * 17) % 23) as f32 - 11.0).collect())
            .collect();
        let names = names(n);
        let agg = trimmed_mean(&contributions(&names, &v), 2).unwrap();
        for j in (0..dim).step_by(997) {
            let mut col: Vec<f32> = v.iter().map(|x| x[j]).collect();
            col.sort_by(f32::total_cmp);
            let expected: f32 = col[2..5].iter().sum::<f32>() / 3.0;
            assert!((agg.values[j] - expected).abs() < 1e-5);
        }
    }
}
