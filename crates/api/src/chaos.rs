//! `ChaosExperiment`: one fault injected into a mesh or a round, measured, then reverted.
use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::{self, DURATION_PATTERN};
use crate::{FieldError, LocalObjectRef, labels};

/// Desired fault experiment.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "x0tta6bl4.io",
    version = "v1alpha1",
    kind = "ChaosExperiment",
    plural = "chaosexperiments",
    shortname = "chaos",
    category = "x0tta6bl4",
    namespaced,
    status = "ChaosExperimentStatus",
    derive = "PartialEq",
    doc = "A fault injected into a mesh or a federated round, measured, judged and always reverted.",
    printcolumn(name = "Action", type_ = "string", json_path = ".spec.action.type"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Recovery",
        type_ = "string",
        json_path = ".status.timeToRecover",
        description = "Time from injection to recovery"
    ),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ChaosExperimentSpec {
    /// What the fault is injected into.
    pub target: TargetSpec,
    /// The fault and its parameters.
    pub action: ActionSpec,
    /// How long the fault stays injected before it is reverted (1s to 24h).
    #[serde(default = "default_duration")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('24h')").message("must be between 1s and 24h"))]
    pub duration: String,
    /// Pause the experiment: nothing is injected, and an active fault is reverted.
    #[serde(default)]
    pub suspend: bool,
    /// Select targets and report what would be injected, without injecting anything.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_duration() -> String {
    "60s".into()
}

/// What the fault is injected into.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.meshRef) != has(self.roundRef)").message("set exactly one of meshRef and roundRef"))]
#[x_kube(validation = Rule::new("!(self.mode in ['fixed', 'fixedPercent', 'randomMaxPercent']) || has(self.value)").message("mode fixed, fixedPercent and randomMaxPercent need a value").field_path(".value"))]
#[x_kube(validation = Rule::new("!(self.mode in ['fixedPercent', 'randomMaxPercent']) || !has(self.value) || (self.value >= 1 && self.value <= 100)").message("a percentage value must be between 1 and 100").field_path(".value"))]
pub struct TargetSpec {
    /// The MeshNetwork whose agents receive the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesh_ref: Option<LocalObjectRef>,
    /// The FLTrainingRound whose participants receive the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round_ref: Option<LocalObjectRef>,
    /// Only nodes with these labels are candidates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// How many candidates are chosen: one, all, fixed (value nodes), fixedPercent or randomMaxPercent.
    #[serde(default = "default_mode")]
    pub mode: TargetMode,
    /// Count for fixed, percentage for fixedPercent and randomMaxPercent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub value: Option<i32>,
}

fn default_mode() -> TargetMode {
    TargetMode::One
}

/// Target selection modes, as in Chaos Mesh.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum TargetMode {
    One,
    All,
    Fixed,
    FixedPercent,
    RandomMaxPercent,
}

/// The fault and its parameters; the block named after the type carries them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'latency' || has(self.latency)").message("type latency needs the latency block").field_path(".latency"))]
#[x_kube(validation = Rule::new("!(self.type in ['loss', 'corrupt']) || has(self.probabilityPercent)").message("loss and corrupt need probabilityPercent").field_path(".probabilityPercent"))]
#[x_kube(validation = Rule::new("self.type != 'byzantineUpdate' || has(self.byzantine)").message("type byzantineUpdate needs the byzantine block").field_path(".byzantine"))]
#[x_kube(validation = Rule::new("self.type != 'falseMetric' || has(self.metricPercent)").message("type falseMetric needs metricPercent").field_path(".metricPercent"))]
pub struct ActionSpec {
    /// partition, latency, loss, corrupt, nodeKill, byzantineUpdate, forgedBeacon, replayedBeacon,
    /// falseMetric, keyExpiry or kemDowngrade.
    #[serde(rename = "type")]
    pub type_: ActionType,
    /// For partition: which direction of mesh traffic is cut.
    #[serde(default = "default_direction")]
    pub direction: Direction,
    /// For loss and corrupt: share of mesh packets affected, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub probability_percent: Option<i32>,
    /// For latency: the delay added to mesh packets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySpec>,
    /// For byzantineUpdate: how the chosen participants poison their updates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<ByzantineSpec>,
    /// For falseMetric: factor by which the chosen agents understate their link costs, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub metric_percent: Option<i32>,
}

