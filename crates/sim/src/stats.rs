//! Percentiles: exact for the few samples of a scenario (detections, reroutes), and a
//! log-linear histogram (1.6% precision, fixed memory) for the hundreds of millions of
//! per-message timings.

use std::time::Duration;

/// Nearest-rank percentile (`p` in `0..=100`) of unsorted samples; `None` when empty.
pub fn percentile(samples: &mut [Duration], p: f64) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil().max(1.0) as usize;
    samples.get(rank.min(samples.len()) - 1).copied()
}

/// 64 linear sub-buckets per power of two above 128: every recorded value is reported within
/// 1/64 of itself.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = (63 - SUB_BITS as usize) * SUB as usize + 2 * SUB as usize;

/// A histogram of `u64` values (nanoseconds here).
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.total)
            .field("p50", &self.percentile(50.0))
            .field("p99", &self.percentile(99.0))
            .field("max", &self.max)
            .finish()
    }
}

fn bucket(value: u64) -> usize {
    if value < 2 * SUB {
        return value as usize;
    }
    let shift = 63 - value.leading_zeros() - SUB_BITS;
    (shift as usize) * SUB as usize + (value >> shift) as usize
}

/// The smallest and largest value of a bucket.
fn bucket_bounds(index: usize) -> (u64, u64) {
    if index < 2 * SUB as usize {
        return (index as u64, index as u64);
    }
    let shift = (index / SUB as usize - 1) as u32;
    let mantissa = (index - shift as usize * SUB as usize) as u64;
    // The top bucket's end, 2^64, wraps to 0: minus one is u64::MAX.
    (mantissa << shift, ((mantissa + 1) << shift).wrapping_sub(1))
}

impl Histogram {
    pub fn record(&mut self, value: u64) {
        self.counts[bucket(value)] += 1;
        self.total += 1;
        self.sum += u128::from(value);
        self.max = self.max.max(value);
    }

    pub fn record_duration(&mut self, duration: Duration) {
        self.record(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// Adds `other` as if each of its values had been recorded `factor` times (rounded per
    /// bucket): a distribution measured on a sample, weighted to the population it stands for.
    pub fn merge_scaled(&mut self, other: &Histogram, factor: f64) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            let scaled = (*theirs as f64 * factor).round() as u64;
            *mine += scaled;
            self.total += scaled;
        }
        self.sum += (other.sum as f64 * factor) as u128;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn sum(&self) -> u128 {
        self.sum
    }

    pub fn mean(&self) -> Option<f64> {
        (self.total > 0).then(|| self.sum as f64 / self.total as f64)
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Nearest-rank percentile, reported as the middle of its bucket (never above the
    /// largest value recorded).
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((p / 100.0) * self.total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                return Some((low + (high - low) / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_whole_range_without_gaps() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, high) = bucket_bounds(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(bucket(low), index);
            assert_eq!(bucket(high), index);
            expected_low = high.wrapping_add(1);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn histogram_percentiles_are_within_two_percent() {
        let mut histogram = Histogram::default();
        for value in 1..=100_000u64 {
            histogram.record(value * 10);
        }
        for (p, exact) in [(50.0, 500_000.0), (99.0, 990_000.0)] {
            let got = histogram.percentile(p).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.02, "p{p}: {got} vs {exact}");
        }
        assert_eq!(histogram.percentile(100.0), Some(1_000_000));
        assert_eq!(histogram.count(), 100_000);
    }

    #[test]
    fn a_scaled_merge_weighs_the_sample() {
        let mut fast = Histogram::default();
        for _ in 0..90 {
            fast.record(10);
        }
        let mut slow = Histogram::default();
        slow.record(1000);
        fast.merge_scaled(&slow, 10.0);
        assert_eq!(fast.count(), 100);
        assert_eq!(fast.percentile(90.0), Some(10));
        assert_eq!(fast.percentile(91.0), Some(1000));
    }

    #[test]
    fn exact_percentiles_use_the_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&mut samples, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&mut samples, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&mut [], 50.0), None);
        assert_eq!(
            percentile(&mut [Duration::from_millis(7)], 99.0),
            Some(Duration::from_millis(7))
        );
    }
}
