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
///
/// An object deleted since the reconcile read it (404) has no status left to write: that is
/// the end of its reconcile, not a failure to count and retry.
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
    let written = api
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await;
    match written {
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::debug!(%kind, %namespace, %name, "status not written: the object is gone");
            return Ok(());
        }
        other => other.map_err(Error::kube(format!(
            "writing status of {kind} {namespace}/{name}"
        )))?,
    };
    ctx.metrics
        .api_writes
        .with_label_values(&[&format!("{kind}/status")])
        .inc();
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;
    use crate::testing::{self, MockApi};

    /// Any namespaced kind will do: the rule is the writer's, not a reconciler's.
    fn deleted() -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("deleted".into()),
                namespace: Some("ns".into()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    #[tokio::test]
    async fn the_status_of_an_object_deleted_mid_reconcile_is_not_an_error() {
        let (client, api) = MockApi::serve_gone();
        let ctx = testing::context(client);
        apply_status(&ctx, &deleted(), &serde_json::json!({"phase": "Failed"}))
            .await
            .expect("a deleted object's status write ends the reconcile quietly");
        assert_eq!(
            api.write_lines(),
            ["PATCH /api/v1/namespaces/ns/configmaps/deleted/status"]
        );
        let written = ctx
            .metrics
            .api_writes
            .with_label_values(&["ConfigMap/status"])
            .get();
        assert_eq!(written, 0, "a refused write is not counted as written");
    }
}
