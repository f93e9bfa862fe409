//! `SvidUpdate`: the X.509-SVID an agent holds after its SPIFFE Workload API rotated it, sent on
//! every open session. A TLS 1.3 session cannot present a new certificate, and a peer bounds
//! each session by the expiry of the SVID it has seen: the update carries the new chain so the
//! session lives on. The certificates are opaque here; the session crate validates them against
//! the SPIFFE trust bundle and checks that they name the same SPIFFE ID as before.

use crate::codec::{Cursor, check_len};
use crate::{DecodeError, EncodeError};

/// Most certificates in a chain (leaf and intermediates; SPIRE issues one or two).
pub const MAX_SVID_CHAIN: usize = 4;
/// Longest certificate accepted, in bytes (an EC or RSA-3072 SVID is 0.6–1.5 KiB).
pub const MAX_SVID_CERT_LEN: usize = 8 * 1024;

/// Body layout (big-endian): `count u8 | (cert_len u16 | cert DER) × count`, leaf first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SvidUpdate {
    /// The DER certificates, leaf first.
    pub chain: Vec<Vec<u8>>,
}

impl SvidUpdate {
    /// Decodes an update body (the frame payload, without the frame header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(body);
        let count = usize::from(cursor.u8()?);
        if count == 0 {
            return Err(DecodeError::Malformed("an SVID update without a certificate"));
        }
        if count > MAX_SVID_CHAIN {
            return Err(DecodeError::Oversized {
                field: "svid chain",
                len: count,
                max: MAX_SVID_CHAIN,
            });
        }
        let mut chain = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(cursor.u16()?);
            if len > MAX_SVID_CERT_LEN {
                return Err(DecodeError::Oversized {
                    field: "svid certificate",
                    len,
                    max: MAX_SVID_CERT_LEN,
                });
            }
            chain.push(cursor.bytes(len)?.to_vec());
        }
        cursor.finish()?;
        Ok(SvidUpdate { chain })
    }

    /// Appends the encoded body to `out`.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        check_len("svid chain", self.chain.len(), MAX_SVID_CHAIN)?;
        if self.chain.is_empty() {
            return Err(EncodeError::TooLarge {
                field: "svid chain (empty)",
                len: 0,
                max: MAX_SVID_CHAIN,
            });
        }
        let count = u8::try_from(self.chain.len()).map_err(|_| EncodeError::TooLarge {
            field: "svid chain",
            len: self.chain.len(),
            max: MAX_SVID_CHAIN,
        })?;
        for cert in &self.chain {
            check_len("svid certificate", cert.len(), MAX_SVID_CERT_LEN)?;
        }
        out.push(count);
        for cert in &self.chain {
            let len = u16::try_from(cert.len()).map_err(|_| EncodeError::TooLarge {
                field: "svid certificate",
                len: cert.len(),
                max: MAX_SVID_CERT_LEN,
            })?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(cert);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::unhex;

    const VECTOR: &str = concat!(
        "02", // two certificates
        "0003", "308101", // leaf (opaque here)
        "0002", "3000", // intermediate
    );

    fn mk_update() -> SvidUpdate {
        SvidUpdate {
            chain: vec![vec![0x30, 0x81, 0x01], vec![0x30, 0x00]],
        }
    }

    #[test]
    fn the_svid_vector_decodes_to_the_fixed_value_and_back() {
        assert_eq!(SvidUpdate::decode(&unhex(VECTOR)), Ok(mk_update()));
        let mut out = Vec::new();
        mk_update().encode_body(&mut out).unwrap();
        assert_eq!(out, unhex(VECTOR));
    }

    #[test]
    fn an_empty_or_overlong_chain_is_refused_before_any_allocation() {
        assert_eq!(
            SvidUpdate::decode(&[0]),
            Err(DecodeError::Malformed("an SVID update without a certificate"))
        );
        let count = u8::try_from(MAX_SVID_CHAIN + 1).unwrap();
        assert!(matches!(
            SvidUpdate::decode(&[count]),
            Err(DecodeError::Oversized {
                field: "svid chain",
                ..
            })
        ));
        let declared = u16::try_from(MAX_SVID_CERT_LEN + 1).unwrap().to_be_bytes();
        assert!(matches!(
            SvidUpdate::decode(&[1, declared[0], declared[1]]),
            Err(DecodeError::Oversized {
                field: "svid certificate",
                ..
            })
        ));
        assert!(SvidUpdate::default().encode_body(&mut Vec::new()).is_err());
    }

    #[test]
    fn a_chain_cut_short_or_followed_by_bytes_is_refused() {
        let whole = unhex(VECTOR);
        for cut in 1..whole.len() {
            assert!(SvidUpdate::decode(&whole[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = whole.clone();
        longer.push(0);
        assert!(SvidUpdate::decode(&longer).is_err());
    }
}
