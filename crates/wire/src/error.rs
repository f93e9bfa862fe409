//! Why a message could not be decoded or encoded, each cause with a metric label.

/// Why bytes received from a peer were not accepted as a message.
///
/// Every variant has a stable [`reason`](DecodeError::reason) label, so drops can be counted by
/// cause (`wire_decode_errors_total{reason=...}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ends before the frame or field it announces. For a stream this only means
    /// "wait for more bytes".
    #[error("input ends before the end of the frame")]
    Truncated,
    /// The frame does not start with `X0`: the stream is not (or no longer) framed by us.
    #[error("frame does not start with the magic bytes")]
    BadMagic,
    /// A frame of a wire version this agent does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// A well-framed message of a type this agent does not know (it can be skipped).
    #[error("unknown message type {0}")]
    UnknownType(u8),
    /// A declared length (frame body, list, signature, payload) above its limit.
    #[error("{field} of {len} bytes or entries exceeds the limit of {max}")]
    Oversized {
        /// Which length was too large.
        field: &'static str,
        /// The declared length.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// The frame is complete but its content is inconsistent (a field runs past the end of the
    /// body, text that is not UTF-8, ...).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    /// The message ends before the end of the body that carries it.
    #[error("bytes left over after the message")]
    TrailingBytes,
}

impl DecodeError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated => "truncated",
            DecodeError::BadMagic => "bad_magic",
            DecodeError::UnsupportedVersion(_) => "unsupported_version",
            DecodeError::UnknownType(_) => "unknown_type",
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::TrailingBytes => "trailing_bytes",
        }
    }
}

/// Why a message could not be encoded: one of its fields exceeds what the format can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is longer than its limit.
    #[error("{field} of {len} bytes or entries exceeds the limit of {max}")]
    TooLarge {
        /// Which field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

impl EncodeError {
    /// A short, stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            EncodeError::TooLarge { .. } => "too_large",
        }
    }
}
