//! Whole federated rounds in one process: the same training, signing, validation and
//! aggregation code the agents and the operator use, with some participants Byzantine.
use std::collections::HashMap;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use x0tta6bl4_crypto::mldsa::SigningKey;

use crate::aggregate::{Contribution, Rule, aggregate};
use crate::byzantine::{self, Attack};
use crate::dataset::{Dataset, DatasetName, SplitError};
use crate::model::{ModelKind, ModelShape, digest};
use crate::training::{TrainConfig, TrainError, apply, delta, evaluate, train_local};
use crate::update::ModelUpdate;
use crate::validate::{RoundExpectations, UpdateValidator};

/// The participants' data: a non-IID split of a shipped dataset plus the held-out test set.
#[derive(Debug, Clone)]
pub struct Federation {
    pub shards: Vec<Dataset>,
    pub test: Dataset,
    pub classes: usize,
    pub input: usize,
}

impl Federation {
    /// Holds out `test_fraction` (stratified), then splits the rest across `participants`
    /// with Dirichlet(α); every participant gets at least 8 examples.
    pub fn new(
        name: DatasetName,
        participants: usize,
        alpha: f64,
        test_fraction: f64,
        seed: u64,
    ) -> Result<Self, SplitError> {
        let all = Dataset::load(name);
        let (train, test) = all.train_test_split(test_fraction, seed)?;
        let shards = train.dirichlet_split(participants, alpha, 8, seed.wrapping_add(1))?;
        Ok(Self {
            shards,
            classes: all.classes,
            input: all.dim,
            test,
        })
    }
}

/// One simulated training job.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    pub model: ModelKind,
    pub rounds: usize,
    pub local: TrainConfig,
    /// How many participants are Byzantine (chosen by the seed).
    pub byzantine: usize,
    pub attack: Attack,
    pub rule: Rule,
    /// Send every update through sign → encode → validate, as on a real mesh.
    pub signed: bool,
    pub seed: u64,
}

/// What one round produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RoundRecord {
    pub round: usize,
    pub accuracy: f32,
    pub loss: f32,
    pub rejected: usize,
    pub down_weighted: usize,
    /// Byzantine participants whose update was rejected or down-weighted.
    pub byzantine_flagged: usize,
    /// Honest participants whose update was rejected or down-weighted.
    pub honest_flagged: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub rounds: Vec<RoundRecord>,
    pub final_digest: [u8; 32],
    /// The round after which the global model held NaN or infinite values (or no update was
    /// left to aggregate); training stops there.
    pub diverged_at: Option<usize>,
}

