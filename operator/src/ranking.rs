//! Seeded, reproducible orders over node names (pure). A resource's UID seeds them, so every
//! reconcile of the same object, on any replica, after any restart, makes the same choice, and
//! two objects choose independently of each other.
use sha2::{Digest as _, Sha256};

/// A node's place in the order seeded by `seed`: sort by it (smallest first) for a seeded
/// shuffle, take its minimum for a seeded pick.
pub fn rank(seed: &str, node: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(seed)
        .chain_update([0])
        .chain_update(node)
        .finalize()
        .into()
}

/// A number in `0..bound` drawn from `seed` for `purpose` (a seeded die; `bound` 0 gives 0).
pub fn draw(seed: &str, purpose: &str, bound: usize) -> usize {
    if bound == 0 {
        return 0;
    }
    let digest = rank(seed, purpose);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % bound as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_depends_on_the_seed_and_nothing_else() {
        assert_eq!(rank("uid-1", "node-1"), rank("uid-1", "node-1"));
        assert_ne!(rank("uid-1", "node-1"), rank("uid-2", "node-1"));
        assert_ne!(rank("uid-1", "node-1"), rank("uid-1", "node-2"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(rank("ab", "c"), rank("a", "bc"));
    }

    #[test]
    fn a_draw_stays_below_its_bound_and_is_reproducible() {
        for bound in 1..20 {
            assert!(draw("uid", "count", bound) < bound);
            assert_eq!(draw("uid", "count", bound), draw("uid", "count", bound));
        }
        assert_eq!(draw("uid", "count", 0), 0);
    }
}
