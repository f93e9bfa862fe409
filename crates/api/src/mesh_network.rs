//! `MeshNetwork`: which nodes form the mesh, and how it routes, authenticates and heals.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;
use crate::duration::{self, DURATION_PATTERN};
use crate::{FieldError, labels};

/// Desired state of a mesh of node agents.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "x0tta6bl4.io",
    version = "v1alpha1",
    kind = "MeshNetwork",
    plural = "meshnetworks",
    shortname = "mesh",
    category = "x0tta6bl4",
    namespaced,
    status = "MeshNetworkStatus",
    derive = "PartialEq",
    doc = "A self-healing mesh of x0tta6bl4 node agents, secured with post-quantum cryptography.",
    printcolumn(
        name = "Ready Nodes",
        type_ = "string",
        json_path = ".status.readyNodesText",
        description = "Agents ready / nodes selected"
    ),
    printcolumn(
        name = "Converged",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Converged\")].status",
        description = "Whether every agent has a route to every other"
    ),
    printcolumn(
        name = "PQ",
        type_ = "string",
        json_path = ".status.postQuantum",
        description = "Post-quantum policy and algorithms in force"
    ),
    printcolumn(
        name = "Sessions",
        type_ = "string",
        json_path = ".status.peering.sessionsText",
        priority = 1,
        description = "Neighbour sessions up / wanted by the peering rule"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = 1,
        description = "Reason of the Ready condition"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct MeshNetworkSpec {
    /// Labels a node must carry to run an agent of this mesh. Empty selects every node.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations given to the agent pods, so the mesh can span tainted nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// The node agent: its image, resources and ports.
    #[serde(default)]
    pub agent: AgentSpec,

    /// How agents discover neighbours and compute routes.
    #[serde(default)]
    pub routing: RoutingSpec,

    /// Key exchange, signatures and key rotation.
    #[serde(default)]
    pub crypto: CryptoSpec,

    /// Where agent identities come from.
    #[serde(default)]
    pub identity: IdentitySpec,

    /// The eBPF datapath on each node.
    #[serde(default)]
    pub ebpf: EbpfSpec,

    /// Thresholds of the monitor-analyze-plan-execute loop that heals the mesh.
    #[serde(default)]
    pub self_healing: SelfHealingSpec,

    /// Chaos experiments on this mesh.
    #[serde(default)]
    pub chaos: ChaosSpec,
}

/// The node agent that runs on every selected node (a DaemonSet on the host network).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.udpPort != self.tcpPort && self.udpPort != self.metricsPort && self.tcpPort != self.metricsPort").message("udpPort, tcpPort and metricsPort must be three different ports"))]
pub struct AgentSpec {
    /// Container image of the node agent. Empty means the image the operator was installed with,
    /// so upgrading the operator upgrades the agents of meshes that do not pin an image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// When to pull the agent image: Always, IfNotPresent or Never.
    #[serde(default = "default_pull_policy")]
    pub image_pull_policy: PullPolicy,

    /// CPU and memory requests and limits of the agent container.
    #[serde(default = "default_agent_resources")]
    pub resources: ResourceRequirements,

    /// UDP port for hellos and originator messages between agents.
    #[serde(default = "default_udp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub udp_port: i32,

    /// TCP port of the mutually authenticated TLS 1.3 sessions between neighbours.
    #[serde(default = "default_tcp_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub tcp_port: i32,

    /// TCP port on which the agent serves /metrics, /healthz and /readyz.
    #[serde(default = "default_metrics_port")]
    #[schemars(range(min = 1024, max = 65535))]
    pub metrics_port: i32,

    /// Log filter of the agent, in RUST_LOG syntax.
    #[serde(default = "default_log_level")]
    #[schemars(length(min = 1, max = 256))]
    pub log_level: String,
}

impl Default for AgentSpec {
    fn default() -> Self {
        Self {
            image: None,
            image_pull_policy: default_pull_policy(),
            resources: default_agent_resources(),
            udp_port: default_udp_port(),
            tcp_port: default_tcp_port(),
            metrics_port: default_metrics_port(),
            log_level: default_log_level(),
        }
    }
}

/// When the kubelet pulls the agent image.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// The agent image used when neither the MeshNetwork nor the operator's flags name one.
pub const DEFAULT_AGENT_IMAGE: &str = "ghcr.io/x0tta6bl4/node-agent:0.1.0";

fn default_pull_policy() -> PullPolicy {
    PullPolicy::IfNotPresent
}
fn default_agent_resources() -> ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.into())),
            ("memory".to_owned(), Quantity(memory.into())),
        ])
    };
    ResourceRequirements {
        requests: Some(quantities("50m", "32Mi")),
        limits: Some(BTreeMap::from([("memory".to_owned(), Quantity("128Mi".into()))])),
        ..Default::default()
    }
}
fn default_udp_port() -> i32 {
    47100
}
fn default_tcp_port() -> i32 {
    47101
}
fn default_metrics_port() -> i32 {
    47102
}
fn default_log_level() -> String {
    "info".into()
}

