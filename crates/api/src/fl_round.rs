//! `FLTrainingRound`: one federated-learning job of N rounds over a mesh.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::{self, DURATION_PATTERN};
use crate::{FieldError, LocalObjectRef};

/// Desired federated training job.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "x0tta6bl4.io",
    version = "v1alpha1",
    kind = "FLTrainingRound",
    plural = "fltrainingrounds",
    shortname = "flround",
    shortname = "flrounds",
    category = "x0tta6bl4",
    namespaced,
    status = "FLTrainingRoundStatus",
    derive = "PartialEq",
    doc = "A federated-learning job of N rounds trained by the node agents of a mesh.",
    printcolumn(name = "Mesh", type_ = "string", json_path = ".spec.meshRef.name"),
    printcolumn(
        name = "Round",
        type_ = "string",
        json_path = ".status.roundText",
        description = "Completed rounds / total rounds"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Accepted",
        type_ = "integer",
        json_path = ".status.accepted",
        description = "Updates accepted in the last round"
    ),
    printcolumn(
        name = "Rejected",
        type_ = "integer",
        json_path = ".status.rejected",
        description = "Updates rejected in the last round"
    ),
    printcolumn(
        name = "Accuracy",
        type_ = "string",
        json_path = ".status.accuracy",
        description = "Test accuracy of the global model"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.aggregation.rule != 'krum' || self.participants.minimum > 2 * self.aggregation.byzantine + 2").message("krum needs participants.minimum > 2 * aggregation.byzantine + 2").field_path(".aggregation.byzantine"))]
#[x_kube(validation = Rule::new("self.aggregation.rule != 'multiKrum' || self.participants.minimum > 2 * self.aggregation.byzantine + 2").message("multiKrum needs participants.minimum > 2 * aggregation.byzantine + 2").field_path(".aggregation.byzantine"))]
#[x_kube(validation = Rule::new("self.aggregation.rule != 'bulyan' || self.participants.minimum >= 4 * self.aggregation.byzantine + 3").message("bulyan needs participants.minimum >= 4 * aggregation.byzantine + 3").field_path(".aggregation.byzantine"))]
#[x_kube(validation = Rule::new("!(self.aggregation.rule in ['median', 'trimmedMean']) || self.participants.minimum > 2 * self.aggregation.byzantine").message("median and trimmedMean need participants.minimum > 2 * aggregation.byzantine").field_path(".aggregation.byzantine"))]
pub struct FLTrainingRoundSpec {
    /// The MeshNetwork whose agents train, in the same namespace.
    pub mesh_ref: LocalObjectRef,

    /// The model trained on every participant.
    pub model: ModelSpec,

    /// Number of federated rounds.
    #[serde(default = "default_rounds")]
    #[schemars(range(min = 1, max = 10000))]
    pub rounds: i32,

    /// Passes over its local data each participant makes per round.
    #[serde(default = "default_local_epochs")]
    #[schemars(range(min = 1, max = 100))]
    pub local_epochs: i32,

    /// Learning rate of local training, as a decimal string (for example "0.05"), in (0, 10].
    #[serde(default = "default_learning_rate")]
    #[schemars(length(max = 16), regex(pattern = r"^[0-9]+(\.[0-9]+)?$"))]
    pub learning_rate: String,

    /// Which ready agents of the mesh take part.
    #[serde(default)]
    pub participants: ParticipantsSpec,

    /// How updates are combined into the global model.
    #[serde(default)]
    pub aggregation: AggregationSpec,

    /// Share of the participants, in percent, whose admitted updates make a quorum: a round
    /// aggregates as soon as it has them (100: every participant). With
    /// `stragglerPolicy.mode: acceptStale` the rest count in a later round, weighted down
    /// (batch-asynchronous rounds).
    #[serde(default = "default_quorum_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub quorum_percent: i32,

    /// How long a round waits for updates before it aggregates what arrived (1s to 1h).
    #[serde(default = "default_quorum_timeout")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('1h')").message("must be between 1s and 1h"))]
    pub quorum_timeout: String,

    /// What happens to updates that arrive after the quorum timeout.
    #[serde(default)]
    pub straggler_policy: StragglerPolicy,

    /// Seed of the initial model and of the data split. Two jobs with the same seed, model,
    /// dataset and participants start from the same model on the same shards (to compare an
    /// honest run with an attacked one); unset, it is derived from the job's UID.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub seed: Option<i64>,
}

fn default_rounds() -> i32 {
    10
}
fn default_local_epochs() -> i32 {
    1
}
fn default_learning_rate() -> String {
    "0.1".into()
}
fn default_quorum_percent() -> i32 {
    100
}
fn default_quorum_timeout() -> String {
    "60s".into()
}

/// The model trained on every participant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'mlp' || has(self.hiddenDim)").message("an mlp needs hiddenDim").field_path(".hiddenDim"))]
pub struct ModelSpec {
    /// logisticRegression or mlp (one hidden layer).
    pub kind: ModelKind,
    /// Number of input features.
    #[schemars(range(min = 1, max = 1000000))]
    pub input_dim: i32,
    /// Width of the hidden layer of an mlp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65536))]
    pub hidden_dim: Option<i32>,
    /// Number of output classes.
    #[serde(default = "default_classes")]
    #[schemars(range(min = 2, max = 10000))]
    pub classes: i32,
    /// Dataset each participant trains on (its own shard of it).
    #[serde(default = "default_dataset")]
    pub dataset: Dataset,
}

fn default_classes() -> i32 {
    2
}
fn default_dataset() -> Dataset {
    Dataset::Iris
}

/// Model architectures the agents can train.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ModelKind {
    LogisticRegression,
    Mlp,
}