fn default_direction() -> Direction {
    Direction::Both
}

/// Fault types.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ActionType {
    Partition,
    Latency,
    Loss,
    Corrupt,
    NodeKill,
    ByzantineUpdate,
    ForgedBeacon,
    ReplayedBeacon,
    FalseMetric,
    KeyExpiry,
    KemDowngrade,
}

/// Traffic direction, seen from a chosen node.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    To,
    From,
    Both,
}

/// Added delay.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencySpec {
    /// Delay added to every affected packet (1ms to 10s).
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1ms') && duration(self) <= duration('10s')").message("must be between 1ms and 10s"))]
    pub delay: String,
    /// Random variation around the delay (at most 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub jitter: Option<String>,
}

/// Poisoned model updates.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ByzantineSpec {
    /// signFlip, scaling, noise, labelFlip, alie or ipm.
    pub attack: ByzantineAttack,
    /// Strength of scaling and noise attacks, in percent of the honest update's norm (1 to 100000).
    #[serde(default = "default_strength")]
    #[schemars(range(min = 1, max = 100000))]
    pub strength_percent: i32,
}

fn default_strength() -> i32 {
    1000
}

/// Model-poisoning attacks.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum ByzantineAttack {
    SignFlip,
    Scaling,
    Noise,
    LabelFlip,
    Alie,
    Ipm,
}

/// Observed state of an experiment.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChaosExperimentStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Pending, Injecting, Recovering, Completed, Failed or Suspended.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Nodes the fault was (or, in a dry run, would be) injected into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Time from injection until the mesh noticed the fault.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_detect: String,
    /// Time from injection until the mesh was healthy again.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_recover: String,
    /// Passed, Failed or Inconclusive.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict: String,
}

impl ChaosExperimentSpec {
    /// Checks what the schema cannot: label syntax and the duration values.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for key in self.target.node_selector.keys() {
            if let Err(why) = labels::check_key(key) {
                errors.push(FieldError::new(format!("spec.target.nodeSelector[{key}]"), why));
            }
        }
        if let Err(why) = duration::parse(&self.duration) {
            errors.push(FieldError::new("spec.duration", why.to_string()));
        }
        if let Some(latency) = &self.action.latency {
            let delay = duration::parse(&latency.delay);
            if let Err(why) = &delay {
                errors.push(FieldError::new("spec.action.latency.delay", why.to_string()));
            }
            if let Some(jitter) = &latency.jitter {
                match (duration::parse(jitter), delay) {
                    (Err(why), _) => {
                        errors.push(FieldError::new("spec.action.latency.jitter", why.to_string()))
                    }
                    (Ok(j), Ok(d)) if j > d => errors.push(FieldError::new(
                        "spec.action.latency.jitter",
                        "must not exceed the delay, or packets would be sent before they were due",
                    )),
                    _ => {}
                }
            }
        }
        if self.target.mode == TargetMode::Fixed && self.target.value.is_none() {
            errors.push(FieldError::new("spec.target.value", "mode fixed needs a value"));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_experiment_on_a_mesh_is_valid() {
        let s: ChaosExperimentSpec = serde_yaml::from_str(
            "target: {meshRef: {name: demo}, mode: fixedPercent, value: 50}\naction: {type: loss, probabilityPercent: 30}",
        )
        .unwrap();
        assert_eq!(s.duration, "60s");
        assert_eq!(s.action.direction, Direction::Both);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn jitter_larger_than_delay_is_refused_with_its_field() {
        let s: ChaosExperimentSpec = serde_yaml::from_str(
            "target: {meshRef: {name: demo}}\naction: {type: latency, latency: {delay: 10ms, jitter: 20ms}}",
        )
        .unwrap();
        assert_eq!(s.validate().unwrap_err()[0].field, "spec.action.latency.jitter");
    }
}
