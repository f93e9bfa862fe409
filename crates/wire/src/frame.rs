//! Frames: `magic "X0" | version u8 | message type u8 | body length u32 | body`, one message
//! each. [`decode_frame`] reads one from a buffer; [`FrameReader`] reassembles them from the
//! arbitrary chunks a byte stream delivers.

use crate::{DecodeError, EncodeError, Message, MessageType};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"X0";
/// The wire version this crate speaks.
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 8;
/// Largest body a frame may declare. Larger declarations are refused as soon as the header
/// arrives, before any byte of the body is buffered.
pub const MAX_BODY_LEN: usize = 64 * 1024;

/// A checked frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    message_type: u8,
    body_len: usize,
}

impl Header {
    fn frame_len(self) -> usize {
        HEADER_LEN + self.body_len
    }
}

/// Checks as much of a header as `bytes` holds, so a stream that is not ours fails at its first
/// byte. Returns `Truncated` only when the bytes present are a valid start of a header.
fn parse_header(bytes: &[u8]) -> Result<Header, DecodeError> {
    for (byte, expected) in bytes.iter().zip(MAGIC) {
        if *byte != expected {
            return Err(DecodeError::BadMagic);
        }
    }
    if let Some(&version) = bytes.get(2)
        && version != VERSION
    {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let Some((header, _)) = bytes.split_first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Truncated);
    };
    let [_, _, _, message_type, l0, l1, l2, l3] = *header;
    let body_len = usize::try_from(u32::from_be_bytes([l0, l1, l2, l3])).unwrap_or(usize::MAX);
    if body_len > MAX_BODY_LEN {
        return Err(DecodeError::Oversized {
            field: "frame body",
            len: body_len,
            max: MAX_BODY_LEN,
        });
    }
    Ok(Header {
        message_type,
        body_len,
    })
}

/// Decodes a complete body of the type the header announced. A field that runs past the end of
/// the body is `Malformed` here: the body length was declared, and all of it is present.
fn decode_body(header: Header, body: &[u8]) -> Result<Message, DecodeError> {
    let message_type =
        MessageType::from_u8(header.message_type).ok_or(DecodeError::UnknownType(header.message_type))?;
    let decoded = match message_type {
        MessageType::Hello => crate::Hello::decode(body).map(Message::Hello),
        MessageType::Originator => crate::Originator::decode(body).map(Message::Originator),
        MessageType::Data => crate::Data::decode(body).map(Message::Data),
        MessageType::EndorsementAnnounce => {
            crate::EndorsementAnnounce::decode(body).map(Message::EndorsementAnnounce)
        }
        MessageType::SvidUpdate => crate::SvidUpdate::decode(body).map(Message::SvidUpdate),
        MessageType::SeqnoRequest => crate::SeqnoRequest::decode(body).map(Message::SeqnoRequest),
    };
    decoded.map_err(|error| match error {
        DecodeError::Truncated => DecodeError::Malformed("field runs past the end of the frame body"),
        other => other,
    })
}

/// Decodes the frame at the start of `bytes`, returning the message and how many bytes it
/// occupied (bytes after it are left alone: they may be the next frame).
///
/// `Truncated` means the bytes are a valid beginning of a frame; every other error means they
/// can never become one.
pub fn decode_frame(bytes: &[u8]) -> Result<(Message, usize), DecodeError> {
    let header = parse_header(bytes)?;
    let frame = bytes.get(..header.frame_len()).ok_or(DecodeError::Truncated)?;
    let body = frame.get(HEADER_LEN..).ok_or(DecodeError::Truncated)?;
    Ok((decode_body(header, body)?, header.frame_len()))
}