/// Data each participant trains on.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Dataset {
    /// A shard of UCI iris (150 examples, 4 features, 3 classes), shipped with the agent.
    Iris,
    /// A shard of UCI optical digits (1797 examples, 64 features, 10 classes), shipped with
    /// the agent.
    Digits,
    /// The node's own link telemetry, labelled by whether a fault was active.
    LinkTelemetry,
}

/// Features per window of the `linkTelemetry` dataset (the agent's recorder: 5 one-second
/// samples of 4 link metrics).
pub const LINK_TELEMETRY_FEATURES: i32 = 20;

impl Dataset {
    /// (features per example, classes) of the data the agents train on: a model must match.
    pub fn dimensions(self) -> (i32, i32) {
        match self {
            Dataset::Iris => (4, 3),
            Dataset::Digits => (64, 10),
            Dataset::LinkTelemetry => (LINK_TELEMETRY_FEATURES, 2),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Iris => "iris",
            Dataset::Digits => "digits",
            Dataset::LinkTelemetry => "linkTelemetry",
        }
    }
}

impl ModelSpec {
    /// Parameters of the model (weights and biases): (input + 1)·classes for logistic
    /// regression, (input + 1)·hidden + (hidden + 1)·classes for the MLP.
    pub fn parameter_count(&self) -> i64 {
        let (input, classes) = (i64::from(self.input_dim), i64::from(self.classes));
        match (self.kind, self.hidden_dim) {
            (ModelKind::Mlp, Some(hidden)) => {
                let hidden = i64::from(hidden);
                (input + 1) * hidden + (hidden + 1) * classes
            }
            _ => (input + 1) * classes,
        }
    }
}

/// Which agents take part in a round.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantsSpec {
    /// Fewest participants a round may run with.
    #[serde(default = "default_min_participants")]
    #[schemars(range(min = 1, max = 100000))]
    pub minimum: i32,
    /// Share of the eligible agents sampled each round, in percent (1 to 100).
    #[serde(default = "default_fraction")]
    #[schemars(range(min = 1, max = 100))]
    pub fraction_percent: i32,
    /// Only agents on nodes with these labels are eligible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl Default for ParticipantsSpec {
    fn default() -> Self {
        Self {
            minimum: default_min_participants(),
            fraction_percent: default_fraction(),
            selector: None,
        }
    }
}

fn default_min_participants() -> i32 {
    3
}
fn default_fraction() -> i32 {
    100
}

/// How updates are combined.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AggregationSpec {
    /// fedavg, median, trimmedMean, krum, multiKrum, bulyan or centeredClipping.
    #[serde(default = "default_rule")]
    pub rule: AggregationRule,
    /// Number of Byzantine participants the rule must tolerate (f).
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub byzantine: i32,
    /// Aggregate per zone first, then globally, for large meshes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hierarchical: Option<HierarchicalSpec>,
}

