//! Who this agent is: its ML-DSA-65 node key (a 0600 key file in the state directory, created
//! on first start), its SPIFFE ID and NodeId, and where its endorsement and the mesh
//! authority's key come from ([`IdentitySource`]: files in standalone mode; the MeshNode
//! record in a cluster).
//!
//! Key material is never logged: `SigningKey`'s `Debug` redacts the secret half, and nothing
//! here formats key bytes.
use std::fs;
use std::future::Future;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use x0tta6bl4_crypto::endorsement::Endorsement;
use x0tta6bl4_crypto::keyfile::{self, StoredKey};
use x0tta6bl4_crypto::{SigningKey, VerifyingKey};
use x0tta6bl4_session::binding::Identity;

/// The node key inside the state directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// The node's raw public key, next to it (what `endorse --public-key` reads).
pub const NODE_PUBLIC_KEY_FILE: &str = "node.pub";
/// Key epoch of a freshly created key.
pub const FIRST_EPOCH: u32 = 1;

/// Why the identity could not be set up. Messages name files and reasons, never key bytes.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Crypto(#[from] x0tta6bl4_crypto::Error),
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("the endorsement does not match this node: {0}")]
    Mismatch(String),
    #[error("identity source: {0}")]
    Source(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `spiffe://<trustDomain>/ns/<namespace>/mesh/<mesh>/node/<nodeName>`.
pub fn spiffe_id(trust_domain: &str, namespace: &str, mesh: &str, node_name: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/mesh/{mesh}/node/{node_name}")
}

/// The prefix every SPIFFE ID of the same mesh starts with.
pub fn mesh_prefix(trust_domain: &str, namespace: &str, mesh: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/mesh/{mesh}/node/")
}

/// The node name at the end of a SPIFFE ID of ours (`None` for another shape).
pub fn node_name_of(spiffe_id: &str) -> Option<&str> {
    spiffe_id
        .rsplit_once("/node/")
        .map(|(_, name)| name)
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// The mesh NodeId of a SPIFFE ID.
pub fn node_id(spiffe_id: &str) -> x0tta6bl4_wire::NodeId {
    x0tta6bl4_crypto::node_id_for(spiffe_id)
}

/// Loads the node key from `state_dir`, creating it (epoch 1) if there is none. Returns the
/// key and whether it was created now. The public key file is (re)written next to it.
pub fn load_or_create_node_key(state_dir: &Path) -> Result<(StoredKey, bool), IdentityError> {
    let path = state_dir.join(NODE_KEY_FILE);
    let (stored, created) = if path.exists() {
        (keyfile::load(&path)?, false)
    } else {
        let stored = StoredKey {
            key: SigningKey::generate()?,
            epoch: FIRST_EPOCH,
            created_unix: crate::clock::unix_seconds(),
        };
        keyfile::save(&path, &stored)?;
        (stored, true)
    };
    write_public_key(&state_dir.join(NODE_PUBLIC_KEY_FILE), stored.key.verifying_key())?;
    Ok((stored, created))
}

/// Writes a raw public key (0644: it is public), replacing the file.
pub fn write_public_key(path: &Path, key: &VerifyingKey) -> Result<(), IdentityError> {
    let temporary = path.with_extension("pub.tmp");
    let _ = fs::remove_file(&temporary);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&temporary)
        .map_err(io_error(&temporary))?;
    file.write_all(key.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_error(&temporary))?;
    fs::rename(&temporary, path).map_err(io_error(path))
}

/// Reads a raw ML-DSA-65 public key file.
pub fn read_public_key(path: &Path) -> Result<VerifyingKey, IdentityError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| IdentityError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Reads an endorsement file (the bytes of `Endorsement::encode`).
pub fn read_endorsement(path: &Path) -> Result<Endorsement, IdentityError> {
    let bytes = fs::read(path).map_err(io_error(path))?;
    Endorsement::decode(&bytes).map_err(|e| IdentityError::Invalid {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// What the agent asks its identity source for.
#[derive(Debug, Clone, Copy)]
pub struct IdentityRequest<'a> {
    pub spiffe_id: &'a str,
    pub node_name: &'a str,
    pub public_key: &'a VerifyingKey,
    /// Epoch of the key in the key file.
    pub key_epoch: u32,
}

/// The trust this agent runs with: its own endorsement and the authority keys that endorse
/// every node key it accepts.
#[derive(Debug, Clone)]
pub struct TrustMaterial {
    pub endorsement: Endorsement,
    pub authorities: Vec<VerifyingKey>,
}

/// Where the endorsement of this node's key, and the mesh authority's key, come from.
///
/// `obtain` may wait as long as it needs (a cluster source publishes the public key in the
/// node's MeshNode record and waits for the operator to endorse it); the agent is not ready
/// until it returns, and a shutdown cancels it.
pub trait IdentitySource: Send + Sync {
    /// Where it looks, for logs.
    fn describe(&self) -> String;
    /// The endorsement of `request.public_key` for `request.spiffe_id`, and the authority keys.
    fn obtain(
        &self,
        request: IdentityRequest<'_>,
    ) -> impl Future<Output = Result<TrustMaterial, IdentityError>> + Send;
    /// The endorsement of a rotated key: waits until one exists (the caller bounds the wait).
    fn renew(
        &self,
        request: IdentityRequest<'_>,
    ) -> impl Future<Output = Result<TrustMaterial, IdentityError>> + Send {
        self.obtain(request)
    }
}

/// How often a standalone agent looks for the endorsement of its rotated key.
const ENDORSEMENT_FILE_POLL: Duration = Duration::from_millis(200);

/// Standalone mode: both from files.
#[derive(Debug, Clone)]
pub struct FileIdentity {
    pub endorsement_file: PathBuf,
    pub authority_public_key_file: PathBuf,
}

impl IdentitySource for FileIdentity {
    fn describe(&self) -> String {
        format!(
            "files (endorsement {}, authority key {})",
            self.endorsement_file.display(),
            self.authority_public_key_file.display()
        )
    }

    /// Standalone, whoever holds the authority key (`endorse`) rewrites the endorsement file
    /// for the new key; a file that does not cover it yet, or is being rewritten, is read again.
    async fn renew(&self, request: IdentityRequest<'_>) -> Result<TrustMaterial, IdentityError> {
        loop {
            if let Ok(endorsement) = read_endorsement(&self.endorsement_file)
                && check_endorsement(&endorsement, &request).is_ok()
            {
                return self.obtain(request).await;
            }
            tokio::time::sleep(ENDORSEMENT_FILE_POLL).await;
        }
    }

    async fn obtain(&self, request: IdentityRequest<'_>) -> Result<TrustMaterial, IdentityError> {
        let endorsement = read_endorsement(&self.endorsement_file)?;
        check_endorsement(&endorsement, &request)?;
        let authority = read_public_key(&self.authority_public_key_file)?;
        Ok(TrustMaterial {
            endorsement,
            authorities: vec![authority],
        })
    }
}

/// No source configured: the agent stays up (probes and metrics answer) but never becomes
/// ready, until a source is wired in.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unconfigured;

impl IdentitySource for Unconfigured {
    fn describe(&self) -> String {
        "none (pass --endorsement-file and --authority-public-key)".to_owned()
    }

    async fn obtain(&self, _: IdentityRequest<'_>) -> Result<TrustMaterial, IdentityError> {
        std::future::pending().await
    }
}

/// An endorsement must name this node and this key (the authority's signature is checked
/// when the trust store admits it).
pub fn check_endorsement(
    endorsement: &Endorsement,
    request: &IdentityRequest<'_>,
) -> Result<(), IdentityError> {
    if endorsement.spiffe_id != request.spiffe_id {
        return Err(IdentityError::Mismatch(format!(
            "it endorses {}, this node is {}",
            endorsement.spiffe_id, request.spiffe_id
        )));
    }
    if &endorsement.public_key != request.public_key {
        return Err(IdentityError::Mismatch(
            "it endorses another public key than the one in the state directory".to_owned(),
        ));
    }
    if endorsement.key_epoch != request.key_epoch {
        return Err(IdentityError::Mismatch(format!(
            "it endorses key epoch {}, the key in the state directory is epoch {}",
            endorsement.key_epoch, request.key_epoch
        )));
    }
    Ok(())
}

/// The identity new sessions bind with and advertisements are signed with; replaced as a
/// whole on rotation, so a reader never sees a key with another key's endorsement.
#[derive(Clone)]
pub struct CurrentIdentity(Arc<RwLock<Arc<Identity>>>);

impl CurrentIdentity {
    pub fn new(identity: Identity) -> Self {
        CurrentIdentity(Arc::new(RwLock::new(Arc::new(identity))))
    }

    pub fn get(&self) -> Arc<Identity> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn replace(&self, identity: Identity) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(identity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    pub(crate) fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("x0-agent-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn spiffe_ids_name_the_mesh_and_the_node() {
        let id = spiffe_id("x0.local", "ns1", "demo", "node-a");
        assert_eq!(id, "spiffe://x0.local/ns/ns1/mesh/demo/node/node-a");
        assert!(id.starts_with(&mesh_prefix("x0.local", "ns1", "demo")));
        assert_eq!(node_name_of(&id), Some("node-a"));
        assert_eq!(node_name_of("spiffe://x/y"), None);
    }

    #[test]
    fn the_node_key_is_created_once_with_mode_0600_and_kept() {
        let dir = temp_dir("nodekey");
        let (first, created) = load_or_create_node_key(&dir).unwrap();
        assert!(created);
        let mode = fs::metadata(dir.join(NODE_KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (second, created) = load_or_create_node_key(&dir).unwrap();
        assert!(!created);
        assert_eq!(first.key.verifying_key(), second.key.verifying_key());
        assert_eq!(
            &read_public_key(&dir.join(NODE_PUBLIC_KEY_FILE)).unwrap(),
            first.key.verifying_key()
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_endorsement_of_another_node_or_key_is_refused() {
        let authority = SigningKey::generate().unwrap();
        let node = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let id = spiffe_id("td", "ns", "m", "a");
        let endorsement = Endorsement::issue(&authority, &id, 1, node.verifying_key(), 0, 10).unwrap();
        let request = IdentityRequest {
            spiffe_id: &id,
            node_name: "a",
            public_key: node.verifying_key(),
            key_epoch: 1,
        };
        assert!(check_endorsement(&endorsement, &request).is_ok());
        let other_node = spiffe_id("td", "ns", "m", "b");
        let wrong_node = IdentityRequest {
            spiffe_id: &other_node,
            ..request
        };
        assert!(matches!(
            check_endorsement(&endorsement, &wrong_node),
            Err(IdentityError::Mismatch(_))
        ));
        let wrong_key = IdentityRequest {
            public_key: other.verifying_key(),
            ..request
        };
        assert!(check_endorsement(&endorsement, &wrong_key).is_err());
    }
}
