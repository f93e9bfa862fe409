//! Federated messages larger than one mesh payload (a training request or an update carries
//! the whole model; a mesh data message carries at most 64 KiB): every federated message is
//! sent as one or more chunks and put back together by the receiver.
//!
//! A chunk: `"X0FC" | message id u64 | index u16 | count u16 | total u32 | piece` (big-endian).
//! Chunks are not authenticated on their own (the whole message is signed and verified once
//! reassembled), so what an unauthenticated sender can make us hold is bounded: a message is at
//! most [`MAX_MESSAGE_BYTES`], a source has at most [`PARTIAL_PER_SOURCE`] messages in
//! progress, all sources together at most [`PARTIAL_BYTES`], and a message not completed within
//! [`PARTIAL_TTL`] is dropped. Every drop is counted by reason.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use x0tta6bl4_api::fl_protocol::MAX_MODEL_BYTES;
use x0tta6bl4_wire::MAX_DATA_PAYLOAD_LEN;
use x0tta6bl4_wire::NodeId;

const MAGIC: [u8; 4] = *b"X0FC";
const HEADER_LEN: usize = 4 + 8 + 2 + 2 + 4;
/// Bytes of message per chunk: what is left of a mesh payload after the chunk header.
pub const CHUNK_BYTES: usize = MAX_DATA_PAYLOAD_LEN - HEADER_LEN;
/// Largest message sent or reassembled: the largest model a round ConfigMap holds, plus the
/// request's or update's own fields and signature.
pub const MAX_MESSAGE_BYTES: usize = MAX_MODEL_BYTES + 64 * 1024;
/// Messages in progress per source (a participant has at most a request and a resend of it
/// in flight; an aggregator a few updates).
pub const PARTIAL_PER_SOURCE: usize = 4;
/// Bytes held for incomplete messages of all sources together.
pub const PARTIAL_BYTES: usize = 64 * 1024 * 1024;
/// How long an incomplete message waits for its missing chunks.
pub const PARTIAL_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {len}-byte federated message exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
pub struct TooLarge {
    pub len: usize,
}

/// Splits `message` into chunks of message `id`.
pub fn split(id: u64, message: &[u8]) -> Result<Vec<Vec<u8>>, TooLarge> {
    if message.len() > MAX_MESSAGE_BYTES {
        return Err(TooLarge { len: message.len() });
    }
    let pieces: Vec<&[u8]> = if message.is_empty() {
        vec![&[]]
    } else {
        message.chunks(CHUNK_BYTES).collect()
    };
    // Both fit: the message is below MAX_MESSAGE_BYTES, which is far below u16::MAX chunks.
    let count = u16::try_from(pieces.len()).map_err(|_| TooLarge { len: message.len() })?;
    let total = u32::try_from(message.len()).map_err(|_| TooLarge { len: message.len() })?;
    Ok(pieces
        .iter()
        .enumerate()
        .map(|(index, piece)| {
            let mut chunk = Vec::with_capacity(HEADER_LEN + piece.len());
            chunk.extend_from_slice(&MAGIC);
            chunk.extend_from_slice(&id.to_be_bytes());
            chunk.extend_from_slice(&(index as u16).to_be_bytes());
            chunk.extend_from_slice(&count.to_be_bytes());
            chunk.extend_from_slice(&total.to_be_bytes());
            chunk.extend_from_slice(piece);
            chunk
        })
        .collect())
}

