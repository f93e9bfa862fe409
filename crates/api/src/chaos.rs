//! `ChaosExperiment`: one fault injected into a mesh or a round, measured, then reverted.
use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

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
        name = "Detect",
        type_ = "string",
        json_path = ".status.timeToDetect",
        description = "Time from injection until an untargeted agent noticed the fault"
    ),
    printcolumn(
        name = "Recover",
        type_ = "string",
        json_path = ".status.timeToRecover",
        description = "Time from injection until every pair of untargeted agents had a route avoiding the targets"
    ),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(
        name = "Targets",
        type_ = "string",
        json_path = ".status.targets",
        priority = 1
    ),
    printcolumn(
        name = "Reverted",
        type_ = "string",
        json_path = ".status.revertCause",
        description = "Why the fault was last reverted",
        priority = 1
    ),
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
    /// What the mesh must achieve for the verdict Passed. With none set, the experiment passes
    /// when every live, untargeted agent can reach every other one again before the fault ends.
    #[serde(default)]
    pub expectations: Expectations,
    /// Bounds that, crossed while the fault is injected, revert it at once (verdict Failed,
    /// reason Aborted).
    #[serde(default)]
    pub abort: AbortGuards,
    /// Limits checked before anything is injected; an experiment beyond them is refused
    /// (reason BlastRadiusExceeded).
    #[serde(default)]
    pub blast_radius: BlastRadius,
}

/// What the mesh must achieve while the fault is injected.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Expectations {
    /// Longest acceptable time from injection until an untargeted agent notices the fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub max_time_to_detect: Option<String>,
    /// Longest acceptable time from injection until every pair of live, untargeted agents has
    /// a route that avoids the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub max_time_to_recover: Option<String>,
    /// Lowest acceptable share of pairs of untargeted agents that can reach each other when
    /// the fault ends, in percent (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub min_reachable_percent: Option<i32>,
    /// byzantineUpdate: the most the global model's test accuracy may fall, in percentage
    /// points, from the round before the attack to the last attacked round (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_accuracy_drop_percent: Option<i32>,
}

/// The accuracy drop a byzantineUpdate experiment tolerates when the spec states none.
pub const DEFAULT_MAX_ACCURACY_DROP_PERCENT: i32 = 5;

/// Abort guards, checked at every report of the agents while the fault is injected.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AbortGuards {
    /// Revert at once when fewer than this share of pairs of untargeted agents can reach each
    /// other, in percent, once recoverAfter has passed since injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub min_reachable_percent: Option<i32>,
    /// Grace time after injection before minReachablePercent applies, so that the routes can
    /// move first (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    pub recover_after: Option<String>,
    /// Revert at once when more than this many untargeted agents stop reporting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub max_silent_agents: Option<i32>,
}

/// Blast-radius limits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BlastRadius {
    /// Largest share of the mesh's agents the experiment may target, in percent.
    #[serde(default = "default_max_target_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub max_target_percent: i32,
    /// Allow an experiment that would split the untargeted agents into parts that cannot reach
    /// each other (a target that is a cut vertex of the mesh's links).
    #[serde(default)]
    pub allow_disconnect: bool,
}

impl Default for BlastRadius {
    fn default() -> Self {
        Self {
            max_target_percent: default_max_target_percent(),
            allow_disconnect: false,
        }
    }
}

fn default_max_target_percent() -> i32 {
    50
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
    /// partition, latency, loss, corrupt, nodeKill, byzantineUpdate, forgedBeacon (advertisements
    /// in other nodes' names), replayedBeacon (old advertisements of other nodes sent again),
    /// falseMetric, signatureFailure (its advertisements and FL updates signed wrongly),
    /// keyExpiry or kemDowngrade.
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
    /// For byzantineUpdate: how the chosen participants of spec.target.roundRef poison their
    /// updates to that job (their updates to other jobs stay honest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<ByzantineSpec>,
    /// For falseMetric: factor by which the chosen agents understate their link costs, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub metric_percent: Option<i32>,
    /// For nodeKill: a cascading failure (with target.mode one). The first step kills the
    /// target; each later step,
    /// `interval` after the previous one, kills a live neighbour of the node killed before it
    /// (the node that inherits its traffic), so a failure spreads along the mesh's links.
    /// Every node of the chain is chosen before the first kill, so the blast-radius checks
    /// cover the whole cascade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeSpec>,
}

