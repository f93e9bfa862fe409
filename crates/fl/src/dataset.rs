//! Real datasets shipped inside a crate, a held-out test split and a seeded Dirichlet(α)
//! non-IID split across participants.
//!
//! Both sets come from `smartcore`'s `datasets` feature (Apache-2.0), which embeds the UCI
//! files in the crate itself, so nothing is fetched at run time:
//! - optical digits (UCI, CC BY 4.0): 1797 examples, 64 features (8×8 pixel counts 0..16),
//!   10 classes. Big enough that 20 participants each get a few dozen examples and that a
//!   Dirichlet split over 10 labels is meaningfully non-IID.
//! - iris (UCI, CC BY 4.0): 150 examples, 4 features, 3 classes; the CRD's default, kept for
//!   small demos.
//!
//! Data made elsewhere (an agent's own recordings) becomes a [`Dataset`] through
//! [`Dataset::from_rows`], which checks its shape.
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, Gamma};

/// The share of a dataset every federated job holds out to test on.
pub const TEST_FRACTION: f64 = 0.2;

/// A labelled dataset held row-major: example `i` is `features[i*dim..(i+1)*dim]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    pub features: Vec<f32>,
    pub labels: Vec<u32>,
    pub dim: usize,
    pub classes: usize,
}

/// The datasets this crate ships.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetName {
    Digits,
    Iris,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SplitError {
    #[error("cannot split {examples} examples across {participants} participants")]
    TooFewExamples { examples: usize, participants: usize },
    #[error("alpha must be a positive finite number, got {0}")]
    BadAlpha(f64),
    #[error("test fraction must be in (0, 1), got {0}")]
    BadTestFraction(f64),
    #[error(
        "no Dirichlet({alpha}) draw gave every participant at least {minimum} examples in {attempts} attempts"
    )]
    NoBalancedDraw {
        alpha: f64,
        minimum: usize,
        attempts: usize,
    },
}

/// Why rows do not make a dataset.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidDataset {
    #[error("a dataset needs at least one feature and one class")]
    EmptyShape,
    #[error("{features} feature values are not {examples} examples of {dim}")]
    Ragged {
        features: usize,
        examples: usize,
        dim: usize,
    },
    #[error("label {label} is not one of {classes} classes")]
    LabelOutOfRange { label: u32, classes: usize },
    #[error("feature values must be finite")]
    NotFinite,
}

impl Dataset {
    /// A dataset from row-major features (`labels.len()` rows of `dim`) and labels below
    /// `classes`; refused unless every row is complete, every value finite and every label a
    /// class.
    pub fn from_rows(
        features: Vec<f32>,
        labels: Vec<u32>,
        dim: usize,
        classes: usize,
    ) -> Result<Self, InvalidDataset> {
        if dim == 0 || classes == 0 {
            return Err(InvalidDataset::EmptyShape);
        }
        if labels.len().checked_mul(dim) != Some(features.len()) {
            return Err(InvalidDataset::Ragged {
                features: features.len(),
                examples: labels.len(),
                dim,
            });
        }
        if let Some(&label) = labels.iter().find(|&&l| l as usize >= classes) {
            return Err(InvalidDataset::LabelOutOfRange { label, classes });
        }
        if features.iter().any(|x| !x.is_finite()) {
            return Err(InvalidDataset::NotFinite);
        }
        Ok(Dataset {
            features,
            labels,
            dim,
            classes,
        })
    }

    /// Loads a shipped dataset, with every feature scaled into [0, 1] by its maximum over the
    /// whole set (digits: /16). Scaling by a fixed, public constant per feature keeps
    /// participants' inputs comparable without any of them sharing statistics of its data.
    pub fn load(name: DatasetName) -> Self {
        let (features, labels, dim) = match name {
            DatasetName::Digits => {
                let d = smartcore::dataset::digits::load_dataset();
                (d.data, to_labels(&d.target), d.num_features)
            }
            DatasetName::Iris => {
                let d = smartcore::dataset::iris::load_dataset();
                (d.data, d.target, d.num_features)
            }
        };
        let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
        let mut set = Dataset {
            features,
            labels,
            dim,
            classes,
        };
        set.scale_to_unit();
        set
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn example(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// The examples at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut features = Vec::with_capacity(indices.len() * self.dim);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            features.extend_from_slice(self.example(i));
            labels.push(self.labels[i]);
        }
        Dataset {
            features,
            labels,
            dim: self.dim,
            classes: self.classes,
        }
    }

    /// How many examples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }

