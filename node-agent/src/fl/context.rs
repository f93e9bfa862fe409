//! What the federated parts share: the agent's identity, trust store and mesh handle, the
//! metrics, the chaos executor's poisoning, the link telemetry, the loopback for updates to
//! itself and the zone rounds it runs ([`FlContext`]).
use std::sync::{Arc, RwLock};

use crate::chaos::behaviour::Poisoning;
use tokio::sync::{mpsc, watch};
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_wire::NodeId;

use super::metrics::FlMetrics;
use super::zone_rounds::ZoneRounds;
use crate::identity;
use crate::identity::CurrentIdentity;
use crate::mesh::{Delivery, MeshHandle};

/// What the federated parts share.
pub struct FlContext {
    pub node_name: String,
    pub self_id: NodeId,
    pub trust_domain: String,
    pub namespace: String,
    pub mesh_name: String,
    pub identity: CurrentIdentity,
    pub trust: Arc<RwLock<TrustStore>>,
    pub mesh: MeshHandle,
    pub metrics: FlMetrics,
    /// A chaos experiment's byzantineUpdate: how this agent poisons its updates.
    pub byzantine_update: watch::Receiver<Option<Poisoning>>,
    /// A chaos experiment's signatureFailure: updates are sent with spoiled signatures.
    pub signature_failure: watch::Receiver<bool>,
    /// This agent's link windows: what it trains on, and the aggregator tests on, for a
    /// linkTelemetry job.
    pub telemetry: crate::links::SharedRecorder,
    /// Test only: delay before each update is sent.
    pub straggle: Option<std::time::Duration>,
    /// Updates of this agent to itself (it is a participant and the aggregator).
    pub loopback: mpsc::Sender<Delivery>,
    /// The zone rounds this agent aggregates (hierarchical jobs).
    pub zone_rounds: ZoneRounds,
}

impl FlContext {
    pub fn node_id(&self, node_name: &str) -> NodeId {
        identity::node_id(&identity::spiffe_id(
            &self.trust_domain,
            &self.namespace,
            &self.mesh_name,
            node_name,
        ))
    }
}