/// Neighbour discovery and route computation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.neighbourTimeout) >= duration(self.helloInterval) + duration(self.helloInterval)").message("neighbourTimeout must be at least two helloIntervals, or one lost hello declares a live neighbour dead").field_path(".neighbourTimeout"))]
#[x_kube(validation = Rule::new("duration(self.originatorInterval) >= duration(self.helloInterval)").message("originatorInterval must not be shorter than helloInterval").field_path(".originatorInterval"))]
pub struct RoutingSpec {
    /// How often an agent says hello to each neighbour inside the session (10ms to 10s).
    #[serde(default = "default_hello_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10ms') && duration(self) <= duration('10s')").message("must be between 10ms and 10s"))]
    pub hello_interval: String,

    /// How often an agent floods its signed originator message through the mesh (100ms to 1h).
    #[serde(default = "default_originator_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('100ms') && duration(self) <= duration('1h')").message("must be between 100ms and 1h"))]
    pub originator_interval: String,

    /// Silence after which a neighbour is declared dead and routes avoid it (20ms to 1m).
    #[serde(default = "default_neighbour_timeout")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('20ms') && duration(self) <= duration('1m')").message("must be between 20ms and 1m"))]
    pub neighbour_timeout: String,

    /// Longest route, in hops, that an agent accepts.
    #[serde(default = "default_max_hops")]
    #[schemars(range(min = 1, max = 64))]
    pub max_hops: i32,

    /// Weights of the link metric: cost = loss × lossPercent + rtt × rttMillis + drops × ebpfDropPercent.
    #[serde(default)]
    pub metric_weights: MetricWeights,

    /// Which agents keep sessions with each other: a bounded set per agent, never the whole
    /// mesh (see `PeeringSpec`).
    #[serde(default)]
    pub peering: PeeringSpec,
}

impl Default for RoutingSpec {
    fn default() -> Self {
        Self {
            hello_interval: default_hello_interval(),
            originator_interval: default_originator_interval(),
            neighbour_timeout: default_neighbour_timeout(),
            max_hops: default_max_hops(),
            metric_weights: MetricWeights::default(),
            peering: PeeringSpec::default(),
        }
    }
}

fn default_hello_interval() -> String {
    "100ms".into()
}
fn default_originator_interval() -> String {
    "1s".into()
}
fn default_neighbour_timeout() -> String {
    "300ms".into()
}
fn default_max_hops() -> i32 {
    16
}

/// Bounded peering: each agent keeps sessions with `2 × nearPeers` ring neighbours (members
/// ordered by a hash of their node names) and, on average, `longLinks` long links across the
/// ring; every agent computes the same symmetric graph from the MeshNode records. A mesh of at
/// most `2 × nearPeers + 1` nodes is a full mesh. The rule: `x0tta6bl4_api::peering`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeeringSpec {
    /// Ring neighbours on each side (1 to 16).
    #[serde(default = "default_near_peers")]
    #[schemars(range(min = 1, max = 16))]
    pub near_peers: i32,
    /// Long links per agent on average (0 to 16): shortcuts that keep routes short in a large
    /// mesh.
    #[serde(default = "default_long_links")]
    #[schemars(range(min = 0, max = 16))]
    pub long_links: i32,
}

impl PeeringSpec {
    /// The rule these numbers give (validated ranges; a negative number counts as 0).
    pub fn rule(&self) -> crate::peering::Peering {
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        crate::peering::Peering {
            near_peers: count(self.near_peers),
            long_links: count(self.long_links),
        }
    }
}

