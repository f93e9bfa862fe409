//! A bounds-checked cursor over untrusted bytes, for the decoders of signed statements
//! (endorsements, revocation lists): every read that would run past the end is an error,
//! never a panic.
use crate::Error;

pub(crate) struct Reader<'a> {
    rest: &'a [u8],
    /// What running out of bytes is called in the caller's terms.
    truncated: fn() -> Error,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8], truncated: fn() -> Error) -> Self {
        Self {
            rest: bytes,
            truncated,
        }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.rest.len() < n {
            return Err((self.truncated)());
        }
        let (head, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(head)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// Whether every byte was read.
    pub(crate) fn is_done(&self) -> bool {
        self.rest.is_empty()
    }
}

impl Reader<'_> {
    /// The magic and version a statement starts with; `malformed` when they are others.
    pub(crate) fn expect_header(
        &mut self,
        magic: &[u8],
        version: u8,
        malformed: fn() -> Error,
    ) -> Result<(), Error> {
        if self.take(magic.len())? != magic || self.take(1)?[0] != version {
            return Err(malformed());
        }
        Ok(())
    }

    /// A UTF-8 string with a u16 length of at most `max` bytes.
    pub(crate) fn text(&mut self, max: usize, malformed: fn() -> Error) -> Result<String, Error> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(malformed());
        }
        String::from_utf8(self.take(len)?.to_vec()).map_err(|_| malformed())
    }

    /// The signature at the end: a u16 length, the bytes, and nothing after them.
    pub(crate) fn signature(&mut self, malformed: fn() -> Error) -> Result<Vec<u8>, Error> {
        let len = usize::from(self.u16()?);
        let signature = self.take(len)?.to_vec();
        if !self.is_done() {
            return Err(malformed());
        }
        Ok(signature)
    }
}

/// A statement as it travels: its signed bytes, then the signature, length-prefixed.
pub(crate) fn with_signature(mut signed: Vec<u8>, signature: &[u8]) -> Vec<u8> {
    signed.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    signed.extend_from_slice(signature);
    signed
}
