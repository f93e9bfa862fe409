//! What an agent reports in its MeshNode record, as the reconcilers read it: which agents are
//! alive (they heartbeat every 30 s) and what they say about their routes and sessions. Shared
//! by the MeshNetwork, FLTrainingRound and ChaosExperiment reconcilers.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use x0tta6bl4_api::MeshNode;

use crate::context::Context;
use crate::error::{Error, Result};

/// The MeshNode records of one mesh (by the field selector spec.meshName).
pub async fn mesh_records(ctx: &Context, namespace: &str, mesh: &str) -> Result<Vec<MeshNode>> {
    Ok(Api::<MeshNode>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().fields(&format!("spec.meshName={mesh}")))
        .await
        .map_err(Error::kube(format!(
            "listing the MeshNode records of {namespace}/{mesh}"
        )))?
        .items)
}

/// One agent's report, as far as the mesh's status needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentReport {
    pub route_count: i32,
    pub pq_sessions: i32,
    pub classical_sessions: i32,
    pub last_reroute: Option<std::time::Duration>,
}

/// A record whose agent has not written for this long belongs to a dead agent (agents
/// heartbeat every 30 s).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(90);

impl AgentReport {
    /// The report of a live agent, or `None` when the record is a dead agent's (no report yet,
    /// or silent for longer than [`STALE_AFTER`] at `now`).
    pub fn from_record(record: &x0tta6bl4_api::MeshNode, now: &Time) -> Option<Self> {
        let status = record.status.clone().unwrap_or_default();
        let reported = status.last_report_time.as_ref()?;
        let silent = now.0.duration_since(reported.0);
        if silent > k8s_openapi::jiff::SignedDuration::try_from(STALE_AFTER).ok()? {
            return None;
        }
        Some(Self {
            route_count: status.route_count,
            pq_sessions: status.pq_sessions,
            classical_sessions: status.classical_sessions,
            last_reroute: x0tta6bl4_api::duration::parse(&status.last_reroute_duration).ok(),
        })
    }
}
