//! Enrolment: the node key from the state directory (created on first start), the node's
//! endorsement from its identity source, and the trust store that admits it.
use std::path::Path;
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use x0tta6bl4_crypto::endorsement::TrustStore;
use x0tta6bl4_session::binding::Identity;

use crate::clock::unix_seconds;
use crate::identity::{self, CurrentIdentity, IdentityRequest, IdentitySource};
use crate::rotation::KeyVersion;

/// Who this agent is once enrolled.
pub struct Enrolled {
    pub identity: CurrentIdentity,
    pub trust: Arc<RwLock<TrustStore>>,
    pub key_version: KeyVersion,
}

/// Who is asking to be enrolled.
pub struct Applicant<'a> {
    pub state_dir: &'a Path,
    pub spiffe_id: &'a str,
    pub node_name: &'a str,
    pub trust_domain: &'a str,
    pub node_id: x0tta6bl4_wire::NodeId,
}

/// Loads or creates the node key, obtains its endorsement (this waits as long as the source
/// does: the caller races it against shutdown) and admits it.
pub async fn enrol(applicant: Applicant<'_>, source: &impl IdentitySource) -> anyhow::Result<Enrolled> {
    let state_dir = applicant.state_dir;
    let (stored, created) = identity::load_or_create_node_key(state_dir)
        .with_context(|| format!("node key in {}", state_dir.display()))?;
    tracing::info!(
        state_dir = %state_dir.display(),
        created,
        key_epoch = stored.epoch,
        spiffe_id = %applicant.spiffe_id,
        node_id = %applicant.node_id,
        "node key ready"
    );
    tracing::info!(source = %source.describe(), "obtaining the node's endorsement");
    let material = source
        .obtain(IdentityRequest {
            spiffe_id: applicant.spiffe_id,
            node_name: applicant.node_name,
            public_key: stored.key.verifying_key(),
            key_epoch: stored.epoch,
        })
        .await?;
    let mut trust = TrustStore::new(applicant.trust_domain, material.authorities);
    trust
        .admit(&material.endorsement, unix_seconds())
        .context("this node's own endorsement is not accepted by the mesh authority")?;
    Ok(Enrolled {
        key_version: KeyVersion {
            epoch: stored.epoch,
            created_unix: stored.created_unix,
        },
        identity: CurrentIdentity::new(Identity {
            key: stored.key,
            endorsement: material.endorsement,
        }),
        trust: Arc::new(RwLock::new(trust)),
    })
}
