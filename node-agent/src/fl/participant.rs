//! A participant's round: its shard of the job's dataset, local training from the global
//! model, and the update it sends (honest, or attacked when the agent is set Byzantine for a
//! test). Pure functions of an already authenticated request.
use rand::SeedableRng;
use rand::rngs::StdRng;
use x0tta6bl4_fl::byzantine::{self, Attack};
use x0tta6bl4_fl::dataset::{Dataset, DatasetName};
use x0tta6bl4_fl::model::digest;
use x0tta6bl4_fl::training::{TrainConfig, delta, train_local};
use x0tta6bl4_fl::update::ModelUpdate;

use super::job::{DIRICHLET_ALPHA, MIN_SHARD, TEST_FRACTION};
use super::messages::TrainRequest;

/// The Byzantine behaviours an agent can be set to (`--fl-byzantine`), with the attack
/// matrix's parameters.
pub fn parse_attack(name: &str) -> Result<Attack, String> {
    Ok(match name {
        "sign-flip" => Attack::SignFlip { magnitude: 4.0 },
        "scale" => Attack::Scaling { factor: 10.0 },
        "noise" => Attack::Noise { sigma: 1.0 },
        "label-flip" => Attack::LabelFlip,
        "alie" => Attack::Alie,
        "ipm" => Attack::Ipm { epsilon: 0.1 },
        other => {
            return Err(format!(
                "unknown attack {other:?} (sign-flip, scale, noise, label-flip, alie, ipm)"
            ));
        }
    })
}

/// The held-out test set and the participants' shards of a job's dataset: the same on every
/// agent, since it is a function of the dataset, the participant count and the job's seed.
pub fn split(name: DatasetName, participants: usize, seed: u64) -> Result<(Vec<Dataset>, Dataset), String> {
    let all = Dataset::load(name);
    let (train, test) = all
        .train_test_split(TEST_FRACTION, seed)
        .map_err(|e| e.to_string())?;
    let shards = train
        .dirichlet_split(participants, DIRICHLET_ALPHA, MIN_SHARD, seed.wrapping_add(1))
        .map_err(|e| e.to_string())?;
    Ok((shards, test))
}

/// Checks a request's numbers before training on them (it is signed, but by a peer).
fn check(request: &TrainRequest) -> Result<(), String> {
    if request.shape.parameter_count() != request.values.len() {
        return Err(format!(
            "the model has {} parameters, the request carries {}",
            request.shape.parameter_count(),
            request.values.len()
        ));
    }
    if digest(&request.values) != request.base_digest {
        return Err("the model does not match its digest".into());
    }
    if !(1..=100).contains(&request.local_epochs) || !(1..=4096).contains(&request.batch_size) {
        return Err("local epochs or batch size out of range".into());
    }
    if !(request.learning_rate.is_finite() && request.learning_rate > 0.0 && request.learning_rate <= 10.0) {
        return Err("learning rate out of range".into());
    }
    Ok(())
}

/// Trains this participant's round and returns the update to sign (`attack`: what a Byzantine
/// test agent sends instead).
pub fn local_update(request: &TrainRequest, me: &str, attack: Option<Attack>) -> Result<ModelUpdate, String> {
    check(request)?;
    let index = request
        .participants
        .iter()
        .position(|p| p == me)
        .ok_or("this agent is not a participant of the round")?;
    let (mut shards, _) = split(request.dataset, request.participants.len(), request.seed)?;
    let mut shard = shards.swap_remove(index);
    if attack == Some(Attack::LabelFlip) {
        shard.labels = byzantine::flip_labels(&shard.labels, shard.classes);
    }
    let config = TrainConfig {
        epochs: request.local_epochs as usize,
        batch_size: request.batch_size as usize,
        learning_rate: request.learning_rate,
        // Batches differ between rounds and participants, reproducibly.
        seed: request
            .seed
            .wrapping_add(u64::from(request.round) << 32)
            .wrapping_add(index as u64),
    };
    let local = train_local(&request.shape, &request.values, &shard, &config).map_err(|e| e.to_string())?;
    let honest = delta(&local, &request.values);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let values = match attack {
        None | Some(Attack::None) | Some(Attack::LabelFlip) => honest,
        Some(Attack::SignFlip { magnitude }) => byzantine::sign_flip(&honest, magnitude),
        Some(Attack::Scaling { factor }) => byzantine::scale(&honest, factor),
        Some(Attack::Noise { sigma }) => byzantine::gaussian_noise(&honest, sigma, &mut rng),
        // An agent sees only its own update, not the honest population the omniscient forms
        // of ALIE and IPM use: its own update stands in for the mean and its magnitude for
        // the per-coordinate deviation.
        Some(Attack::Alie) => honest.iter().map(|u| u - u.abs()).collect(),
        Some(Attack::Ipm { epsilon }) => byzantine::ipm(&[honest.as_slice()], epsilon),
    };
    Ok(ModelUpdate {
        round_uid: request.job_uid.clone(),
        round: request.round,
        participant: me.to_owned(),
        base_digest: request.base_digest,
        examples: shard.len() as u64,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_fl::model::{ModelKind, ModelShape};

    fn request() -> TrainRequest {
        let shape = ModelShape::new(ModelKind::LogisticRegression, 4, 3);
        let values = shape.initial_parameters(7);
        TrainRequest {
            job_uid: "uid".into(),
            round: 1,
            aggregator: "a".into(),
            key_epoch: 1,
            base_digest: digest(&values),
            shape,
            dataset: DatasetName::Iris,
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.5,
            seed: 9,
            participants: vec!["a".into(), "b".into(), "c".into()],
            values,
        }
    }

    #[test]
    fn participants_train_their_own_shards_reproducibly() {
        let req = request();
        let a = local_update(&req, "a", None).unwrap();
        let b = local_update(&req, "b", None).unwrap();
        assert_eq!(a, local_update(&req, "a", None).unwrap());
        assert_ne!(a.values, b.values);
        assert_eq!(a.values.len(), 15);
        let flipped = local_update(&req, "a", parse_attack("sign-flip").ok()).unwrap();
        assert_eq!(flipped.values[0], -4.0 * a.values[0]);
        assert!(local_update(&req, "z", None).is_err(), "not a participant");
    }

    #[test]
    fn an_inconsistent_request_is_refused() {
        let mut req = request();
        req.values[0] += 1.0;
        assert!(local_update(&req, "a", None).unwrap_err().contains("digest"));
        assert!(parse_attack("nope").is_err());
    }
}