/// Appends `message` as one frame to `out`. On error `out` is left as it was.
pub fn encode_frame(message: &Message, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(message.message_type() as u8);
    out.extend_from_slice(&[0; 4]);
    let encoded = match message {
        Message::Hello(hello) => hello.encode_body(out),
        Message::Originator(originator) => originator.encode_body(out),
        Message::Data(data) => data.encode_body(out),
        Message::EndorsementAnnounce(announce) => announce.encode_body(out),
        Message::SvidUpdate(update) => update.encode_body(out),
        Message::SeqnoRequest(request) => request.encode_body(out),
    };
    let body_len = out.len().saturating_sub(start + HEADER_LEN);
    let result = encoded.and_then(|()| {
        crate::codec::check_len("frame body", body_len, MAX_BODY_LEN)?;
        let len = u32::try_from(body_len).map_err(|_| EncodeError::TooLarge {
            field: "frame body",
            len: body_len,
            max: MAX_BODY_LEN,
        })?;
        if let Some(slot) = out.get_mut(start + 4..start + HEADER_LEN) {
            slot.copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Reassembles frames from a byte stream delivered in arbitrary chunks.
///
/// It buffers at most one incomplete frame (header plus at most [`MAX_BODY_LEN`] bytes): whole
/// frames inside a chunk are decoded straight from the chunk, and a frame is copied only while
/// it is split across chunks.
///
/// Errors inside a well-framed message (`unknown_type`, `malformed`, `trailing_bytes`,
/// `oversized` fields) are reported and the frame is skipped: the stream stays usable. A broken
/// header (`bad_magic`, `unsupported_version`, an oversized frame) means the stream is no longer
/// framed: it is reported once, the reader stops, and the session should be closed.
#[derive(Debug, Default)]
pub struct FrameReader {
    partial: Vec<u8>,
    failed: Option<DecodeError>,
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next chunk of the stream; iterate the result to get the messages it completes.
    /// Bytes not consumed by the time the iterator is dropped are kept only if they belong to
    /// an incomplete frame, so iterate to the end.
    pub fn feed<'r, 'i>(&'r mut self, chunk: &'i [u8]) -> Frames<'r, 'i> {
        Frames {
            reader: self,
            input: chunk,
        }
    }

    /// Bytes of an incomplete frame held, waiting for the rest.
    pub fn buffered_len(&self) -> usize {
        self.partial.len()
    }

    /// The error that broke the stream's framing, if any: once set, the reader yields nothing.
    pub fn failure(&self) -> Option<DecodeError> {
        self.failed
    }

    fn fail(&mut self, error: DecodeError) -> Option<Result<Message, DecodeError>> {
        self.failed = Some(error);
        self.partial = Vec::new();
        Some(Err(error))
    }
}

/// The messages completed by one chunk of a stream; see [`FrameReader::feed`].
#[derive(Debug)]
pub struct Frames<'r, 'i> {
    reader: &'r mut FrameReader,
    input: &'i [u8],
}

impl Iterator for Frames<'_, '_> {
    type Item = Result<Message, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.reader.failed.is_some() {
            return None;
        }
        if self.reader.partial.is_empty() {
            return self.next_from_input();
        }
        loop {
            let wanted = match parse_header(&self.reader.partial) {
                Ok(header) => header.frame_len().saturating_sub(self.reader.partial.len()),
                Err(DecodeError::Truncated) => HEADER_LEN.saturating_sub(self.reader.partial.len()),
                Err(error) => return self.reader.fail(error),
            };
            if wanted == 0 {
                let partial = std::mem::take(&mut self.reader.partial);
                let decoded = decode_frame(&partial).map(|(message, _)| message);
                // Keep the allocation for the next split frame.
                self.reader.partial = partial;
                self.reader.partial.clear();
                return Some(decoded);
            }
            let (taken, rest) = self.input.split_at(wanted.min(self.input.len()));
            if taken.is_empty() {
                return None;
            }
            self.reader.partial.extend_from_slice(taken);
            self.input = rest;
        }
    }
}

impl Frames<'_, '_> {
    /// Fast path: nothing is buffered, so decode straight from the chunk.
    fn next_from_input(&mut self) -> Option<Result<Message, DecodeError>> {
        if self.input.is_empty() {
            return None;
        }
        match parse_header(self.input) {
            Ok(header) => match self.input.split_at_checked(header.frame_len()) {
                Some((frame, rest)) => {
                    self.input = rest;
                    let body = frame.get(HEADER_LEN..).unwrap_or_default();
                    Some(decode_body(header, body))
                }
                None => self.keep_rest(),
            },
            Err(DecodeError::Truncated) => self.keep_rest(),
            Err(error) => self.reader.fail(error),
        }
    }

    /// The rest of the chunk is the start of a frame (at most one frame long): keep it.
    fn keep_rest(&mut self) -> Option<Result<Message, DecodeError>> {
        self.reader.partial.extend_from_slice(self.input);
        self.input = &[];
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::unhex;
    use crate::{Data, Hello, NodeId};

    fn mk_hello_frame() -> Vec<u8> {
        let hello = Hello {
            seq: 1,
            ..Hello::default()
        };
        Message::Hello(hello).to_frame().unwrap()
    }

    #[test]
    fn the_frame_vector_decodes_to_the_fixed_value_and_back() {
        let bytes = unhex(concat!(
            "5830",     // "X0"
            "01",       // version
            "01",       // hello
            "00000016", // body length 22
            "00000001",
            "0000000000000000",
            "00000000",
            "00000000",
            "0000"
        ));
        let (message, consumed) = decode_frame(&bytes).unwrap();
        assert_eq!(
            message,
            Message::Hello(Hello {
                seq: 1,
                ..Hello::default()
            })
        );
        assert_eq!(consumed, bytes.len());
        assert_eq!(message.to_frame().unwrap(), bytes);
    }

    #[test]
    fn bytes_after_a_frame_are_left_for_the_next_one() {
        let mut bytes = mk_hello_frame();
        let one = bytes.len();
        bytes.extend(mk_hello_frame());
        assert_eq!(decode_frame(&bytes).unwrap().1, one);
    }

    #[test]
    fn header_errors_are_reported_at_the_first_wrong_byte() {
        assert_eq!(decode_frame(b"Y"), Err(DecodeError::BadMagic));
        assert_eq!(decode_frame(b"X0\x02"), Err(DecodeError::UnsupportedVersion(2)));
        assert_eq!(decode_frame(b"X0\x01"), Err(DecodeError::Truncated));
        assert_eq!(decode_frame(b""), Err(DecodeError::Truncated));
        let oversized = decode_frame(b"X0\x01\x01\x00\x01\x00\x01").unwrap_err();
        assert_eq!(oversized.reason(), "oversized");
    }

    #[test]
    fn an_unknown_type_is_reported_with_its_number() {
        assert_eq!(
            decode_frame(b"X0\x01\x7f\x00\x00\x00\x00"),
            Err(DecodeError::UnknownType(0x7f))
        );
    }

    #[test]
    fn a_field_running_past_a_complete_body_is_malformed() {
        let mut bytes = mk_hello_frame();
        // Declare a body one byte shorter and drop the last byte: the cost count is cut.
        bytes.pop();
        if let Some(len) = bytes.get_mut(7) {
            *len -= 1;
        }
        assert_eq!(decode_frame(&bytes).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn a_too_large_message_is_not_encoded_and_leaves_the_buffer_alone() {
        let data = Data {
            payload: vec![0; MAX_BODY_LEN],
            ..Data::default()
        };
        let mut out = vec![1, 2, 3];
        assert!(encode_frame(&Message::Data(data), &mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn the_reader_yields_frames_split_byte_by_byte() {
        let data = Message::Data(Data {
            source: NodeId([9; 32]),
            payload: vec![7; 300],
            ..Data::default()
        });
        let mut stream = mk_hello_frame();
        stream.extend(data.to_frame().unwrap());
        let mut reader = FrameReader::new();
        let mut got = Vec::new();
        for byte in &stream {
            got.extend(reader.feed(std::slice::from_ref(byte)));
            assert!(reader.buffered_len() <= HEADER_LEN + MAX_BODY_LEN);
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got.get(1), Some(&Ok(data)));
        assert_eq!(reader.buffered_len(), 0);
    }

    #[test]
    fn the_reader_skips_an_unknown_type_and_keeps_going() {
        let mut stream = b"X0\x01\x7f\x00\x00\x00\x02ab".to_vec();
        stream.extend(mk_hello_frame());
        let mut reader = FrameReader::new();
        let got: Vec<_> = reader.feed(&stream).collect();
        assert_eq!(got.first(), Some(&Err(DecodeError::UnknownType(0x7f))));
        assert!(matches!(got.get(1), Some(Ok(Message::Hello(_)))));
    }

    #[test]
    fn the_reader_stops_for_good_on_a_broken_header() {
        let mut reader = FrameReader::new();
        let got: Vec<_> = reader.feed(b"X1garbage").collect();
        assert_eq!(got, vec![Err(DecodeError::BadMagic)]);
        assert_eq!(reader.feed(&mk_hello_frame()).count(), 0);
        assert_eq!(reader.failure(), Some(DecodeError::BadMagic));
    }

    #[test]
    fn the_reader_refuses_an_oversized_frame_before_buffering_its_body() {
        let mut reader = FrameReader::new();
        let got: Vec<_> = reader.feed(b"X0\x01\x03\xff\xff\xff\xff").collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            got.first()
                .and_then(|r| r.as_ref().err())
                .map(DecodeError::reason),
            Some("oversized")
        );
        assert_eq!(reader.buffered_len(), 0);
    }
}