    /// A seeded, stratified split into (train, test): each class contributes the same share to
    /// the test set, so a skewed draw cannot leave a class untested.
    pub fn train_test_split(&self, test_fraction: f64, seed: u64) -> Result<(Dataset, Dataset), SplitError> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(SplitError::BadTestFraction(test_fraction));
        }
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut train, mut test) = (Vec::new(), Vec::new());
        for mut members in self.indices_by_class() {
            members.shuffle(&mut rng);
            let cut = (members.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&members[..cut]);
            train.extend_from_slice(&members[cut..]);
        }
        train.shuffle(&mut rng);
        test.shuffle(&mut rng);
        Ok((self.subset(&train), self.subset(&test)))
    }

    /// Non-IID split across `participants` after Hsu et al. 2019: for each class, draw the
    /// participants' shares p ~ Dirichlet(α·1) and deal that class's examples out in those
    /// proportions. Small α gives each participant few classes; large α tends to IID. Draws
    /// where some participant gets fewer than `minimum` examples are redrawn (seeded, so the
    /// result is still a function of the seed), since a participant with no data sends nothing.
    pub fn dirichlet_split(
        &self,
        participants: usize,
        alpha: f64,
        minimum: usize,
        seed: u64,
    ) -> Result<Vec<Dataset>, SplitError> {
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(SplitError::BadAlpha(alpha));
        }
        if participants == 0 || self.len() < participants * minimum.max(1) {
            return Err(SplitError::TooFewExamples {
                examples: self.len(),
                participants,
            });
        }
        let gamma = Gamma::new(alpha, 1.0).map_err(|_| SplitError::BadAlpha(alpha))?;
        let mut rng = StdRng::seed_from_u64(seed);
        const ATTEMPTS: usize = 1000;
        for _ in 0..ATTEMPTS {
            let mut shards: Vec<Vec<usize>> = vec![Vec::new(); participants];
            for mut members in self.indices_by_class() {
                members.shuffle(&mut rng);
                let shares = dirichlet_draw(&gamma, participants, &mut rng);
                // Cumulative cut points; the last participant takes the rounding remainder.
                let mut start = 0;
                let mut cumulative = 0.0;
                for (p, share) in shares.iter().enumerate() {
                    cumulative += share;
                    let end = if p + 1 == participants {
                        members.len()
                    } else {
                        ((cumulative * members.len() as f64).round() as usize).clamp(start, members.len())
                    };
                    shards[p].extend_from_slice(&members[start..end]);
                    start = end;
                }
            }
            if shards.iter().all(|s| s.len() >= minimum) {
                return Ok(shards
                    .iter_mut()
                    .map(|s| {
                        s.shuffle(&mut rng);
                        self.subset(s)
                    })
                    .collect());
            }
        }
        Err(SplitError::NoBalancedDraw {
            alpha,
            minimum,
            attempts: ATTEMPTS,
        })
    }

    fn indices_by_class(&self) -> Vec<Vec<usize>> {
        let mut by_class = vec![Vec::new(); self.classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[l as usize].push(i);
        }
        by_class
    }

    fn scale_to_unit(&mut self) {
        let mut max = vec![0f32; self.dim];
        for row in self.features.chunks_exact(self.dim) {
            for (m, &x) in max.iter_mut().zip(row) {
                *m = m.max(x.abs());
            }
        }
        for row in self.features.chunks_exact_mut(self.dim) {
            for (x, &m) in row.iter_mut().zip(&max) {
                if m > 0.0 {
                    *x /= m;
                }
            }
        }
    }
}

/// Dirichlet(α·1) as normalised independent Gamma(α, 1) draws (its definition). If every draw
/// underflows to zero (tiny α), all the mass goes to one participant chosen by the same RNG,
/// which is the limit of the distribution as α → 0.
fn dirichlet_draw(gamma: &Gamma<f64>, n: usize, rng: &mut StdRng) -> Vec<f64> {
    let mut draws: Vec<f64> = (0..n).map(|_| gamma.sample(rng)).collect();
    let total: f64 = draws.iter().sum();
    if total > 0.0 {
        draws.iter_mut().for_each(|d| *d /= total);
    } else {
        let winner = rand::Rng::random_range(rng, 0..n);
        draws.iter_mut().enumerate().for_each(|(i, d)| {
            *d = if i == winner { 1.0 } else { 0.0 };
        });
    }
    draws
}

