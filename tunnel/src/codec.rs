//! Framing: bytes in, frames out, and back. No I/O happens here.
//!
//! Every frame is a 6-byte header followed by its payload:
//!
//! ```text
//! +---------+--------+----------------------+-----------------+
//! | version | type   | payload length (u32) | payload ...     |
//! | 1 byte  | 1 byte | big-endian           | at most 64 KiB  |
//! +---------+--------+----------------------+-----------------+
//! ```
//!
//! The length is checked against [`MAX_PAYLOAD`] before any payload is read,
//! so a peer cannot make us buffer more than that. The decoder returns an
//! error, never panics, on any input; it is fuzzed (`fuzz/`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::PROTOCOL_VERSION;
use crate::message::{
    self, ControlMessage, RequestHead, ResponseHead, Trailers, decode_drain, decode_register,
    decode_registered, decode_rejected,
};
use crate::wire::Reader;

/// Length of a frame header.
pub const HEADER_LEN: usize = 6;
/// The largest payload a frame may carry.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Why bytes could not be decoded into a frame, or a frame not encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame was written by a protocol version this build does not speak.
    #[error("unsupported frame version {0} (this build speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The frame type byte is not one we know.
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    /// The declared payload length is over the limit.
    #[error("frame payload of {0} bytes is over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    /// The payload ended before the message did.
    #[error("frame payload is truncated")]
    Truncated,
    /// The payload has bytes after the message.
    #[error("frame payload has {0} unexpected trailing bytes")]
    TrailingBytes(usize),
    /// A field holds a value that is not allowed.
    #[error("invalid value in field `{0}`")]
    InvalidField(&'static str),
    /// A text field is not UTF-8.
    #[error("field `{0}` is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A field is longer than its length prefix can say.
    #[error("field `{0}` is longer than 65535 bytes")]
    FieldTooLong(&'static str),
    /// Too many header fields.
    #[error("{0} header fields is over the limit of {max}", max = message::MAX_HEADERS)]
    TooManyHeaders(usize),
}

/// The type byte of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// [`ControlMessage::Register`].
    Register,
    /// [`ControlMessage::Registered`].
    Registered,
    /// [`ControlMessage::Rejected`].
    Rejected,
    /// [`ControlMessage::Drain`].
    Drain,
    /// [`ControlMessage::Unregister`].
    Unregister,
    /// [`RequestHead`].
    RequestHead,
    /// [`ResponseHead`].
    ResponseHead,
    /// A piece of body: the payload is raw body bytes.
    Data,
    /// [`Trailers`].
    Trailers,
}

impl FrameType {
    fn code(self) -> u8 {
        match self {
            Self::Register => 0x01,
            Self::Registered => 0x02,
            Self::Rejected => 0x03,
            Self::Drain => 0x04,
            Self::Unregister => 0x05,
            Self::RequestHead => 0x10,
            Self::ResponseHead => 0x11,
            Self::Data => 0x12,
            Self::Trailers => 0x13,
        }
    }

    fn from_code(c: u8) -> Result<Self, FrameError> {
        Ok(match c {
            0x01 => Self::Register,
            0x02 => Self::Registered,
            0x03 => Self::Rejected,
            0x04 => Self::Drain,
            0x05 => Self::Unregister,
            0x10 => Self::RequestHead,
            0x11 => Self::ResponseHead,
            0x12 => Self::Data,
            0x13 => Self::Trailers,
            other => return Err(FrameError::UnknownType(other)),
        })
    }
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the payload holds.
    pub kind: FrameType,
    /// Payload length, at most [`MAX_PAYLOAD`].
    pub len: usize,
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A control-stream message.
    Control(ControlMessage),
    /// The head of a proxied request.
    RequestHead(RequestHead),
    /// The head of a proxied response.
    ResponseHead(ResponseHead),
    /// Body bytes.
    Data(Bytes),
    /// Trailing headers.
    Trailers(Trailers),
}

/// Checks a frame header: version, type and length limit.
pub fn decode_header(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
    if bytes[0] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(bytes[0]));
    }
    let kind = FrameType::from_code(bytes[1])?;
    let len = u32::from_be_bytes([bytes[2], bytes[3], bytes[4], bytes[5]]) as usize;
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    Ok(FrameHeader { kind, len })
}

/// Decodes a payload whose header was checked by [`decode_header`].
pub fn decode_payload(header: FrameHeader, payload: &[u8]) -> Result<Frame, FrameError> {
    if payload.len() != header.len {
        return Err(FrameError::Truncated);
    }
    let mut r = Reader::new(payload);
    let frame = match header.kind {
        FrameType::Register => Frame::Control(decode_register(&mut r)?),
        FrameType::Registered => Frame::Control(decode_registered(&mut r)?),
        FrameType::Rejected => Frame::Control(decode_rejected(&mut r)?),
        FrameType::Drain => Frame::Control(decode_drain(&mut r)?),
        FrameType::Unregister => Frame::Control(ControlMessage::Unregister),
        FrameType::RequestHead => Frame::RequestHead(message::decode_request_head(&mut r)?),
        FrameType::ResponseHead => Frame::ResponseHead(message::decode_response_head(&mut r)?),
        FrameType::Trailers => Frame::Trailers(message::decode_trailers(&mut r)?),
        FrameType::Data => return Ok(Frame::Data(Bytes::copy_from_slice(payload))),
    };
    r.finish()?;
    Ok(frame)
}

