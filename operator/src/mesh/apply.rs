//! Applies desired children with server-side apply, skipping those already as desired, so that
//! reconciling an unchanged mesh makes no mutating API call.
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::build::desired_hash;
use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};

/// The live object after apply, and whether a write was needed.
pub struct Applied<K> {
    pub object: K,
    pub written: bool,
}

/// Applies `desired` unless the live object already carries its desired hash. The hash covers
/// the owner reference too, so a child left by a deleted namesake is taken over and rewritten.
pub async fn apply_child<K>(ctx: &Context, desired: &K) -> Result<Applied<K>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let kind = K::kind(&());
    let namespace = desired
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = desired
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let live = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading {kind} {namespace}/{name}")))?;
    if let Some(live) = live
        && live.meta().deletion_timestamp.is_none()
        && desired_hash(&live) == desired_hash(desired)
    {
        return Ok(Applied {
            object: live,
            written: false,
        });
    }
    let object = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(desired),
        )
        .await
        .map_err(Error::kube(format!("applying {kind} {namespace}/{name}")))?;
    ctx.metrics.api_writes.with_label_values(&[kind.as_ref()]).inc();
    tracing::info!(%kind, %namespace, %name, "applied");
    Ok(Applied {
        object,
        written: true,
    })
}
