//! Wire formats of the messages node agents exchange inside their neighbour sessions (which
//! are already mutually authenticated and encrypted).
//!
//! Hand-written, big-endian, every variable part behind an explicit length, every length
//! checked against a limit before anything is allocated for it. Decoding is a plain function
//! of bytes (sans IO); it never panics, whatever the input (property tests and the `fuzz/`
//! targets check this), and every failure carries a metric label
//! ([`DecodeError::reason`]).
//!
//! A frame is `"X0" | version u8 (1) | message type u8 | body length u32 | body`, with the body
//! at most [`MAX_BODY_LEN`] bytes. Adding a message type: a variant in [`MessageType`] and
//! [`Message`], a module with `decode`/`encode_body`, and one arm in `frame.rs`'s `decode_body`
//! and `encode_frame` (the compiler points at each place).
//!
//! # Mixed versions during a rolling upgrade
//!
//! - **A new message type** keeps the frame version: an agent that does not know the type
//!   skips the frame, counts it (`x0_agent_frames_dropped_total{reason="unknown_type"}`) and
//!   keeps the session. So a new type must be an optional addition whose absence the sender
//!   survives: [`SeqnoRequest`] (type 5) is one; its sender falls back to the periodic
//!   advertisement, and `routing`'s mixed-version ring test checks the reroute bound with
//!   agents that skip it.
//! - **A changed layout of an existing message** needs a new frame version: an agent refuses a
//!   version it does not speak (`unsupported_version`, counted) and closes the session, so old
//!   and new agents do not peer until the upgrade is done. None has been needed yet.
#![forbid(unsafe_code)]
// Decoders see attacker-chosen bytes: no panicking shortcuts outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic
    )
)]

mod codec;
mod data;
mod endorsement;
mod error;
mod frame;
mod hello;
mod originator;
mod seqno_request;
mod svid;

pub use bytes::Bytes;
pub use data::{Data, MAX_DATA_PAYLOAD_LEN};
pub use endorsement::{EndorsementAnnounce, MAX_ENDORSEMENT_LEN};
pub use error::{DecodeError, EncodeError};
pub use frame::{FrameReader, Frames, HEADER_LEN, MAGIC, MAX_BODY_LEN, VERSION, decode_frame, encode_frame};
pub use hello::{Hello, MAX_ADVERTISED_COSTS};
pub use originator::{
    Envelope, MAX_ENDPOINT_LEN, MAX_ORIGINATOR_NEIGHBOURS, MAX_SIGNATURE_LEN, MAX_SIGNED_LEN, Originator,
    OriginatorBody,
};
pub use seqno_request::SeqnoRequest;
pub use svid::{MAX_SVID_CERT_LEN, MAX_SVID_CHAIN, SvidUpdate};

use std::fmt;

/// A node's identity on the mesh: the SHA-256 of its SPIFFE ID (`x0tta6bl4_crypto::node_id_for`
/// derives it), the same type from the frame to the key store.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId(pub [u8; 32]);

impl NodeId {
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for NodeId {
    fn from(bytes: [u8; 32]) -> Self {
        NodeId(bytes)
    }
}

/// The whole id in lowercase hex.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|byte| write!(f, "{byte:02x}"))
    }
}

/// The first 8 hex digits, enough to tell nodes apart in test output and logs.
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeId(")?;
        self.0
            .iter()
            .take(4)
            .try_for_each(|byte| write!(f, "{byte:02x}"))?;
        f.write_str("…)")
    }
}

/// The message type byte of a frame. Numbers are never reused; a receiver that does not know a
/// type skips the frame (`unknown_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MessageType {
    /// [`Hello`].
    Hello = 1,
    /// [`Originator`].
    Originator = 2,
    /// [`Data`].
    Data = 3,
    // 4 = Quarantine (a MAPE-K notice) is reserved.
    /// [`SeqnoRequest`] (added after the first release: an agent that predates it skips the
    /// frame as `unknown_type`, and the requester waits for the periodic advertisement).
    SeqnoRequest = 5,
    /// [`EndorsementAnnounce`].
    EndorsementAnnounce = 6,
    /// [`SvidUpdate`].
    SvidUpdate = 7,
}

impl MessageType {
    /// The type for a frame's type byte, if it is one this crate knows.
    pub fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(MessageType::Hello),
            2 => Some(MessageType::Originator),
            3 => Some(MessageType::Data),
            5 => Some(MessageType::SeqnoRequest),
            6 => Some(MessageType::EndorsementAnnounce),
            7 => Some(MessageType::SvidUpdate),
            _ => None,
        }
    }
}

/// Every message agents exchange, one per frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Liveness, RTT and claimed link costs.
    Hello(Hello),
    /// A signed routing advertisement.
    Originator(Originator),
    /// The agents' own traffic.
    Data(Data),
    /// A node key's endorsement, flooded so that non-neighbours can verify its advertisements.
    EndorsementAnnounce(EndorsementAnnounce),
    /// The sender's rotated X.509-SVID (meshes that take identities from SPIFFE).
    SvidUpdate(SvidUpdate),
    /// A request for a newer advertisement of a destination.
    SeqnoRequest(SeqnoRequest),
}

impl Message {
    /// Its type byte.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Originator(_) => MessageType::Originator,
            Message::Data(_) => MessageType::Data,
            Message::EndorsementAnnounce(_) => MessageType::EndorsementAnnounce,
            Message::SvidUpdate(_) => MessageType::SvidUpdate,
            Message::SeqnoRequest(_) => MessageType::SeqnoRequest,
        }
    }

    /// Encodes it as one frame.
    pub fn to_frame(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::new();
        encode_frame(self, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    /// Hex to bytes, for the hand-written vectors.
    pub(crate) fn unhex(hex: &str) -> Vec<u8> {
        assert!(hex.len().is_multiple_of(2), "odd hex length");
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn node_ids_print_as_hex() {
        let id = super::NodeId([0xAB; 32]);
        assert_eq!(format!("{id:?}"), "NodeId(abababab…)");
        assert_eq!(id.to_string(), "ab".repeat(32));
    }
}
