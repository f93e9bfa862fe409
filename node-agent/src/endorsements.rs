//! The endorsements this agent knows, and the flood that spreads them (sans IO).
//!
//! A node verifies the advertisements of nodes it has no session with, so it needs their
//! endorsed keys: each agent announces its own endorsement on every new session, and every
//! agent that admits a new one (the trust store checks the mesh authority's signature)
//! forwards it once to its other neighbours. Exact copies are recognised by their hash and
//! dropped before any signature check; bytes that failed once are not checked again.
use std::collections::{BTreeMap, HashSet, VecDeque};

use sha2::{Digest as _, Sha256};
use x0tta6bl4_crypto::Error as CryptoError;
use x0tta6bl4_crypto::endorsement::{Endorsement, TrustStore};
use x0tta6bl4_wire::NodeId;

/// Hashes of seen announcements remembered (admitted or refused), so an old copy still
/// circulating is neither verified nor forwarded again.
const SEEN_CAPACITY: usize = 8192;

type Digest = [u8; 32];

/// What became of an announcement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Admitted for the first time: forward it to the other neighbours.
    New { node: NodeId, spiffe_id: String },
    /// These exact bytes were seen before (admitted or refused): dropped unchecked.
    Duplicate,
    /// Refused, with a metric label.
    Refused(&'static str),
}

/// One node key's endorsement, as received.
#[derive(Debug, Clone)]
struct Known {
    digest: Digest,
    bytes: Vec<u8>,
    spiffe_id: String,
    not_after: u64,
}

/// Admitted endorsements by `(node, key epoch)`, and the hashes of everything seen.
#[derive(Debug, Default)]
pub struct EndorsementBook {
    by_key: BTreeMap<(NodeId, u32), Known>,
    seen: HashSet<Digest>,
    seen_order: VecDeque<Digest>,
}

/// The label of a refused endorsement.
fn refusal_label(error: &CryptoError) -> &'static str {
    match error {
        CryptoError::Endorsement("not signed by a mesh authority") => "unendorsed_key",
        CryptoError::Endorsement("SPIFFE ID outside the mesh's trust domain") => "foreign_trust_domain",
        CryptoError::Endorsement("expired") => "expired",
        CryptoError::Endorsement("not yet valid") => "not_yet_valid",
        CryptoError::Endorsement("revoked") => "revoked_key",
        _ => "malformed",
    }
}

impl EndorsementBook {
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks an announcement: hash first, then the trust store (authority signature, trust
    /// domain, validity at `now_unix`).
    pub fn offer(&mut self, bytes: &[u8], trust: &mut TrustStore, now_unix: u64) -> Verdict {
        let digest: Digest = Sha256::digest(bytes).into();
        if self.seen.contains(&digest) {
            return Verdict::Duplicate;
        }
        self.remember(digest);
        let endorsement = match Endorsement::decode(bytes) {
            Ok(endorsement) => endorsement,
            Err(error) => return Verdict::Refused(refusal_label(&error)),
        };
        let node = match trust.admit(&endorsement, now_unix) {
            Ok(node) => node,
            Err(error) => return Verdict::Refused(refusal_label(&error)),
        };
        self.by_key.insert(
            (node, endorsement.key_epoch),
            Known {
                digest,
                bytes: bytes.to_vec(),
                spiffe_id: endorsement.spiffe_id.clone(),
                not_after: endorsement.not_after,
            },
        );
        Verdict::New {
            node,
            spiffe_id: endorsement.spiffe_id,
        }
    }

    fn remember(&mut self, digest: Digest) {
        if self.seen_order.len() >= SEEN_CAPACITY
            && let Some(oldest) = self.seen_order.pop_front()
        {
            // Never forget a hash that is still the current endorsement of some key.
            if self.by_key.values().any(|known| known.digest == oldest) {
                self.seen_order.push_back(oldest);
            } else {
                self.seen.remove(&oldest);
            }
        }
        if self.seen.insert(digest) {
            self.seen_order.push_back(digest);
        }
    }

    /// Every endorsement still valid at `now_unix`, `first` (this node) leading: what a new
    /// session is sent before any advertisement, so the peer can verify what follows.
    pub fn announcements(&self, first: NodeId, now_unix: u64) -> Vec<Vec<u8>> {
        let valid = |known: &&Known| known.not_after > now_unix;
        let own = self
            .by_key
            .iter()
            .filter(|((node, _), _)| *node == first)
            .map(|(_, known)| known)
            .filter(valid);
        let others = self
            .by_key
            .iter()
            .filter(|((node, _), _)| *node != first)
            .map(|(_, known)| known)
            .filter(valid);
        own.chain(others).map(|known| known.bytes.clone()).collect()
    }

    /// The SPIFFE ID a node's newest endorsement names.
    pub fn spiffe_id(&self, node: &NodeId) -> Option<&str> {
        self.by_key
            .range((*node, 0)..=(*node, u32::MAX))
            .next_back()
            .map(|(_, known)| known.spiffe_id.as_str())
    }

    /// Every node with an endorsement, and its SPIFFE ID.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &str)> {
        self.by_key
            .iter()
            .map(|((node, _), known)| (*node, known.spiffe_id.as_str()))
    }

