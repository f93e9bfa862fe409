//! Federated jobs as this agent sees them: the FLTrainingRounds of its mesh, from a source
//! behind a trait (the API server in a cluster, a file standalone), and what a job's spec
//! means for training (model shape, dataset, rule, seed).
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_round::{AggregationRule, Dataset, ModelKind as SpecKind};
use x0tta6bl4_fl::aggregate::Rule;
use x0tta6bl4_fl::dataset::DatasetName;
use x0tta6bl4_fl::model::{ModelKind, ModelShape};

use crate::links as telemetry;

/// The jobs of this agent's mesh, by name.
pub type Jobs = BTreeMap<String, Arc<FLTrainingRound>>;

/// Where the agent learns of jobs.
pub trait JobSource {
    fn subscribe(&self) -> watch::Receiver<Jobs>;
}

/// Mini-batch size of local training (not in the spec; the attack matrix's value).
pub const BATCH_SIZE: u32 = 16;
/// Dirichlet α of the non-IID split (the attack matrix's value).
pub const DIRICHLET_ALPHA: f64 = 1.0;
/// Share of the dataset held out for the aggregator's evaluation.
pub use x0tta6bl4_fl::dataset::TEST_FRACTION;
/// Fewest examples a participant's shard may have.
pub const MIN_SHARD: usize = 8;
/// Centered clipping's radius and iterations (the attack matrix's values).
pub const CLIPPING_TAU: f32 = 0.5;
pub const CLIPPING_ITERATIONS: usize = 3;

pub fn uid(job: &FLTrainingRound) -> &str {
    job.metadata.uid.as_deref().unwrap_or("")
}

pub fn name(job: &FLTrainingRound) -> &str {
    job.metadata.name.as_deref().unwrap_or("")
}

/// The job's seed: the first 8 bytes of SHA-256 of its UID, so every agent derives the same
/// initial model and data split, and two jobs differ.
pub fn seed(uid: &str) -> u64 {
    let digest = Sha256::digest(uid.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or([0; 8]))
}

pub fn shape(job: &FLTrainingRound) -> Result<ModelShape, String> {
    let model = &job.spec.model;
    let positive = |v: i32, what: &str| {
        usize::try_from(v)
            .ok()
            .filter(|v| *v > 0)
            .ok_or(format!("model.{what} must be positive"))
    };
    let kind = match model.kind {
        SpecKind::LogisticRegression => ModelKind::LogisticRegression,
        SpecKind::Mlp => ModelKind::Mlp {
            hidden: positive(model.hidden_dim.unwrap_or(0), "hiddenDim")?,
        },
    };
    Ok(ModelShape::new(
        kind,
        positive(model.input_dim, "inputDim")?,
        positive(model.classes, "classes")?,
    ))
}

/// What a job trains on (a training request carries it): a shipped dataset, or each agent's
/// own recorded link windows ([`telemetry`]).
pub use x0tta6bl4_fl::codec::train_request::JobDataset;

/// The job's dataset; a linkTelemetry job's model must take [`telemetry::FEATURES`] inputs
/// and tell [`telemetry::CLASSES`] classes.
pub fn dataset(job: &FLTrainingRound) -> Result<JobDataset, String> {
    let model = &job.spec.model;
    match model.dataset {
        Dataset::Iris => Ok(JobDataset::Shipped(DatasetName::Iris)),
        Dataset::Digits => Ok(JobDataset::Shipped(DatasetName::Digits)),
        Dataset::LinkTelemetry => {
            if usize::try_from(model.input_dim).ok() != Some(telemetry::FEATURES) {
                return Err(format!(
                    "spec.model.inputDim is {}, but a linkTelemetry window has {} features \
                     ({} samples of {})",
                    model.input_dim,
                    telemetry::FEATURES,
                    telemetry::WINDOW,
                    telemetry::SAMPLE_FEATURES
                ));
            }
            if usize::try_from(model.classes).ok() != Some(telemetry::CLASSES) {
                return Err(format!(
                    "spec.model.classes is {}, but linkTelemetry windows have {} classes \
                     (healthy, faulty)",
                    model.classes,
                    telemetry::CLASSES
                ));
            }
            Ok(JobDataset::LinkTelemetry)
        }
    }
}

/// The job's seed: `spec.seed` if set (two jobs compared on the same model and shards), else
/// derived from the UID.
pub fn job_seed(job: &FLTrainingRound) -> u64 {
    job.spec
        .seed
        .and_then(|s| u64::try_from(s).ok())
        .unwrap_or_else(|| seed(uid(job)))
}

pub fn rule(job: &FLTrainingRound) -> Rule {
    rule_from(job.spec.aggregation.rule, job.spec.aggregation.byzantine)
}

