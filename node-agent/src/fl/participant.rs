//! A participant's round: its data (a shard of a shipped dataset, or its own recorded link
//! telemetry), local training from the global model, and the update it sends (honest, or
//! attacked when the agent is set Byzantine for a test). Pure functions of an already
//! authenticated request (and, for link telemetry, of a snapshot of the agent's windows).
use rand::SeedableRng;
use rand::rngs::StdRng;
use x0tta6bl4_api::chaos::{ByzantineAttack, ByzantineSpec};
use x0tta6bl4_fl::byzantine::{self, Attack};
use x0tta6bl4_fl::codec::train_request::TrainRequest;
use x0tta6bl4_fl::dataset::{Dataset, DatasetName};
use x0tta6bl4_fl::model::digest;
use x0tta6bl4_fl::training::{TrainConfig, delta, train_local};
use x0tta6bl4_fl::update::ModelUpdate;

use super::job::{DIRICHLET_ALPHA, JobDataset, MIN_SHARD, TEST_FRACTION};
use crate::links::{self as telemetry, SharedRecorder};

/// The poisoning a `byzantineUpdate` fault asks for, with the attack matrix's parameters:
/// sign flip ×4, IPM ε 0.1; scaling by strength/100 and noise of σ strength/1000 (the API's
/// default strength, 1000%, gives the matrix's ×10 and σ 1).
pub fn attack_of(spec: &ByzantineSpec) -> Attack {
    let strength = spec.strength_percent.max(1) as f32;
    match spec.attack {
        ByzantineAttack::SignFlip => Attack::SignFlip { magnitude: 4.0 },
        ByzantineAttack::Scaling => Attack::Scaling {
            factor: strength / 100.0,
        },
        ByzantineAttack::Noise => Attack::Noise {
            sigma: strength / 1000.0,
        },
        ByzantineAttack::LabelFlip => Attack::LabelFlip,
        ByzantineAttack::Alie => Attack::Alie,
        ByzantineAttack::Ipm => Attack::Ipm { epsilon: 0.1 },
    }
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

/// The held-out set the aggregator evaluates on: the shipped dataset's test split, or the
/// held-out part of the aggregator's own recorded windows.
pub fn test_set(
    dataset: JobDataset,
    participants: usize,
    seed: u64,
    recorder: &SharedRecorder,
) -> Result<Dataset, String> {
    match dataset {
        JobDataset::Shipped(name) => Ok(split(name, participants, seed)?.1),
        JobDataset::LinkTelemetry => recorder.lock().test_set(seed),
    }
}

/// The examples participant `index` trains on: its shard of a shipped dataset, or its own
/// recorded training windows (`recorded`, a snapshot the caller took of its recorder).
fn local_data(request: &TrainRequest, index: usize, recorded: Option<Dataset>) -> Result<Dataset, String> {
    match request.dataset {
        JobDataset::Shipped(name) => {
            let (mut shards, _) = split(name, request.participants.len(), request.seed)?;
            Ok(shards.swap_remove(index))
        }
        JobDataset::LinkTelemetry => {
            // The aggregator's agent checked the spec, but the request is a peer's word.
            if (request.shape.input, request.shape.classes) != (telemetry::FEATURES, telemetry::CLASSES) {
                return Err(format!(
                    "the model takes {} inputs and {} classes; linkTelemetry windows have {} and {} \
                     (spec.model.inputDim, spec.model.classes)",
                    request.shape.input,
                    request.shape.classes,
                    telemetry::FEATURES,
                    telemetry::CLASSES
                ));
            }
            recorded.ok_or_else(|| "a linkTelemetry round needs this agent's recorded windows".to_owned())
        }
    }
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

/// Trains this participant's round on a shipped dataset and returns the update to sign
/// (`attack`: what a Byzantine test agent sends instead).
pub fn local_update(request: &TrainRequest, me: &str, attack: Option<Attack>) -> Result<ModelUpdate, String> {
    local_update_on(request, me, attack, None)
}

/// [`local_update`] for any dataset: `recorded` holds this agent's training windows
/// ([`telemetry::LinkRecorder::training_set`]) for a linkTelemetry round.
pub fn local_update_on(
    request: &TrainRequest,
    me: &str,
    attack: Option<Attack>,
    recorded: Option<Dataset>,
) -> Result<ModelUpdate, String> {
    check(request)?;
    let index = request
        .participants
        .iter()
        .position(|p| p == me)
        .ok_or("this agent is not a participant of the round")?;
    let mut shard = local_data(request, index, recorded)?;
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
            dataset: JobDataset::Shipped(DatasetName::Iris),
            local_epochs: 1,
            batch_size: 16,
            learning_rate: 0.5,
            seed: 9,
            trace: None,
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
        let sign_flip = ByzantineSpec {
            attack: ByzantineAttack::SignFlip,
            strength_percent: 1000,
        };
        let flipped = local_update(&req, "a", Some(attack_of(&sign_flip))).unwrap();
        assert_eq!(flipped.values[0], -4.0 * a.values[0]);
        assert!(local_update(&req, "z", None).is_err(), "not a participant");
    }

    #[test]
    fn an_inconsistent_request_is_refused() {
        let mut req = request();
        req.values[0] += 1.0;
        assert!(local_update(&req, "a", None).unwrap_err().contains("digest"));
    }

    /// Windows where the first feature (hello loss) is high exactly when the label is 1.
    fn recorded(examples: usize) -> Dataset {
        let mut features = Vec::new();
        let mut labels = Vec::new();
        for i in 0..examples {
            let faulty = i % 3 == 0;
            let row: Vec<f32> = (0..telemetry::FEATURES)
                .map(|f| {
                    if f % telemetry::SAMPLE_FEATURES == 0 && faulty {
                        0.4
                    } else {
                        0.01
                    }
                })
                .collect();
            features.extend(row);
            labels.push(u32::from(faulty));
        }
        Dataset::from_rows(features, labels, telemetry::FEATURES, telemetry::CLASSES).unwrap()
    }

    fn telemetry_request() -> TrainRequest {
        let shape = ModelShape::new(
            ModelKind::LogisticRegression,
            telemetry::FEATURES,
            telemetry::CLASSES,
        );
        let values = shape.initial_parameters(3);
        TrainRequest {
            dataset: JobDataset::LinkTelemetry,
            shape,
            base_digest: digest(&values),
            values,
            local_epochs: 5,
            ..request()
        }
    }

    #[test]
    fn a_link_telemetry_round_trains_on_the_recorded_windows() {
        let req = telemetry_request();
        let data = recorded(60);
        let update = local_update_on(&req, "b", None, Some(data.clone())).unwrap();
        assert_eq!(update.examples, 60);
        assert_eq!(update.values.len(), req.shape.parameter_count());
        // The step learnt the data: the updated model beats the initial one on it.
        let mut trained = req.values.clone();
        x0tta6bl4_fl::training::apply(&mut trained, &update.values);
        let before = x0tta6bl4_fl::training::evaluate(&req.shape, &req.values, &data).unwrap();
        let after = x0tta6bl4_fl::training::evaluate(&req.shape, &trained, &data).unwrap();
        assert!(after.loss < before.loss, "{before:?} -> {after:?}");
        assert!(after.accuracy > 0.9, "{after:?}");
        // Without windows, or with a model of another shape, it is refused with the reason.
        let missing = local_update_on(&req, "b", None, None).unwrap_err();
        assert!(missing.contains("recorded windows"), "{missing}");
        assert!(local_update(&req, "b", None).is_err());
        let shape = ModelShape::new(ModelKind::LogisticRegression, 4, 2);
        let values = shape.initial_parameters(3);
        let wrong = TrainRequest {
            shape,
            base_digest: digest(&values),
            values,
            ..telemetry_request()
        };
        let error = local_update_on(&wrong, "b", None, Some(data)).unwrap_err();
        assert!(error.contains("spec.model.inputDim"), "{error}");
    }

    #[test]
    fn the_aggregator_tests_on_its_own_held_out_windows() {
        let recorder = SharedRecorder::default();
        let short = test_set(JobDataset::LinkTelemetry, 3, 5, &recorder).unwrap_err();
        assert!(short.contains("held-out"), "{short}");
        let iris = test_set(JobDataset::Shipped(DatasetName::Iris), 3, 5, &recorder).unwrap();
        assert_eq!((iris.len(), iris.dim), (30, 4));
        {
            let mut recording = recorder.lock();
            let live: Vec<telemetry::LinkReading> = (1..=2u8)
                .map(|n| telemetry::LinkReading {
                    peer: x0tta6bl4_wire::NodeId([n; 32]),
                    address: None,
                    loss_percent: 0,
                    rtt: None,
                })
                .collect();
            for second in 0..100u64 {
                recording.sample(second * telemetry::SAMPLE_EVERY_NS, &live);
            }
        }
        let held_out = test_set(JobDataset::LinkTelemetry, 3, 5, &recorder).unwrap();
        assert_eq!(held_out, recorder.lock().dataset(telemetry::Part::Test, 5));
        assert!(held_out.len() >= telemetry::MIN_TEST_WINDOWS);
    }
}