impl Default for PeeringSpec {
    fn default() -> Self {
        Self {
            near_peers: default_near_peers(),
            long_links: default_long_links(),
        }
    }
}
fn default_near_peers() -> i32 {
    crate::peering::DEFAULT_NEAR_PEERS as i32
}
fn default_long_links() -> i32 {
    crate::peering::DEFAULT_LONG_LINKS as i32
}

/// Integer weights (0 to 1000) of the components of the link cost.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.loss + self.rtt + self.ebpfDrops > 0").message("at least one metric weight must be positive"))]
pub struct MetricWeights {
    /// Weight of the packet loss percentage measured on hellos.
    #[serde(default = "default_loss_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub loss: i32,
    /// Weight of the round-trip time in milliseconds.
    #[serde(default = "default_rtt_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub rtt: i32,
    /// Weight of the drop percentage counted by the eBPF programs.
    #[serde(default = "default_drop_weight")]
    #[schemars(range(min = 0, max = 1000))]
    pub ebpf_drops: i32,
}

impl Default for MetricWeights {
    fn default() -> Self {
        Self {
            loss: default_loss_weight(),
            rtt: default_rtt_weight(),
            ebpf_drops: default_drop_weight(),
        }
    }
}
fn default_loss_weight() -> i32 {
    10
}
fn default_rtt_weight() -> i32 {
    1
}
fn default_drop_weight() -> i32 {
    10
}

/// Key exchange, signatures and key rotation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.keyOverlap) < duration(self.keyRotationInterval)").message("keyOverlap must be shorter than keyRotationInterval").field_path(".keyOverlap"))]
pub struct CryptoSpec {
    /// Key exchange of neighbour sessions: hybrid X25519 + ML-KEM-768 (TLS 1.3 group X25519MLKEM768).
    #[serde(default = "default_key_exchange")]
    pub key_exchange: KeyExchange,

    /// Signature algorithm of node identities, routing updates and model updates.
    #[serde(default = "default_signature")]
    pub signature: SignatureAlgorithm,

    /// How often each agent replaces its signing key (1m to 720h).
    #[serde(default = "default_key_rotation_interval")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1m') && duration(self) <= duration('720h')").message("must be between 1m and 720h"))]
    pub key_rotation_interval: String,

    /// How long the previous key still verifies after a rotation (0s to 24h).
    #[serde(default = "default_key_overlap")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) <= duration('24h')").message("must be at most 24h"))]
    pub key_overlap: String,

    /// Refuse any peer that does not complete the post-quantum key exchange and authentication.
    #[serde(default = "default_true")]
    pub require_post_quantum: bool,
}

impl Default for CryptoSpec {
    fn default() -> Self {
        Self {
            key_exchange: default_key_exchange(),
            signature: default_signature(),
            key_rotation_interval: default_key_rotation_interval(),
            key_overlap: default_key_overlap(),
            require_post_quantum: true,
        }
    }
}

/// Key exchange algorithms an agent can negotiate.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyExchange {
    /// Hybrid X25519 + ML-KEM-768, as standardised for TLS 1.3.
    X25519MLKEM768,
}

/// Signature algorithms for identities and signed messages.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// ML-DSA-65 (FIPS 204), security category 3.
    #[serde(rename = "ML-DSA-65")]
    MlDsa65,
}

impl KeyExchange {
    pub fn as_str(self) -> &'static str {
        "X25519MLKEM768"
    }
}

impl SignatureAlgorithm {
    pub fn as_str(self) -> &'static str {
        "ML-DSA-65"
    }
}

fn default_key_exchange() -> KeyExchange {
    KeyExchange::X25519MLKEM768
}
fn default_signature() -> SignatureAlgorithm {
    SignatureAlgorithm::MlDsa65
}
fn default_key_rotation_interval() -> String {
    "24h".into()
}
fn default_key_overlap() -> String {
    "10m".into()
}
fn default_true() -> bool {
    true
}

