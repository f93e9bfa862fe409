//! Endorsements: the mesh authority (an ML-DSA-65 key the operator keeps in a Secret) vouches
//! that a node key speaks for a SPIFFE ID at one key epoch, for a bounded time. A peer's key is
//! trusted only through such an endorsement, never for the address it connects from.
use std::collections::HashMap;

use crate::reader::{Reader, with_signature};
use crate::{Error, NodeId, Result, SigningContext, SigningKey, VerifyingKey, node_id_for};

const MAGIC: &[u8; 5] = b"X0END";
const VERSION: u8 = 1;
/// SPIFFE IDs are URIs of at most 2048 bytes (SPIFFE ID specification, section 2.3).
const MAX_SPIFFE_ID: usize = 2048;

/// The signed statement "this key speaks for this SPIFFE ID at this epoch, during this time".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endorsement {
    pub spiffe_id: String,
    pub key_epoch: u32,
    pub public_key: VerifyingKey,
    /// Unix seconds from which the endorsement holds.
    pub not_before: u64,
    /// Unix seconds until which it holds (the key's rotation interval plus the overlap window).
    pub not_after: u64,
    pub signature: Vec<u8>,
}

impl Endorsement {
    /// The authority signs a node key.
    pub fn issue(
        authority: &SigningKey,
        spiffe_id: &str,
        key_epoch: u32,
        public_key: &VerifyingKey,
        not_before: u64,
        not_after: u64,
    ) -> Result<Self> {
        let mut endorsement = Self {
            spiffe_id: spiffe_id.to_owned(),
            key_epoch,
            public_key: public_key.clone(),
            not_before,
            not_after,
            signature: Vec::new(),
        };
        endorsement.signature = authority
            .sign(SigningContext::Endorsement, &endorsement.signed_bytes()?)?
            .0;
        Ok(endorsement)
    }

    /// The canonical bytes the authority signs: every field, length-prefixed.
    pub fn signed_bytes(&self) -> Result<Vec<u8>> {
        if self.spiffe_id.len() > MAX_SPIFFE_ID {
            return Err(Error::Endorsement("SPIFFE ID longer than 2048 bytes"));
        }
        let mut bytes = Vec::with_capacity(64 + self.spiffe_id.len() + self.public_key.as_bytes().len());
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        bytes.extend_from_slice(&(self.spiffe_id.len() as u16).to_be_bytes());
        bytes.extend_from_slice(self.spiffe_id.as_bytes());
        bytes.extend_from_slice(&self.key_epoch.to_be_bytes());
        bytes.extend_from_slice(&self.not_before.to_be_bytes());
        bytes.extend_from_slice(&self.not_after.to_be_bytes());
        bytes.extend_from_slice(self.public_key.as_bytes());
        Ok(bytes)
    }

    /// The endorsement as sent to peers: its signed bytes, then the signature (length-prefixed).
    pub fn encode(&self) -> Result<Vec<u8>> {
        Ok(with_signature(self.signed_bytes()?, &self.signature))
    }

    /// Parses what [`Self::encode`] wrote; never panics on any input.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let malformed = || Error::Endorsement("malformed endorsement");
        let mut reader = Reader::new(bytes, || Error::Endorsement("truncated endorsement"));
        reader.expect_header(MAGIC, VERSION, malformed)?;
        let spiffe_id = reader.text(MAX_SPIFFE_ID, malformed)?;
        let key_epoch = reader.u32()?;
        let not_before = reader.u64()?;
        let not_after = reader.u64()?;
        let public_key = VerifyingKey::from_bytes(reader.take(crate::mldsa::PUBLIC_KEY_LEN)?)?;
        let signature = reader.signature(malformed)?;
        Ok(Self {
            spiffe_id,
            key_epoch,
            public_key,
            not_before,
            not_after,
            signature,
        })
    }

    pub fn node_id(&self) -> NodeId {
        node_id_for(&self.spiffe_id)
    }
}

/// Why a message was not accepted, as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownKey,
    Expired,
    BadSignature,
    /// The mesh authority revoked the key (see [`crate::revocation`]).
    Revoked,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownKey => "unendorsed_key",
            Refusal::Expired => "expired_key",
            Refusal::BadSignature => "bad_signature",
            Refusal::Revoked => "revoked_key",
        }
    }
}

