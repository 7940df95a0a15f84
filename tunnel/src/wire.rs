//! Bounds-checked primitives for frame payloads: big-endian integers, and
//! strings and byte strings with a `u16` length prefix.
//!
//! The reader never panics and never allocates more than the input holds: every
//! length is checked against what is left before anything is copied.

use bytes::{BufMut, BytesMut};

use crate::codec::FrameError;

/// Appends payload fields to a buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut BytesMut,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(out: &'a mut BytesMut) -> Self {
        Self { out }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.out.put_u8(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.out.put_u16(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.out.put_u32(v);
    }

    pub(crate) fn bytes(&mut self, field: &'static str, v: &[u8]) -> Result<(), FrameError> {
        let len = u16::try_from(v.len()).map_err(|_| FrameError::FieldTooLong(field))?;
        self.out.put_u16(len);
        self.out.put_slice(v);
        Ok(())
    }

    pub(crate) fn str(&mut self, field: &'static str, v: &str) -> Result<(), FrameError> {
        self.bytes(field, v.as_bytes())
    }
}

/// Reads payload fields from a slice, failing with [`FrameError::Truncated`]
/// when the slice ends early.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.buf.len() < n {
            return Err(FrameError::Truncated);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, FrameError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let len = self.u16()? as usize;
        self.take(len)
    }

    pub(crate) fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let raw = self.bytes()?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| FrameError::InvalidUtf8(field))
    }

    /// Fails when bytes are left over: a payload must be exactly one message.
    pub(crate) fn finish(self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::TrailingBytes(self.buf.len()))
        }
    }
}