/// A spec rule with the number of Byzantine inputs it must tolerate.
pub fn rule_from(rule: AggregationRule, byzantine: i32) -> Rule {
    let f = usize::try_from(byzantine).unwrap_or(0);
    match rule {
        AggregationRule::Fedavg => Rule::FedAvg,
        AggregationRule::Median => Rule::Median { f },
        AggregationRule::TrimmedMean => Rule::TrimmedMean { f },
        AggregationRule::Krum => Rule::Krum { f },
        AggregationRule::MultiKrum => Rule::MultiKrum { f, m: None },
        AggregationRule::Bulyan => Rule::Bulyan { f },
        AggregationRule::CenteredClipping => Rule::CenteredClipping {
            tau: CLIPPING_TAU,
            iterations: CLIPPING_ITERATIONS,
        },
    }
}

/// The aggregator named in the status, if the job is running. A job being deleted (its
/// deletionTimestamp set, for example while a foreground deletion removes its ConfigMaps) is
/// no longer running: its aggregator stops and participants refuse its requests.
pub fn running_aggregator(job: &FLTrainingRound) -> Option<&str> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let status = job.status.as_ref()?;
    (status.phase == "Running" && !status.aggregator.is_empty()).then_some(status.aggregator.as_str())
}

pub fn participants(job: &FLTrainingRound) -> &[String] {
    job.status.as_ref().map_or(&[], |s| s.participants.as_slice())
}

/// Whether the job aggregates per zone (its status names the zones' aggregators).
pub fn hierarchical(job: &FLTrainingRound) -> bool {
    job.spec.aggregation.hierarchical.is_some()
        && job
            .status
            .as_ref()
            .is_some_and(|s| !s.zone_aggregators.is_empty())
}

/// The zone of `participant` in a hierarchical job.
pub fn zone_of<'a>(job: &'a FLTrainingRound, participant: &str) -> Option<&'a str> {
    job.status.as_ref()?.zones.get(participant).map(String::as_str)
}

/// The zone `node` aggregates, if it is a zone aggregator of the job.
pub fn zone_aggregated_by<'a>(job: &'a FLTrainingRound, node: &str) -> Option<&'a str> {
    let status = job.status.as_ref()?;
    status
        .zone_aggregators
        .iter()
        .find(|(_, aggregator)| *aggregator == node)
        .map(|(zone, _)| zone.as_str())
}

/// The participants of `zone`, in the job's participant order.
pub fn zone_members(job: &FLTrainingRound, zone: &str) -> Vec<String> {
    participants(job)
        .iter()
        .filter(|p| zone_of(job, p) == Some(zone))
        .cloned()
        .collect()
}

/// Where `participant` sends its update: its zone's aggregator in a hierarchical job, else
/// the job's aggregator.
pub fn update_destination<'a>(job: &'a FLTrainingRound, participant: &str) -> Option<&'a str> {
    let aggregator = running_aggregator(job)?;
    if hierarchical(job) {
        let zone = zone_of(job, participant)?;
        return job
            .status
            .as_ref()?
            .zone_aggregators
            .get(zone)
            .map(String::as_str);
    }
    Some(aggregator)
}

/// A job of a standalone agent: one FLTrainingRound (YAML or JSON, with its status) in a file,
/// read again whenever it changes; a missing file means no job (deleting it stops the job).
pub struct FileJobs {
    jobs: watch::Sender<Jobs>,
}

/// How often the job file is looked at.
const FILE_POLL: Duration = Duration::from_millis(500);

impl FileJobs {
    pub fn start(path: PathBuf, mesh: String, shutdown: CancellationToken) -> Self {
        let (jobs, _) = watch::channel(Jobs::new());
        let publish = jobs.clone();
        tokio::spawn(async move {
            let mut last: Option<String> = None;
            loop {
                let text = std::fs::read_to_string(&path).ok();
                if text != last {
                    let parsed = text.as_deref().map_or(Ok(Jobs::new()), |t| parse_jobs(t, &mesh));
                    match parsed {
                        Ok(parsed) => {
                            publish.send_replace(parsed);
                        }
                        Err(error) => {
                            tracing::warn!(path = %path.display(), %error, "cannot read the federated job file")
                        }
                    }
                    last = text;
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(FILE_POLL) => {}
                }
            }
        });
        Self { jobs }
    }
}

impl JobSource for FileJobs {
    fn subscribe(&self) -> watch::Receiver<Jobs> {
        self.jobs.subscribe()
    }
}

/// Parses one FLTrainingRound; a job of another mesh, or without a name and UID, is no job.
pub fn parse_jobs(text: &str, mesh: &str) -> Result<Jobs, String> {
    let job: FLTrainingRound = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    if name(&job).is_empty() || uid(&job).is_empty() {
        return Err("the FLTrainingRound needs metadata.name and metadata.uid".into());
    }
    let mut jobs = Jobs::new();
    if job.spec.mesh_ref.name == mesh {
        jobs.insert(name(&job).to_owned(), Arc::new(job));
    }
    Ok(jobs)
}

