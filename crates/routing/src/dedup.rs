//! The bounded memory of which `(originator, seq)` were verified, and the digest of the signed
//! bytes each was verified for: a flood delivers every advertisement once per neighbour, and
//! only the first copy may cost a signature verification.

use std::collections::{HashMap, VecDeque};

use x0tta6bl4_wire::NodeId;

/// SHA-256 of the signed bytes.
pub(crate) type Digest = [u8; 32];

/// What the cache says about an incoming advertisement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Never verified (or forgotten): verify it.
    New,
    /// The same signed bytes were verified already.
    Duplicate,
    /// Other signed bytes were verified under the same `(originator, seq)`.
    Equivocation,
}

/// First-in, first-out eviction: in a flood, duplicates arrive within a few link latencies of
/// the first copy, so the oldest entries are the least useful.
#[derive(Debug)]
pub(crate) struct DedupCache {
    capacity: usize,
    entries: HashMap<(NodeId, u64), Digest>,
    order: VecDeque<(NodeId, u64)>,
}

impl DedupCache {
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        DedupCache {
            capacity,
            entries: HashMap::with_capacity(capacity),
            order: VecDeque::with_capacity(capacity),
        }
    }

    pub(crate) fn check(&self, originator: NodeId, seq: u64, digest: &Digest) -> Seen {
        match self.entries.get(&(originator, seq)) {
            None => Seen::New,
            Some(known) if known == digest => Seen::Duplicate,
            Some(_) => Seen::Equivocation,
        }
    }

    /// Remembers a verified advertisement, forgetting the oldest one if full.
    pub(crate) fn insert(&mut self, originator: NodeId, seq: u64, digest: Digest) {
        if self.entries.insert((originator, seq), digest).is_some() {
            return;
        }
        self.order.push_back((originator, seq));
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_id(byte: u8) -> NodeId {
        NodeId([byte; 32])
    }

    #[test]
    fn the_cache_tells_duplicates_from_equivocations() {
        let mut cache = DedupCache::new(4);
        assert_eq!(cache.check(mk_id(1), 5, &[1; 32]), Seen::New);
        cache.insert(mk_id(1), 5, [1; 32]);
        assert_eq!(cache.check(mk_id(1), 5, &[1; 32]), Seen::Duplicate);
        assert_eq!(cache.check(mk_id(1), 5, &[2; 32]), Seen::Equivocation);
        assert_eq!(cache.check(mk_id(1), 6, &[1; 32]), Seen::New);
    }

    #[test]
    fn the_cache_never_grows_past_its_capacity_and_forgets_the_oldest_first() {
        let mut cache = DedupCache::new(3);
        for seq in 0..10 {
            cache.insert(mk_id(1), seq, [0; 32]);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.check(mk_id(1), 6, &[0; 32]), Seen::New);
        assert_eq!(cache.check(mk_id(1), 7, &[0; 32]), Seen::Duplicate);
    }
}