/// Ordered kills inside one nodeKill experiment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CascadeSpec {
    /// Number of kills in the chain, the first included (2 to 10).
    #[schemars(range(min = 2, max = 10))]
    pub steps: i32,
    /// Time between two kills (1s to 10m).
    #[serde(default = "default_cascade_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('10m')").message("must be between 1s and 10m"))]
    pub interval: String,
}

fn default_cascade_interval() -> String {
    "10s".into()
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
    SignatureFailure,
    KeyRevocation,
}

impl ActionType {
    /// The name as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionType::Partition => "partition",
            ActionType::Latency => "latency",
            ActionType::Loss => "loss",
            ActionType::Corrupt => "corrupt",
            ActionType::NodeKill => "nodeKill",
            ActionType::ByzantineUpdate => "byzantineUpdate",
            ActionType::ForgedBeacon => "forgedBeacon",
            ActionType::ReplayedBeacon => "replayedBeacon",
            ActionType::FalseMetric => "falseMetric",
            ActionType::KeyExpiry => "keyExpiry",
            ActionType::KemDowngrade => "kemDowngrade",
            ActionType::SignatureFailure => "signatureFailure",
            ActionType::KeyRevocation => "keyRevocation",
        }
    }

    /// The faults carried out on a mesh's links by the agents' fault entries.
    pub fn is_link_fault(self) -> bool {
        matches!(
            self,
            ActionType::Partition | ActionType::Latency | ActionType::Loss | ActionType::Corrupt
        )
    }

    /// Link faults and node faults.
    pub fn is_network_or_node_fault(self) -> bool {
        self.is_link_fault() || self == ActionType::NodeKill
    }

    /// Adversarial faults a target acts out in its own protocols, switched on by the agent's
    /// fault executor for the window (no entries in the kernel).
    pub fn is_behaviour_fault(self) -> bool {
        matches!(
            self,
            ActionType::FalseMetric
                | ActionType::ByzantineUpdate
                | ActionType::ForgedBeacon
                | ActionType::ReplayedBeacon
                | ActionType::SignatureFailure
                | ActionType::KemDowngrade
                | ActionType::KeyExpiry
        )
    }

    /// What this release injects.
    pub fn is_supported(self) -> bool {
        self.is_network_or_node_fault() || self.is_behaviour_fault() || self == ActionType::KeyRevocation
    }
}

/// Traffic direction, seen from a chosen node.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    To,
    From,
    #[default]
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

