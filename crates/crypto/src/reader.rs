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
