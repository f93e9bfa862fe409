//! `Data`: the agents' own traffic (federated-learning updates, chaos commands), carried hop by
//! hop along the mesh routes.

use crate::codec::{Cursor, check_len};
use crate::{DecodeError, EncodeError, MAX_BODY_LEN, NodeId};

/// Bytes of a data body before its payload.
const DATA_HEADER_LEN: usize = 32 + 32 + 1 + 4 + 4;
/// Largest payload one data message can carry (what fits in one frame).
pub const MAX_DATA_PAYLOAD_LEN: usize = MAX_BODY_LEN - DATA_HEADER_LEN;

/// Body layout (big-endian): `source [32] | destination [32] | ttl u8 | flow u32 |
/// payload_len u32 | payload`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Data {
    /// The agent that sent it.
    pub source: NodeId,
    /// The agent it is for.
    pub destination: NodeId,
    /// Hops it may still take; each forwarder decrements it and drops it at 0.
    pub ttl: u8,
    /// Which conversation it belongs to (chosen by the source; for ordering and metrics).
    pub flow: u32,
    /// Opaque to the mesh.
    pub payload: Vec<u8>,
}

impl Data {
    /// Decodes a data body (the frame payload, without the frame header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(body);
        let source = cursor.node_id()?;
        let destination = cursor.node_id()?;
        let ttl = cursor.u8()?;
        let flow = cursor.u32()?;
        let payload_len = usize::try_from(cursor.u32()?).unwrap_or(usize::MAX);
        if payload_len > MAX_DATA_PAYLOAD_LEN {
            return Err(DecodeError::Oversized {
                field: "payload",
                len: payload_len,
                max: MAX_DATA_PAYLOAD_LEN,
            });
        }
        let payload = cursor.bytes(payload_len)?.to_vec();
        cursor.finish()?;
        Ok(Data {
            source,
            destination,
            ttl,
            flow,
            payload,
        })
    }

    /// Appends the encoded body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_len("payload", self.payload.len(), MAX_DATA_PAYLOAD_LEN)?;
        // Cannot fail after the check above; kept fallible rather than panicking.
        let payload_len = u32::try_from(self.payload.len()).map_err(|_| EncodeError::TooLarge {
            field: "payload",
            len: self.payload.len(),
            max: MAX_DATA_PAYLOAD_LEN,
        })?;
        out.reserve(DATA_HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.source.0);
        out.extend_from_slice(&self.destination.0);
        out.push(self.ttl);
        out.extend_from_slice(&self.flow.to_be_bytes());
        out.extend_from_slice(&payload_len.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::unhex;

    fn mk_data() -> Data {
        Data {
            source: NodeId([0x01; 32]),
            destination: NodeId([0x02; 32]),
            ttl: 16,
            flow: 0xDEAD_BEEF,
            payload: b"hi".to_vec(),
        }
    }

    const VECTOR: &str = concat!(
        "0101010101010101010101010101010101010101010101010101010101010101", // source
        "0202020202020202020202020202020202020202020202020202020202020202", // destination
        "10",                                                               // ttl 16
        "deadbeef",                                                         // flow
        "00000002",                                                         // payload length
        "6869",                                                             // "hi"
    );

    #[test]
    fn the_data_vector_decodes_to_the_fixed_value_and_back() {
        assert_eq!(Data::decode(&unhex(VECTOR)), Ok(mk_data()));
        let mut out = Vec::new();
        mk_data().encode_body(&mut out).unwrap();
        assert_eq!(out, unhex(VECTOR));
    }

    #[test]
    fn a_payload_length_beyond_one_frame_is_oversized_before_any_allocation() {
        let mut bytes = unhex(&VECTOR[..(32 + 32 + 1 + 4) * 2]);
        bytes.extend(u32::MAX.to_be_bytes());
        assert_eq!(Data::decode(&bytes).unwrap_err().reason(), "oversized");
    }

    #[test]
    fn a_payload_too_large_for_a_frame_is_not_encoded() {
        let data = Data {
            payload: vec![0; MAX_DATA_PAYLOAD_LEN + 1],
            ..mk_data()
        };
        assert!(data.encode_body(&mut Vec::new()).is_err());
    }
}