    /// Forgets endorsements that ran out.
    pub fn prune(&mut self, now_unix: u64) {
        self.by_key.retain(|_, known| known.not_after > now_unix);
    }

    /// How many keys are known.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x0tta6bl4_crypto::SigningKey;

    const TD: &str = "x0.local";

    fn mk_endorsement(authority: &SigningKey, node: &str, not_after: u64) -> Vec<u8> {
        let key = SigningKey::generate().unwrap();
        let spiffe = format!("spiffe://{TD}/ns/n/mesh/m/node/{node}");
        Endorsement::issue(authority, &spiffe, 1, key.verifying_key(), 0, not_after)
            .unwrap()
            .encode()
            .unwrap()
    }

    fn mk_store(authority: &SigningKey) -> TrustStore {
        TrustStore::new(TD, vec![authority.verifying_key().clone()])
    }

    #[test]
    fn a_new_endorsement_is_admitted_once_and_its_copies_are_duplicates() {
        let authority = SigningKey::generate().unwrap();
        let mut trust = mk_store(&authority);
        let mut book = EndorsementBook::new();
        let bytes = mk_endorsement(&authority, "a", 1000);
        let Verdict::New { node, spiffe_id } = book.offer(&bytes, &mut trust, 10) else {
            panic!("admitted expected");
        };
        assert_eq!(node, crate::identity::node_id(&spiffe_id));
        assert_eq!(book.offer(&bytes, &mut trust, 10), Verdict::Duplicate);
        assert_eq!(book.spiffe_id(&node), Some(spiffe_id.as_str()));
        assert_eq!(trust.len(), 1);
    }

    #[test]
    fn an_endorsement_by_another_authority_or_garbage_is_refused_once_then_a_duplicate() {
        let authority = SigningKey::generate().unwrap();
        let impostor = SigningKey::generate().unwrap();
        let mut trust = mk_store(&authority);
        let mut book = EndorsementBook::new();
        let forged = mk_endorsement(&impostor, "evil", 1000);
        assert_eq!(
            book.offer(&forged, &mut trust, 10),
            Verdict::Refused("unendorsed_key")
        );
        assert_eq!(book.offer(&forged, &mut trust, 10), Verdict::Duplicate);
        assert_eq!(
            book.offer(b"garbage", &mut trust, 10),
            Verdict::Refused("malformed")
        );
        let expired = mk_endorsement(&authority, "old", 5);
        assert_eq!(book.offer(&expired, &mut trust, 10), Verdict::Refused("expired"));
        assert_eq!(book.len(), 0);
        assert!(trust.is_empty());
    }

    #[test]
    fn a_new_session_gets_our_endorsement_first_and_only_valid_ones() {
        let authority = SigningKey::generate().unwrap();
        let mut trust = mk_store(&authority);
        let mut book = EndorsementBook::new();
        let mut nodes = Vec::new();
        for (name, not_after) in [("a", 1000), ("b", 1000), ("c", 20)] {
            let bytes = mk_endorsement(&authority, name, not_after);
            let Verdict::New { node, .. } = book.offer(&bytes, &mut trust, 10) else {
                panic!("admitted expected");
            };
            nodes.push((node, bytes));
        }
        let (own, own_bytes) = nodes[1].clone();
        let sent = book.announcements(own, 100);
        assert_eq!(sent.len(), 2, "c expired at 20");
        assert_eq!(sent[0], own_bytes);
        book.prune(100);
        assert_eq!(book.len(), 2);
    }
}
