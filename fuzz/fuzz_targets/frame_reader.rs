//! Any byte stream in any chunking: the reader never panics, never holds more than one frame,
//! and yields exactly what `decode_frame` finds walking the same stream in one piece.
#![no_main]

use libfuzzer_sys::fuzz_target;
use x0tta6bl4_wire::{DecodeError, FrameReader, HEADER_LEN, MAX_BODY_LEN, Message, decode_frame};

/// What a reader must produce: frames in order, skipping a well-framed bad one, stopping at the
/// first broken header.
fn reference(mut stream: &[u8]) -> Vec<Result<Message, DecodeError>> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        match decode_frame(stream) {
            Ok((message, consumed)) => {
                out.push(Ok(message));
                stream = &stream[consumed..];
            }
            Err(DecodeError::Truncated) => break,
            Err(error @ (DecodeError::BadMagic | DecodeError::UnsupportedVersion(_))) => {
                out.push(Err(error));
                break;
            }
            Err(error) => {
                // Either an oversized header (fatal) or a bad frame whose length is known.
                let len = stream
                    .get(4..8)
                    .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
                out.push(Err(error));
                match len {
                    Some(len) if len <= MAX_BODY_LEN && HEADER_LEN + len <= stream.len() => {
                        stream = &stream[HEADER_LEN + len..]
                    }
                    _ => break,
                }
            }
        }
    }
    out
}

fuzz_target!(|input: &[u8]| {
    // The first byte seeds the chunk sizes, the rest is the stream.
    let Some((&seed, stream)) = input.split_first() else {
        return;
    };
    let mut reader = FrameReader::new();
    let mut got = Vec::new();
    let mut rest = stream;
    let mut size = usize::from(seed % 17) + 1;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(size.min(rest.len()));
        got.extend(reader.feed(chunk));
        assert!(reader.buffered_len() <= HEADER_LEN + MAX_BODY_LEN);
        rest = tail;
        size = size * 7 % 31 + 1;
    }
    assert_eq!(got, reference(stream));
});