/// The FLTrainingRounds of this agent's namespace whose meshRef names its mesh, watched.
pub struct KubeJobs {
    jobs: watch::Sender<Jobs>,
}

impl KubeJobs {
    pub fn start(client: kube::Client, namespace: &str, mesh: &str, shutdown: CancellationToken) -> Self {
        use futures::StreamExt;
        use kube::runtime::{WatchStreamExt, watcher};
        let (jobs, _) = watch::channel(Jobs::new());
        let publish = jobs.clone();
        let api: kube::Api<FLTrainingRound> = kube::Api::namespaced(client, namespace);
        let mesh = mesh.to_owned();
        tokio::spawn(async move {
            let (reader, writer) = kube::runtime::reflector::store::<FLTrainingRound>();
            let mut stream = std::pin::pin!(
                watcher(api, watcher::Config::default())
                    .default_backoff()
                    .reflect(writer)
                    .touched_objects()
            );
            loop {
                let event = tokio::select! {
                    () = shutdown.cancelled() => return,
                    event = stream.next() => event,
                };
                match event {
                    None => return,
                    Some(Err(error)) => tracing::warn!(%error, "FLTrainingRound watch failed; retrying"),
                    // Deletions show in the store's state, which is read whole every time.
                    Some(Ok(_)) => {
                        let current: Jobs = reader
                            .state()
                            .into_iter()
                            .filter(|job| job.spec.mesh_ref.name == mesh && !uid(job).is_empty())
                            .map(|job| (name(&job).to_owned(), job))
                            .collect();
                        publish.send_if_modified(|jobs| {
                            let changed = *jobs != current;
                            *jobs = current;
                            changed
                        });
                    }
                }
            }
        });
        Self { jobs }
    }
}

impl JobSource for KubeJobs {
    fn subscribe(&self) -> watch::Receiver<Jobs> {
        self.jobs.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const JOB: &str = r#"
apiVersion: x0tta6bl4.io/v1alpha1
kind: FLTrainingRound
metadata: {name: demo, namespace: it, uid: 1111-2222}
spec:
  meshRef: {name: fl}
  model: {kind: mlp, inputDim: 64, hiddenDim: 8, classes: 10, dataset: digits}
  rounds: 3
  aggregation: {rule: multiKrum, byzantine: 2}
status:
  phase: Running
  participants: [a, b, c]
  aggregator: a
"#;

    #[test]
    fn a_job_file_reads_into_shape_dataset_rule_and_roles() {
        let jobs = parse_jobs(JOB, "fl").unwrap();
        let job = &jobs["demo"];
        assert_eq!(
            shape(job).unwrap(),
            ModelShape::new(ModelKind::Mlp { hidden: 8 }, 64, 10)
        );
        assert_eq!(dataset(job).unwrap(), JobDataset::Shipped(DatasetName::Digits));
        assert_eq!(rule(job), Rule::MultiKrum { f: 2, m: None });
        assert_eq!(running_aggregator(job), Some("a"));
        assert_eq!(participants(job), ["a", "b", "c"]);
        assert!(parse_jobs(JOB, "other").unwrap().is_empty(), "another mesh's job");
        assert_ne!(seed("1111-2222"), seed("1111-2223"));
    }

    #[test]
    fn a_link_telemetry_job_needs_the_window_shape() {
        let spec = format!(
            "model: {{kind: logisticRegression, inputDim: {}, classes: 2, dataset: linkTelemetry}}",
            telemetry::FEATURES
        );
        let text = JOB.replace(
            "model: {kind: mlp, inputDim: 64, hiddenDim: 8, classes: 10, dataset: digits}",
            &spec,
        );
        let jobs = parse_jobs(&text, "fl").unwrap();
        assert_eq!(dataset(&jobs["demo"]).unwrap(), JobDataset::LinkTelemetry);
        let wrong_dim = parse_jobs(
            &text.replace(&format!("inputDim: {}", telemetry::FEATURES), "inputDim: 64"),
            "fl",
        )
        .unwrap();
        let error = dataset(&wrong_dim["demo"]).unwrap_err();
        assert!(
            error.contains("spec.model.inputDim is 64") && error.contains(&telemetry::FEATURES.to_string()),
            "{error}"
        );
        let wrong_classes = parse_jobs(&text.replace("classes: 2", "classes: 3"), "fl").unwrap();
        assert!(
            dataset(&wrong_classes["demo"])
                .unwrap_err()
                .contains("spec.model.classes is 3")
        );
    }

    #[test]
    fn a_job_not_running_has_no_aggregator() {
        let text = JOB.replace("phase: Running", "phase: Pending");
        let jobs = parse_jobs(&text, "fl").unwrap();
        assert_eq!(running_aggregator(&jobs["demo"]), None);
        assert!(parse_jobs("metadata: {}", "fl").is_err());
    }
}