/// What a chunk did.
#[derive(Debug, PartialEq, Eq)]
pub enum Fed {
    /// The last missing chunk: the whole message.
    Complete(Vec<u8>),
    /// Held until the rest arrives.
    Pending,
    /// Refused, with the reason it is counted under.
    Dropped(&'static str),
}

struct Header {
    id: u64,
    index: u16,
    count: u16,
    total: usize,
}

fn parse(chunk: &[u8]) -> Result<(Header, &[u8]), &'static str> {
    if chunk.len() < HEADER_LEN || chunk[..4] != MAGIC {
        return Err("chunk_malformed");
    }
    let be16 = |at: usize| u16::from_be_bytes([chunk[at], chunk[at + 1]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&chunk[4..12]);
    let mut total = [0u8; 4];
    total.copy_from_slice(&chunk[16..20]);
    let header = Header {
        id: u64::from_be_bytes(id),
        index: be16(12),
        count: be16(14),
        total: u32::from_be_bytes(total) as usize,
    };
    let piece = &chunk[HEADER_LEN..];
    if header.total > MAX_MESSAGE_BYTES {
        return Err("chunk_message_too_large");
    }
    // The count and every piece's length follow from the total: nothing else is accepted.
    let expected_count = header.total.div_ceil(CHUNK_BYTES).max(1);
    if usize::from(header.count) != expected_count || header.index >= header.count {
        return Err("chunk_malformed");
    }
    let start = usize::from(header.index) * CHUNK_BYTES;
    let expected_len = header.total.saturating_sub(start).min(CHUNK_BYTES);
    if piece.len() != expected_len {
        return Err("chunk_malformed");
    }
    Ok((header, piece))
}

struct Partial {
    message: Vec<u8>,
    received: Vec<bool>,
    missing: usize,
    started: Instant,
}

/// Puts chunked messages back together, per source and flow.
#[derive(Default)]
pub struct Reassembler {
    partial: HashMap<(NodeId, u32, u64), Partial>,
    held: usize,
}

impl Reassembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes held for incomplete messages.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// Takes one chunk from `source` on `flow`; `dropped` is told of every message given up
    /// (expired or evicted) on the way.
    pub fn feed(
        &mut self,
        source: NodeId,
        flow: u32,
        chunk: &[u8],
        now: Instant,
        mut dropped: impl FnMut(&'static str),
    ) -> Fed {
        self.expire(now, &mut dropped);
        let (header, piece) = match parse(chunk) {
            Ok(parsed) => parsed,
            Err(reason) => return Fed::Dropped(reason),
        };
        if header.count == 1 {
            return Fed::Complete(piece.to_vec());
        }
        let key = (source, flow, header.id);
        if !self.partial.contains_key(&key) {
            self.make_room(source, header.total, &mut dropped);
            self.held += header.total;
            self.partial.insert(
                key,
                Partial {
                    message: vec![0; header.total],
                    received: vec![false; usize::from(header.count)],
                    missing: usize::from(header.count),
                    started: now,
                },
            );
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            return Fed::Dropped("chunk_malformed");
        };
        if partial.message.len() != header.total || partial.received.len() != usize::from(header.count) {
            return Fed::Dropped("chunk_inconsistent");
        }
        let index = usize::from(header.index);
        if partial.received[index] {
            return Fed::Dropped("chunk_duplicate");
        }
        let start = index * CHUNK_BYTES;
        partial.message[start..start + piece.len()].copy_from_slice(piece);
        partial.received[index] = true;
        partial.missing -= 1;
        if partial.missing > 0 {
            return Fed::Pending;
        }
        match self.partial.remove(&key) {
            Some(done) => {
                self.held -= done.message.len();
                Fed::Complete(done.message)
            }
            None => Fed::Dropped("chunk_malformed"),
        }
    }

    fn expire(&mut self, now: Instant, dropped: &mut impl FnMut(&'static str)) {
        let held = &mut self.held;
        self.partial.retain(|_, p| {
            let keep = now.duration_since(p.started) < PARTIAL_TTL;
            if !keep {
                *held -= p.message.len();
                dropped("chunk_message_expired");
            }
            keep
        });
    }

    /// Evicts the oldest messages in progress until `source` has room for one more and all
    /// sources together for `bytes` more.
    fn make_room(&mut self, source: NodeId, bytes: usize, dropped: &mut impl FnMut(&'static str)) {
        loop {
            let of_source = self.partial.keys().filter(|(s, _, _)| *s == source).count();
            let victim = if of_source >= PARTIAL_PER_SOURCE {
                self.oldest(|key| key.0 == source)
            } else if self.held + bytes > PARTIAL_BYTES {
                self.oldest(|_| true)
            } else {
                return;
            };
            let Some(key) = victim else { return };
            if let Some(p) = self.partial.remove(&key) {
                self.held -= p.message.len();
                dropped("chunk_message_evicted");
            }
        }
    }

    fn oldest(&self, which: impl Fn(&(NodeId, u32, u64)) -> bool) -> Option<(NodeId, u32, u64)> {
        self.partial
            .iter()
            .filter(|(key, _)| which(key))
            .min_by_key(|(_, p)| p.started)
            .map(|(key, _)| *key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId([1; 32]);
    const B: NodeId = NodeId([2; 32]);

    fn message(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn feed_all(r: &mut Reassembler, source: NodeId, chunks: &[Vec<u8>], now: Instant) -> Vec<Fed> {
        chunks.iter().map(|c| r.feed(source, 1, c, now, |_| {})).collect()
    }

    #[test]
    fn a_message_of_several_chunks_is_rebuilt_in_any_order() {
        let big = message(3 * CHUNK_BYTES + 100);
        let mut chunks = split(9, &big).unwrap();
        assert_eq!(chunks.len(), 4);
        assert!(chunks.iter().all(|c| c.len() <= MAX_DATA_PAYLOAD_LEN));
        chunks.reverse();
        let mut r = Reassembler::new();
        let now = Instant::now();
        let fed = feed_all(&mut r, A, &chunks, now);
        assert_eq!(fed[..3], [Fed::Pending, Fed::Pending, Fed::Pending]);
        assert_eq!(fed[3], Fed::Complete(big));
        assert_eq!(r.held_bytes(), 0);
        // Small messages, including an empty one, are a single chunk.
        for len in [0, 1, CHUNK_BYTES] {
            let small = message(len);
            let chunks = split(1, &small).unwrap();
            assert_eq!(chunks.len(), 1);
            assert_eq!(r.feed(A, 1, &chunks[0], now, |_| {}), Fed::Complete(small));
        }
        assert_eq!(
            split(1, &vec![0; MAX_MESSAGE_BYTES + 1]),
            Err(TooLarge {
                len: MAX_MESSAGE_BYTES + 1
            })
        );
    }

    #[test]
    fn sources_flows_and_ids_do_not_mix_and_duplicates_are_dropped() {
        let one = message(CHUNK_BYTES + 1);
        let two: Vec<u8> = one.iter().map(|b| b ^ 0xff).collect();
        let (c1, c2) = (split(5, &one).unwrap(), split(5, &two).unwrap());
        let mut r = Reassembler::new();
        let now = Instant::now();
        assert_eq!(r.feed(A, 1, &c1[0], now, |_| {}), Fed::Pending);
        assert_eq!(
            r.feed(B, 1, &c2[0], now, |_| {}),
            Fed::Pending,
            "same id, other source"
        );
        assert_eq!(r.feed(A, 1, &c1[0], now, |_| {}), Fed::Dropped("chunk_duplicate"));
        assert_eq!(r.feed(B, 1, &c2[1], now, |_| {}), Fed::Complete(two));
        assert_eq!(r.feed(A, 2, &c1[1], now, |_| {}), Fed::Pending, "other flow");
        assert_eq!(r.feed(A, 1, &c1[1], now, |_| {}), Fed::Complete(one));
    }

    #[test]
    fn garbage_and_inconsistent_chunks_are_dropped_without_panicking() {
        let mut r = Reassembler::new();
        let now = Instant::now();
        let good = split(3, &message(2 * CHUNK_BYTES)).unwrap();
        let mut cases: Vec<Vec<u8>> = vec![vec![], b"X0FC".to_vec(), b"nope and more bytes here".to_vec()];
        let mut wrong_count = good[0].clone();
        wrong_count[15] = 9;
        let mut wrong_index = good[0].clone();
        wrong_index[13] = 2;
        let mut huge_total = good[0].clone();
        huge_total[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut short = good[1].clone();
        short.pop();
        cases.extend([wrong_count, wrong_index, huge_total, short]);
        for case in &cases {
            assert!(
                matches!(r.feed(A, 1, case, now, |_| {}), Fed::Dropped(_)),
                "{case:?}"
            );
        }
        assert_eq!(r.held_bytes(), 0);
        // Same id, a different total: the first message's chunks stand.
        assert_eq!(r.feed(A, 1, &good[0], now, |_| {}), Fed::Pending);
        let other = split(3, &message(3 * CHUNK_BYTES)).unwrap();
        assert_eq!(
            r.feed(A, 1, &other[1], now, |_| {}),
            Fed::Dropped("chunk_inconsistent")
        );
        for len in 0..64 {
            let bytes = message(len);
            let _ = r.feed(B, 1, &bytes, now, |_| {});
        }
    }

    #[test]
    fn incomplete_messages_are_bounded_per_source_and_expire() {
        let mut r = Reassembler::new();
        let start = Instant::now();
        let mut drops = Vec::new();
        for id in 0..(PARTIAL_PER_SOURCE as u64 + 2) {
            let first = &split(id, &message(2 * CHUNK_BYTES)).unwrap()[0];
            assert_eq!(r.feed(A, 1, first, start, |why| drops.push(why)), Fed::Pending);
        }
        assert_eq!(drops, vec!["chunk_message_evicted"; 2]);
        assert_eq!(r.held_bytes(), PARTIAL_PER_SOURCE * 2 * CHUNK_BYTES);
        // Another source is not crowded out by A.
        let b = split(1, &message(2 * CHUNK_BYTES)).unwrap();
        assert_eq!(r.feed(B, 1, &b[0], start, |why| drops.push(why)), Fed::Pending);
        assert_eq!(drops.len(), 2);
        // Past the TTL every incomplete message goes.
        let later = start + PARTIAL_TTL;
        let lone = split(77, &message(10)).unwrap();
        assert!(matches!(
            r.feed(B, 1, &lone[0], later, |why| drops.push(why)),
            Fed::Complete(_)
        ));
        assert_eq!(drops.len(), 2 + PARTIAL_PER_SOURCE + 1);
        assert_eq!(r.held_bytes(), 0);
        assert_eq!(
            r.feed(B, 1, &b[1], later, |_| {}),
            Fed::Pending,
            "its first chunk expired"
        );
    }
}
