//! `MeshNode`: the per-node record an agent publishes (endpoint, keys, links), one object per
//! agent so that a thousand agents never write the same object, as Cilium does with CiliumNode.
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::Condition;

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
    doc = "The record one node agent publishes about itself: endpoint, public keys and link state.",
    printcolumn(name = "Mesh", type_ = "string", json_path = ".spec.meshName"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint"),
    printcolumn(name = "Neighbours", type_ = "integer", json_path = ".status.neighbourCount"),
    printcolumn(name = "Routes", type_ = "integer", json_path = ".status.routeCount"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.meshName == oldSelf.meshName && self.nodeName == oldSelf.nodeName").message("meshName and nodeName are immutable"))]
pub struct MeshNodeSpec {
    /// The MeshNetwork this agent belongs to.
    #[schemars(length(min = 1, max = 253))]
    pub mesh_name: String,
    /// The Kubernetes node the agent runs on.
    #[schemars(length(min = 1, max = 253))]
    pub node_name: String,
}

/// What the agent reports.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MeshNodeStatus {
    /// Ready, and EbpfUnavailable when the eBPF datapath could not be loaded.
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
}