/// keyExpiry: a short endorsement of one target's key.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringEndorsement {
    pub node: String,
    /// The endorsement (its wire encoding, base64), signed by the mesh authority.
    pub endorsement: String,
    /// When it runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<MicroTime>,
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
    /// The MeshNetwork whose agents carry the fault: spec.target.meshRef, or the mesh of the
    /// FLTrainingRound of spec.target.roundRef. Agents act only on experiments of their mesh.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mesh: String,
    /// Nodes the fault was (or, in a dry run, would be) injected into.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<String>,
    /// Per agent, the fault entries it installs while the window is open: the contract between
    /// operator and agents. Agents apply only the entries of their own node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assignments: Vec<NodeAssignment>,
    /// When the current injection window opened (absent before injection and while suspended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub injected_at: Option<MicroTime>,
    /// When the current injection window closes; agents give every entry this expiry in the
    /// kernel, so the fault ends on time with the operator and the agent both dead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<MicroTime>,
    /// Injection time still owed after a suspension (a duration); resuming opens a window this long.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub remaining: String,
    /// Total time the fault has been injected so far, over every window.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub injected_for: String,
    /// When the fault was last reverted, and why: duration, delete, suspend, abort, killSwitch
    /// or roundEnded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revert_cause: String,
    /// Time from injection until the first untargeted agent noticed the fault, by the agents' clocks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_detect: String,
    /// The agent that noticed first, and what it saw.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detected_by: String,
    /// keyRevocation: time from injection (the revocation) until every live untargeted agent
    /// refused the targets' revoked keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_detect_by_all: String,
    /// keyRevocation: the targets' keys the operator revoked for the window (their endorsed
    /// epoch when it opened, and every earlier one). The mesh's revocation list carries them
    /// while the window is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_keys: Vec<crate::mesh_network::RevokedKey>,
    /// keyExpiry: per target, an endorsement of its key by the mesh authority that runs out
    /// shortly after the window opens. The target announces it, so its key expires at every
    /// peer; it then makes a new key, which the operator endorses as usual.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expiring_endorsements: Vec<ExpiringEndorsement>,
    /// Time from injection until every pair of live, untargeted agents had a route avoiding the
    /// targets, by the agents' clocks.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_recover: String,
    /// Time from the revert until the mesh was converged again on routes through every agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_restore: String,
    /// How far apart the clocks behind timeToDetect and timeToRecover can be: the most the
    /// clock of the target whose entries went in first can differ from the clock of any
    /// untargeted agent, from the bounds the agents estimate from their neighbours' hellos
    /// (summed along the tightest path). Each figure is exact to within it. Absent for nodeKill,
    /// whose figures start at the operator's clock.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub clock_skew_bound: String,
    /// Share of pairs of untargeted agents that could reach each other at the last report, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_percent: Option<i32>,
    /// nodeKill: each kill of the experiment (one per target; a cascade's in order), when it
    /// was made and what the mesh did about it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kills: Vec<KillStep>,
    /// byzantineUpdate: what the poisoned updates did to the round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub byzantine: Option<ByzantineStatus>,
    /// Untargeted agents that an untargeted agent accused of lying about their links during
    /// the experiment ("accused (by accuser)"): an honest node wrongly accused. A falseMetric
    /// experiment with any fails.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub false_accusations: Vec<String>,
    /// Passed, Failed or Inconclusive.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict: String,
    /// Why the verdict is what it is: the expectation that failed with the measured value, the
    /// guard that aborted, or what was missing.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verdict_message: String,
}

/// The job a byzantineUpdate experiment attacks, and what the poisoned updates did to it (from
/// the round's records).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ByzantineStatus {
    /// The UID of the FLTrainingRound of spec.target.roundRef when the window opened: the
    /// targets poison only their updates to this job (a job recreated under the same name is
    /// another job).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub round_uid: String,
    /// The attack, its strength and the aggregation rule with its f, as one line.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub attack: String,
    /// Rounds completed when the window opened; rounds after it are attacked.
    #[serde(default)]
    pub rounds_before: i32,
    /// Test accuracy of the global model after round roundsBefore (empty when it is 0: the
    /// initial model was never tested).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accuracy_before: String,
    /// Rounds sealed while the window was open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attacked_rounds: Vec<i32>,
    /// Updates the targets sent in those rounds, and how the aggregation rule treated them.
    #[serde(default)]
    pub target_updates: i32,
    #[serde(default)]
    pub rejected: i32,
    #[serde(default)]
    pub down_weighted: i32,
    #[serde(default)]
    pub accepted: i32,
    /// Rounds the job lost to the attack: it failed while attacked, so the rounds after the
    /// last sealed one were never sealed.
    #[serde(default)]
    pub rounds_lost: i32,
    /// Test accuracy after the last attacked round.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accuracy_after: String,
    /// accuracyAfter minus accuracyBefore, in percentage points (negative: a drop).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub accuracy_change: String,
    /// An honest run to compare with, when the namespace has one: a Completed FLTrainingRound
    /// of the same mesh, model and seed that rejected no update (chosen when the window opened).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference_round: String,
    /// Its accuracy after the same round as accuracyAfter (or its last, if it ran fewer).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference_accuracy: String,
    /// accuracyAfter minus referenceAccuracy, in percentage points.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub change_vs_reference: String,
}

