//! Federated messages larger than one mesh payload (a training request or an update carries
//! the whole model; a mesh data message carries at most 64 KiB): every federated message is
//! sent as one or more chunks and put back together by the receiver.
//!
//! A chunk (big-endian): `"X0FC" | message id u64 | index u16 | count u16 | total u32 | piece`.
//! The count and every piece's length follow from the total; nothing else is accepted.
//!
//! Chunks are not authenticated on their own (the whole message is signed and verified once
//! reassembled), so what an unauthenticated sender can make the [`Reassembler`] hold is
//! bounded: a message is at most [`MAX_MESSAGE_BYTES`], a source has at most
//! [`PARTIAL_PER_SOURCE`] messages in progress, all sources together at most
//! [`PARTIAL_BYTES`], and a message not completed within [`PARTIAL_TTL`] is dropped. Every
//! drop has a reason to count it under. The reassembler does no IO and reads no clock: the
//! caller passes `now`.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use x0tta6bl4_wire::{MAX_DATA_PAYLOAD_LEN, NodeId};

const MAGIC: [u8; 4] = *b"X0FC";
/// Bytes of a chunk before its piece.
pub const HEADER_LEN: usize = 4 + 8 + 2 + 2 + 4;
/// Bytes of message per chunk: what is left of a mesh payload after the chunk header.
pub const CHUNK_BYTES: usize = MAX_DATA_PAYLOAD_LEN - HEADER_LEN;
/// Largest message sent or reassembled (964 KiB): the largest model a round ConfigMap holds
/// (900 KiB, `x0tta6bl4_api::fl_protocol::MAX_MODEL_BYTES`; the node agent asserts at compile
/// time that it fits) plus 64 KiB for the request's or update's own fields and signature.
pub const MAX_MESSAGE_BYTES: usize = 900 * 1024 + 64 * 1024;
/// Messages in progress per source (a participant has at most a request and a resend of it
/// in flight; an aggregator a few updates).
pub const PARTIAL_PER_SOURCE: usize = 4;
/// Bytes held for incomplete messages of all sources together.
pub const PARTIAL_BYTES: usize = 64 * 1024 * 1024;
/// How long an incomplete message waits for its missing chunks.
pub const PARTIAL_TTL: Duration = Duration::from_secs(30);
// A largest message is far fewer than u16::MAX chunks, and its length fits a u32.
const _: () = assert!(MAX_MESSAGE_BYTES.div_ceil(CHUNK_BYTES) <= u16::MAX as usize);
const _: () = assert!(MAX_MESSAGE_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_MESSAGE_BYTES <= PARTIAL_BYTES);

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
    // Both fit: the message is at most MAX_MESSAGE_BYTES (see the assertions above).
    let count = u16::try_from(pieces.len()).map_err(|_| TooLarge { len: message.len() })?;
    let total = u32::try_from(message.len()).map_err(|_| TooLarge { len: message.len() })?;
    Ok((0..count)
        .zip(pieces)
        .map(|(index, piece)| {
            let header = ChunkHeader {
                id,
                index,
                count,
                total,
            };
            header.encode(piece)
        })
        .collect())
}

/// A chunk's header: which message it belongs to and where its piece goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    /// The sender's id of the message (random per message).
    pub id: u64,
    /// The piece's position, `0..count`.
    pub index: u16,
    /// Pieces in the message: `total` divided into [`CHUNK_BYTES`], at least one.
    pub count: u16,
    /// The whole message's length.
    pub total: u32,
}

impl ChunkHeader {
    /// The chunk: this header, then `piece`.
    pub fn encode(&self, piece: &[u8]) -> Vec<u8> {
        let mut chunk = Vec::with_capacity(HEADER_LEN + piece.len());
        chunk.extend_from_slice(&MAGIC);
        chunk.extend_from_slice(&self.id.to_be_bytes());
        chunk.extend_from_slice(&self.index.to_be_bytes());
        chunk.extend_from_slice(&self.count.to_be_bytes());
        chunk.extend_from_slice(&self.total.to_be_bytes());
        chunk.extend_from_slice(piece);
        chunk
    }

