//! `Originator`: a routing advertisement, signed by the node it describes and flooded through
//! the mesh. Forwarders rewrite only the per-hop [`Envelope`]; the signed part travels as the
//! exact bytes its originator signed, so deduplication and verification work on those bytes.

use bytes::Bytes;

use crate::codec::{COST_ENTRY_LEN, Cursor, check_len, put_cost_list};
use crate::{DecodeError, EncodeError, NodeId};

/// Longest endpoint (`host:port`) an originator may advertise, in bytes.
pub const MAX_ENDPOINT_LEN: usize = 255;
/// Most neighbours an originator may list.
pub const MAX_ORIGINATOR_NEIGHBOURS: usize = 1024;
/// Longest signature accepted (ML-DSA-65 signatures are 3309 bytes; ML-DSA-87's are 4627).
pub const MAX_SIGNATURE_LEN: usize = 4627;
/// Longest possible encoding of an [`OriginatorBody`].
pub const MAX_SIGNED_LEN: usize =
    32 + 8 + 8 + 4 + 1 + MAX_ENDPOINT_LEN + 2 + MAX_ORIGINATOR_NEIGHBOURS * COST_ENTRY_LEN;
/// The part of an originator message that its originator signs.
///
/// Layout (big-endian): `originator [32] | seq u64 | issued_at_micros u64 | key_epoch u32 |
/// endpoint_len u8 | endpoint (UTF-8) | count u16 | count × (node_id [32] | cost u32)`. Every
/// field has a fixed size or an explicit length, so each value has exactly one encoding.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OriginatorBody {
    /// The node this advertisement describes (and that signed it).
    pub originator: NodeId,
    /// Increases with every advertisement of this originator; replay protection and route
    /// feasibility are defined on it.
    pub seq: u64,
    /// When it was issued, in the originator's clock (microseconds since its epoch).
    pub issued_at_micros: u64,
    /// Which of the originator's keys signed it (keys rotate with an overlap window).
    pub key_epoch: u32,
    /// Where the originator accepts neighbour sessions (`host:port`), at most 255 bytes.
    pub endpoint: String,
    /// The originator's neighbours and the cost it measures on each link, at most 1024.
    pub neighbours: Vec<(NodeId, u32)>,
}

impl OriginatorBody {
    /// The exact bytes the originator signs (the crypto crate signs them with ML-DSA-65 under
    /// its originator context string, which keeps them apart from every other signed message).
    pub fn signed_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        check_len("endpoint", self.endpoint.len(), MAX_ENDPOINT_LEN)?;
        let mut out = Vec::with_capacity(
            32 + 8 + 8 + 4 + 1 + self.endpoint.len() + 2 + self.neighbours.len() * COST_ENTRY_LEN,
        );
        out.extend_from_slice(&self.originator.0);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.issued_at_micros.to_be_bytes());
        out.extend_from_slice(&self.key_epoch.to_be_bytes());
        let endpoint_len = u8::try_from(self.endpoint.len()).map_err(|_| EncodeError::TooLarge {
            field: "endpoint",
            len: self.endpoint.len(),
            max: MAX_ENDPOINT_LEN,
        })?;
        out.push(endpoint_len);
        out.extend_from_slice(self.endpoint.as_bytes());
        put_cost_list(
            &mut out,
            "neighbours",
            &self.neighbours,
            MAX_ORIGINATOR_NEIGHBOURS,
        )?;
        Ok(out)
    }

    /// Decodes signed bytes; every byte must belong to the body.
    pub fn decode(signed: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(signed);
        let originator = cursor.node_id()?;
        let seq = cursor.u64()?;
        let issued_at_micros = cursor.u64()?;
        let key_epoch = cursor.u32()?;
        let endpoint_len = usize::from(cursor.u8()?);
        let endpoint = std::str::from_utf8(cursor.bytes(endpoint_len)?)
            .map_err(|_| DecodeError::Malformed("endpoint is not UTF-8"))?
            .to_owned();
        let neighbours = cursor.cost_list("neighbours", MAX_ORIGINATOR_NEIGHBOURS)?;
        cursor.finish()?;
        Ok(OriginatorBody {
            originator,
            seq,
            issued_at_micros,
            key_epoch,
            endpoint,
            neighbours,
        })
    }
}

/// The per-hop part of an originator message, rewritten by every forwarder and authenticated
/// hop by hop by the neighbour session (not by the originator's signature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Envelope {
    /// Hops travelled when received: the originator sends 1, each forwarder adds 1.
    pub hop_count: u8,
    /// Sum of the link costs from the originator to the sender of this copy (0 when sent by
    /// the originator; `u32::MAX` retracts the sender's route).
    pub path_cost: u32,
}