/// Where agent identities come from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySpec {
    /// SPIFFE trust domain of agent identities: spiffe://<trustDomain>/ns/<namespace>/mesh/<mesh>/node/<node>.
    #[serde(default = "default_trust_domain")]
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[a-z0-9._-]+$"))]
    pub trust_domain: String,

    /// Path of a SPIFFE Workload API socket on the node (SPIRE's agent socket). When set, agents
    /// take their X.509-SVIDs from it and present them as their session certificates, and a
    /// session forms only when the peer's SVID, its operator-endorsed ML-DSA-65 key and its
    /// MeshNode name the same SPIFFE ID (docs/IDENTITY.md). The operator endorses each agent's
    /// key with the mesh signing key either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 4096), regex(pattern = r"^/.*"))]
    pub workload_api_socket: Option<String>,

    /// Node keys no agent of the mesh may trust any more, for example the key of a compromised
    /// node. The operator signs the list with the mesh authority (ML-DSA-65) and publishes it
    /// in status.revocation; every agent closes the sessions of a revoked key and refuses its
    /// endorsements, advertisements and model updates. An agent whose key is revoked makes a
    /// new key (the next epoch), which the operator endorses. `x0tta6bl4-operator revoke-key`
    /// adds an entry (docs/IDENTITY.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4096))]
    pub revoked_keys: Vec<RevokedKey>,
}

impl Default for IdentitySpec {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            workload_api_socket: None,
            revoked_keys: Vec::new(),
        }
    }
}

/// A revoked node key: the key of `throughKeyEpoch` and every earlier key of the node.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct RevokedKey {
    /// The Kubernetes node whose agent's key is revoked.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// The key epoch revoked, with every earlier one (the Epoch column of `kubectl get mnode`).
    #[schemars(range(min = 0, max = 4294967295i64))]
    pub through_key_epoch: i64,
    /// Why, for the people reading the list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 256))]
    pub reason: String,
}

/// The peering graph of the reporting agents (`spec.routing.peering` applied to their
/// MeshNode records, as every agent applies it) and how much of it is up.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PeeringStatus {
    /// Agents the graph is computed over (those reporting).
    #[serde(default)]
    pub members: i32,
    /// Sessions the rule wants (pairs of peers).
    #[serde(default)]
    pub wanted_sessions: i32,
    /// Sessions the agents report (each session is reported by both ends and counted once).
    #[serde(default)]
    pub sessions: i32,
    /// "sessions/wanted", for `kubectl get -o wide`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sessions_text: String,
    /// Fewest and most peers an agent has in the graph.
    #[serde(default)]
    pub min_peers: i32,
    #[serde(default)]
    pub max_peers: i32,
    /// Whether every reporting agent can reach every other through the graph.
    #[serde(default)]
    pub connected: bool,
    /// The most hops between two agents in the graph; computed for meshes of at most 1000
    /// agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diameter_hops: Option<i32>,
}

/// The mesh's revocation list as the agents read it.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevocationStatus {
    /// The list signed by the mesh authority (ML-DSA-65), base64: what agents verify and apply.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub list: String,
    /// Grows by one with every change of the list; agents never go back to a lower one.
    #[serde(default)]
    pub serial: i64,
    /// When the operator signed this list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_at: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
    /// The keys it revokes, and who asked: spec.identity.revokedKeys, or a keyRevocation
    /// ChaosExperiment while its window is open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<RevokedKeySource>,
}

/// One revoked key and where the revocation came from.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RevokedKeySource {
    pub node_name: String,
    pub through_key_epoch: i64,
    /// "spec.identity.revokedKeys" or "ChaosExperiment/<name>".
    pub source: String,
}

fn default_trust_domain() -> String {
    "x0tta6bl4.local".into()
}

/// The eBPF datapath.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EbpfSpec {
    /// off: userspace metrics only. tc: tc/clsact programs count per-peer traffic and inject faults.
    #[serde(default = "default_ebpf_mode")]
    pub mode: EbpfMode,
}

impl Default for EbpfSpec {
    fn default() -> Self {
        Self {
            mode: default_ebpf_mode(),
        }
    }
}

/// Whether the agent loads its eBPF programs.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum EbpfMode {
    Off,
    Tc,
}

impl EbpfMode {
    pub fn as_str(self) -> &'static str {
        match self {
            EbpfMode::Off => "off",
            EbpfMode::Tc => "tc",
        }
    }
}

fn default_ebpf_mode() -> EbpfMode {
    EbpfMode::Tc
}

/// Chaos experiments on this mesh.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ChaosSpec {
    /// Kill switch: while true, every agent removes the fault entries of every experiment on
    /// this mesh at once (without waiting for the operator) and no experiment injects; they
    /// wait as Pending and resume with the rest of their window when it is false again.
    #[serde(default)]
    pub paused: bool,
}

