//! keyExpiry: the operator lets a target's endorsement run out on purpose. It signs, with the
//! mesh authority, a second endorsement of the key the target holds (same epoch) that ends
//! [`GRACE`] after the window opens; the target announces it like any renewal, every peer
//! admits it in place of the long one, and the key then runs out everywhere at once. The
//! target makes a new key, which the operator endorses as usual, and rejoins.
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use x0tta6bl4_api::chaos::ExpiringEndorsement;
use x0tta6bl4_api::{MeshNetwork, MeshNode};
use x0tta6bl4_crypto::endorsement::Endorsement;
use x0tta6bl4_crypto::{SigningKey, VerifyingKey};

use crate::meshnode::{SKEW, spiffe_id};

/// How long the short endorsement holds after the window opens: time for the target to
/// announce it and the flood to carry it to every agent.
pub const GRACE: u64 = 2;

/// A short endorsement for each target whose record shows its key in use endorsed (a key
/// being rotated is skipped: its new endorsement would outlive the experiment).
pub fn issue(
    authority: &SigningKey,
    mesh: &MeshNetwork,
    namespace: &str,
    records: &[MeshNode],
    targets: &[String],
    now_unix: u64,
) -> Vec<ExpiringEndorsement> {
    let not_after = now_unix + GRACE;
    targets
        .iter()
        .filter_map(|target| {
            let record = records.iter().find(|r| r.spec.node_name == *target)?;
            let epoch = u32::try_from(record.spec.key_epoch).ok()?;
            let endorsed = record.status.as_ref()?.endorsed_epoch?;
            if i64::from(epoch) != endorsed {
                return None;
            }
            let key = VerifyingKey::from_bytes(&STANDARD.decode(&record.spec.public_key).ok()?).ok()?;
            let spiffe = spiffe_id(
                &mesh.spec.identity.trust_domain,
                namespace,
                &record.spec.mesh_name,
                target,
            );
            let endorsement = Endorsement::issue(
                authority,
                &spiffe,
                epoch,
                &key,
                now_unix.saturating_sub(SKEW),
                not_after,
            )
            .ok()?;
            Some(ExpiringEndorsement {
                node: target.clone(),
                endorsement: STANDARD.encode(endorsement.encode().ok()?),
                not_after: Timestamp::from_second(i64::try_from(not_after).ok()?)
                    .ok()
                    .map(MicroTime),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_gets_an_endorsement_of_its_endorsed_key_that_runs_out_after_the_grace() {
        let authority = SigningKey::generate().unwrap();
        let node_key = SigningKey::generate().unwrap();
        let mesh: MeshNetwork = serde_norway::from_str(
            "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNetwork\nmetadata: {name: demo, namespace: ns}\nspec: {}\n",
        )
        .unwrap();
        let record = |node: &str, endorsed: Option<i64>| {
            let mut record: MeshNode = serde_norway::from_str(&format!(
                "apiVersion: x0tta6bl4.io/v1alpha1\nkind: MeshNode\nmetadata: {{name: demo-{node}, namespace: ns}}\nspec: {{meshName: demo, nodeName: {node}, publicKey: {}, keyEpoch: 3}}\n",
                STANDARD.encode(node_key.verifying_key().as_bytes())
            ))
            .unwrap();
            record.status = Some(x0tta6bl4_api::MeshNodeStatus {
                endorsed_epoch: endorsed,
                ..Default::default()
            });
            record
        };
        let records = [record("n1", Some(3)), record("n2", Some(2))];
        let issued = issue(
            &authority,
            &mesh,
            "ns",
            &records,
            &["n1".to_owned(), "n2".to_owned()],
            1_000,
        );
        assert_eq!(
            issued.len(),
            1,
            "n2 is rotating (epoch 3 not endorsed yet): skipped"
        );
        let endorsement = Endorsement::decode(&STANDARD.decode(&issued[0].endorsement).unwrap()).unwrap();
        assert_eq!(endorsement.key_epoch, 3);
        assert_eq!(endorsement.not_after, 1_000 + GRACE);
        assert_eq!(&endorsement.public_key, node_key.verifying_key());
        let mut trust = x0tta6bl4_crypto::endorsement::TrustStore::new(
            "x0tta6bl4.local",
            vec![authority.verifying_key().clone()],
        );
        trust.admit(&endorsement, 1_000).unwrap();
        assert!(
            trust.newest_key(&endorsement.node_id(), 1_000 + GRACE).is_none(),
            "run out"
        );
    }
}
