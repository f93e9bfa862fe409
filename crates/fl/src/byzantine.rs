//! Byzantine participants' behaviours, as pure functions over an honest update or the honest
//! population, for tests, the attack matrix and (later) an agent's chaos setting.
use rand::Rng;
use rand_distr::{Distribution, Normal};
use statrs::distribution::{ContinuousCDF, Normal as StdNormal};

/// What a Byzantine participant sends instead of its honest update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attack {
    /// Honest.
    None,
    /// −magnitude · u. With magnitude 1 and f < n/2 the mean still points the right way (only
    /// slower); the RSA paper's sign-flipping attack (Li et al. 2019) uses magnitude 4.
    SignFlip { magnitude: f32 },
    /// factor · u: a boosted update (model-replacement style, Bagdasaryan et al. 2020).
    Scaling { factor: f32 },
    /// u + N(0, σ²) in every coordinate.
    Noise { sigma: f32 },
    /// Trains honestly on labels y → C − 1 − y (a data-poisoning attack; the update itself is
    /// then sent as trained).
    LabelFlip,
    /// "A little is enough" (Baruch et al. 2019): μ − z_max·σ per coordinate, with z_max from
    /// n and f, all Byzantine participants sending the same vector.
    Alie,
    /// Inner-product manipulation (Xie et al. 2020): −ε · μ from every Byzantine participant.
    Ipm { epsilon: f32 },
}

impl Attack {
    pub fn name(&self) -> &'static str {
        match self {
            Attack::None => "none",
            Attack::SignFlip { .. } => "sign-flip",
            Attack::Scaling { .. } => "scaling",
            Attack::Noise { .. } => "noise",
            Attack::LabelFlip => "label-flip",
            Attack::Alie => "ALIE",
            Attack::Ipm { .. } => "IPM",
        }
    }

    /// A short statement of the parameters, for reports.
    pub fn describe(&self) -> String {
        match self {
            Attack::None => "honest".into(),
            Attack::SignFlip { magnitude } => format!("−{magnitude}·u"),
            Attack::Scaling { factor } => format!("{factor}·u"),
            Attack::Noise { sigma } => format!("u + N(0, {sigma}²)"),
            Attack::LabelFlip => "labels y → C−1−y".into(),
            Attack::Alie => "μ − z_max·σ".into(),
            Attack::Ipm { epsilon } => format!("−{epsilon}·μ"),
        }
    }
}

pub fn sign_flip(update: &[f32], magnitude: f32) -> Vec<f32> {
    update.iter().map(|x| -magnitude * x).collect()
}

pub fn scale(update: &[f32], factor: f32) -> Vec<f32> {
    update.iter().map(|x| factor * x).collect()
}

pub fn gaussian_noise(update: &[f32], sigma: f32, rng: &mut impl Rng) -> Vec<f32> {
    let normal = Normal::new(0.0f32, sigma).expect("sigma is finite and non-negative");
    update.iter().map(|x| x + normal.sample(rng)).collect()
}

/// y → C − 1 − y: every example lands in a wrong class (for C > 1, odd C keeps the middle
/// class, as in the usual definition).
pub fn flip_labels(labels: &[u32], classes: usize) -> Vec<u32> {
    labels.iter().map(|&y| classes as u32 - 1 - y).collect()
}

/// ALIE's z_max: with s = ⌊n/2 + 1⌋ − f honest participants the attackers need on their
/// side for a majority, z_max = Φ⁻¹((n − s)/n). `None` when f alone is a majority (s ≤ 0),
/// where no bound is needed.
pub fn alie_z_max(n: usize, f: usize) -> Option<f64> {
    let s = (n / 2 + 1) as i64 - f as i64;
    if s <= 0 || n == 0 {
        return None;
    }
    let normal = StdNormal::standard();
    Some(normal.inverse_cdf((n as f64 - s as f64) / n as f64))
}

/// Per-coordinate mean and (population) standard deviation of the honest updates.
pub fn mean_and_std(honest: &[&[f32]]) -> (Vec<f64>, Vec<f64>) {
    let dim = honest.first().map_or(0, |u| u.len());
    let n = honest.len().max(1) as f64;
    let mut mean = vec![0f64; dim];
    for u in honest {
        for (m, &x) in mean.iter_mut().zip(*u) {
            *m += x as f64 / n;
        }
    }
    let mut var = vec![0f64; dim];
    for u in honest {
        for ((v, &x), m) in var.iter_mut().zip(*u).zip(&mean) {
            *v += (x as f64 - m).powi(2) / n;
        }
    }
    (mean, var.into_iter().map(f64::sqrt).collect())
}

/// μ − z·σ per coordinate.
pub fn alie(honest: &[&[f32]], z: f64) -> Vec<f32> {
    let (mean, std) = mean_and_std(honest);
    mean.iter().zip(&std).map(|(m, s)| (m - z * s) as f32).collect()
}

/// −ε · μ.
pub fn ipm(honest: &[&[f32]], epsilon: f32) -> Vec<f32> {
    let (mean, _) = mean_and_std(honest);
    mean.iter().map(|m| (-(epsilon as f64) * m) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn simple_perturbations() {
        assert_eq!(sign_flip(&[1.0, -2.0], 4.0), vec![-4.0, 8.0]);
        assert_eq!(scale(&[1.0, -2.0], 10.0), vec![10.0, -20.0]);
        assert_eq!(flip_labels(&[0, 1, 9], 10), vec![9, 8, 0]);
        // Gaussian noise: seeded, and the sample variance of many draws is near σ².
        let zero = vec![0.0f32; 20_000];
        let noisy = gaussian_noise(&zero, 2.0, &mut StdRng::seed_from_u64(1));
        assert_eq!(noisy, gaussian_noise(&zero, 2.0, &mut StdRng::seed_from_u64(1)));
        let var = noisy.iter().map(|x| (*x as f64).powi(2)).sum::<f64>() / noisy.len() as f64;
        assert!((var - 4.0).abs() < 0.2, "{var}");
    }

    #[test]
    fn alie_z_max_hand_worked() {
        // n = 20, f = 6: s = ⌊20/2 + 1⌋ − 6 = 5, (20 − 5)/20 = 0.75, Φ⁻¹(0.75) = 0.67449.
        assert!((alie_z_max(20, 6).unwrap() - 0.67449).abs() < 1e-4);
        // n = 20, f = 2: s = 9, 11/20 = 0.55, Φ⁻¹(0.55) = 0.12566.
        assert!((alie_z_max(20, 2).unwrap() - 0.12566).abs() < 1e-4);
        // n = 50, f = 12: s = 14, 36/50 = 0.72, Φ⁻¹(0.72) = 0.58284.
        assert!((alie_z_max(50, 12).unwrap() - 0.58284).abs() < 1e-4);
        assert_eq!(alie_z_max(10, 6), None);
    }

    #[test]
    fn alie_and_ipm_hand_worked() {
        // Honest (1, 0), (3, 2): μ = (2, 1), population σ = (1, 1).
        let (a, b) = ([1.0f32, 0.0], [3.0f32, 2.0]);
        let honest: [&[f32]; 2] = [&a, &b];
        // z = 0.5: μ − 0.5σ = (1.5, 0.5).
        assert_eq!(alie(&honest, 0.5), vec![1.5, 0.5]);
        // ε = 0.1: −0.1μ = (−0.2, −0.1).
        let v = ipm(&honest, 0.1);
        assert!((v[0] + 0.2).abs() < 1e-7 && (v[1] + 0.1).abs() < 1e-7);
    }
}