/// The node keys this agent trusts: those endorsed by a mesh authority it knows.
#[derive(Default)]
pub struct TrustStore {
    trust_domain: String,
    authorities: Vec<VerifyingKey>,
    keys: HashMap<(NodeId, u32), (VerifyingKey, u64, u64)>,
    /// Signature of the endorsement each key was admitted with.
    admitted: HashMap<(NodeId, u32), Vec<u8>>,
    /// Revoked keys: for each node, the epoch up to which every key of it is revoked.
    revoked: HashMap<NodeId, u32>,
}

impl TrustStore {
    pub fn new(trust_domain: &str, authorities: Vec<VerifyingKey>) -> Self {
        Self {
            trust_domain: trust_domain.to_owned(),
            authorities,
            keys: HashMap::new(),
            admitted: HashMap::new(),
            revoked: HashMap::new(),
        }
    }

    /// The mesh authorities this store trusts (what a revocation list must be signed by).
    pub fn authorities(&self) -> &[VerifyingKey] {
        &self.authorities
    }

    /// Replaces the revoked keys: for each node, every epoch up to and including the given one.
    /// The keys stay known (a revocation withdrawn makes them usable again until they expire);
    /// while revoked, nothing signed with them verifies and their endorsements are refused.
    pub fn set_revoked(&mut self, revoked: HashMap<NodeId, u32>) {
        self.revoked = revoked;
    }

    /// Whether `node`'s key of `key_epoch` is revoked.
    pub fn is_revoked(&self, node: &NodeId, key_epoch: u32) -> bool {
        self.revoked
            .get(node)
            .is_some_and(|through| key_epoch <= *through)
    }

    /// Checks an endorsement (authority signature, trust domain, validity) and remembers its key.
    pub fn admit(&mut self, endorsement: &Endorsement, now_unix: u64) -> Result<NodeId> {
        let prefix = format!("spiffe://{}/", self.trust_domain);
        if !endorsement.spiffe_id.starts_with(&prefix) {
            return Err(Error::Endorsement("SPIFFE ID outside the mesh's trust domain"));
        }
        if endorsement.not_after <= endorsement.not_before || now_unix >= endorsement.not_after {
            return Err(Error::Endorsement("expired"));
        }
        if now_unix < endorsement.not_before {
            return Err(Error::Endorsement("not yet valid"));
        }
        let node = endorsement.node_id();
        if self.is_revoked(&node, endorsement.key_epoch) {
            return Err(Error::Endorsement("revoked"));
        }
        // An endorsement already admitted (same key, window and signature) needs no second
        // verification: every session with a known peer would otherwise pay for one.
        if self.admitted.get(&(node, endorsement.key_epoch)) == Some(&endorsement.signature)
            && self
                .keys
                .get(&(node, endorsement.key_epoch))
                .is_some_and(|(key, nb, na)| {
                    key == &endorsement.public_key
                        && *nb == endorsement.not_before
                        && *na == endorsement.not_after
                })
        {
            return Ok(node);
        }
        let signed = endorsement.signed_bytes()?;
        let vouched = self.authorities.iter().any(|authority| {
            authority
                .verify(SigningContext::Endorsement, &signed, &endorsement.signature)
                .is_ok()
        });
        if !vouched {
            return Err(Error::Endorsement("not signed by a mesh authority"));
        }
        self.admitted
            .insert((node, endorsement.key_epoch), endorsement.signature.clone());
        self.keys.insert(
            (node, endorsement.key_epoch),
            (
                endorsement.public_key.clone(),
                endorsement.not_before,
                endorsement.not_after,
            ),
        );
        Ok(node)
    }

    /// Verifies a message of `node` signed with its key of `key_epoch`, at time `now_unix`.
    pub fn verify(
        &self,
        context: SigningContext,
        node: &NodeId,
        key_epoch: u32,
        message: &[u8],
        signature: &[u8],
        now_unix: u64,
    ) -> std::result::Result<(), Refusal> {
        if self.is_revoked(node, key_epoch) {
            return Err(Refusal::Revoked);
        }
        let (key, not_before, not_after) = self.keys.get(&(*node, key_epoch)).ok_or(Refusal::UnknownKey)?;
        if now_unix < *not_before || now_unix >= *not_after {
            return Err(Refusal::Expired);
        }
        key.verify(context, message, signature)
            .map_err(|_| Refusal::BadSignature)
    }

