//! The hasher of the maps keyed by node id.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use x0tta6bl4_routing::NodeId;

/// Node ids are SHA-256 outputs: their first bytes are already a good hash.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        for (slot, byte) in word.iter_mut().zip(bytes) {
            *slot = *byte;
        }
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }
}

pub(super) type IdMap<V> = HashMap<NodeId, V, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_hasher_spreads_node_ids() {
        let map: HashMap<NodeId, u32, BuildHasherDefault<IdHasher>> =
            (0..100).map(|i| (crate::verify::node_id(i), i as u32)).collect();
        assert_eq!(map.len(), 100);
        assert_eq!(map.get(&crate::verify::node_id(42)), Some(&42));
    }
}