/// Thresholds of the self-healing loop.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SelfHealingSpec {
    /// Whether agents act on what they detect (reroute, quarantine, rotate keys) or only report it.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Loss percentage above which a link is degraded, before adaptation to the observed distribution.
    #[serde(default = "default_loss_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub loss_threshold_percent: i32,

    /// Round-trip time above which a link is degraded, before adaptation (1ms to 10s).
    #[serde(default = "default_rtt_threshold")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1ms') && duration(self) <= duration('10s')").message("must be between 1ms and 10s"))]
    pub rtt_threshold: String,

    /// Standard deviations from a link's own moving average that count as an anomaly, in tenths (30 = 3.0σ).
    #[serde(default = "default_anomaly_deci_sigma")]
    #[schemars(range(min = 10, max = 100))]
    pub anomaly_deci_sigma: i32,

    /// Incidents within one window after which a peer is quarantined.
    #[serde(default = "default_quarantine_after")]
    #[schemars(range(min = 1, max = 100))]
    pub quarantine_after: i32,

    /// How long a quarantined peer stays excluded from routing (10s to 24h).
    #[serde(default = "default_quarantine_duration")]
    #[schemars(length(max = 32), regex(pattern = DURATION_PATTERN))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("must be between 10s and 24h"))]
    pub quarantine_duration: String,
}

impl Default for SelfHealingSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            loss_threshold_percent: default_loss_threshold(),
            rtt_threshold: default_rtt_threshold(),
            anomaly_deci_sigma: default_anomaly_deci_sigma(),
            quarantine_after: default_quarantine_after(),
            quarantine_duration: default_quarantine_duration(),
        }
    }
}

fn default_loss_threshold() -> i32 {
    20
}
fn default_rtt_threshold() -> String {
    "200ms".into()
}
fn default_anomaly_deci_sigma() -> i32 {
    30
}
fn default_quarantine_after() -> i32 {
    3
}
fn default_quarantine_duration() -> String {
    "5m".into()
}

/// Observed state of a mesh.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshNetworkStatus {
    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Progressing, Degraded and Converged, in the Kubernetes convention.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Nodes selected for the mesh (the DaemonSet's desired count).
    #[serde(default)]
    pub desired_nodes: i32,
    /// Nodes whose agent is ready.
    #[serde(default)]
    pub ready_nodes: i32,
    /// Nodes running the agent of the current spec.
    #[serde(default)]
    pub updated_nodes: i32,
    /// Agents that published a per-node record (MeshNode).
    #[serde(default)]
    pub reporting_nodes: i32,
    /// "ready/desired", for `kubectl get`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub ready_nodes_text: String,
    /// Post-quantum policy in force, for example "required:X25519MLKEM768/ML-DSA-65".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub post_quantum: String,
    /// Share of ordered agent pairs (a, b) where a reports a route to b, in percent.
    #[serde(default)]
    pub reachable_pairs_percent: i32,
    /// Neighbour sessions with a post-quantum key exchange, summed over the reporting agents.
    #[serde(default)]
    pub pq_sessions: i32,
    /// Neighbour sessions with a classical key exchange, summed over the reporting agents.
    #[serde(default)]
    pub classical_sessions: i32,
    /// The longest time from a neighbour's death to routes avoiding it, among the agents' last reroutes.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reroute_duration: String,
    /// Hash of the rendered agent configuration currently rolled out.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub config_hash: String,
    /// The graph the peering rule gives the reporting agents, and the sessions they report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peering: Option<PeeringStatus>,
    /// The revoked node keys, signed for the agents. Written by the operator's revocation
    /// controller under its own field manager; the mesh reconciler never writes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<RevocationStatus>,
}

/// The spec with its duration strings parsed, for the operator and the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutingTimers {
    pub hello_interval: std::time::Duration,
    pub originator_interval: std::time::Duration,
    pub neighbour_timeout: std::time::Duration,
}

