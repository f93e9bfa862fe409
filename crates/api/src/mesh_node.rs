//! `MeshNode`: the per-node record an agent publishes (endpoint, keys, links), one object per
//! agent so that a thousand agents never write the same object, as Cilium does with CiliumNode.
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

/// Label naming the mesh on every child of a MeshNetwork and on its MeshNode records (the
/// agent sets it on its record; the operator selects by it).
pub const MESH_LABEL: &str = "x0tta6bl4.io/mesh";

/// Identity of one agent in one mesh.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "x0tta6bl4.io",
    version = "v1alpha1",
    kind = "MeshNode",
    plural = "meshnodes",
    shortname = "mnode",
    category = "x0tta6bl4",
    namespaced,
    status = "MeshNodeStatus",
    derive = "PartialEq",
    selectable = ".spec.meshName",
    selectable = ".spec.nodeName",
    doc = "The record one node agent publishes about itself: endpoint, public keys and link state.",
    printcolumn(name = "Mesh", type_ = "string", json_path = ".spec.meshName"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Neighbours", type_ = "integer", json_path = ".status.neighbourCount"),
    printcolumn(name = "Routes", type_ = "integer", json_path = ".status.routeCount"),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.endorsedEpoch",
        description = "Key epoch endorsed by the mesh authority"
    ),
    printcolumn(
        name = "eBPF Packets",
        type_ = "integer",
        json_path = ".status.ebpfPackets",
        description = "Mesh packets to and from the neighbours counted by the eBPF datapath (two significant digits)",
        priority = 1
    ),
    printcolumn(
        name = "eBPF Drops",
        type_ = "integer",
        json_path = ".status.ebpfDrops",
        description = "Mesh packets the eBPF datapath dropped by injected faults (two significant digits)",
        priority = 1
    ),
    printcolumn(
        name = "SPIFFE ID",
        type_ = "string",
        json_path = ".status.spiffeId",
        priority = 1
    ),
    printcolumn(
        name = "SVID Expiry",
        type_ = "string",
        json_path = ".status.svidExpiry",
        description = "When the agent's X.509-SVID expires (meshes that take identities from SPIFFE)",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.meshName == oldSelf.meshName && self.nodeName == oldSelf.nodeName").message("meshName and nodeName are immutable"))]
#[x_kube(validation = Rule::new("self.keyEpoch >= oldSelf.keyEpoch").message("keyEpoch never goes back").field_path(".keyEpoch"))]
pub struct MeshNodeSpec {
    /// The MeshNetwork this agent belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub mesh_name: String,
    /// The Kubernetes node the agent runs on.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
    /// The agent's ML-DSA-65 public key (1952 bytes), base64. The operator endorses it with the
    /// mesh authority once the API server has checked that the writer runs on nodeName.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 2700), regex(pattern = r"^[A-Za-z0-9+/]*={0,2}$"))]
    pub public_key: String,
    /// Epoch of that key; it grows by one at every rotation.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub key_epoch: i64,
}

/// What the agent reports.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshNodeStatus {
    /// Ready; EbpfUnavailable when the eBPF datapath could not be loaded; SvidValid in meshes
    /// that take identities from SPIFFE.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Address and ports neighbours connect to, "ip:udpPort/tcpPort".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    /// SPIFFE ID of the agent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub spiffe_id: String,
    /// Neighbours with a live session.
    #[serde(default)]
    pub neighbour_count: i32,
    /// Destinations with a route.
    #[serde(default)]
    pub route_count: i32,
    /// Sessions whose key exchange was X25519MLKEM768.
    #[serde(default)]
    pub pq_sessions: i32,
    /// Sessions with a classical key exchange (only where the mesh does not require PQ).
    #[serde(default)]
    pub classical_sessions: i32,
    /// Neighbours with their link quality.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<NeighbourStatus>,
    /// Mesh packets to and from the listed neighbours counted by the eBPF datapath: the sum of
    /// their ebpfTxPackets and ebpfRxPackets, rounded down to two significant digits. Absent
    /// when the datapath does not run (see condition EbpfUnavailable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ebpf_packets: Option<i64>,
    /// Mesh packets to and from the listed neighbours the eBPF datapath dropped (injected
    /// faults), rounded down to two significant digits. Absent when the datapath does not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ebpf_drops: Option<i64>,
    /// Peers this agent quarantined (node names or IDs), with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quarantined: Vec<String>,
    /// Age of the signing key in use.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_age: String,
    /// The notAfter of the X.509-SVID this agent presents (meshes that take identities from
    /// SPIFFE; see condition SvidValid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svid_expiry: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When the agent last wrote this status. It writes at least every 30 s, so the operator
    /// counts a record silent for longer than 90 s as a dead agent's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_report_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// When every other reporting agent last became reachable from this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_convergence_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// Time from the last neighbour death this agent saw until its routes avoided it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub last_reroute_duration: String,
    /// When this agent's route table last changed (a next hop moved, a route came or went).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_route_change_time: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>,
    /// The chaos experiments this agent takes part in: what it installed and removed, and what
    /// it saw of the fault.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chaos: Vec<crate::chaos::AgentChaosReport>,
    /// The serial of the mesh's revocation list this agent verified and applies (absent before
    /// the mesh had one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_serial: Option<i64>,
    /// The mesh authority's endorsement of spec.publicKey at spec.keyEpoch (written by the operator).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endorsement: String,
    /// Key epoch the endorsement covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endorsed_epoch: Option<i64>,
    /// Until when the endorsement holds (RFC 3339).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endorsed_until: String,
}

