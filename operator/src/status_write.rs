//! Writes a custom resource's status with server-side apply under the operator's one field
//! manager: shared by every reconciler.
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Context, FIELD_MANAGER};
use crate::error::{Error, Result};

/// Writes `status` to the status subresource of `object` with server-side apply.
pub async fn apply_status<K, S>(ctx: &Context, object: &K, status: &S) -> Result<()>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let kind = K::kind(&());
    let namespace = object
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = object
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("metadata.name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(Error::kube(format!(
        "writing status of {kind} {namespace}/{name}"
    )))?;
    ctx.metrics
        .api_writes
        .with_label_values(&[&format!("{kind}/status")])
        .inc();
    Ok(())
}
