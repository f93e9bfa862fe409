//! Model architectures, their parameters as one flat `Vec<f32>` (the vector participants
//! update and sign), seeded initialisation, and the digest that names a model version.
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Uniform};

/// Model architectures (the CRD's `ModelKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// Softmax (multinomial logistic) regression: one linear layer.
    LogisticRegression,
    /// One hidden ReLU layer of `hidden` units, then a linear layer.
    Mlp { hidden: usize },
}

/// A model's architecture and sizes: enough to interpret a flat parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelShape {
    pub kind: ModelKind,
    pub input: usize,
    pub classes: usize,
}

/// One dense layer's place in the flat vector: weight `[outputs, inputs]` row-major (candle's
/// `Linear` layout), then bias `[outputs]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerLayout {
    pub inputs: usize,
    pub outputs: usize,
    pub offset: usize,
}

impl LayerLayout {
    pub fn weight_range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.inputs * self.outputs
    }
    pub fn bias_range(&self) -> std::ops::Range<usize> {
        let start = self.offset + self.inputs * self.outputs;
        start..start + self.outputs
    }
}

impl ModelShape {
    pub fn new(kind: ModelKind, input: usize, classes: usize) -> Self {
        Self { kind, input, classes }
    }

    /// The dense layers in forward order, with their offsets in the flat vector.
    pub fn layers(&self) -> Vec<LayerLayout> {
        let dims: Vec<(usize, usize)> = match self.kind {
            ModelKind::LogisticRegression => vec![(self.input, self.classes)],
            ModelKind::Mlp { hidden } => vec![(self.input, hidden), (hidden, self.classes)],
        };
        let mut offset = 0;
        dims.into_iter()
            .map(|(inputs, outputs)| {
                let layer = LayerLayout {
                    inputs,
                    outputs,
                    offset,
                };
                offset += inputs * outputs + outputs;
                layer
            })
            .collect()
    }

    /// Length of the flat parameter vector.
    pub fn parameter_count(&self) -> usize {
        self.layers()
            .iter()
            .map(|l| l.inputs * l.outputs + l.outputs)
            .sum()
    }

    /// Seeded initial parameters. Weights are uniform in ±√(6/(fan_in+fan_out)) (Glorot) so
    /// the hidden layer's ReLUs start neither dead nor saturated; biases start at zero.
    /// Every participant and the operator derive the same vector from the same seed.
    pub fn initial_parameters(&self, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut params = vec![0f32; self.parameter_count()];
        for layer in self.layers() {
            let bound = (6.0 / (layer.inputs + layer.outputs) as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound).expect("a finite, ordered range");
            for w in &mut params[layer.weight_range()] {
                *w = dist.sample(&mut rng);
            }
        }
        params
    }
}

/// SHA-256 over the parameters' little-endian bytes: the name of a model version. Updates
/// carry the digest of the model they were trained from, and the round record carries the
/// digest of the model a round produced.
pub fn digest(params: &[f32]) -> [u8; 32] {
    x0tta6bl4_crypto::model_digest::model_digest(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_layout_counts_weights_and_biases() {
        let lr = ModelShape::new(ModelKind::LogisticRegression, 64, 10);
        assert_eq!(lr.parameter_count(), 64 * 10 + 10);
        let mlp = ModelShape::new(ModelKind::Mlp { hidden: 32 }, 64, 10);
        assert_eq!(mlp.parameter_count(), 64 * 32 + 32 + 32 * 10 + 10);
        let layers = mlp.layers();
        assert_eq!(layers[1].offset, 64 * 32 + 32);
        assert_eq!(layers[1].bias_range().end, mlp.parameter_count());
    }

    #[test]
    fn initialisation_is_seeded_and_bounded() {
        let mlp = ModelShape::new(ModelKind::Mlp { hidden: 8 }, 4, 3);
        let a = mlp.initial_parameters(1);
        assert_eq!(a, mlp.initial_parameters(1));
        assert_ne!(a, mlp.initial_parameters(2));
        let first = mlp.layers()[0];
        let bound = (6.0f32 / 12.0).sqrt();
        assert!(a[first.weight_range()].iter().all(|w| w.abs() <= bound));
        assert!(a[first.bias_range()].iter().all(|&b| b == 0.0));
    }

    #[test]
    fn the_digest_changes_with_any_parameter() {
        let p = vec![0.5f32; 10];
        let mut q = p.clone();
        q[9] = 0.5000001;
        assert_ne!(digest(&p), digest(&q));
        assert_eq!(digest(&p), digest(&p.clone()));
    }
}