/// One neighbour as an agent sees it.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NeighbourStatus {
    /// The neighbour's node name (or node ID when unknown).
    pub node: String,
    /// Link cost used by routing (256 is a perfect link).
    pub cost: i64,
    /// Smoothed round-trip time in microseconds.
    pub rtt_micros: i64,
    /// Hello loss over the recent window, in percent.
    pub loss_percent: i32,
    /// Key exchange group of the session.
    pub key_exchange: String,
    /// Mesh packets sent to this neighbour that the eBPF datapath counted (on every interface
    /// it is attached to) since the agent started, rounded down to two significant digits so
    /// that the record is not rewritten for every packet. Absent when the datapath does not run
    /// or has not seen this neighbour's traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ebpf_tx_packets: Option<i64>,
    /// Mesh packets received from this neighbour that the eBPF datapath counted; as
    /// ebpfTxPackets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ebpf_rx_packets: Option<i64>,
    /// Mesh packets to or from this neighbour that the eBPF datapath dropped because of an
    /// injected fault (loss or partition); as ebpfTxPackets. They also raise the link's cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub ebpf_drops: Option<i64>,
    /// The most this neighbour's clock can differ from this agent's, in microseconds: from the
    /// neighbour's last hello, stamped by its wall clock, and the link's round-trip time.
    /// Chaos measurements that subtract times from two nodes are exact to within the sum of
    /// these bounds along a path between them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub clock_bound_micros: Option<i64>,
}

/// The body of a server-side apply of a MeshNode's status: the fields `status` sets are the
/// ones the applying field manager owns afterwards (those it leaves out, it gives up).
fn status_apply_patch(status: &impl Serialize) -> serde_json::Value {
    use kube::Resource;
    serde_json::json!({
        "apiVersion": MeshNode::api_version(&()),
        "kind": MeshNode::kind(&()),
        "status": status,
    })
}

impl MeshNodeStatus {
    /// The body of the agent's server-side apply of this status.
    pub fn apply_patch(&self) -> serde_json::Value {
        status_apply_patch(self)
    }
}

/// The fields of a MeshNode's status the operator owns: its endorsement of the node key. Applied
/// on their own, so the operator never claims a field the agent reports.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndorsementStatus {
    pub endorsement: String,
    pub endorsed_epoch: i64,
    pub endorsed_until: String,
}

impl EndorsementStatus {
    /// The body of the operator's server-side apply.
    pub fn apply_patch(&self) -> serde_json::Value {
        status_apply_patch(self)
    }
}