/// A routing advertisement as it travels: signed body (kept as the received bytes), signature,
/// and envelope.
///
/// Body layout (big-endian): `hop_count u8 | path_cost u32 | signed_len u16 | signed bytes |
/// signature_len u16 | signature`. The envelope comes first so it sits at a fixed offset.
///
/// Cloning is cheap (the signed bytes and the signature are reference-counted), so one received
/// message can be forwarded to many neighbours with different envelopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Originator {
    body: OriginatorBody,
    signed: Bytes,
    signature: Bytes,
    /// Rewritten by each forwarder.
    pub envelope: Envelope,
}

impl Originator {
    /// Builds a message from a body to be signed: encodes the body once, so
    /// [`signed_bytes`](Originator::signed_bytes) are exactly what `signature` must cover.
    pub fn new(
        body: OriginatorBody,
        signature: impl Into<Bytes>,
        envelope: Envelope,
    ) -> Result<Self, EncodeError> {
        let signed = Bytes::from(body.signed_bytes()?);
        let signature = signature.into();
        check_len("signature", signature.len(), MAX_SIGNATURE_LEN)?;
        Ok(Originator {
            body,
            signed,
            signature,
            envelope,
        })
    }

    /// Builds a message from signed bytes as received (e.g. from another transport), parsing
    /// them without changing them.
    pub fn from_signed_parts(
        signed: Bytes,
        signature: Bytes,
        envelope: Envelope,
    ) -> Result<Self, DecodeError> {
        if signed.len() > MAX_SIGNED_LEN {
            return Err(DecodeError::Oversized {
                field: "signed",
                len: signed.len(),
                max: MAX_SIGNED_LEN,
            });
        }
        if signature.len() > MAX_SIGNATURE_LEN {
            return Err(DecodeError::Oversized {
                field: "signature",
                len: signature.len(),
                max: MAX_SIGNATURE_LEN,
            });
        }
        let body = OriginatorBody::decode(&signed)?;
        Ok(Originator {
            body,
            signed,
            signature,
            envelope,
        })
    }

    /// The signed content, parsed.
    pub fn body(&self) -> &OriginatorBody {
        &self.body
    }

    /// The exact bytes the originator signed, as received.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The signed bytes as a shared buffer (cloning it does not copy).
    pub fn signed_bytes_shared(&self) -> &Bytes {
        &self.signed
    }

    /// The originator's signature over [`signed_bytes`](Originator::signed_bytes).
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The same signed advertisement under another envelope (no copy of the signed part).
    pub fn with_envelope(&self, envelope: Envelope) -> Self {
        Originator {
            envelope,
            ..self.clone()
        }
    }

