//! A small seeded generator (SplitMix64), so that a run is reproduced by its seed alone, on any
//! machine and with any version of the `rand` crate.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, and two streams
/// from nearby seeds are unrelated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`, in stream `stream` (e.g. one stream for the topology, one for
    /// link latencies, one for the victims), so a change in how one consumes numbers leaves
    /// the others unchanged.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, bound)`; `bound` must be positive.
    pub fn below(&mut self, bound: u64) -> u64 {
        // Lemire's multiply-shift; the bias is below 2^-32 for the bounds used here.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Uniform in `[low, high]`.
    pub fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high.saturating_sub(low) + 1)
    }

    /// `k` distinct values from `0..n`, in the order drawn.
    pub fn sample(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            pool.swap(i, j);
        }
        pool.truncate(k);
        pool
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_stream_give_the_same_numbers() {
        let a: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(1, 2);
                move |_| rng.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(1, 2);
                move |_| rng.next_u64()
            })
            .collect();
        let c: Vec<u64> = (0..5)
            .map({
                let mut rng = Rng::new(1, 3);
                move |_| rng.next_u64()
            })
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn bounded_draws_stay_in_range_and_samples_are_distinct() {
        let mut rng = Rng::new(7, 0);
        for _ in 0..1000 {
            assert!(rng.below(10) < 10);
            let x = rng.between(3, 5);
            assert!((3..=5).contains(&x));
            let f = rng.next_f64();
            assert!((0.0..1.0).contains(&f));
        }
        let mut sample = rng.sample(50, 20);
        sample.sort_unstable();
        sample.dedup();
        assert_eq!(sample.len(), 20);
    }
}
