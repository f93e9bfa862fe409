//! Key rotation with an overlap window (sans IO: time is passed in). After a rotation the
//! previous key still signs nothing but stays endorsed, so messages already in flight and
//! sessions bound to it keep verifying until the overlap ends.
use std::time::Duration;

use crate::SigningKey;

/// A key and the epoch it speaks for.
pub struct EpochKey {
    pub epoch: u32,
    pub key: SigningKey,
    /// When it became current.
    pub since: Duration,
}

pub struct KeyRing {
    current: EpochKey,
    previous: Option<(EpochKey, Duration)>,
    rotation_interval: Duration,
    overlap: Duration,
}

impl KeyRing {
    pub fn new(current: EpochKey, rotation_interval: Duration, overlap: Duration) -> Self {
        Self {
            current,
            previous: None,
            rotation_interval,
            overlap,
        }
    }

    /// The key that signs now.
    pub fn current(&self) -> &EpochKey {
        &self.current
    }

    /// When the current key is due for replacement.
    pub fn rotation_due_at(&self) -> Duration {
        self.current.since + self.rotation_interval
    }

    pub fn needs_rotation(&self, now: Duration) -> bool {
        now >= self.rotation_due_at()
    }

    /// Makes `next` current; the old key stays valid for the overlap window.
    pub fn rotate(&mut self, next: SigningKey, now: Duration) -> u32 {
        let epoch = self.current.epoch.wrapping_add(1);
        let old = std::mem::replace(
            &mut self.current,
            EpochKey {
                epoch,
                key: next,
                since: now,
            },
        );
        self.previous = Some((old, now + self.overlap));
        epoch
    }

    /// Epochs whose keys are still valid at `now` (the current one, and the previous one during
    /// the overlap window).
    pub fn valid_epochs(&self, now: Duration) -> Vec<u32> {
        let mut epochs = vec![self.current.epoch];
        if let Some((previous, retire_at)) = &self.previous
            && now < *retire_at
        {
            epochs.push(previous.epoch);
        }
        epochs
    }

    /// Drops the previous key once its overlap has ended.
    pub fn retire_expired(&mut self, now: Duration) {
        if self
            .previous
            .as_ref()
            .is_some_and(|(_, retire_at)| now >= *retire_at)
        {
            self.previous = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_previous_key_valid_for_the_overlap_only() {
        let secs = Duration::from_secs;
        let first = EpochKey {
            epoch: 1,
            key: SigningKey::generate().unwrap(),
            since: secs(0),
        };
        let mut ring = KeyRing::new(first, secs(3600), secs(600));
        assert!(!ring.needs_rotation(secs(3599)));
        assert!(ring.needs_rotation(secs(3600)));
        let epoch = ring.rotate(SigningKey::generate().unwrap(), secs(3600));
        assert_eq!(epoch, 2);
        assert_eq!(ring.valid_epochs(secs(3700)), [2, 1]);
        assert_eq!(ring.valid_epochs(secs(4200)), [2]);
        ring.retire_expired(secs(4200));
        assert!(ring.previous.is_none());
        assert_eq!(ring.rotation_due_at(), secs(7200));
    }
}
