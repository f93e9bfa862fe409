//! `x0tta6bl4-operator revoke-key`: adds a node's key to its mesh's spec.identity.revokedKeys,
//! as `kubectl edit` would, with the epoch read from the node's MeshNode record when none is
//! given. The running operator then signs the list for the agents.
use anyhow::Context as _;
use kube::api::{Api, Patch, PatchParams};
use x0tta6bl4_api::mesh_network::RevokedKey;
use x0tta6bl4_api::{MeshNetwork, MeshNode};

/// `list` with `node` revoked through `epoch`: its entry raised to `epoch` if it had a lower
/// one, added if it had none. `None` when the list already revokes that much.
pub fn with_revoked(list: &[RevokedKey], node: &str, epoch: i64, reason: &str) -> Option<Vec<RevokedKey>> {
    let mut list = list.to_vec();
    match list.iter_mut().find(|key| key.node_name == node) {
        Some(held) if held.through_key_epoch >= epoch => return None,
        Some(held) => {
            held.through_key_epoch = epoch;
            held.reason = reason.to_owned();
        }
        None => list.push(RevokedKey {
            node_name: node.to_owned(),
            through_key_epoch: epoch,
            reason: reason.to_owned(),
        }),
    }
    Some(list)
}

/// What the command was asked.
pub struct Request<'a> {
    pub namespace: Option<&'a str>,
    pub mesh: &'a str,
    pub node: &'a str,
    pub epoch: Option<i64>,
    pub reason: &'a str,
}

/// Revokes the key and says what it did.
pub async fn revoke(request: Request<'_>) -> anyhow::Result<String> {
    let client = kube::Client::try_default()
        .await
        .context("cannot build a Kubernetes client (KUBECONFIG or in-cluster)")?;
    let namespace = request.namespace.unwrap_or(client.default_namespace()).to_owned();
    let meshes: Api<MeshNetwork> = Api::namespaced(client.clone(), &namespace);
    let mesh = meshes
        .get(request.mesh)
        .await
        .with_context(|| format!("reading MeshNetwork {namespace}/{}", request.mesh))?;
    let epoch = match request.epoch {
        Some(epoch) => epoch,
        None => {
            let record = format!("{}-{}", request.mesh, request.node);
            let node = Api::<MeshNode>::namespaced(client.clone(), &namespace)
                .get(&record)
                .await
                .with_context(|| {
                    format!(
                        "reading MeshNode {namespace}/{record} for the node's key epoch (or give --epoch)"
                    )
                })?;
            node.status.and_then(|s| s.endorsed_epoch).with_context(|| {
                format!("MeshNode {namespace}/{record} has no endorsed key epoch; give --epoch")
            })?
        }
    };
    anyhow::ensure!(
        u32::try_from(epoch).is_ok(),
        "--epoch {epoch} is not a key epoch (0 to 4294967295)"
    );
    let Some(list) = with_revoked(
        &mesh.spec.identity.revoked_keys,
        request.node,
        epoch,
        request.reason,
    ) else {
        return Ok(format!(
            "the key epochs of node {} up to {epoch} are revoked already in MeshNetwork {namespace}/{}",
            request.node, request.mesh
        ));
    };
    // The resourceVersion makes the write fail rather than lose someone else's change.
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": mesh.metadata.resource_version },
        "spec": { "identity": { "revokedKeys": list } },
    });
    meshes
        .patch(request.mesh, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| {
            format!(
                "writing spec.identity.revokedKeys of MeshNetwork {namespace}/{}",
                request.mesh
            )
        })?;
    Ok(format!(
        "revoked the key epochs of node {} up to {epoch} in MeshNetwork {namespace}/{}; `kubectl get meshnetwork {} -o jsonpath='{{.status.revocation.serial}}'` shows the list the agents apply",
        request.node, request.mesh, request.mesh
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str, epoch: i64) -> RevokedKey {
        RevokedKey {
            node_name: node.to_owned(),
            through_key_epoch: epoch,
            reason: String::new(),
        }
    }

    #[test]
    fn a_node_is_added_once_and_only_ever_raised() {
        let added = with_revoked(&[key("n1", 2)], "n2", 4, "stolen").unwrap();
        assert_eq!(added.len(), 2);
        assert_eq!(added[1].reason, "stolen");
        let raised = with_revoked(&added, "n1", 3, "again").unwrap();
        assert_eq!(raised[0].through_key_epoch, 3);
        assert_eq!(
            with_revoked(&raised, "n1", 3, ""),
            None,
            "already revoked that far"
        );
        assert_eq!(with_revoked(&raised, "n1", 1, ""), None, "never lowered");
    }
}
