//! Admin subcommands for standalone meshes and tests: create a mesh authority, create a node
//! key, endorse a node key. In a cluster the operator plays the authority.
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use x0tta6bl4_crypto::SigningKey;
use x0tta6bl4_crypto::endorsement::Endorsement;
use x0tta6bl4_crypto::keyfile::{self, StoredKey};

use crate::clock::unix_seconds;
use crate::identity::{self, NODE_PUBLIC_KEY_FILE};

pub const AUTHORITY_KEY_FILE: &str = "authority.key";
pub const AUTHORITY_PUBLIC_KEY_FILE: &str = "authority.pub";
/// Endorsements start this long before now, so a peer whose clock is a little behind accepts
/// them.
const CLOCK_SKEW_ALLOWANCE: u64 = 300;

/// `authority init --out DIR`: DIR/authority.key (0600) and DIR/authority.pub. Refuses to
/// replace an existing authority key: every endorsement made with it would stop verifying.
pub fn authority_init(out: &Path) -> anyhow::Result<PathBuf> {
    let key_path = out.join(AUTHORITY_KEY_FILE);
    if key_path.exists() {
        bail!(
            "{} exists; remove it first to make a new authority (every endorsement it made will stop verifying)",
            key_path.display()
        );
    }
    let stored = StoredKey {
        key: SigningKey::generate()?,
        epoch: 1,
        created_unix: unix_seconds(),
    };
    keyfile::save(&key_path, &stored)?;
    let public_path = out.join(AUTHORITY_PUBLIC_KEY_FILE);
    identity::write_public_key(&public_path, stored.key.verifying_key())?;
    Ok(public_path)
}

/// `keys init --state-dir DIR`: the node key (kept if present); returns its public key path.
pub fn keys_init(state_dir: &Path) -> anyhow::Result<PathBuf> {
    identity::load_or_create_node_key(state_dir)
        .with_context(|| format!("node key in {}", state_dir.display()))?;
    Ok(state_dir.join(NODE_PUBLIC_KEY_FILE))
}

/// `endorse ...`: the authority's endorsement of a node key, written 0644 (it is public).
pub fn endorse(args: &crate::cli::EndorseArgs) -> anyhow::Result<Endorsement> {
    let authority = keyfile::load(&args.authority)
        .with_context(|| format!("authority key {}", args.authority.display()))?;
    let public_key = identity::read_public_key(&args.public_key)?;
    if !args.spiffe_id.starts_with("spiffe://") || identity::node_name_of(&args.spiffe_id).is_none() {
        bail!(
            "'{}' is not a node SPIFFE ID (spiffe://<trustDomain>/ns/<namespace>/mesh/<mesh>/node/<nodeName>)",
            args.spiffe_id
        );
    }
    let valid_for = x0tta6bl4_api::duration::parse(&args.valid_for)
        .with_context(|| format!("--valid-for {}", args.valid_for))?;
    let now = unix_seconds();
    let endorsement = Endorsement::issue(
        &authority.key,
        &args.spiffe_id,
        args.epoch,
        &public_key,
        now.saturating_sub(CLOCK_SKEW_ALLOWANCE),
        now.saturating_add(valid_for.as_secs()),
    )?;
    let bytes = endorsement.encode()?;
    fs::write(&args.out, bytes).with_context(|| format!("cannot write {}", args.out.display()))?;
    fs::set_permissions(&args.out, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", args.out.display()))?;
    Ok(endorsement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::EndorseArgs;
    use x0tta6bl4_crypto::endorsement::TrustStore;

    #[test]
    fn an_endorsement_made_by_the_admin_commands_is_admitted_by_a_trust_store_of_that_authority() {
        let dir = std::env::temp_dir().join(format!("x0-agent-admin-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let authority_pub = authority_init(&dir.join("authority")).unwrap();
        assert!(authority_init(&dir.join("authority")).is_err(), "never replaced");
        let node_pub = keys_init(&dir.join("node")).unwrap();
        let spiffe_id = identity::spiffe_id("x0.local", "ns", "ring", "n1");
        let args = EndorseArgs {
            authority: dir.join("authority").join(AUTHORITY_KEY_FILE),
            public_key: node_pub,
            spiffe_id: spiffe_id.clone(),
            epoch: 1,
            valid_for: "1h".to_owned(),
            out: dir.join("n1.endorsement"),
        };
        endorse(&args).unwrap();
        let endorsement = identity::read_endorsement(&args.out).unwrap();
        assert_eq!(endorsement.spiffe_id, spiffe_id);
        let authority = identity::read_public_key(&authority_pub).unwrap();
        let mut trust = TrustStore::new("x0.local", vec![authority]);
        assert!(trust.admit(&endorsement, unix_seconds()).is_ok());
        let bad = EndorseArgs {
            spiffe_id: "node-1".to_owned(),
            ..args
        };
        assert!(endorse(&bad).is_err());
        fs::remove_dir_all(dir).unwrap();
    }
}