impl MeshNetworkSpec {
    /// Checks what the CRD schema cannot: label syntax of selector keys, the image reference,
    /// resource requests against limits, and (defensively, for objects written before a schema
    /// change) the duration fields. Returns every problem, each naming its field.
    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        for (key, value) in &self.node_selector {
            if let Err(why) = labels::check_key(key) {
                errors.push(FieldError::new(
                    format!("spec.nodeSelector[{key}]"),
                    format!("invalid label key: {why}"),
                ));
            }
            if let Err(why) = labels::check_value(value) {
                errors.push(FieldError::new(
                    format!("spec.nodeSelector[{key}]"),
                    format!("invalid label value: {why}"),
                ));
            }
        }
        if let Some(image) = &self.agent.image
            && let Err(why) = check_image_reference(image)
        {
            errors.push(FieldError::new("spec.agent.image", why));
        }
        check_requests_within_limits(&self.agent.resources, &mut errors);
        let durations = [
            ("spec.routing.helloInterval", &self.routing.hello_interval),
            (
                "spec.routing.originatorInterval",
                &self.routing.originator_interval,
            ),
            ("spec.routing.neighbourTimeout", &self.routing.neighbour_timeout),
            (
                "spec.crypto.keyRotationInterval",
                &self.crypto.key_rotation_interval,
            ),
            ("spec.crypto.keyOverlap", &self.crypto.key_overlap),
            ("spec.selfHealing.rttThreshold", &self.self_healing.rtt_threshold),
            (
                "spec.selfHealing.quarantineDuration",
                &self.self_healing.quarantine_duration,
            ),
        ];
        for (field, text) in durations {
            if let Err(why) = duration::parse(text) {
                errors.push(FieldError::new(field, why.to_string()));
            }
        }
        let mut revoked = std::collections::BTreeSet::new();
        for (i, key) in self.identity.revoked_keys.iter().enumerate() {
            if !revoked.insert(key.node_name.as_str()) {
                errors.push(FieldError::new(
                    format!("spec.identity.revokedKeys[{i}].nodeName"),
                    format!(
                        "node {} is listed twice; keep one entry with the highest throughKeyEpoch",
                        key.node_name
                    ),
                ));
            }
            if u32::try_from(key.through_key_epoch).is_err() {
                errors.push(FieldError::new(
                    format!("spec.identity.revokedKeys[{i}].throughKeyEpoch"),
                    format!("{} is not a key epoch (0 to 4294967295)", key.through_key_epoch),
                ));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The routing timers, parsed. Call after [`Self::validate`] succeeded.
    pub fn routing_timers(&self) -> Result<RoutingTimers, FieldError> {
        let parse = |field: &str, text: &str| {
            duration::parse(text).map_err(|e| FieldError::new(format!("spec.routing.{field}"), e.to_string()))
        };
        Ok(RoutingTimers {
            hello_interval: parse("helloInterval", &self.routing.hello_interval)?,
            originator_interval: parse("originatorInterval", &self.routing.originator_interval)?,
            neighbour_timeout: parse("neighbourTimeout", &self.routing.neighbour_timeout)?,
        })
    }

    /// The spec a minimal object (`spec: {}`) gets from the schema defaults.
    pub fn minimal() -> Self {
        serde_json::from_str("{}").expect("every field has a default")
    }

    /// The post-quantum summary shown in the PQ printer column.
    pub fn post_quantum_summary(&self) -> String {
        let policy = if self.crypto.require_post_quantum {
            "required"
        } else {
            "preferred"
        };
        format!(
            "{policy}:{}/{}",
            self.crypto.key_exchange.as_str(),
            self.crypto.signature.as_str()
        )
    }
}

/// A light check of an OCI image reference: `[registry/]path[:tag][@digest]`, lower-case path.
fn check_image_reference(image: &str) -> Result<(), String> {
    let invalid = |why: &str| Err(format!("'{image}' is not a valid image reference: {why}"));
    if image.chars().any(|c| c.is_whitespace()) {
        return invalid("it contains whitespace");
    }
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let valid_digest = digest.split_once(':').is_some_and(|(alg, hex)| {
            !alg.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
        });
        if !valid_digest {
            return invalid("the digest must look like sha256:<hex>");
        }
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if path.is_empty() || path.starts_with('/') || path.ends_with('/') || path.contains("//") {
        return invalid("the repository path is empty or has an empty component");
    }
    let repository = path.split_once('/').map_or(path, |(first, rest)| {
        // The first component is a registry host when it has a dot, a port, or is localhost.
        if first.contains('.') || first.contains(':') || first == "localhost" {
            rest
        } else {
            path
        }
    });
    let repository_ok = repository
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-' | '/'));
    if !repository_ok {
        return invalid("the repository must be lower case");
    }
    if let Some(tag) = tag {
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !tag_ok {
            return invalid("the tag must be 1 to 128 characters of [A-Za-z0-9_.-]");
        }
    }
    Ok(())
}

fn check_requests_within_limits(resources: &ResourceRequirements, errors: &mut Vec<FieldError>) {
    let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else {
        return;
    };
    for (name, request) in requests {
        let Some(limit) = limits.get(name) else { continue };
        match (quantity_value(&request.0), quantity_value(&limit.0)) {
            (Some(r), Some(l)) if r > l => errors.push(FieldError::new(
                format!("spec.agent.resources.requests.{name}"),
                format!("request {} exceeds the limit {}", request.0, limit.0),
            )),
            (None, _) => errors.push(FieldError::new(
                format!("spec.agent.resources.requests.{name}"),
                format!("'{}' is not a quantity", request.0),
            )),
            (_, None) => errors.push(FieldError::new(
                format!("spec.agent.resources.limits.{name}"),
                format!("'{}' is not a quantity", limit.0),
            )),
            _ => {}
        }
    }
}

/// Parses a Kubernetes quantity into a float, enough to compare a request with a limit.
fn quantity_value(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 13] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (number, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|n| (n, *factor)))
        .unwrap_or((text, 1.0));
    number
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| v * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> MeshNetworkSpec {
        serde_norway::from_str(yaml).expect("fixture parses")
    }