    /// The header and piece of a chunk that is consistent on its own (its total within
    /// [`MAX_MESSAGE_BYTES`], its count and piece length what the total makes them), or the
    /// reason it is dropped under.
    pub fn decode(chunk: &[u8]) -> Result<(ChunkHeader, &[u8]), &'static str> {
        let mut rest = chunk;
        let fields = (
            field::<4>(&mut rest),
            field::<8>(&mut rest),
            field::<2>(&mut rest),
            field::<2>(&mut rest),
            field::<4>(&mut rest),
        );
        let (Some(magic), Some(id), Some(index), Some(count), Some(total)) = fields else {
            return Err("chunk_malformed");
        };
        if magic != MAGIC {
            return Err("chunk_malformed");
        }
        let header = ChunkHeader {
            id: u64::from_be_bytes(id),
            index: u16::from_be_bytes(index),
            count: u16::from_be_bytes(count),
            total: u32::from_be_bytes(total),
        };
        let piece = rest;
        let total = header.total_len().ok_or("chunk_message_too_large")?;
        if total > MAX_MESSAGE_BYTES {
            return Err("chunk_message_too_large");
        }
        let expected_count = total.div_ceil(CHUNK_BYTES).max(1);
        if usize::from(header.count) != expected_count || header.index >= header.count {
            return Err("chunk_malformed");
        }
        if piece.len() != header.piece_range(total).len() {
            return Err("chunk_malformed");
        }
        Ok((header, piece))
    }

    fn total_len(&self) -> Option<usize> {
        usize::try_from(self.total).ok()
    }

    /// Where this chunk's piece goes in a message of `total` bytes (empty past the end).
    fn piece_range(&self, total: usize) -> std::ops::Range<usize> {
        let start = usize::from(self.index).saturating_mul(CHUNK_BYTES).min(total);
        start..start.saturating_add(CHUNK_BYTES).min(total)
    }
}

/// The next `N` bytes of `bytes`, which moves past them.
fn field<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
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

    /// Takes one chunk from `source` on `flow`, received at `now`; `dropped` is told of every
    /// message given up (expired or evicted) on the way.
    pub fn feed(
        &mut self,
        source: NodeId,
        flow: u32,
        chunk: &[u8],
        now: Instant,
        mut dropped: impl FnMut(&'static str),
    ) -> Fed {
        self.expire(now, &mut dropped);
        let (header, piece) = match ChunkHeader::decode(chunk) {
            Ok(parsed) => parsed,
            Err(reason) => return Fed::Dropped(reason),
        };
        if header.count == 1 {
            return Fed::Complete(piece.to_vec());
        }
        let Some(total) = header.total_len() else {
            return Fed::Dropped("chunk_message_too_large");
        };
        let key = (source, flow, header.id);
        if !self.partial.contains_key(&key) {
            self.make_room(source, total, &mut dropped);
            self.held += total;
            self.partial.insert(
                key,
                Partial {
                    message: vec![0; total],
                    received: vec![false; usize::from(header.count)],
                    missing: usize::from(header.count),
                    started: now,
                },
            );
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            return Fed::Dropped("chunk_malformed");
        };
        if partial.message.len() != total || partial.received.len() != usize::from(header.count) {
            return Fed::Dropped("chunk_inconsistent");
        }
        let Some(received) = partial.received.get_mut(usize::from(header.index)) else {
            return Fed::Dropped("chunk_malformed");
        };
        if *received {
            return Fed::Dropped("chunk_duplicate");
        }
        let Some(place) = partial.message.get_mut(header.piece_range(total)) else {
            return Fed::Dropped("chunk_malformed");
        };
        place.copy_from_slice(piece);
        *received = true;
        partial.missing = partial.missing.saturating_sub(1);
        if partial.missing > 0 {
            return Fed::Pending;
        }
        match self.partial.remove(&key) {
            Some(done) => {
                self.held = self.held.saturating_sub(done.message.len());
                Fed::Complete(done.message)
            }
            None => Fed::Dropped("chunk_malformed"),
        }
    }

    fn expire(&mut self, now: Instant, dropped: &mut impl FnMut(&'static str)) {
        let held = &mut self.held;
        self.partial.retain(|_, p| {
            let keep = now.saturating_duration_since(p.started) < PARTIAL_TTL;
            if !keep {
                *held = held.saturating_sub(p.message.len());
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
            } else if self.held.saturating_add(bytes) > PARTIAL_BYTES {
                self.oldest(|_| true)
            } else {
                return;
            };
            let Some(key) = victim else { return };
            if let Some(p) = self.partial.remove(&key) {
                self.held = self.held.saturating_sub(p.message.len());
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
