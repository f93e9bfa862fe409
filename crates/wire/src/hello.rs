//! `Hello`: neighbour liveness, round-trip time, and the sender's view of its own link costs.

use crate::codec::{Cursor, put_cost_list};
use crate::{DecodeError, EncodeError, NodeId};

/// Most `(neighbour, cost)` entries a hello may carry.
pub const MAX_ADVERTISED_COSTS: usize = 1024;

/// Sent by each agent to each neighbour every hello interval (100 ms by default).
///
/// Body layout (big-endian): `seq u32 | sent_at_micros u64 | echo_seq u32 | echo_delay_micros u32
/// | count u16 | count × (node_id [32] | cost u32)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// Per-session sequence number of this hello, starting at 1 (0 means "none" in `echo_seq`).
    pub seq: u32,
    /// When the sender sent it, by the sender's clock in microseconds. Agents stamp their wall
    /// clock (Unix time) as the hello leaves, so that the receiver can bound how far apart the
    /// two clocks are; a sender may stamp anything else (its uptime), which receivers ignore.
    pub sent_at_micros: u64,
    /// The `seq` of the last hello the sender received from the receiver (0: none yet).
    pub echo_seq: u32,
    /// How long the sender held that hello before sending this one: the receiver subtracts it
    /// from the time since it sent `echo_seq` to get the round-trip time.
    pub echo_delay_micros: u32,
    /// The cost the sender measures on its link to each of its neighbours, so that a neighbour
    /// can compare the sender's claim about their shared link with its own measurement.
    pub advertised_costs: Vec<(NodeId, u32)>,
}

impl Hello {
    /// Decodes a hello body (the frame payload, without the frame header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(body);
        let hello = Hello {
            seq: cursor.u32()?,
            sent_at_micros: cursor.u64()?,
            echo_seq: cursor.u32()?,
            echo_delay_micros: cursor.u32()?,
            advertised_costs: cursor.cost_list("advertised_costs", MAX_ADVERTISED_COSTS)?,
        };
        cursor.finish()?;
        Ok(hello)
    }

    /// Appends the encoded body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_at_micros.to_be_bytes());
        out.extend_from_slice(&self.echo_seq.to_be_bytes());
        out.extend_from_slice(&self.echo_delay_micros.to_be_bytes());
        put_cost_list(
            out,
            "advertised_costs",
            &self.advertised_costs,
            MAX_ADVERTISED_COSTS,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_hello() -> Hello {
        Hello {
            seq: 7,
            sent_at_micros: 0x0102_0304_0506_0708,
            echo_seq: 6,
            echo_delay_micros: 250,
            advertised_costs: vec![(NodeId([0xAA; 32]), 300)],
        }
    }

    const VECTOR: &str = concat!(
        "00000007",                                                         // seq
        "0102030405060708",                                                 // sent_at_micros
        "00000006",                                                         // echo_seq
        "000000fa",                                                         // echo_delay_micros
        "0001",                                                             // one entry
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", // node id
        "0000012c",                                                         // cost 300
    );

    #[test]
    fn the_hello_vector_decodes_to_the_fixed_value_and_back() {
        let bytes = crate::tests::unhex(VECTOR);
        assert_eq!(Hello::decode(&bytes), Ok(mk_hello()));
        let mut out = Vec::new();
        mk_hello().encode_body(&mut out).unwrap();
        assert_eq!(out, bytes);
    }

    #[test]
    fn a_hello_with_too_many_entries_is_refused_both_ways() {
        let mut hello = mk_hello();
        hello.advertised_costs = vec![(NodeId([1; 32]), 1); MAX_ADVERTISED_COSTS + 1];
        assert!(hello.encode_body(&mut Vec::new()).is_err());

        let mut bytes = crate::tests::unhex(&VECTOR[..40]);
        bytes.extend_from_slice(&u16::try_from(MAX_ADVERTISED_COSTS + 1).unwrap().to_be_bytes());
        assert_eq!(Hello::decode(&bytes).unwrap_err().reason(), "oversized");
    }

    #[test]
    fn a_count_larger_than_the_bytes_present_is_truncated_without_allocating() {
        let mut bytes = crate::tests::unhex(&VECTOR[..40]);
        bytes.extend_from_slice(&1000u16.to_be_bytes());
        assert_eq!(Hello::decode(&bytes), Err(DecodeError::Truncated));
    }

    #[test]
    fn a_byte_after_the_hello_is_trailing() {
        let mut bytes = crate::tests::unhex(VECTOR);
        bytes.push(0);
        assert_eq!(Hello::decode(&bytes), Err(DecodeError::TrailingBytes));
    }
}
