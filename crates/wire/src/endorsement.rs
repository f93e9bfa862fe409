//! `EndorsementAnnounce`: a node key's endorsement (the mesh authority's ML-DSA-65 signature
//! over the key and its SPIFFE ID), flooded through the mesh so that every node can verify the
//! originator messages of nodes it has no session with. The endorsement bytes are opaque here:
//! the crypto crate parses them and checks the authority's signature.

use crate::codec::{Cursor, check_len};
use crate::{DecodeError, EncodeError};

/// Longest endorsement carried, in bytes (an ML-DSA-65 endorsement with a SPIFFE ID of the
/// maximum 2048 bytes is about 7.3 KiB).
pub const MAX_ENDORSEMENT_LEN: usize = 8 * 1024;

/// Body layout (big-endian): `endorsement_len u16 | endorsement`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndorsementAnnounce {
    /// The encoded endorsement, as the crypto crate's `Endorsement::encode` wrote it.
    pub endorsement: Vec<u8>,
}

impl EndorsementAnnounce {
    /// Decodes an announcement body (the frame payload, without the frame header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(body);
        let len = usize::from(cursor.u16()?);
        if len > MAX_ENDORSEMENT_LEN {
            return Err(DecodeError::Oversized {
                field: "endorsement",
                len,
                max: MAX_ENDORSEMENT_LEN,
            });
        }
        let endorsement = cursor.bytes(len)?.to_vec();
        cursor.finish()?;
        Ok(EndorsementAnnounce { endorsement })
    }

    /// Appends the encoded body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_len("endorsement", self.endorsement.len(), MAX_ENDORSEMENT_LEN)?;
        // Cannot fail after the check above; kept fallible rather than panicking.
        let len = u16::try_from(self.endorsement.len()).map_err(|_| EncodeError::TooLarge {
            field: "endorsement",
            len: self.endorsement.len(),
            max: MAX_ENDORSEMENT_LEN,
        })?;
        out.reserve(2 + self.endorsement.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&self.endorsement);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::unhex;

    const VECTOR: &str = concat!(
        "0005",       // endorsement length
        "58304e4401", // "X0ND" and a version byte: opaque here
    );

    fn mk_announce() -> EndorsementAnnounce {
        EndorsementAnnounce {
            endorsement: b"X0ND\x01".to_vec(),
        }
    }

    #[test]
    fn the_endorsement_vector_decodes_to_the_fixed_value_and_back() {
        assert_eq!(EndorsementAnnounce::decode(&unhex(VECTOR)), Ok(mk_announce()));
        let mut out = Vec::new();
        mk_announce().encode_body(&mut out).unwrap();
        assert_eq!(out, unhex(VECTOR));
    }

    #[test]
    fn a_declared_length_above_the_limit_is_oversized_before_any_allocation() {
        let declared = u16::try_from(MAX_ENDORSEMENT_LEN + 1).unwrap().to_be_bytes();
        assert_eq!(
            EndorsementAnnounce::decode(&declared).unwrap_err().reason(),
            "oversized"
        );
        let too_long = EndorsementAnnounce {
            endorsement: vec![0; MAX_ENDORSEMENT_LEN + 1],
        };
        assert!(too_long.encode_body(&mut Vec::new()).is_err());
    }

    #[test]
    fn a_short_or_long_body_is_refused() {
        let bytes = unhex(VECTOR);
        assert_eq!(
            EndorsementAnnounce::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated)
        );
        let mut longer = bytes;
        longer.push(0);
        assert_eq!(
            EndorsementAnnounce::decode(&longer),
            Err(DecodeError::TrailingBytes)
        );
    }
}