/// Decodes one frame from the front of `buf`. Returns `Ok(None)` when `buf`
/// does not yet hold a whole frame, or the frame and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let header = decode_header(head)?;
    let end = HEADER_LEN + header.len;
    let Some(payload) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(header, payload)?, end)))
}

/// Appends the encoding of `frame` to `out`. On error `out` is left as it was.
pub fn encode(frame: &Frame, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_with(frame_type(frame), out, |out| match frame {
        Frame::Control(msg) => message::encode_control(msg, out),
        Frame::RequestHead(h) => message::encode_request_head(h, out),
        Frame::ResponseHead(h) => message::encode_response_head(h, out),
        Frame::Trailers(t) => message::encode_trailers(t, out),
        Frame::Data(b) => {
            out.put_slice(b);
            Ok(())
        }
    })
}

/// Appends a request head frame, as [`encode`] does, without the head being
/// moved into a [`Frame`]: the edge keeps the head to route by and sends the
/// bytes it checked, so a request's head is encoded once.
pub fn encode_request_head(head: &RequestHead, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_with(FrameType::RequestHead, out, |out| {
        message::encode_request_head(head, out)
    })
}

/// Writes the frame header, lets `payload` append the payload, then fills in
/// its length; on error `out` is left as it was.
fn encode_with(
    kind: FrameType,
    out: &mut BytesMut,
    payload: impl FnOnce(&mut BytesMut) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let start = out.len();
    out.put_slice(&[PROTOCOL_VERSION, kind.code(), 0, 0, 0, 0]);
    let result = payload(out).and_then(|()| {
        let len = out.len() - start - HEADER_LEN;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        out[start + 2..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(())
    });
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// The header of a data frame carrying `len` body bytes, for writers that
/// send the body bytes themselves without copying them into a frame.
pub fn data_header(len: usize) -> Result<[u8; HEADER_LEN], FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    let l = (len as u32).to_be_bytes();
    Ok([
        PROTOCOL_VERSION,
        FrameType::Data.code(),
        l[0],
        l[1],
        l[2],
        l[3],
    ])
}

fn frame_type(frame: &Frame) -> FrameType {
    match frame {
        Frame::Control(ControlMessage::Register(_)) => FrameType::Register,
        Frame::Control(ControlMessage::Registered(_)) => FrameType::Registered,
        Frame::Control(ControlMessage::Rejected(_)) => FrameType::Rejected,
        Frame::Control(ControlMessage::Drain(_)) => FrameType::Drain,
        Frame::Control(ControlMessage::Unregister) => FrameType::Unregister,
        Frame::RequestHead(_) => FrameType::RequestHead,
        Frame::ResponseHead(_) => FrameType::ResponseHead,
        Frame::Data(_) => FrameType::Data,
        Frame::Trailers(_) => FrameType::Trailers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{RejectReason, Rejected, StreamKind};
    use std::time::Duration;

    fn head() -> RequestHead {
        RequestHead {
            kind: StreamKind::Http,
            method: "GET".into(),
            authority: "app.example.com".into(),
            path: "/".into(),
            has_body: false,
            headers: vec![("accept".into(), b"*/*".to_vec())],
            client_addr: "127.0.0.1:5000".into(),
            request_id: "r1".into(),
        }
    }

    #[test]
    fn decode_waits_for_a_whole_frame() {
        let mut out = BytesMut::new();
        encode(&Frame::RequestHead(head()), &mut out).unwrap();
        for cut in 0..out.len() {
            assert_eq!(decode(&out[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (frame, used) = decode(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(frame, Frame::RequestHead(head()));
    }

    #[test]
    fn table_of_bad_headers() {
        let cases: &[(&[u8; HEADER_LEN], FrameError)] = &[
            (&[2, 0x01, 0, 0, 0, 0], FrameError::UnsupportedVersion(2)),
            (&[0, 0x01, 0, 0, 0, 0], FrameError::UnsupportedVersion(0)),
            (&[1, 0x7f, 0, 0, 0, 0], FrameError::UnknownType(0x7f)),
            (&[1, 0x12, 0, 1, 0, 1], FrameError::TooLarge(65537)),
            (
                &[1, 0x12, 0xff, 0xff, 0xff, 0xff],
                FrameError::TooLarge(u32::MAX as usize),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_header(bytes).unwrap_err(), *want);
        }
    }

    #[test]
    fn encode_refuses_an_oversized_frame_and_leaves_the_buffer() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let big = Frame::Data(Bytes::from(vec![0u8; MAX_PAYLOAD + 1]));
        assert_eq!(
            encode(&big, &mut out).unwrap_err(),
            FrameError::TooLarge(MAX_PAYLOAD + 1)
        );
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut out = BytesMut::new();
        let msg = ControlMessage::Rejected(Rejected {
            reason: RejectReason::BadToken,
            message: "no".into(),
            retry_after: Duration::from_secs(1),
        });
        encode(&Frame::Control(msg), &mut out).unwrap();
        out.put_u8(0);
        let len = (out.len() - HEADER_LEN) as u32;
        out[2..6].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&out).unwrap_err(), FrameError::TrailingBytes(1));
    }
}