    #[test]
    fn a_minimal_spec_gets_every_default_and_is_valid() {
        let s = spec("{}");
        assert_eq!(s.routing.hello_interval, "100ms");
        assert_eq!(s.agent.udp_port, 47100);
        assert!(s.crypto.require_post_quantum);
        assert_eq!(s.ebpf.mode, EbpfMode::Tc);
        assert_eq!(s.validate(), Ok(()));
        assert_eq!(s.post_quantum_summary(), "required:X25519MLKEM768/ML-DSA-65");
    }

    #[test]
    fn every_schema_invisible_problem_is_reported_with_its_field() {
        let s = spec(
            r#"
nodeSelector: {"Bad Key": "x", "zone": "a b"}
agent:
  image: "Registry.Example/UPPER:tag"
  resources:
    requests: {cpu: "2", memory: "lots"}
    limits: {cpu: "1", memory: "1Gi"}
"#,
        );
        let errors = s.validate().unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"spec.nodeSelector[Bad Key]"), "{errors:?}");
        assert!(fields.contains(&"spec.nodeSelector[zone]"), "{errors:?}");
        assert!(fields.contains(&"spec.agent.image"), "{errors:?}");
        assert!(
            fields.contains(&"spec.agent.resources.requests.cpu"),
            "{errors:?}"
        );
        assert!(
            fields.contains(&"spec.agent.resources.requests.memory"),
            "{errors:?}"
        );
    }

    #[test]
    fn image_references_in_common_forms_are_accepted() {
        for image in [
            "busybox",
            "x0tta6bl4/node-agent:dev",
            "localhost:5000/agent:1.0",
            "ghcr.io/x0tta6bl4/node-agent@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(check_image_reference(image), Ok(()), "{image}");
        }
        assert!(check_image_reference("agent:").is_err());
        assert!(check_image_reference("a//b").is_err());
        assert!(check_image_reference("agent@md5:12").is_err());
    }

    #[test]
    fn quantities_compare_across_suffixes() {
        assert_eq!(quantity_value("500m"), Some(0.5));
        assert_eq!(quantity_value("1Gi"), Some(1_073_741_824.0));
        assert!(quantity_value("128Mi") < quantity_value("1G"));
        assert_eq!(quantity_value("x"), None);
    }

    #[test]
    fn routing_timers_are_parsed_from_the_spec() {
        let s = spec("routing: {helloInterval: 50ms, neighbourTimeout: 150ms}");
        let timers = s.routing_timers().unwrap();
        assert_eq!(timers.hello_interval, std::time::Duration::from_millis(50));
        assert_eq!(timers.neighbour_timeout, std::time::Duration::from_millis(150));
        assert_eq!(timers.originator_interval, std::time::Duration::from_secs(1));
    }
}
