//! What "normal" looks like for one link: an exponentially weighted mean and mean deviation of
//! a measurement, as TCP estimates RTT (RFC 6298), so thresholds follow each link's own
//! distribution instead of one number for every link.

/// Gain of the mean (1/8) and of the deviation (1/4), RFC 6298's α and β.
const MEAN_GAIN: f64 = 0.125;
const DEVIATION_GAIN: f64 = 0.25;
/// Samples judged anomalous still move the baseline, four times slower: a lasting change
/// becomes the new normal within a few dozen samples, a short fault barely shifts it.
const ANOMALY_DAMPING: f64 = 0.25;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Baseline {
    mean: f64,
    deviation: f64,
    samples: u32,
}

impl Baseline {
    pub fn new(first: f64) -> Self {
        Baseline {
            mean: first,
            deviation: first / 2.0,
            samples: 1,
        }
    }

    pub fn mean(&self) -> f64 {
        self.mean
    }

    pub fn deviation(&self) -> f64 {
        self.deviation
    }

    pub fn samples(&self) -> u32 {
        self.samples
    }

    /// The value above which a sample is anomalous: `mean + k × deviation`, and at least
    /// `margin` above the mean (a link with no jitter at all would otherwise flag any change).
    pub fn upper_limit(&self, k: f64, margin: f64) -> f64 {
        self.mean + (k * self.deviation).max(margin)
    }

    /// The value below which a sample is anomalous, mirrored.
    pub fn lower_limit(&self, k: f64, margin: f64) -> f64 {
        self.mean - (k * self.deviation).max(margin)
    }

    /// Folds in a sample; `anomalous` ones with a damped gain.
    pub fn update(&mut self, sample: f64, anomalous: bool) {
        let damping = if anomalous { ANOMALY_DAMPING } else { 1.0 };
        let error = sample - self.mean;
        self.deviation += DEVIATION_GAIN * damping * (error.abs() - self.deviation);
        self.mean += MEAN_GAIN * damping * error;
        self.samples = self.samples.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_rfc_6298_gains() {
        // mean 100, deviation 50; sample 108: deviation += (8 - 50)/4 → 39.5, mean += 8/8 → 101.
        let mut baseline = Baseline::new(100.0);
        baseline.update(108.0, false);
        assert_eq!(baseline.mean(), 101.0);
        assert_eq!(baseline.deviation(), 39.5);
        assert_eq!(baseline.samples(), 2);
    }

    #[test]
    fn a_steady_link_narrows_its_limits_and_a_jittery_one_widens_them() {
        let mut steady = Baseline::new(300.0);
        let mut jittery = Baseline::new(300.0);
        for i in 0..200 {
            steady.update(300.0, false);
            jittery.update(if i % 2 == 0 { 250.0 } else { 350.0 }, false);
        }
        assert!(steady.upper_limit(3.0, 16.0) < 317.0);
        assert!(jittery.upper_limit(3.0, 16.0) > 400.0);
    }

    #[test]
    fn anomalous_samples_move_the_baseline_four_times_slower() {
        let mut normal = Baseline::new(100.0);
        let mut damped = Baseline::new(100.0);
        normal.update(180.0, false);
        damped.update(180.0, true);
        assert_eq!(normal.mean() - 100.0, 10.0);
        assert_eq!(damped.mean() - 100.0, 2.5);
    }
}