    /// Decodes an originator message body (the frame payload, without the frame header).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let mut cursor = Cursor::new(body);
        let envelope = Envelope {
            hop_count: cursor.u8()?,
            path_cost: cursor.u32()?,
        };
        let signed_len = usize::from(cursor.u16()?);
        if signed_len > MAX_SIGNED_LEN {
            return Err(DecodeError::Oversized {
                field: "signed",
                len: signed_len,
                max: MAX_SIGNED_LEN,
            });
        }
        let signed = cursor.bytes(signed_len)?;
        let signature_len = usize::from(cursor.u16()?);
        if signature_len > MAX_SIGNATURE_LEN {
            return Err(DecodeError::Oversized {
                field: "signature",
                len: signature_len,
                max: MAX_SIGNATURE_LEN,
            });
        }
        let signature = cursor.bytes(signature_len)?;
        cursor.finish()?;
        // A signed part that is itself short is malformed here, not truncated: its length was
        // declared and present.
        let body = OriginatorBody::decode(signed).map_err(|error| match error {
            DecodeError::Truncated => DecodeError::Malformed("signed part shorter than its content"),
            DecodeError::TrailingBytes => DecodeError::Malformed("signed part longer than its content"),
            other => other,
        })?;
        Ok(Originator {
            body,
            signed: Bytes::copy_from_slice(signed),
            signature: Bytes::copy_from_slice(signature),
            envelope,
        })
    }

    /// Appends the encoded body to `out`. Infallible in practice: the limits were checked when
    /// the message was built or decoded.
    pub fn encode_body(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let signed_len = u16::try_from(self.signed.len()).map_err(|_| EncodeError::TooLarge {
            field: "signed",
            len: self.signed.len(),
            max: MAX_SIGNED_LEN,
        })?;
        let signature_len = u16::try_from(self.signature.len()).map_err(|_| EncodeError::TooLarge {
            field: "signature",
            len: self.signature.len(),
            max: MAX_SIGNATURE_LEN,
        })?;
        out.reserve(1 + 4 + 2 + self.signed.len() + 2 + self.signature.len());
        out.push(self.envelope.hop_count);
        out.extend_from_slice(&self.envelope.path_cost.to_be_bytes());
        out.extend_from_slice(&signed_len.to_be_bytes());
        out.extend_from_slice(&self.signed);
        out.extend_from_slice(&signature_len.to_be_bytes());
        out.extend_from_slice(&self.signature);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::unhex;

    fn mk_body() -> OriginatorBody {
        OriginatorBody {
            originator: NodeId([0x11; 32]),
            seq: 42,
            issued_at_micros: 1_000_000,
            key_epoch: 3,
            endpoint: "a:1".to_owned(),
            neighbours: vec![(NodeId([0x22; 32]), 256)],
        }
    }

    fn mk_originator() -> Originator {
        Originator::new(
            mk_body(),
            vec![0xEE, 0xFF],
            Envelope {
                hop_count: 2,
                path_cost: 512,
            },
        )
        .unwrap()
    }

    const SIGNED: &str = concat!(
        "1111111111111111111111111111111111111111111111111111111111111111", // originator
        "000000000000002a",                                                 // seq 42
        "00000000000f4240",                                                 // issued_at 1 s
        "00000003",                                                         // key epoch
        "03",                                                               // endpoint length
        "613a31",                                                           // "a:1"
        "0001",                                                             // one neighbour
        "2222222222222222222222222222222222222222222222222222222222222222", // neighbour
        "00000100",                                                         // cost 256
    );

    fn vector() -> Vec<u8> {
        let signed = unhex(SIGNED);
        let mut bytes = unhex("02" /* hops */);
        bytes.extend(unhex("00000200" /* path cost 512 */));
        bytes.extend(u16::try_from(signed.len()).unwrap().to_be_bytes());
        bytes.extend(&signed);
        bytes.extend(unhex("0002eeff" /* signature */));
        bytes
    }

    #[test]
    fn the_signed_bytes_vector_is_what_the_originator_signs() {
        assert_eq!(mk_body().signed_bytes().unwrap(), unhex(SIGNED));
        assert_eq!(OriginatorBody::decode(&unhex(SIGNED)), Ok(mk_body()));
    }

    #[test]
    fn the_originator_vector_decodes_to_the_fixed_value_and_back() {
        let decoded = Originator::decode(&vector()).unwrap();
        assert_eq!(decoded, mk_originator());
        assert_eq!(decoded.signed_bytes(), unhex(SIGNED).as_slice());
        assert_eq!(decoded.signature(), &[0xEE, 0xFF]);
        let mut out = Vec::new();
        decoded.encode_body(&mut out).unwrap();
        assert_eq!(out, vector());
    }

    #[test]
    fn rewriting_the_envelope_keeps_the_signed_bytes_untouched() {
        let original = mk_originator();
        let forwarded = original.with_envelope(Envelope {
            hop_count: 3,
            path_cost: 900,
        });
        assert_eq!(forwarded.signed_bytes(), original.signed_bytes());
        assert_eq!(
            forwarded.signed_bytes_shared().as_ptr(),
            original.signed_bytes_shared().as_ptr()
        );
        let mut out = Vec::new();
        forwarded.encode_body(&mut out).unwrap();
        assert_eq!(out.get(..5), Some(&[3, 0, 0, 3, 0x84][..]));
        assert_eq!(out.get(5..), vector().get(5..));
    }

    #[test]
    fn a_signed_part_with_bytes_after_its_content_is_malformed() {
        let mut signed = unhex(SIGNED);
        signed.push(0);
        let mut bytes = unhex("0200000200");
        bytes.extend(u16::try_from(signed.len()).unwrap().to_be_bytes());
        bytes.extend(&signed);
        bytes.extend(unhex("0000"));
        assert_eq!(Originator::decode(&bytes).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn an_endpoint_that_is_not_utf8_is_malformed() {
        let signed = SIGNED.replace("613a31", "ff3a31");
        assert_eq!(
            OriginatorBody::decode(&unhex(&signed)).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn limits_are_enforced_when_building_and_decoding() {
        let mut body = mk_body();
        body.endpoint = "x".repeat(MAX_ENDPOINT_LEN + 1);
        assert!(body.signed_bytes().is_err());
        let too_long_signature = vec![0; MAX_SIGNATURE_LEN + 1];
        assert!(Originator::new(mk_body(), too_long_signature, Envelope::default()).is_err());

        let mut bytes = unhex("0200000200");
        bytes.extend(u16::try_from(MAX_SIGNED_LEN + 1).unwrap().to_be_bytes());
        assert_eq!(Originator::decode(&bytes).unwrap_err().reason(), "oversized");
    }

    #[test]
    fn the_largest_originator_fits_in_one_frame() {
        let largest = 1 + 4 + 2 + MAX_SIGNED_LEN + 2 + MAX_SIGNATURE_LEN;
        assert!(largest <= crate::MAX_BODY_LEN, "{largest}");
    }
}