    /// The key `node` holds at `key_epoch`, if endorsed and valid at `now_unix`: for checks
    /// that take a key rather than go through [`TrustStore::verify`] (a model update names its
    /// participant, not its key epoch, so the validator is given the participant's key).
    pub fn key(&self, node: &NodeId, key_epoch: u32, now_unix: u64) -> Option<&VerifyingKey> {
        let (key, not_before, not_after) = self.keys.get(&(*node, key_epoch))?;
        (now_unix >= *not_before && now_unix < *not_after && !self.is_revoked(node, key_epoch)).then_some(key)
    }

    /// Every valid key of `node` at `now_unix` that is not revoked, with its epoch.
    fn usable(&self, node: &NodeId, now_unix: u64) -> impl Iterator<Item = (u32, &VerifyingKey)> {
        self.keys
            .iter()
            .filter(move |((id, epoch), (_, not_before, not_after))| {
                id == node && now_unix >= *not_before && now_unix < *not_after && !self.is_revoked(id, *epoch)
            })
            .map(|((_, epoch), (key, _, _))| (*epoch, key))
    }

    /// The newest key of `node` valid at `now_unix`, with its epoch.
    pub fn newest_key(&self, node: &NodeId, now_unix: u64) -> Option<(u32, &VerifyingKey)> {
        self.usable(node, now_unix).max_by_key(|(epoch, _)| *epoch)
    }

    /// Every key of `node` valid at `now_unix`, newest epoch first (more than one while a
    /// rotated-out key's endorsement overlaps its successor's).
    pub fn valid_keys(&self, node: &NodeId, now_unix: u64) -> Vec<&VerifyingKey> {
        let mut keys: Vec<(u32, &VerifyingKey)> = self.usable(node, now_unix).collect();
        keys.sort_by_key(|(epoch, _)| std::cmp::Reverse(*epoch));
        keys.into_iter().map(|(_, key)| key).collect()
    }

    /// When the endorsement of `node`'s key of `key_epoch` runs out (Unix seconds), if known.
    pub fn not_after(&self, node: &NodeId, key_epoch: u32) -> Option<u64> {
        self.keys
            .get(&(*node, key_epoch))
            .map(|(_, _, not_after)| *not_after)
    }