impl RunResult {
    /// Test accuracy of the final global model; 0 for a diverged one, whose outputs mean
    /// nothing.
    pub fn final_accuracy(&self) -> f32 {
        if self.diverged_at.is_some() {
            return 0.0;
        }
        self.rounds.last().map_or(0.0, |r| r.accuracy)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Aggregation(#[from] crate::aggregate::AggregationError),
    #[error("{0}")]
    Setup(String),
}

/// Runs `config.rounds` rounds and evaluates the global model on the test set after each.
pub fn run(federation: &Federation, config: &RunConfig) -> Result<RunResult, SimError> {
    let n = federation.shards.len();
    if config.byzantine > n {
        return Err(SimError::Setup(format!(
            "{} Byzantine of {n} participants",
            config.byzantine
        )));
    }
    let shape = ModelShape::new(config.model, federation.input, federation.classes);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    let mut is_byzantine = vec![false; n];
    for &i in &order[..config.byzantine] {
        is_byzantine[i] = config.attack != Attack::None;
    }
    // Label-flipping participants train on flipped copies of their own shard.
    let shards: Vec<Dataset> = federation
        .shards
        .iter()
        .zip(&is_byzantine)
        .map(|(shard, &byz)| {
            let mut shard = shard.clone();
            if byz && config.attack == Attack::LabelFlip {
                shard.labels = byzantine::flip_labels(&shard.labels, shard.classes);
            }
            shard
        })
        .collect();
    let names: Vec<String> = (0..n).map(|i| format!("node-{i:02}")).collect();
    let keys: Vec<SigningKey> = if config.signed {
        (0..n)
            .map(|_| SigningKey::generate())
            .collect::<Result<_, _>>()
            .map_err(|e| SimError::Setup(e.to_string()))?
    } else {
        Vec::new()
    };
    let round_uid = format!("sim-{:016x}", config.seed);

    let mut global = shape.initial_parameters(config.seed);
    let mut previous = vec![0f32; global.len()];
    let mut records = Vec::with_capacity(config.rounds);
    let mut diverged_at = None;
    for round in 0..config.rounds {
        let base = digest(&global);
        let mut honest = Vec::with_capacity(n);
        for (i, shard) in shards.iter().enumerate() {
            let local = TrainConfig {
                seed: config
                    .local
                    .seed
                    .wrapping_add((round as u64) << 32)
                    .wrapping_add(i as u64),
                ..config.local
            };
            honest.push(delta(&train_local(&shape, &global, shard, &local)?, &global));
        }
        let sent = byzantine_updates(&honest, &is_byzantine, config, &mut rng);

        // Everything below sees only what was sent, as the operator would.
        let updates: Vec<ModelUpdate> = sent
            .into_iter()
            .enumerate()
            .map(|(i, values)| ModelUpdate {
                round_uid: round_uid.clone(),
                round: round as u32,
                participant: names[i].clone(),
                base_digest: base,
                examples: shards[i].len() as u64,
                values,
            })
            .collect();
        // What the validator refuses (a diverged model's NaN, say) never reaches the rule.
        let admitted: Vec<Option<ModelUpdate>> = if config.signed {
            verify_all(updates, &keys, &names, &round_uid, round, base)?
        } else {
            updates
                .into_iter()
                .map(|u| u.values.iter().all(|v| v.is_finite()).then_some(u))
                .collect()
        };
        let members: Vec<usize> = (0..n).filter(|&i| admitted[i].is_some()).collect();
        let contributions: Vec<Contribution> = members
            .iter()
            .filter_map(|&i| admitted[i].as_ref())
            .map(ModelUpdate::contribution)
            .collect();
        let mut record = RoundRecord {
            round,
            accuracy: 0.0,
            loss: f32::NAN,
            rejected: n - members.len(),
            down_weighted: 0,
            byzantine_flagged: (0..n)
                .filter(|&i| admitted[i].is_none() && is_byzantine[i])
                .count(),
            honest_flagged: (0..n)
                .filter(|&i| admitted[i].is_none() && !is_byzantine[i])
                .count(),
        };
        if contributions.is_empty() {
            diverged_at = Some(round);
            records.push(record);
            break;
        }
        let result = aggregate(&config.rule, &contributions, Some(&previous))?;
        apply(&mut global, &result.values);
        previous = result.values;

        for (&i, o) in members.iter().zip(&result.outcomes) {
            let flagged = !o.verdict.is_accepted();
            record.rejected += o.verdict.is_rejected() as usize;
            record.down_weighted += (flagged && !o.verdict.is_rejected()) as usize;
            if flagged && is_byzantine[i] {
                record.byzantine_flagged += 1;
            } else if flagged {
                record.honest_flagged += 1;
            }
        }
        if global.iter().any(|v| !v.is_finite()) {
            diverged_at = Some(round);
            records.push(record);
            break;
        }
        let eval = evaluate(&shape, &global, &federation.test)?;
        record.accuracy = eval.accuracy;
        record.loss = eval.loss;
        records.push(record);
    }
    Ok(RunResult {
        rounds: records,
        final_digest: digest(&global),
        diverged_at,
    })
}

/// Replaces the Byzantine participants' honest updates with the attack's.
fn byzantine_updates(
    honest: &[Vec<f32>],
    is_byzantine: &[bool],
    config: &RunConfig,
    rng: &mut StdRng,
) -> Vec<Vec<f32>> {
    // ALIE and IPM are omniscient here: the attackers know every honest participant's update
    // this round (the strongest form, used in both papers' evaluations).
    let honest_population: Vec<&[f32]> = honest
        .iter()
        .zip(is_byzantine)
        .filter(|(_, b)| !**b)
        .map(|(u, _)| u.as_slice())
        .collect();
    let f = is_byzantine.iter().filter(|b| **b).count();
    let crafted = match config.attack {
        Attack::Alie => {
            let z = byzantine::alie_z_max(honest.len(), f).unwrap_or(1.0);
            Some(byzantine::alie(&honest_population, z))
        }
        Attack::Ipm { epsilon } => Some(byzantine::ipm(&honest_population, epsilon)),
        _ => None,
    };
    honest
        .iter()
        .zip(is_byzantine)
        .map(|(u, &byz)| {
            if !byz {
                return u.clone();
            }
            match config.attack {
                Attack::None | Attack::LabelFlip => u.clone(),
                Attack::SignFlip { magnitude } => byzantine::sign_flip(u, magnitude),
                Attack::Scaling { factor } => byzantine::scale(u, factor),
                Attack::Noise { sigma } => byzantine::gaussian_noise(u, sigma, rng),
                Attack::Alie | Attack::Ipm { .. } => crafted.clone().expect("crafted above"),
            }
        })
        .collect()
}

/// Signs each update with its participant's key, encodes it, and passes it through the
/// validator: `None` where the validator refused it.
fn verify_all(
    updates: Vec<ModelUpdate>,
    keys: &[SigningKey],
    names: &[String],
    round_uid: &str,
    round: usize,
    base: [u8; 32],
) -> Result<Vec<Option<ModelUpdate>>, SimError> {
    let dim = updates.first().map_or(0, |u| u.values.len());
    let registry: HashMap<String, _> = names
        .iter()
        .cloned()
        .zip(keys.iter().map(|k| k.verifying_key().clone()))
        .collect();
    let mut validator = UpdateValidator::new(
        RoundExpectations::new(round_uid, round as u32, base, dim),
        registry,
    );
    updates
        .into_iter()
        .zip(keys)
        .map(|(u, key)| {
            let bytes = u
                .sign(key)
                .and_then(|s| s.encode())
                .map_err(|e| SimError::Setup(e.to_string()))?;
            Ok(validator.admit(&bytes).ok())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(rule: Rule, attack: Attack, byzantine: usize, signed: bool) -> RunConfig {
        RunConfig {
            model: ModelKind::LogisticRegression,
            rounds: 8,
            local: TrainConfig {
                epochs: 1,
                batch_size: 16,
                learning_rate: 0.5,
                seed: 11,
            },
            byzantine,
            attack,
            rule,
            signed,
            seed: 5,
        }
    }

    #[test]
    fn signed_rounds_learn_and_are_reproducible() {
        let fed = Federation::new(DatasetName::Digits, 10, 0.5, 0.2, 1).unwrap();
        let a = run(&fed, &config(Rule::FedAvg, Attack::None, 0, true)).unwrap();
        assert!(a.final_accuracy() > 0.8, "{:?}", a.rounds);
        // Signing does not change the numbers, and a rerun gives the same model.
        let b = run(&fed, &config(Rule::FedAvg, Attack::None, 0, false)).unwrap();
        assert_eq!(a.final_digest, b.final_digest);
    }

    #[test]
    fn a_robust_rule_survives_scaled_sign_flips_that_break_fedavg() {
        let fed = Federation::new(DatasetName::Digits, 10, 1.0, 0.2, 1).unwrap();
        let attack = Attack::SignFlip { magnitude: 4.0 };
        let long = |rule| RunConfig {
            rounds: 20,
            ..config(rule, attack, 3, false)
        };
        let fedavg = run(&fed, &long(Rule::FedAvg)).unwrap();
        let trimmed = run(&fed, &long(Rule::TrimmedMean { f: 3 })).unwrap();
        let multi_krum = run(&fed, &long(Rule::MultiKrum { f: 3, m: None })).unwrap();
        assert!(fedavg.final_accuracy() < 0.5, "{:?}", fedavg.rounds);
        assert!(trimmed.final_accuracy() > 0.8, "{:?}", trimmed.rounds);
        assert!(multi_krum.final_accuracy() > 0.85, "{:?}", multi_krum.rounds);
        // Multi-Krum rejects the three attackers every round, and only them.
        assert!(
            multi_krum
                .rounds
                .iter()
                .all(|r| r.byzantine_flagged == 3 && r.honest_flagged == 0),
            "{:?}",
            multi_krum.rounds
        );
    }
}
