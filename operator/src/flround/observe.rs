//! The reads of one reconcile of a job: only what its [`Stage`] needs, in the order the plan
//! uses them (the mesh first; nothing more when it is missing).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use x0tta6bl4_api::fl_protocol::JOB_LABEL;
use x0tta6bl4_api::{FLTrainingRound, MeshNetwork, MeshNode};

use super::plan::{Observed, Stage};
use crate::context::Context;
use crate::error::{Error, Result};

/// Reads what `stage` needs of job `job` of `namespace`.
pub async fn read(ctx: &Context, job: &FLTrainingRound, namespace: &str, stage: &Stage) -> Result<Observed> {
    if matches!(stage, Stage::Refused(_) | Stage::Finished) {
        return Ok(Observed::default());
    }
    let mesh = &job.spec.mesh_ref.name;
    let found = Api::<MeshNetwork>::namespaced(ctx.client.clone(), namespace)
        .get_metadata_opt(mesh)
        .await
        .map_err(Error::kube(format!("reading MeshNetwork {namespace}/{mesh}")))?
        .is_some();
    if !found {
        return Ok(Observed::default());
    }
    let records = crate::agent_report::mesh_records(ctx, namespace, mesh).await?;
    let mut observed = Observed {
        mesh_found: true,
        ..Observed::default()
    };
    match stage {
        Stage::Selecting => observed.node_labels = node_labels(ctx, &records).await?,
        Stage::Following => observed.round_maps = round_maps(ctx, namespace, &job.name_any()).await?,
        Stage::Refused(_) | Stage::Finished => {}
    }
    observed.records = records;
    Ok(observed)
}

/// The labels of each record's node (a node that does not exist has none).
async fn node_labels(
    ctx: &Context,
    records: &[MeshNode],
) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let mut labels = BTreeMap::new();
    for record in records {
        let node = &record.spec.node_name;
        if let Some(metadata) = nodes
            .get_metadata_opt(node)
            .await
            .map_err(Error::kube(format!("reading Node {node}")))?
        {
            labels.insert(node.clone(), metadata.labels().clone());
        }
    }
    Ok(labels)
}

/// The round ConfigMaps of job `job` (labelled with its name).
async fn round_maps(ctx: &Context, namespace: &str, job: &str) -> Result<Vec<ConfigMap>> {
    Ok(Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("{JOB_LABEL}={job}")))
        .await
        .map_err(Error::kube(format!(
            "listing the round ConfigMaps of {namespace}/{job}"
        )))?
        .items)
}
