//! The mesh authority: one ML-DSA-65 key pair per MeshNetwork, kept in a Secret the operator
//! creates once and never rewrites (a new key would orphan every endorsement). Its public half
//! goes into the agents' configuration as their only trust anchor.
use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};
use x0tta6bl4_api::MeshNetwork;
use x0tta6bl4_crypto::SigningKey;

use super::build::{MANAGED_BY, MESH_LABEL};
use crate::context::Context;
use crate::error::{Error, Result};

const PUBLIC: &str = "authority.pub";
const SECRET: &str = "authority.key";

pub fn secret_name(mesh: &str) -> String {
    format!("{mesh}-mesh-authority")
}

/// Reads the mesh authority, creating it on first use.
pub async fn ensure(ctx: &Context, mesh: &MeshNetwork) -> Result<SigningKey> {
    let namespace = mesh
        .namespace()
        .ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    let name = secret_name(&mesh.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    if let Some(secret) = api
        .get_opt(&name)
        .await
        .map_err(Error::kube(format!("reading Secret {namespace}/{name}")))?
    {
        return parse(&secret)
            .map_err(|reason| Error::Authority(format!("Secret {namespace}/{name}: {reason}")));
    }
    let key = SigningKey::generate().map_err(|e| Error::Authority(e.to_string()))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_owned(), MANAGED_BY.to_owned()),
                (MESH_LABEL.to_owned(), mesh.name_any()),
            ])),
            owner_references: Some(vec![
                mesh.controller_owner_ref(&())
                    .ok_or(Error::MissingObjectKey("metadata.uid"))?,
            ]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        immutable: Some(true),
        data: Some(BTreeMap::from([
            (
                PUBLIC.to_owned(),
                ByteString(key.verifying_key().as_bytes().to_vec()),
            ),
            (SECRET.to_owned(), ByteString(key.secret_bytes().to_vec())),
        ])),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            ctx.metrics.api_writes.with_label_values(&["Secret"]).inc();
            tracing::info!(%namespace, secret = %name, "created the mesh authority");
            Ok(key)
        }
        // Another writer (a previous leader) won the race: use its key, never ours.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let secret = api
                .get(&name)
                .await
                .map_err(Error::kube(format!("reading Secret {namespace}/{name}")))?;
            parse(&secret).map_err(|reason| Error::Authority(format!("Secret {namespace}/{name}: {reason}")))
        }
        Err(error) => Err(Error::kube(format!("creating Secret {namespace}/{name}"))(error)),
    }
}

fn parse(secret: &Secret) -> Result<SigningKey, String> {
    let data = secret.data.as_ref().ok_or("has no data")?;
    let field = |key: &str| {
        data.get(key)
            .map(|b| b.0.as_slice())
            .ok_or(format!("has no {key}"))
    };
    SigningKey::from_parts(field(PUBLIC)?, field(SECRET)?).map_err(|e| e.to_string())
}

/// The public key as the agents' configuration carries it.
pub fn public_key_base64(key: &SigningKey) -> String {
    STANDARD.encode(key.verifying_key().as_bytes())
}