fn to_labels(target: &[f32]) -> Vec<u32> {
    target.iter().map(|&t| t.round() as u32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_ship_with_the_crate_scaled_to_unit() {
        let d = Dataset::load(DatasetName::Digits);
        assert_eq!((d.len(), d.dim, d.classes), (1797, 64, 10));
        assert!(d.features.iter().all(|&x| (0.0..=1.0).contains(&x)));
        // UCI digits has 174..=183 examples per class.
        assert!(d.class_counts().iter().all(|&c| (174..=183).contains(&c)));
        let iris = Dataset::load(DatasetName::Iris);
        assert_eq!((iris.len(), iris.dim, iris.classes), (150, 4, 3));
        assert_eq!(iris.class_counts(), vec![50, 50, 50]);
    }

    #[test]
    fn the_test_split_is_stratified_disjoint_and_seeded() {
        let d = Dataset::load(DatasetName::Digits);
        let (train, test) = d.train_test_split(0.2, 7).unwrap();
        assert_eq!(train.len() + test.len(), d.len());
        for (t, all) in test.class_counts().iter().zip(d.class_counts()) {
            assert_eq!(*t, (all as f64 * 0.2).round() as usize);
        }
        let (train2, _) = d.train_test_split(0.2, 7).unwrap();
        assert_eq!(train, train2);
        let (train3, _) = d.train_test_split(0.2, 8).unwrap();
        assert_ne!(train, train3);
    }

    #[test]
    fn a_dirichlet_split_partitions_the_data_and_is_skewed_for_small_alpha() {
        let d = Dataset::load(DatasetName::Digits);
        let shards = d.dirichlet_split(20, 0.5, 10, 3).unwrap();
        assert_eq!(shards.len(), 20);
        assert_eq!(shards.iter().map(Dataset::len).sum::<usize>(), d.len());
        assert!(shards.iter().all(|s| s.len() >= 10));
        let mut total = vec![0; 10];
        for s in &shards {
            for (t, c) in total.iter_mut().zip(s.class_counts()) {
                *t += c;
            }
        }
        assert_eq!(total, d.class_counts());
        // Non-IID: with α = 0.5 the typical participant's largest class is far above the 10%
        // an IID shard would have.
        let mut top_shares: Vec<f64> = shards
            .iter()
            .map(|s| *s.class_counts().iter().max().unwrap() as f64 / s.len() as f64)
            .collect();
        top_shares.sort_by(f64::total_cmp);
        assert!(top_shares[10] > 0.25, "median top-class share {top_shares:?}");
        // Large α is close to IID.
        let iid = d.dirichlet_split(20, 1000.0, 10, 3).unwrap();
        for s in &iid {
            let top = *s.class_counts().iter().max().unwrap() as f64 / s.len() as f64;
            assert!(top < 0.25, "top share {top}");
        }
        assert_eq!(shards, d.dirichlet_split(20, 0.5, 10, 3).unwrap());
    }

    #[test]
    fn rows_make_a_dataset_only_when_their_shape_holds() {
        let d = Dataset::from_rows(vec![0.0, 1.0, 0.5, 0.25], vec![1, 0], 2, 2).unwrap();
        assert_eq!((d.len(), d.dim, d.classes), (2, 2, 2));
        assert_eq!(d.example(1), &[0.5, 0.25]);
        assert_eq!(d.class_counts(), vec![1, 1]);
        assert_eq!(
            Dataset::from_rows(vec![0.0; 3], vec![0, 1], 2, 2),
            Err(InvalidDataset::Ragged {
                features: 3,
                examples: 2,
                dim: 2
            })
        );
        assert_eq!(
            Dataset::from_rows(vec![0.0; 4], vec![0, 2], 2, 2),
            Err(InvalidDataset::LabelOutOfRange { label: 2, classes: 2 })
        );
        assert_eq!(
            Dataset::from_rows(vec![0.0, f32::NAN], vec![0], 2, 2),
            Err(InvalidDataset::NotFinite)
        );
        assert_eq!(
            Dataset::from_rows(Vec::new(), Vec::new(), 0, 2),
            Err(InvalidDataset::EmptyShape)
        );
        // No rows is a valid, empty dataset: whether it is enough is the caller's call.
        assert!(
            Dataset::from_rows(Vec::new(), Vec::new(), 3, 2)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn impossible_splits_are_refused() {
        let d = Dataset::load(DatasetName::Iris);
        assert_eq!(
            d.dirichlet_split(200, 0.5, 1, 0),
            Err(SplitError::TooFewExamples {
                examples: 150,
                participants: 200
            })
        );
        assert_eq!(d.dirichlet_split(3, -1.0, 1, 0), Err(SplitError::BadAlpha(-1.0)));
        assert_eq!(d.train_test_split(1.0, 0), Err(SplitError::BadTestFraction(1.0)));
    }
}
