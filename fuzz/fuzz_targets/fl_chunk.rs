//! Any bytes as one federated chunk: no panic, and an accepted chunk is its own canonical
//! encoding. Then the same bytes as a stream of chunks from a few sources, time moving on, fed
//! to one reassembler: no panic, nothing completed over the message limit, and never more held
//! than the bound on incomplete messages.
//!
//! Stream records: `source u8 | millis u8 (time since the last record) | len u16 | chunk`.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_fl::codec::chunks::{ChunkHeader, Fed, MAX_MESSAGE_BYTES, PARTIAL_BYTES, Reassembler};
use x0tta6bl4_wire::NodeId;

fuzz_target!(|bytes: &[u8]| {
    if let Ok((header, piece)) = ChunkHeader::decode(bytes) {
        assert_eq!(header.encode(piece), bytes);
    }

    let mut reassembler = Reassembler::new();
    let mut now = Instant::now();
    let mut rest = bytes;
    while let Some((&[source, millis, len_hi, len_lo], tail)) = rest.split_first_chunk::<4>() {
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo])).min(tail.len());
        let (chunk, tail) = tail.split_at(len);
        rest = tail;
        now += Duration::from_millis(u64::from(millis) * 256);
        let fed = reassembler.feed(
            NodeId([source % 8; 32]),
            u32::from(source >> 3),
            chunk,
            now,
            |_| {},
        );
        if let Fed::Complete(message) = fed {
            assert!(message.len() <= MAX_MESSAGE_BYTES);
        }
        assert!(reassembler.held_bytes() <= PARTIAL_BYTES);
    }
});
