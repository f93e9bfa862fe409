//! Replay protection per originator: the highest sequence number accepted and a bitmap of the
//! 64 below it, as in IPsec's anti-replay window (RFC 4303 §3.4.3).

/// How far below the highest accepted sequence number a late one is still accepted.
pub const REPLAY_WINDOW: u64 = 64;

/// Why a sequence number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Replay {
    /// Below the window: cannot be told apart from a replay.
    TooOld,
    /// Accepted before.
    AlreadyAccepted,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SequenceWindow {
    highest: Option<u64>,
    /// Bit `i` set: `highest - i` was accepted.
    accepted: u64,
}

impl SequenceWindow {
    /// Accepts `seq` unless it is a replay. Only called after the signature was verified, so
    /// a forged sequence number can never move the window.
    pub(crate) fn accept(&mut self, seq: u64) -> Result<(), Replay> {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.accepted = 1;
            return Ok(());
        };
        if seq > highest {
            let shift = seq - highest;
            self.accepted = if shift >= REPLAY_WINDOW {
                0
            } else {
                self.accepted << shift
            };
            self.accepted |= 1;
            self.highest = Some(seq);
            return Ok(());
        }
        let back = highest - seq;
        if back >= REPLAY_WINDOW {
            return Err(Replay::TooOld);
        }
        let bit = 1u64 << back;
        if self.accepted & bit != 0 {
            return Err(Replay::AlreadyAccepted);
        }
        self.accepted |= bit;
        Ok(())
    }

    #[cfg(test)]
    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_sequence_number_is_accepted_once() {
        let mut window = SequenceWindow::default();
        assert_eq!(window.accept(10), Ok(()));
        assert_eq!(window.accept(10), Err(Replay::AlreadyAccepted));
        assert_eq!(window.accept(12), Ok(()));
        assert_eq!(window.accept(11), Ok(()), "late but inside the window");
        assert_eq!(window.accept(11), Err(Replay::AlreadyAccepted));
        assert_eq!(window.highest(), Some(12));
    }

    #[test]
    fn a_sequence_number_below_the_window_is_too_old() {
        let mut window = SequenceWindow::default();
        window.accept(100).unwrap();
        assert_eq!(window.accept(100 - REPLAY_WINDOW), Err(Replay::TooOld));
        assert_eq!(window.accept(100 - REPLAY_WINDOW + 1), Ok(()));
    }

    #[test]
    fn a_big_jump_forgets_the_old_bitmap() {
        let mut window = SequenceWindow::default();
        window.accept(1).unwrap();
        window.accept(1000).unwrap();
        assert_eq!(window.accept(999), Ok(()));
        assert_eq!(window.accept(1), Err(Replay::TooOld));
    }
}
