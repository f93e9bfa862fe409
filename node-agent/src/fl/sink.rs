//! Where the aggregator writes each round's outcome (the unsealed record and the new model)
//! and reads back the last one when it resumes: round ConfigMaps in a cluster
//! (`fl_protocol`), files standalone.
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::FLTrainingRound;
use x0tta6bl4_api::fl_protocol::{
    JOB_LABEL, MAX_MODEL_BYTES, MODEL_KEY, RECORD_KEY, ROUND_LABEL, SEALED_KEY, round_config_map,
};
use x0tta6bl4_api::fl_record::RoundRecord;

use super::job;

/// Why a round produced no model, next to where its record would be.
pub use x0tta6bl4_api::fl_protocol::ERROR_KEY;

pub trait ResultSink: Send + Sync + 'static {
    /// The highest round with a written result, and that round's model.
    fn latest(
        &self,
        job: &FLTrainingRound,
    ) -> impl Future<Output = anyhow::Result<Option<(i32, Vec<f32>)>>> + Send;
    fn write(
        &self,
        job: &FLTrainingRound,
        record: &RoundRecord,
        model: &[f32],
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// A round that could not aggregate (a rule whose precondition does not hold, say).
    fn fail(
        &self,
        job: &FLTrainingRound,
        round: i32,
        reason: &str,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

pub use x0tta6bl4_crypto::model_digest::{
    params_from_le_bytes as model_from_bytes, params_to_le_bytes as model_bytes,
};

/// Standalone: `<dir>/<job>/round-<k>.json` (the unsealed record), `round-<k>.model.f32`, and
/// `round-<k>.error` for a round that failed. Files are written whole and renamed into place,
/// so a reader never sees half of one.
pub struct FileSink {
    pub dir: PathBuf,
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, bytes)?;
    std::fs::rename(&temporary, path)
}

impl FileSink {
    fn job_dir(&self, job: &FLTrainingRound) -> PathBuf {
        self.dir.join(job::name(job))
    }
}

impl ResultSink for FileSink {
    async fn latest(&self, job: &FLTrainingRound) -> anyhow::Result<Option<(i32, Vec<f32>)>> {
        let dir = self.job_dir(job);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(None);
        };
        let newest = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_prefix("round-")?
                    .strip_suffix(".model.f32")?
                    .parse::<i32>()
                    .ok()
            })
            .max();
        let Some(round) = newest else { return Ok(None) };
        let bytes = std::fs::read(dir.join(format!("round-{round}.model.f32")))?;
        let model = model_from_bytes(&bytes).context("a model file is not whole f32s")?;
        Ok(Some((round, model)))
    }

    async fn write(&self, job: &FLTrainingRound, record: &RoundRecord, model: &[f32]) -> anyhow::Result<()> {
        let dir = self.job_dir(job);
        std::fs::create_dir_all(&dir)?;
        // The model first: a record on disk means its model is there too.
        write_atomically(
            &dir.join(format!("round-{}.model.f32", record.round)),
            &model_bytes(model),
        )?;
        write_atomically(
            &dir.join(format!("round-{}.json", record.round)),
            &serde_json::to_vec_pretty(record)?,
        )?;
        Ok(())
    }

    async fn fail(&self, job: &FLTrainingRound, round: i32, reason: &str) -> anyhow::Result<()> {
        let dir = self.job_dir(job);
        std::fs::create_dir_all(&dir)?;
        write_atomically(&dir.join(format!("round-{round}.error")), reason.as_bytes())?;
        Ok(())
    }
}

/// In a cluster: the round ConfigMap of `fl_protocol`, owned by the FLTrainingRound (so deleting
/// the job removes them), labelled with the job and the round.
pub struct KubeSink {
    pub client: kube::Client,
    pub namespace: String,
}

fn owner(job: &FLTrainingRound) -> OwnerReference {
    OwnerReference {
        api_version: FLTrainingRound::api_version(&()).into_owned(),
        kind: FLTrainingRound::kind(&()).into_owned(),
        name: job::name(job).to_owned(),
        uid: job::uid(job).to_owned(),
        ..OwnerReference::default()
    }
}

