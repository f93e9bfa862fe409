//! Writes what a plan lists beyond the status: each record sealed in this reconcile, next to
//! its result in the round ConfigMap (before the status that counts it is written).
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use x0tta6bl4_api::fl_protocol::SEALED_KEY;

use super::chain::NewSeal;
use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};

/// Writes every seal of job `job` of `namespace`, in order.
pub async fn write_seals(ctx: &Context, namespace: &str, job: &str, seals: &[NewSeal]) -> Result<()> {
    for seal in seals {
        write_seal(ctx, namespace, seal).await?;
        tracing::info!(%job, round = seal.sealed.round, hash = %seal.sealed.hash, "round sealed into the chain");
    }
    Ok(())
}

async fn write_seal(ctx: &Context, namespace: &str, seal: &NewSeal) -> Result<()> {
    let config_map = &seal.config_map;
    let text = serde_json::to_string(&seal.sealed).map_err(|source| Error::Serialization {
        what: "a sealed round record",
        source,
    })?;
    let patch = serde_json::json!({"data": {SEALED_KEY: text}});
    ctx.metrics.api_writes.with_label_values(&["ConfigMap"]).inc();
    Api::<ConfigMap>::namespaced(ctx.client.clone(), namespace)
        .patch(
            config_map,
            &PatchParams::apply(FIELD_MANAGER),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(Error::kube(format!(
            "sealing round ConfigMap {namespace}/{config_map}"
        )))?;
    Ok(())
}