impl Default for AggregationSpec {
    fn default() -> Self {
        Self {
            rule: default_rule(),
            byzantine: 0,
            hierarchical: None,
        }
    }
}

fn default_rule() -> AggregationRule {
    AggregationRule::Fedavg
}

/// Aggregation rules.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum AggregationRule {
    Fedavg,
    Median,
    TrimmedMean,
    Krum,
    MultiKrum,
    Bulyan,
    CenteredClipping,
}

/// Per-zone aggregation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HierarchicalSpec {
    /// Node label whose value names a participant's zone (participants without it form the
    /// zone "unzoned").
    #[serde(default = "default_zone_label")]
    #[schemars(length(min = 1, max = 317))]
    pub zone_label: String,
    /// How the zones' aggregates are combined (each zone counts as one participant weighing
    /// its examples); `aggregation.rule` and `aggregation.byzantine` apply inside each zone.
    #[serde(default = "default_rule")]
    pub global_rule: AggregationRule,
    /// Number of Byzantine zones the global rule must tolerate.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10000))]
    pub global_byzantine: i32,
}

fn default_zone_label() -> String {
    "topology.kubernetes.io/zone".into()
}

/// Treatment of updates that arrive late.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'acceptStale' || self.maxStaleness >= 1").message("acceptStale needs maxStaleness >= 1").field_path(".maxStaleness"))]
pub struct StragglerPolicy {
    /// drop: late updates are discarded. acceptStale: accepted into a later round, weighted down.
    #[serde(default = "default_straggler_mode")]
    pub mode: StragglerMode,
    /// Oldest round, counted back from the current one, whose updates are still accepted.
    #[serde(default)]
    #[schemars(range(min = 0, max = 10))]
    pub max_staleness: i32,
    /// Weight of a stale update, in percent, divided again for each round of staleness.
    #[serde(default = "default_stale_weight")]
    #[schemars(range(min = 1, max = 100))]
    pub stale_weight_percent: i32,
}

impl Default for StragglerPolicy {
    fn default() -> Self {
        Self {
            mode: default_straggler_mode(),
            max_staleness: 0,
            stale_weight_percent: default_stale_weight(),
        }
    }
}

fn default_straggler_mode() -> StragglerMode {
    StragglerMode::Drop
}
fn default_stale_weight() -> i32 {
    50
}

/// Straggler modes.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum StragglerMode {
    Drop,
    AcceptStale,
}

/// Observed state of a federated job.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FLTrainingRoundStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pending, Running, Completed or Failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Rounds completed so far.
    #[serde(default)]
    pub completed_rounds: i32,
    /// "completed/total", for `kubectl get`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub round_text: String,
    /// Updates accepted in the last round.
    #[serde(default)]
    pub accepted: i32,
    /// Updates rejected in the last round.
    #[serde(default)]
    pub rejected: i32,
    /// Test accuracy of the global model after the last round, as a percentage string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accuracy: String,
    /// The agents (node names) taking part, fixed when the job starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participants: Vec<String>,
    /// The participant that distributes the model and aggregates the updates.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aggregator: String,
    /// The newest round records (older ones stay in their round ConfigMaps), hash-chained.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<crate::fl_record::RoundRecord>,
    /// Hash of the last record of the chain.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub chain_head: String,
    /// SHA-256 (hex) of the current global model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_digest: String,
    /// The ConfigMap holding the current global model (key `model.f32`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_config_map: String,
    /// Hierarchical jobs: each participant's zone (node name → zone), fixed when the job starts.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub zones: std::collections::BTreeMap<String, String>,
    /// Hierarchical jobs: the participant that aggregates each zone (zone → node name); the
    /// zones' results go to `aggregator`, which applies the global rule.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub zone_aggregators: std::collections::BTreeMap<String, String>,
}

impl FLTrainingRoundSpec {
    /// Admitted updates that make a round's quorum among `participants`: at least one.
    pub fn quorum(&self, participants: usize) -> usize {
        let percent = usize::try_from(self.quorum_percent).unwrap_or(100).clamp(1, 100);
        (participants * percent).div_ceil(100).max(1)
    }