impl KubeSink {
    fn api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Creates the round's ConfigMap, or adds `fill`'s keys to an existing one that the
    /// operator has not sealed yet (a sealed round is final and left alone).
    async fn put(
        &self,
        job: &FLTrainingRound,
        round: i32,
        fill: impl Fn(&mut ConfigMap),
    ) -> anyhow::Result<()> {
        let api = self.api();
        let name = round_config_map(job::name(job), round);
        let mut map = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([
                    (JOB_LABEL.to_owned(), job::name(job).to_owned()),
                    (ROUND_LABEL.to_owned(), round.to_string()),
                ])),
                owner_references: Some(vec![owner(job)]),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        fill(&mut map);
        match api.create(&PostParams::default(), &map).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                let mut existing = api.get(&name).await?;
                if existing.data.as_ref().is_some_and(|d| d.contains_key(SEALED_KEY)) {
                    tracing::warn!(configmap = %name, "round already sealed; not rewritten");
                    return Ok(());
                }
                fill(&mut existing);
                api.replace(&name, &PostParams::default(), &existing).await?;
                Ok(())
            }
            Err(error) => Err(error.into()),
        }
    }
}

impl ResultSink for KubeSink {
    async fn latest(&self, job: &FLTrainingRound) -> anyhow::Result<Option<(i32, Vec<f32>)>> {
        let maps = self
            .api()
            .list(&ListParams::default().labels(&format!("{JOB_LABEL}={}", job::name(job))))
            .await?;
        let newest = maps
            .items
            .into_iter()
            // Maps of an earlier job of the same name are not this job's.
            .filter(|map| map.owner_references().iter().any(|o| o.uid == job::uid(job)))
            .filter_map(|map| {
                let round = map.labels().get(ROUND_LABEL)?.parse::<i32>().ok()?;
                let model = model_from_bytes(&map.binary_data.as_ref()?.get(MODEL_KEY)?.0)?;
                Some((round, model))
            })
            .max_by_key(|(round, _)| *round);
        Ok(newest)
    }

    async fn write(&self, job: &FLTrainingRound, record: &RoundRecord, model: &[f32]) -> anyhow::Result<()> {
        let bytes = model_bytes(model);
        anyhow::ensure!(
            bytes.len() <= MAX_MODEL_BYTES,
            "the model ({} bytes) does not fit a round ConfigMap ({MAX_MODEL_BYTES})",
            bytes.len()
        );
        let text = serde_json::to_string(record)?;
        self.put(job, record.round, |map| {
            map.data
                .get_or_insert_with(BTreeMap::new)
                .insert(RECORD_KEY.to_owned(), text.clone());
            map.binary_data
                .get_or_insert_with(BTreeMap::new)
                .insert(MODEL_KEY.to_owned(), ByteString(bytes.clone()));
        })
        .await
    }

    async fn fail(&self, job: &FLTrainingRound, round: i32, reason: &str) -> anyhow::Result<()> {
        self.put(job, round, |map| {
            map.data
                .get_or_insert_with(BTreeMap::new)
                .insert(ERROR_KEY.to_owned(), reason.to_owned());
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_sink_resumes_from_its_newest_round() {
        let dir = std::env::temp_dir().join(format!("x0-fl-sink-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sink = FileSink { dir: dir.clone() };
        let jobs = super::super::job::parse_jobs(
            "metadata: {name: j, uid: u}\nspec: {meshRef: {name: m}, model: {kind: logisticRegression, inputDim: 4, classes: 3}}",
            "m",
        )
        .unwrap();
        let job = &jobs["j"];
        assert_eq!(sink.latest(job).await.unwrap(), None);
        let record = |round| RoundRecord {
            round,
            participants: vec!["a".into()],
            accepted: vec!["a".into()],
            rejected: Vec::new(),
            down_weighted: Vec::new(),
            loss: "1".into(),
            accuracy: "50.0".into(),
            duration_ms: 1,
            model_digest: String::new(),
            previous: String::new(),
            hash: String::new(),
        };
        sink.write(job, &record(1), &[1.0]).await.unwrap();
        sink.write(job, &record(2), &[2.0, 3.0]).await.unwrap();
        assert_eq!(sink.latest(job).await.unwrap(), Some((2, vec![2.0, 3.0])));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
