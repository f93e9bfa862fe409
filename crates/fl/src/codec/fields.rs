//! The fields the signed federated messages share, written and read big-endian: u8-length
//! strings, `dim u32 | dim × f32` value vectors, and the trailing `signature_len u16 |
//! signature`. The [`Reader`] never indexes past its input: every read is a checked `get`.
use x0tta6bl4_crypto::{SigningContext, SigningKey};

use super::MessageError;

/// Appends `len u8 | s`, `s` being 1..=`max` bytes (`max` at most 255).
pub(super) fn put_string(
    out: &mut Vec<u8>,
    s: &str,
    max: usize,
    field: &'static str,
) -> Result<(), MessageError> {
    let len = u8::try_from(s.len()).map_err(|_| MessageError::BadString(field))?;
    if len == 0 || s.len() > max {
        return Err(MessageError::BadString(field));
    }
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends `len u16 | s`, `s` being at most `max` bytes and empty only if not `required`.
pub(super) fn put_text(
    out: &mut Vec<u8>,
    s: &str,
    max: usize,
    required: bool,
    field: &'static str,
) -> Result<(), MessageError> {
    let len = u16::try_from(s.len()).map_err(|_| MessageError::BadString(field))?;
    if (required && s.is_empty()) || s.len() > max {
        return Err(MessageError::BadString(field));
    }
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

/// Appends the values as `dim u32 | dim × f32`.
pub(super) fn put_values(out: &mut Vec<u8>, values: &[f32]) -> Result<(), MessageError> {
    let dim = u32::try_from(values.len()).map_err(|_| MessageError::BadField("dim"))?;
    out.extend_from_slice(&dim.to_be_bytes());
    for v in values {
        out.extend_from_slice(&v.to_be_bytes());
    }
    Ok(())
}

/// Appends `signature_len u16 | signature`.
pub(super) fn put_signature(out: &mut Vec<u8>, signature: &[u8]) -> Result<(), MessageError> {
    let len = u16::try_from(signature.len()).map_err(|_| MessageError::BadField("signature"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(signature);
    Ok(())
}

/// Signs `signed` with the node key under the federated control context and appends
/// `signature_len u16 | signature`.
pub(super) fn append_signature(mut signed: Vec<u8>, key: &SigningKey) -> Result<Vec<u8>, MessageError> {
    let signature = key
        .sign(SigningContext::FlControl, &signed)
        .map_err(|e| MessageError::Signing(e.to_string()))?;
    put_signature(&mut signed, &signature.0)?;
    Ok(signed)
}

/// Reads a message front to back; every read checks the bytes left first.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A reader past the magic and version, which must be `magic` and `version`.
    pub(super) fn open(bytes: &'a [u8], magic: [u8; 4], version: u8) -> Result<Self, MessageError> {
        Self::open_any(bytes, magic, &[version]).map(|(r, _)| r)
    }

    /// A reader past the magic and version, which must be `magic` and one of `versions`; and
    /// the version found.
    pub(super) fn open_any(
        bytes: &'a [u8],
        magic: [u8; 4],
        versions: &[u8],
    ) -> Result<(Self, u8), MessageError> {
        let mut r = Reader { bytes, offset: 0 };
        if r.array::<4>()? != magic {
            return Err(MessageError::BadMagic);
        }
        let found = r.u8()?;
        if !versions.contains(&found) {
            return Err(MessageError::UnsupportedVersion(found));
        }
        Ok((r, found))
    }

    /// The next `n` bytes, or `Truncated` if fewer are left.
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        let out = self
            .offset
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.offset..end))
            .ok_or_else(|| self.truncated(n))?;
        self.offset += n;
        Ok(out)
    }

    /// `Truncated` at the current offset, `needed` bytes having been asked for.
    fn truncated(&self, needed: usize) -> MessageError {
        MessageError::Truncated {
            offset: self.offset,
            needed,
            available: self.bytes.len().saturating_sub(self.offset),
        }
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| self.truncated(N))
    }

    pub(super) fn u8(&mut self) -> Result<u8, MessageError> {
        let [b] = self.array()?;
        Ok(b)
    }

    pub(super) fn u16(&mut self) -> Result<u16, MessageError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, MessageError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, MessageError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn f64(&mut self) -> Result<f64, MessageError> {
        Ok(f64::from_be_bytes(self.array()?))
    }

    /// `len u8 | s`, `s` being 1..=`max` bytes of UTF-8.
    pub(super) fn string(&mut self, max: usize, field: &'static str) -> Result<String, MessageError> {
        let len = usize::from(self.u8()?);
        if len == 0 || len > max {
            return Err(MessageError::BadString(field));
        }
        utf8(self.take(len)?, field)
    }

    /// `len u16 | s`, `s` being at most `max` bytes of UTF-8, empty only if not `required`.
    pub(super) fn text(
        &mut self,
        max: usize,
        required: bool,
        field: &'static str,
    ) -> Result<String, MessageError> {
        let len = usize::from(self.u16()?);
        if (required && len == 0) || len > max {
            return Err(MessageError::BadString(field));
        }
        utf8(self.take(len)?, field)
    }

    /// `dim u32 | dim × f32`, the length checked against the bytes present before anything is
    /// allocated (`dim` is the sender's claim).
    pub(super) fn values(&mut self) -> Result<Vec<f32>, MessageError> {
        let dim = usize::try_from(self.u32()?).map_err(|_| self.truncated(usize::MAX))?;
        let len = dim.checked_mul(4).ok_or_else(|| self.truncated(usize::MAX))?;
        let (values, _) = self.take(len)?.as_chunks::<4>();
        Ok(values.iter().map(|v| f32::from_be_bytes(*v)).collect())
    }

    /// The signed prefix's length and the signature, which must end the message.
    pub(super) fn signature(&mut self) -> Result<(usize, &'a [u8]), MessageError> {
        let signed_len = self.offset;
        let len = usize::from(self.u16()?);
        let signature = self.take(len)?;
        let trailing = self.bytes.len().saturating_sub(self.offset);
        if trailing != 0 {
            return Err(MessageError::TrailingBytes(trailing));
        }
        Ok((signed_len, signature))
    }
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, MessageError> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| MessageError::BadString(field))
}