    /// Forgets keys whose endorsement has run out, so memory stays bounded by live keys.
    pub fn prune(&mut self, now_unix: u64) {
        self.keys.retain(|_, (_, _, not_after)| *not_after > now_unix);
        self.admitted.retain(|id, _| self.keys.contains_key(id));
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = "spiffe://x0tta6bl4.local/ns/default/mesh/demo/node/n1";

    fn setup() -> (SigningKey, SigningKey, Endorsement, TrustStore) {
        let authority = SigningKey::generate().unwrap();
        let node = SigningKey::generate().unwrap();
        let endorsement = Endorsement::issue(&authority, NODE, 1, node.verifying_key(), 100, 200).unwrap();
        let store = TrustStore::new("x0tta6bl4.local", vec![authority.verifying_key().clone()]);
        (authority, node, endorsement, store)
    }

    #[test]
    fn an_endorsed_key_verifies_its_node_messages_within_the_window() {
        let (_, node, endorsement, mut store) = setup();
        let id = store.admit(&endorsement, 150).unwrap();
        assert_eq!(id, node_id_for(NODE));
        let signature = node.sign(SigningContext::Originator, b"adv").unwrap();
        assert_eq!(
            store.verify(SigningContext::Originator, &id, 1, b"adv", &signature.0, 150),
            Ok(())
        );
        assert_eq!(
            store.verify(SigningContext::Originator, &id, 1, b"adv", &signature.0, 200),
            Err(Refusal::Expired)
        );
        assert_eq!(
            store.verify(SigningContext::Originator, &id, 2, b"adv", &signature.0, 150),
            Err(Refusal::UnknownKey)
        );
    }

    #[test]
    fn keys_are_looked_up_by_node_and_epoch_within_their_window() {
        let (authority, node, endorsement, mut store) = setup();
        let id = store.admit(&endorsement, 150).unwrap();
        assert_eq!(store.key(&id, 1, 150), Some(node.verifying_key()));
        assert_eq!(store.key(&id, 1, 200), None, "expired");
        assert_eq!(store.key(&id, 2, 150), None, "unknown epoch");
        assert_eq!(store.newest_key(&id, 150), Some((1, node.verifying_key())));
        let rotated = SigningKey::generate().unwrap();
        let second = Endorsement::issue(&authority, NODE, 2, rotated.verifying_key(), 100, 300).unwrap();
        store.admit(&second, 150).unwrap();
        assert_eq!(store.newest_key(&id, 150), Some((2, rotated.verifying_key())));
        assert_eq!(store.newest_key(&id, 250), Some((2, rotated.verifying_key())));
        assert_eq!(store.newest_key(&NodeId([9; 32]), 150), None);
        assert_eq!(
            store.valid_keys(&id, 150),
            vec![rotated.verifying_key(), node.verifying_key()],
            "both during the overlap, newest first"
        );
        assert_eq!(store.valid_keys(&id, 250), vec![rotated.verifying_key()]);
    }

    #[test]
    fn a_revoked_key_is_refused_everywhere_and_usable_again_when_the_revocation_is_withdrawn() {
        let (authority, node, endorsement, mut store) = setup();
        let id = store.admit(&endorsement, 150).unwrap();
        let rotated = SigningKey::generate().unwrap();
        let second = Endorsement::issue(&authority, NODE, 2, rotated.verifying_key(), 100, 300).unwrap();
        store.set_revoked(HashMap::from([(id, 1)]));
        let signature = node.sign(SigningContext::Originator, b"adv").unwrap();
        assert_eq!(
            store.verify(SigningContext::Originator, &id, 1, b"adv", &signature.0, 150),
            Err(Refusal::Revoked)
        );
        assert_eq!(store.key(&id, 1, 150), None);
        assert_eq!(store.newest_key(&id, 150), None);
        assert!(
            store
                .admit(&endorsement, 150)
                .unwrap_err()
                .to_string()
                .contains("revoked"),
            "a revoked endorsement is refused even though it was admitted before"
        );
        // The next epoch is not revoked: the node rejoins with a new key.
        store.admit(&second, 150).unwrap();
        assert_eq!(store.valid_keys(&id, 150), vec![rotated.verifying_key()]);
        store.set_revoked(HashMap::new());
        assert_eq!(store.key(&id, 1, 150), Some(node.verifying_key()));
    }

    #[test]
    fn an_endorsement_survives_encoding_and_garbage_never_panics() {
        let (_, _, endorsement, _) = setup();
        let bytes = endorsement.encode().unwrap();
        assert_eq!(Endorsement::decode(&bytes).unwrap(), endorsement);
        for cut in [0, 1, 5, 8, 100, bytes.len() - 1] {
            assert!(Endorsement::decode(&bytes[..cut]).is_err(), "truncated at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Endorsement::decode(&longer).is_err());
    }

    #[test]
    fn a_key_not_endorsed_by_the_authority_is_refused() {
        let (_, node, _, mut store) = setup();
        let impostor = SigningKey::generate().unwrap();
        let forged = Endorsement::issue(&impostor, NODE, 1, node.verifying_key(), 100, 200).unwrap();
        assert!(
            store
                .admit(&forged, 150)
                .unwrap_err()
                .to_string()
                .contains("not signed by a mesh authority")
        );
        let signature = node.sign(SigningContext::Originator, b"adv").unwrap();
        let id = node_id_for(NODE);
        assert_eq!(
            store.verify(SigningContext::Originator, &id, 1, b"adv", &signature.0, 150),
            Err(Refusal::UnknownKey)
        );
    }

    #[test]
    fn a_tampered_endorsement_or_foreign_trust_domain_is_refused() {
        let (authority, node, endorsement, mut store) = setup();
        // Admitting the genuine one first must not make a tampered copy pass through the cache.
        store.admit(&endorsement, 150).unwrap();
        let mut stretched = endorsement.clone();
        stretched.not_after = 10_000;
        assert!(store.admit(&stretched, 150).is_err());
        let foreign = Endorsement::issue(
            &authority,
            "spiffe://evil.example/node/x",
            1,
            node.verifying_key(),
            100,
            200,
        )
        .unwrap();
        assert!(
            store
                .admit(&foreign, 150)
                .unwrap_err()
                .to_string()
                .contains("trust domain")
        );
        assert!(
            store
                .admit(&endorsement, 250)
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
    }
}
