//! Latency on the agent's own send path (the chaos executor's `sendPath` mechanism): frames to a delayed peer wait in a task of their own
//! before they are queued on the session. Each delay carries the experiment's deadline and is
//! checked per frame, so it ends on time whatever happens to the executor. Frames held at once
//! are bounded; past the bound a frame is dropped and counted, as a full session queue would.
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;

use crate::clock::unix_micros;

/// Frames to one peer held back in the send path.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SendDelay {
    pub delay: Duration,
    pub jitter: Duration,
    pub deadline_us: u64,
}

/// Frames held back at once, over every peer.
const MAX_HELD: usize = 4096;

/// What happened to a frame offered to the delay line.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// No delay for this peer now: send it as usual.
    No(Vec<u8>),
    /// It will be queued after its delay.
    Delayed,
    /// Too many frames are held: dropped.
    Dropped,
}

/// The delays in force, shared by the executor (writer) and the mesh actor (reader).
#[derive(Clone, Default)]
pub struct DelayLine {
    delays: Arc<RwLock<BTreeMap<IpAddr, SendDelay>>>,
    held: Arc<AtomicUsize>,
}

impl DelayLine {
    pub fn set(&self, delays: BTreeMap<IpAddr, SendDelay>) {
        *self.delays.write().unwrap_or_else(PoisonError::into_inner) = delays;
    }

    /// The delay for a frame to `peer` now, jitter drawn uniformly in ±jitter.
    pub fn delay_for(&self, peer: IpAddr, now_us: u64) -> Option<Duration> {
        let delays = self.delays.read().unwrap_or_else(PoisonError::into_inner);
        let delay = delays.get(&peer.to_canonical())?;
        if now_us >= delay.deadline_us {
            return None;
        }
        let jitter = delay.jitter.as_secs_f64();
        let offset = if jitter > 0.0 {
            rand::rng().random_range(-jitter..=jitter)
        } else {
            0.0
        };
        Some(Duration::from_secs_f64(
            (delay.delay.as_secs_f64() + offset).max(0.0),
        ))
    }

    /// Holds `frame` for `peer` if a delay is in force; the session's queue gets it later.
    pub fn offer(&self, peer: Option<IpAddr>, frame: Vec<u8>, writer: &mpsc::Sender<Vec<u8>>) -> Held {
        let Some(wait) = peer.and_then(|peer| self.delay_for(peer, unix_micros())) else {
            return Held::No(frame);
        };
        if self.held.fetch_add(1, Ordering::Relaxed) >= MAX_HELD {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return Held::Dropped;
        }
        let writer = writer.clone();
        let held = Arc::clone(&self.held);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // A closed or full session loses the frame, as it would have without the delay.
            let _ = writer.try_send(frame);
            held.fetch_sub(1, Ordering::Relaxed);
        });
        Held::Delayed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_line(deadline_us: u64) -> DelayLine {
        let line = DelayLine::default();
        line.set(BTreeMap::from([(
            "198.18.251.2".parse().unwrap(),
            SendDelay {
                delay: Duration::from_millis(80),
                jitter: Duration::from_millis(10),
                deadline_us,
            },
        )]));
        line
    }

    #[test]
    fn a_delay_applies_to_its_peer_within_the_jitter_until_the_deadline() {
        let line = mk_line(1_000);
        let peer: IpAddr = "::ffff:198.18.251.2".parse().unwrap();
        for _ in 0..100 {
            let wait = line.delay_for(peer, 999).unwrap();
            assert!(
                wait >= Duration::from_millis(70) && wait <= Duration::from_millis(90),
                "{wait:?}"
            );
        }
        assert_eq!(line.delay_for(peer, 1_000), None, "the deadline ends it");
        assert_eq!(line.delay_for("198.18.251.3".parse().unwrap(), 0), None);
    }

    #[tokio::test]
    async fn a_held_frame_reaches_the_session_queue_after_its_delay() {
        let line = mk_line(u64::MAX);
        let (writer, mut queue) = mpsc::channel(4);
        let peer = Some("198.18.251.2".parse().unwrap());
        assert_eq!(line.offer(peer, vec![1, 2, 3], &writer), Held::Delayed);
        assert!(queue.try_recv().is_err(), "not before its delay");
        let started = tokio::time::Instant::now();
        let received = tokio::time::timeout(Duration::from_secs(5), queue.recv()).await;
        assert_eq!(received, Ok(Some(vec![1, 2, 3])));
        assert!(started.elapsed() >= Duration::from_millis(70));
        assert_eq!(line.offer(None, vec![4], &writer), Held::No(vec![4]));
    }
}
