//! Real ML-DSA-65 signatures for every simulated agent, and one verification shared by all the
//! agents that receive the same signed bytes.
//!
//! A real agent verifies each `(originator, seq)` once (the router deduplicates before
//! verifying), so a flood of N originators costs every agent N verifications per round and the
//! mesh N². The simulator runs all agents on one machine, so it verifies each distinct
//! `(originator, key epoch, signed bytes, signature)` for real once and lets later receivers
//! reuse the result, as issue 4 allows, while counting per agent both what it asked for (what
//! a real agent would have done) and what was actually performed on its behalf.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Instant;

use sha2::{Digest as _, Sha256};
use x0tta6bl4_crypto::{SigningContext, SigningKey, VerifyingKey};
use x0tta6bl4_routing::{NodeId, OriginatorSigner, OriginatorVerifier, SignError, VerifyError};

use crate::stats::Histogram;

/// The key epoch every simulated agent signs with (no rotation in the simulator).
pub const KEY_EPOCH: u32 = 1;

/// The mesh identity of simulated agent `index`: the SHA-256 of its SPIFFE ID, as
/// `x0tta6bl4_crypto::node_id_for` computes it for a real agent.
pub fn node_id(index: usize) -> NodeId {
    let spiffe = format!("spiffe://sim.x0tta6bl4.io/node/{index}");
    x0tta6bl4_crypto::node_id_for(&spiffe)
}

/// The digest a verification result is cached under: everything the result depends on.
fn cache_key(originator: &NodeId, key_epoch: u32, signed_bytes: &[u8], signature: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(originator.0);
    hash.update(key_epoch.to_be_bytes());
    hash.update((signed_bytes.len() as u64).to_be_bytes());
    hash.update(signed_bytes);
    hash.update(signature);
    hash.finalize().into()
}

/// The trust store of the simulated mesh (every agent's endorsed key), the shared results, and
/// the per-agent counts.
pub struct VerifyCache {
    trusted: HashMap<NodeId, VerifyingKey>,
    results: RefCell<HashMap<[u8; 32], Result<(), VerifyError>>>,
    /// Insertion order, for first-in first-out eviction: copies of one flood arrive within a
    /// few link latencies of each other.
    order: RefCell<VecDeque<[u8; 32]>>,
    capacity: usize,
    requested: Vec<Cell<u64>>,
    performed: Vec<Cell<u64>>,
    verify_nanos: RefCell<Histogram>,
}

impl std::fmt::Debug for VerifyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyCache")
            .field("trusted", &self.trusted.len())
            .field("cached", &self.results.borrow().len())
            .finish()
    }
}

impl VerifyCache {
    /// A cache for `agents` agents trusting `trusted`, remembering at most `capacity` results.
    pub fn new(agents: usize, trusted: HashMap<NodeId, VerifyingKey>, capacity: usize) -> Self {
        VerifyCache {
            trusted,
            results: RefCell::new(HashMap::with_capacity(capacity)),
            order: RefCell::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
            requested: (0..agents).map(|_| Cell::new(0)).collect(),
            performed: (0..agents).map(|_| Cell::new(0)).collect(),
            verify_nanos: RefCell::new(Histogram::default()),
        }
    }

    /// Verifies on behalf of agent `agent`: for real the first time these exact inputs are
    /// seen, from the cache afterwards.
    pub fn verify(
        &self,
        agent: usize,
        originator: &NodeId,
        key_epoch: u32,
        signed_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        if let Some(count) = self.requested.get(agent) {
            count.set(count.get() + 1);
        }
        let key = cache_key(originator, key_epoch, signed_bytes, signature);
        if let Some(result) = self.results.borrow().get(&key) {
            return *result;
        }
        if let Some(count) = self.performed.get(agent) {
            count.set(count.get() + 1);
        }
        let started = Instant::now();
        let result = match self.trusted.get(originator) {
            Some(public) if key_epoch == KEY_EPOCH => public
                .verify(SigningContext::Originator, signed_bytes, signature)
                .map_err(|_| VerifyError::BadSignature),
            _ => Err(VerifyError::UnknownKey),
        };
        self.verify_nanos.borrow_mut().record_duration(started.elapsed());
        let mut results = self.results.borrow_mut();
        let mut order = self.order.borrow_mut();
        results.insert(key, result);
        order.push_back(key);
        while order.len() > self.capacity {
            if let Some(oldest) = order.pop_front() {
                results.remove(&oldest);
            }
        }
        result
    }

    /// Verifications agent `agent` asked for (what a real agent would have performed).
    pub fn requested(&self, agent: usize) -> u64 {
        self.requested.get(agent).map_or(0, Cell::get)
    }

    /// Verifications actually performed when agent `agent` asked.
    pub fn performed(&self, agent: usize) -> u64 {
        self.performed.get(agent).map_or(0, Cell::get)
    }

    pub fn total_requested(&self) -> u64 {
        self.requested.iter().map(Cell::get).sum()
    }

    pub fn total_performed(&self) -> u64 {
        self.performed.iter().map(Cell::get).sum()
    }

