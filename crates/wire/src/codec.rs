//! The primitives every message is built from: big-endian integers, node ids, and
//! length-prefixed fields. Reading never indexes, never panics, and never allocates more than
//! the bytes actually present justify.

use crate::{DecodeError, EncodeError, NodeId};

/// Reads fields from the front of a byte slice.
pub(crate) struct Cursor<'a> {
    rest: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Cursor { rest: bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.rest.len()
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.rest.split_first_chunk::<N>().ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array::<1>().map(u8::from_be_bytes)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array::<2>().map(u16::from_be_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array::<4>().map(u32::from_be_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array::<8>().map(u64::from_be_bytes)
    }

    pub(crate) fn node_id(&mut self) -> Result<NodeId, DecodeError> {
        self.array::<32>().map(NodeId)
    }

    pub(crate) fn bytes(&mut self, len: usize) -> Result<&'a [u8], DecodeError> {
        let (head, rest) = self.rest.split_at_checked(len).ok_or(DecodeError::Truncated)?;
        self.rest = rest;
        Ok(head)
    }

    /// A `u16` count followed by that many `(NodeId, u32 cost)` pairs.
    pub(crate) fn cost_list(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<Vec<(NodeId, u32)>, DecodeError> {
        let count = usize::from(self.u16()?);
        if count > max {
            return Err(DecodeError::Oversized {
                field,
                len: count,
                max,
            });
        }
        // Allocate only once the entries are known to be present.
        if count.saturating_mul(COST_ENTRY_LEN) > self.remaining() {
            return Err(DecodeError::Truncated);
        }
        let mut list = Vec::with_capacity(count);
        for _ in 0..count {
            list.push((self.node_id()?, self.u32()?));
        }
        Ok(list)
    }

    /// Succeeds only if every byte was consumed.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Encoded size of one `(NodeId, u32)` entry.
pub(crate) const COST_ENTRY_LEN: usize = 32 + 4;

pub(crate) fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), EncodeError> {
    if len > max {
        Err(EncodeError::TooLarge { field, len, max })
    } else {
        Ok(())
    }
}

pub(crate) fn put_cost_list(
    out: &mut Vec<u8>,
    field: &'static str,
    list: &[(NodeId, u32)],
    max: usize,
) -> Result<(), EncodeError> {
    check_len(field, list.len(), max)?;
    let count = u16::try_from(list.len()).map_err(|_| EncodeError::TooLarge {
        field,
        len: list.len(),
        max,
    })?;
    out.reserve(2 + list.len() * COST_ENTRY_LEN);
    out.extend_from_slice(&count.to_be_bytes());
    for (node, cost) in list {
        out.extend_from_slice(&node.0);
        out.extend_from_slice(&cost.to_be_bytes());
    }
    Ok(())
}