/// One kill of a nodeKill experiment.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KillStep {
    /// Position in the cascade, from 1.
    pub step: i32,
    /// The node whose agent is killed.
    pub node: String,
    /// When the kill is due (injection + (step - 1) × cascade interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<MicroTime>,
    /// When the operator killed it (recorded before the pod is deleted, so a restarted operator
    /// never kills twice).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_at: Option<MicroTime>,
    /// The pod deleted (empty when there was none to delete: see note).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    /// Why the kill could not be made, if it could not.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
    /// Time from the kill until an untargeted agent noticed this node gone.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_detect: String,
    /// Who noticed first, and what it saw.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detected_by: String,
    /// Time from the kill until every pair of live, untargeted agents had a route avoiding the
    /// nodes killed so far.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub time_to_recover: String,
}

/// The fault entries one agent installs.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeAssignment {
    /// The node whose agent installs these entries.
    pub node: String,
    /// One entry per peer whose mesh traffic the fault touches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<FaultEntry>,
}

/// One fault on the mesh traffic between an agent and one peer.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FaultEntry {
    /// The peer's node name.
    pub peer: String,
    /// The peer's address, as its MeshNode record publishes it.
    pub address: String,
    /// Which direction of the traffic with this peer is touched: to, from or both.
    pub direction: Direction,
    /// Drop every packet (partition).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partition: bool,
    /// Share of packets dropped, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_percent: Option<i32>,
    /// Share of packets corrupted, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_percent: Option<i32>,
    /// Delay added to every frame sent to the peer, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_millis: Option<i64>,
    /// Random variation of the delay, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_millis: Option<i64>,
}

/// When an agent first saw one target fail, and how.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetDetection {
    pub node: String,
    pub at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub what: String,
}

/// One experiment as an agent carries it out, in its MeshNode status.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentChaosReport {
    /// The experiment's name.
    pub experiment: String,
    /// The experiment's UID, so a recreated experiment of the same name is told apart.
    pub uid: String,
    /// Whether this agent is one of the targets.
    #[serde(default)]
    pub target: bool,
    /// Entries installed now.
    #[serde(default)]
    pub active_entries: i32,
    /// How the entries are applied: ebpf (the tc classifiers, with the deadline as kernel
    /// expiry), sendPath (frames held back in the agent before they are sent: latency) or
    /// behaviour (the agent acts the fault out in its own protocols: falseMetric; one entry).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mechanism: String,
    /// Why entries could not be installed (for example the eBPF datapath is unavailable).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refused: String,
    /// When this agent installed the entries (its clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<MicroTime>,
    /// When it removed them, and why: deadline, deleted, suspended, killSwitch, aborted,
    /// roundEnded, or kernelExpiry (gone before the agent removed them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted_at: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub revert_cause: String,
    /// The first time, after the window opened, this agent saw a target fail (neighbour lost,
    /// route moved off or withdrawn from a target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_at: Option<MicroTime>,
    /// What it saw then.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detection: String,
    /// The first time, after the window opened, this agent saw each target fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub detections: Vec<TargetDetection>,
    /// Since when this agent's routes have reached every untargeted agent through untargeted
    /// next hops (absent while they do not). Together over all untargeted agents this means
    /// every pair of them has a path avoiding the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avoiding_since: Option<MicroTime>,
    /// The faulty nodes that avoidingSince and reachable account for (for nodeKill, the nodes
    /// killed so far as this agent has seen them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faulty: Vec<String>,
    /// Untargeted agents this agent has a route to through an untargeted next hop.
    #[serde(default)]
    pub reachable: i32,
    /// Untargeted agents other than this one.
    #[serde(default)]
    pub peers: i32,
    /// Untargeted nodes this agent accused of lying about their links (a contradiction or a
    /// quarantine) since the window opened: honest nodes wrongly accused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accused: Vec<String>,
    /// keyRevocation: when this agent first had a session with a target again after it refused
    /// the target's revoked key (the target rejoined with a new, endorsed key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejoined_at: Option<MicroTime>,
}