    /// Checks what the schema cannot: the learning rate's numeric range and the quorum timeout.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        match self.learning_rate.parse::<f64>() {
            Ok(rate) if rate > 0.0 && rate <= 10.0 => {}
            _ => errors.push(FieldError::new(
                "spec.learningRate",
                format!("'{}' must be a number in (0, 10]", self.learning_rate),
            )),
        }
        if let Err(why) = duration::parse(&self.quorum_timeout) {
            errors.push(FieldError::new("spec.quorumTimeout", why.to_string()));
        }
        let (features, classes) = self.model.dataset.dimensions();
        let dataset = self.model.dataset.name();
        if self.model.input_dim != features {
            errors.push(FieldError::new(
                "spec.model.inputDim",
                format!(
                    "the {dataset} dataset has {features} features per example, inputDim is {}",
                    self.model.input_dim
                ),
            ));
        }
        if self.model.classes != classes {
            errors.push(FieldError::new(
                "spec.model.classes",
                format!(
                    "the {dataset} dataset has {classes} classes, classes is {}",
                    self.model.classes
                ),
            ));
        }
        let bytes = self.model.parameter_count() * 4;
        if bytes > crate::fl_protocol::MAX_MODEL_BYTES as i64 {
            errors.push(FieldError::new(
                "spec.model",
                format!(
                    "{} parameters ({} KiB) exceed the largest model a round ConfigMap holds ({} KiB)",
                    self.model.parameter_count(),
                    bytes / 1024,
                    crate::fl_protocol::MAX_MODEL_BYTES / 1024
                ),
            ));
        }
        if let Some(selector) = &self.participants.selector {
            for key in selector.match_labels.iter().flatten().map(|(k, _)| k) {
                if let Err(why) = crate::labels::check_key(key) {
                    errors.push(FieldError::new(
                        format!("spec.participants.selector.matchLabels[{key}]"),
                        why,
                    ));
                }
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_round_gets_defaults() {
        let s: FLTrainingRoundSpec = serde_norway::from_str(
            "meshRef: {name: demo}\nmodel: {kind: logisticRegression, inputDim: 4, classes: 3}",
        )
        .unwrap();
        assert_eq!(s.rounds, 10);
        assert_eq!(s.aggregation.rule, AggregationRule::Fedavg);
        assert_eq!(s.straggler_policy.mode, StragglerMode::Drop);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn a_model_that_does_not_fit_its_dataset_or_a_config_map_names_its_field() {
        let s: FLTrainingRoundSpec = serde_norway::from_str(
            "meshRef: {name: demo}\nmodel: {kind: logisticRegression, inputDim: 64, classes: 3, dataset: iris}",
        )
        .unwrap();
        let errors = s.validate().unwrap_err();
        assert_eq!(errors[0].field, "spec.model.inputDim");
        assert_eq!(
            errors[0].message,
            "the iris dataset has 4 features per example, inputDim is 64"
        );
        let s: FLTrainingRoundSpec = serde_norway::from_str(
            "meshRef: {name: demo}\nmodel: {kind: mlp, inputDim: 64, hiddenDim: 4096, classes: 10, dataset: digits}",
        )
        .unwrap();
        // (64 + 1)·4096 + (4096 + 1)·10 = 307 210 parameters, 1200 KiB.
        assert_eq!(s.model.parameter_count(), 307_210);
        let errors = s.validate().unwrap_err();
        assert_eq!(errors[0].field, "spec.model");
        assert!(
            errors[0].message.starts_with("307210 parameters (1200 KiB)"),
            "{}",
            errors[0].message
        );
        let telemetry: FLTrainingRoundSpec = serde_norway::from_str(
            "meshRef: {name: demo}\nmodel: {kind: logisticRegression, inputDim: 20, classes: 2, dataset: linkTelemetry}",
        )
        .unwrap();
        assert_eq!(telemetry.validate(), Ok(()));
    }

    #[test]
    fn a_bad_learning_rate_names_its_field() {
        let s: FLTrainingRoundSpec = serde_norway::from_str(
            "meshRef: {name: demo}\nmodel: {kind: mlp, inputDim: 4, hiddenDim: 8}\nlearningRate: '0'",
        )
        .unwrap();
        let errors = s.validate().unwrap_err();
        assert_eq!(errors[0].field, "spec.learningRate");
    }
}