    /// Wall time of each real ML-DSA-65 verification (nanoseconds).
    pub fn verify_times(&self) -> Histogram {
        self.verify_nanos.borrow().clone()
    }

    pub fn cached(&self) -> usize {
        self.results.borrow().len()
    }
}

/// What one agent's router verifies with: the shared cache, counted under the agent's index.
#[derive(Debug, Clone)]
pub struct SimVerifier {
    pub agent: usize,
    pub cache: Rc<VerifyCache>,
}

impl OriginatorVerifier for SimVerifier {
    fn verify(
        &self,
        originator: &NodeId,
        key_epoch: u32,
        signed_bytes: &[u8],
        signature: &[u8],
    ) -> Result<(), VerifyError> {
        self.cache
            .verify(self.agent, originator, key_epoch, signed_bytes, signature)
    }
}

/// An agent's own key: it signs every advertisement for real (ML-DSA-65, hedged, under the
/// originator context string).
#[derive(Debug)]
pub struct SimSigner(pub SigningKey);

impl OriginatorSigner for SimSigner {
    fn key_epoch(&self) -> u32 {
        KEY_EPOCH
    }

    fn sign(&self, signed_bytes: &[u8]) -> Result<Vec<u8>, SignError> {
        self.0
            .sign(SigningContext::Originator, signed_bytes)
            .map(|signature| signature.0)
            .map_err(|error| SignError(error.to_string()))
    }
}

/// Fresh keys for `agents` agents, and the trust store that endorses them.
pub fn generate_keys(agents: usize) -> anyhow::Result<(Vec<SimSigner>, HashMap<NodeId, VerifyingKey>)> {
    let mut signers = Vec::with_capacity(agents);
    let mut trusted = HashMap::with_capacity(agents);
    for index in 0..agents {
        let key = SigningKey::generate()?;
        trusted.insert(node_id(index), key.verifying_key().clone());
        signers.push(SimSigner(key));
    }
    Ok((signers, trusted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_cache(agents: usize) -> (Vec<SimSigner>, VerifyCache) {
        let (signers, trusted) = generate_keys(agents).unwrap();
        (signers, VerifyCache::new(agents, trusted, 16))
    }

    #[test]
    fn the_first_receiver_verifies_for_real_and_later_ones_reuse_the_result() {
        let (signers, cache) = mk_cache(3);
        let signature = signers[0].sign(b"advert").unwrap();
        for agent in [1, 2, 2] {
            assert_eq!(
                cache.verify(agent, &node_id(0), KEY_EPOCH, b"advert", &signature),
                Ok(())
            );
        }
        assert_eq!((cache.requested(1), cache.performed(1)), (1, 1));
        assert_eq!((cache.requested(2), cache.performed(2)), (2, 0));
        assert_eq!((cache.total_requested(), cache.total_performed()), (3, 1));
        assert_eq!(cache.verify_times().count(), 1);
    }

    #[test]
    fn a_forgery_is_its_own_entry_verified_for_real_and_rejected() {
        let (signers, cache) = mk_cache(3);
        let genuine = signers[0].sign(b"advert").unwrap();
        let forged = signers[1].sign(b"advert").unwrap();
        assert_eq!(
            cache.verify(2, &node_id(0), KEY_EPOCH, b"advert", &genuine),
            Ok(())
        );
        for _ in 0..2 {
            assert_eq!(
                cache.verify(2, &node_id(0), KEY_EPOCH, b"advert", &forged),
                Err(VerifyError::BadSignature)
            );
        }
        assert_eq!((cache.requested(2), cache.performed(2)), (3, 2));
    }

    #[test]
    fn unknown_originators_and_key_epochs_are_unendorsed() {
        let (signers, cache) = mk_cache(1);
        let signature = signers[0].sign(b"advert").unwrap();
        assert_eq!(
            cache.verify(0, &node_id(7), KEY_EPOCH, b"advert", &signature),
            Err(VerifyError::UnknownKey)
        );
        assert_eq!(
            cache.verify(0, &node_id(0), KEY_EPOCH + 1, b"advert", &signature),
            Err(VerifyError::UnknownKey)
        );
    }

    #[test]
    fn the_cache_forgets_the_oldest_results_beyond_its_capacity() {
        let (signers, trusted) = generate_keys(1).unwrap();
        let cache = VerifyCache::new(1, trusted, 2);
        let messages: [&[u8]; 3] = [b"a", b"b", b"c"];
        let signatures: Vec<Vec<u8>> = messages.iter().map(|m| signers[0].sign(m).unwrap()).collect();
        for (message, signature) in messages.iter().zip(&signatures) {
            cache
                .verify(0, &node_id(0), KEY_EPOCH, message, signature)
                .unwrap();
        }
        assert_eq!(cache.cached(), 2);
        cache
            .verify(0, &node_id(0), KEY_EPOCH, b"a", &signatures[0])
            .unwrap();
        assert_eq!(
            cache.performed(0),
            4,
            "the oldest was forgotten and verified again"
        );
        cache
            .verify(0, &node_id(0), KEY_EPOCH, b"c", &signatures[2])
            .unwrap();
        assert_eq!(cache.performed(0), 4);
    }
}