/// Phases of an experiment.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const INJECTING: &str = "Injecting";
    pub const RECOVERING: &str = "Recovering";
    pub const COMPLETED: &str = "Completed";
    pub const FAILED: &str = "Failed";
    pub const SUSPENDED: &str = "Suspended";
}

/// Why a fault was reverted, in the status and the metrics' `cause` label.
pub mod revert_cause {
    pub const DURATION: &str = "duration";
    pub const DELETE: &str = "delete";
    pub const SUSPEND: &str = "suspend";
    pub const ABORT: &str = "abort";
    pub const KILL_SWITCH: &str = "killSwitch";
    pub const KERNEL_EXPIRY: &str = "kernelExpiry";
    /// byzantineUpdate: the attacked job completed or failed before the deadline.
    pub const ROUND_ENDED: &str = "roundEnded";
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
        for (field, value) in [
            (
                "spec.expectations.maxTimeToDetect",
                &self.expectations.max_time_to_detect,
            ),
            (
                "spec.expectations.maxTimeToRecover",
                &self.expectations.max_time_to_recover,
            ),
            ("spec.abort.recoverAfter", &self.abort.recover_after),
        ] {
            if let Some(Err(why)) = value.as_deref().map(duration::parse) {
                errors.push(FieldError::new(field, why.to_string()));
            }
        }
        if self.target.round_ref.is_some() && self.action.type_ != ActionType::ByzantineUpdate {
            errors.push(FieldError::new(
                "spec.target.roundRef",
                format!(
                    "{} acts on a mesh: set spec.target.meshRef",
                    self.action.type_.as_str()
                ),
            ));
        }
        if self.target.mesh_ref.is_some() && self.action.type_ == ActionType::ByzantineUpdate {
            errors.push(FieldError::new(
                "spec.target.meshRef",
                "byzantineUpdate poisons the updates of one federated job: set spec.target.roundRef",
            ));
        }
        if let Some(cascade) = &self.action.cascade {
            if self.action.type_ != ActionType::NodeKill {
                errors.push(FieldError::new(
                    "spec.action.cascade",
                    "a cascade is a chain of kills: only for type nodeKill",
                ));
            }
            if self.target.mode != TargetMode::One {
                errors.push(FieldError::new(
                    "spec.target.mode",
                    "a cascade starts from one node: mode must be one",
                ));
            }
            if let Err(why) = duration::parse(&cascade.interval) {
                errors.push(FieldError::new("spec.action.cascade.interval", why.to_string()));
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
        let s: ChaosExperimentSpec = serde_norway::from_str(
            "target: {meshRef: {name: demo}, mode: fixedPercent, value: 50}\naction: {type: loss, probabilityPercent: 30}",
        )
        .unwrap();
        assert_eq!(s.duration, "60s");
        assert_eq!(s.action.direction, Direction::Both);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn poisoned_updates_target_a_round_and_mesh_faults_a_mesh() {
        let on_mesh: ChaosExperimentSpec = serde_norway::from_str(
            "target: {meshRef: {name: demo}}\naction: {type: byzantineUpdate, byzantine: {attack: signFlip}}",
        )
        .unwrap();
        assert_eq!(on_mesh.validate().unwrap_err()[0].field, "spec.target.meshRef");
        let on_round: ChaosExperimentSpec = serde_norway::from_str(
            "target: {roundRef: {name: job}}\naction: {type: falseMetric, metricPercent: 5}",
        )
        .unwrap();
        assert_eq!(on_round.validate().unwrap_err()[0].field, "spec.target.roundRef");
    }

    #[test]
    fn jitter_larger_than_delay_is_refused_with_its_field() {
        let s: ChaosExperimentSpec = serde_norway::from_str(
            "target: {meshRef: {name: demo}}\naction: {type: latency, latency: {delay: 10ms, jitter: 20ms}}",
        )
        .unwrap();
        assert_eq!(s.validate().unwrap_err()[0].field, "spec.action.latency.jitter");
    }
}
