//! `SeqnoRequest`: a node that lost its route to a destination and holds only unfeasible offers
//! asks, through its neighbours, for an advertisement of that destination with a sequence
//! number of at least `seq` (Babel's seqno request, RFC 8966 §3.8.1.2). Whoever has one answers
//! with it; otherwise the request travels along selected routes to the destination, which
//! advertises afresh. It carries no routing claim: an answer is an ordinary signed
//! advertisement, checked like any other.

use crate::codec::Cursor;
use crate::{DecodeError, EncodeError, NodeId};

/// Body layout (big-endian): `destination [32] | seq u64 | hop_limit u8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqnoRequest {
    /// The originator whose advertisement is wanted.
    pub destination: NodeId,
    /// The lowest sequence number that would help the requester.
    pub seq: u64,
    /// How many more times it may be forwarded (0: not at all).
    pub hop_limit: u8,
}

impl SeqnoRequest {
    /// Bytes of an encoded body.
    pub const BODY_LEN: usize = 32 + 8 + 1;

    /// Decodes a request body (the frame payload, without the frame header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(body);
        let request = SeqnoRequest {
            destination: cursor.node_id()?,
            seq: cursor.u64()?,
            hop_limit: cursor.u8()?,
        };
        cursor.finish()?;
        Ok(request)
    }

    /// Appends the encoded body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.reserve(Self::BODY_LEN);
        out.extend_from_slice(self.destination.as_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(self.hop_limit);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::unhex;

    const VECTOR: &str = concat!(
        "abababababababababababababababababababababababababababababababab", // destination
        "0000000000000102",                                                 // seq 258
        "07",                                                               // hop limit
    );

    fn request() -> SeqnoRequest {
        SeqnoRequest {
            destination: NodeId([0xAB; 32]),
            seq: 258,
            hop_limit: 7,
        }
    }

    #[test]
    fn the_request_vector_decodes_to_the_fixed_value_and_back() {
        let bytes = unhex(VECTOR);
        assert_eq!(SeqnoRequest::decode(&bytes), Ok(request()));
        let mut out = Vec::new();
        request().encode_body(&mut out).unwrap();
        assert_eq!(out, bytes);
        assert_eq!(out.len(), SeqnoRequest::BODY_LEN);
    }

    #[test]
    fn a_short_or_long_body_is_refused() {
        let bytes = unhex(VECTOR);
        assert_eq!(
            SeqnoRequest::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(SeqnoRequest::decode(&long), Err(DecodeError::TrailingBytes));
    }
}
