//! WebSocket (RFC 6455) framing for `connector access`: a TCP byte stream
//! carried as binary frames between the access client and the edge.
//!
//! Only what a byte stream needs: data frames (binary, text and
//! continuation alike) are bytes in order, message boundaries mean nothing;
//! ping is answered with pong. A Close frame is a half-close, as a FIN is:
//! "no more data from me". The side that gets one keeps sending until its
//! own data ends, then sends its Close (RFC 6455 section 5.5.1 lets an
//! endpoint delay its Close until its data is sent). A TCP connection that
//! ends without a Close is an error, not an end of data, so a cut
//! connection never looks like a complete transfer.
//!
//! [`FrameReader`] is the decoder without I/O (fuzzed); [`WsStream`] is the
//! `AsyncRead + AsyncWrite` adapter the edge and the access client relay
//! through.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, BufMut, BytesMut};
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::io::poll_read_buf;

/// The subprotocol (`Sec-WebSocket-Protocol`) that marks an access
/// WebSocket: TCP bytes for the hostname's TCP service, not a WebSocket to
/// proxy to an origin.
pub const SUBPROTOCOL: &str = "warren-tcp";

/// RFC 6455 section 1.3: appended to the client's key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A control frame's payload is at most this long (section 5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;

/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEAD: usize = 14;

/// Payload bytes put in one frame, and how much encoded output may wait
/// before a write pushes back: one relay buffer's worth.
const MAX_FRAME_PAYLOAD: usize = 64 * 1024;

/// How much is read from the connection at once.
const READ_CHUNK: usize = 32 * 1024;

/// Close status 1000: normal closure.
const CLOSE_NORMAL: [u8; 2] = 1000u16.to_be_bytes();

/// Which end of the connection this is: a client masks what it sends and
/// expects unmasked frames; a server the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that sent the upgrade request (`connector access`).
    Client,
    /// The side that answered 101 (the edge).
    Server,
}

/// `Sec-WebSocket-Accept` for a client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key);
    ctx.update(ACCEPT_GUID);
    STANDARD.encode(ctx.finish())
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes, base64.
pub fn client_key() -> String {
    let mut nonce = [0u8; 16];
    // An unpredictable key only guards against caches that replay answers;
    // if the system's generator failed, the handshake still works.
    let _ = SystemRandom::new().fill(&mut nonce);
    STANDARD.encode(nonce)
}

/// A peer broke the framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// A reserved bit is set (no extension was negotiated).
    #[error("reserved bits set in a frame header")]
    Reserved,
    /// An opcode RFC 6455 does not define.
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    /// A client frame without a mask, or a server frame with one.
    #[error("a {0} frame must {1} masked")]
    Masking(&'static str, &'static str),
    /// A control frame longer than 125 bytes or fragmented.
    #[error("invalid control frame")]
    Control,
    /// A 64-bit length with its top bit set.
    #[error("frame length out of range")]
    Length,
    /// Data after the peer's Close.
    #[error("frame after Close")]
    AfterClose,
}

impl From<WsError> for io::Error {
    fn from(e: WsError) -> Self {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("WebSocket protocol error: {e}"),
        )
    }
}

/// What [`FrameReader::next`] found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// This many payload bytes were unmasked into the output.
    Data(usize),
    /// A ping: send a pong with this payload.
    Ping(Vec<u8>),
    /// The peer's Close: no more data will come.
    Close,
    /// The buffer holds no whole event yet: read more.
    NeedMore,
}

/// The frame being read: how much payload is left and how to unmask it.
#[derive(Debug, Default, Clone, Copy)]
struct Payload {
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Position in the mask of the next payload byte.
    offset: usize,
}

/// Decodes frames from a byte buffer, without I/O: payload bytes are
/// unmasked straight into the caller's output, so a large frame never sits
/// in memory whole.
#[derive(Debug)]
pub struct FrameReader {
    role: Role,
    payload: Payload,
    closed: bool,
}

impl FrameReader {
    /// A reader for the `role` end (it reads what the other end sends).
    pub fn new(role: Role) -> Self {
        Self {
            role,
            payload: Payload::default(),
            closed: false,
        }
    }

    /// Consumes what it can from `input` and returns the next event. Data
    /// goes into `out` (at most `out.len()` bytes; an empty `out` gets
    /// nothing and reads no data).
    pub fn next(&mut self, input: &mut BytesMut, out: &mut [u8]) -> Result<Event, WsError> {
        loop {
            if self.payload.remaining > 0 {
                let n = (self.payload.remaining.min(out.len() as u64) as usize).min(input.len());
                if n == 0 {
                    return Ok(Event::NeedMore);
                }
                out[..n].copy_from_slice(&input[..n]);
                if let Some(mask) = self.payload.mask {
                    apply_mask(&mut out[..n], mask, self.payload.offset);
                    self.payload.offset = (self.payload.offset + n) % 4;
                }
                input.advance(n);
                self.payload.remaining -= n as u64;
                return Ok(Event::Data(n));
            }
            let Some(head) = parse_head(input)? else {
                return Ok(Event::NeedMore);
            };
            if self.closed {
                return Err(WsError::AfterClose);
            }
            let want_mask = self.role == Role::Server;
            if head.mask.is_some() != want_mask {
                return Err(match self.role {
                    Role::Server => WsError::Masking("client", "be"),
                    Role::Client => WsError::Masking("server", "not be"),
                });
            }
            match head.opcode {
                0x0..=0x2 => {
                    input.advance(head.len);
                    self.payload = Payload {
                        remaining: head.payload,
                        mask: head.mask,
                        offset: 0,
                    };
                }
                0x8..=0xA => {
                    let len = head.payload as usize;
                    if input.len() < head.len + len {
                        return Ok(Event::NeedMore);
                    }
                    input.advance(head.len);
                    let mut body = input.split_to(len).to_vec();
                    if let Some(mask) = head.mask {
                        apply_mask(&mut body, mask, 0);
                    }
                    match head.opcode {
                        0x8 => {
                            self.closed = true;
                            return Ok(Event::Close);
                        }
                        0x9 => return Ok(Event::Ping(body)),
                        _ => {} // an unsolicited pong: ignored (section 5.5.3)
                    }
                }
                op => return Err(WsError::Opcode(op)),
            }
        }
    }
}

/// A parsed frame header.
struct Head {
    opcode: u8,
    mask: Option<[u8; 4]>,
    payload: u64,
    /// Header length in bytes.
    len: usize,
}

fn parse_head(input: &[u8]) -> Result<Option<Head>, WsError> {
    let [b0, b1, ..] = *input else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(WsError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    let masked = b1 & 0x80 != 0;
    let (payload, mut len) = match b1 & 0x7F {
        126 => match input.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match input.get(2..10) {
            Some(b) => {
                let n = u64::from_be_bytes(b.try_into().unwrap_or_default());
                if n >> 63 != 0 {
                    return Err(WsError::Length);
                }
                (n, 10)
            }
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    if opcode >= 0x8 && (!fin || payload > MAX_CONTROL_PAYLOAD as u64) {
        return Err(WsError::Control);
    }
    let mask = if masked {
        let Some(m) = input.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some([m[0], m[1], m[2], m[3]])
    } else {
        None
    };
    Ok(Some(Head {
        opcode,
        mask,
        payload,
        len,
    }))
}

/// Appends one frame (FIN set) to `out`; a client masks it with a fresh key.
pub fn encode_frame(role: Role, opcode: u8, payload: &[u8], out: &mut BytesMut) {
    out.reserve(MAX_HEAD + payload.len());
    out.put_u8(0x80 | opcode);
    let mask_bit = if role == Role::Client { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.put_u8(mask_bit | n as u8),
        n if n <= usize::from(u16::MAX) => {
            out.put_u8(mask_bit | 126);
            out.put_u16(n as u16);
        }
        n => {
            out.put_u8(mask_bit | 127);
            out.put_u64(n as u64);
        }
    }
    let start = out.len();
    match role {
        Role::Server => out.put_slice(payload),
        Role::Client => {
            let mut mask = [0u8; 4];
            // Section 10.3: the key must be unpredictable to the page a
            // browser runs; a failed generator leaves zeros, which no
            // intermediary of ours is confused by.
            let _ = SystemRandom::new().fill(&mut mask);
            out.put_slice(&mask);
            out.put_slice(payload);
            apply_mask(&mut out[start + 4..], mask, 0);
        }
    }
}

/// XORs `data` with the mask, starting at mask position `offset`; eight
/// bytes at a time, since every byte of a client's stream goes through it.
fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut rotated = [0u8; 8];
    for (i, b) in rotated.iter_mut().enumerate() {
        *b = mask[(offset + i) % 4];
    }
    let word = u64::from_ne_bytes(rotated);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes((&*chunk).try_into().unwrap_or_default()) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (b, m) in chunks.into_remainder().iter_mut().zip(rotated) {
        *b ^= m;
    }
}

/// A byte stream over a WebSocket connection (after the 101).
///
/// Reads give the payload of data frames and end (EOF) at the peer's Close;
/// writes become binary frames; `shutdown` sends Close. Pings are answered
/// from whichever of read or write runs next. Memory is bounded: one read
/// chunk in, one frame's worth out.
#[derive(Debug)]
pub struct WsStream<IO> {
    io: IO,
    role: Role,
    reader: FrameReader,
    /// Bytes read from `io` not yet decoded.
    input: BytesMut,
    /// Encoded frames not yet written to `io`.
    output: BytesMut,
    /// The peer's Close arrived: reads return EOF.
    peer_closed: bool,
    /// Our Close is queued: writes are refused.
    close_sent: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> WsStream<IO> {
    /// Wraps a connection whose upgrade has completed; `input` holds bytes
    /// already read past the handshake, if any.
    pub fn new(io: IO, role: Role) -> Self {
        Self::with_input(io, role, BytesMut::new())
    }

    /// As [`WsStream::new`], with bytes the handshake read past its end.
    pub fn with_input(io: IO, role: Role, input: BytesMut) -> Self {
        Self {
            io,
            role,
            reader: FrameReader::new(role),
            input,
            output: BytesMut::new(),
            peer_closed: false,
            close_sent: false,
        }
    }

    /// Writes queued frames to `io`; ready when none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.output.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.output))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.output.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for WsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            // A pong queued by an earlier read goes out even when nothing
            // else is written; a full socket just leaves it queued.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            if this.peer_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this
                .reader
                .next(&mut this.input, buf.initialize_unfilled())?
            {
                Event::Data(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Event::Ping(payload) => {
                    if !this.close_sent {
                        encode_frame(this.role, 0xA, &payload, &mut this.output);
                    }
                }
                Event::Close => {
                    this.peer_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Event::NeedMore => {
                    this.input.reserve(READ_CHUNK);
                    let n = ready!(poll_read_buf(Pin::new(&mut this.io), cx, &mut this.input))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the WebSocket connection ended without a Close frame",
                        )));
                    }
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for WsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_sent {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the WebSocket was shut down for writing",
            )));
        }
        // Backpressure: nothing new is framed while a frame's worth waits.
        if this.output.len() >= MAX_FRAME_PAYLOAD {
            ready!(this.poll_drain(cx))?;
        }
        let n = data.len().min(MAX_FRAME_PAYLOAD);
        encode_frame(this.role, 0x2, &data[..n], &mut this.output);
        // Start sending now; what the socket cannot take waits in `output`.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_sent {
            this.close_sent = true;
            encode_frame(this.role, 0x8, &CLOSE_NORMAL, &mut this.output);
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn accept_key_matches_rfc_6455_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        assert_ne!(client_key(), client_key());
        assert_eq!(STANDARD.decode(client_key()).unwrap().len(), 16);
    }

    #[test]
    fn masked_frames_decode_across_any_split() {
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i * 7) as u8).collect();
        let mut wire = BytesMut::new();
        encode_frame(Role::Client, 0x2, &payload[..10], &mut wire);
        encode_frame(Role::Client, 0x9, b"hi", &mut wire);
        encode_frame(Role::Client, 0x2, &payload[10..300], &mut wire);
        encode_frame(Role::Client, 0x2, &payload[300..], &mut wire);
        encode_frame(Role::Client, 0x8, &CLOSE_NORMAL, &mut wire);
        for step in [1, 3, 64, 1000, wire.len()] {
            let mut reader = FrameReader::new(Role::Server);
            let mut input = BytesMut::new();
            let (mut got, mut pings, mut closed) = (Vec::new(), 0, false);
            let mut out = [0u8; 777];
            let mut fed = 0;
            while !closed {
                match reader.next(&mut input, &mut out).unwrap() {
                    Event::Data(n) => got.extend_from_slice(&out[..n]),
                    Event::Ping(p) => {
                        assert_eq!(p, b"hi");
                        pings += 1;
                    }
                    Event::Close => closed = true,
                    Event::NeedMore => {
                        let end = (fed + step).min(wire.len());
                        assert!(fed < end, "needs more than the whole wire");
                        input.extend_from_slice(&wire[fed..end]);
                        fed = end;
                    }
                }
            }
            assert_eq!(got, payload, "step {step}");
            assert_eq!(pings, 1);
        }
    }

    #[test]
    fn broken_frames_are_errors() {
        let cases: [(&[u8], WsError); 5] = [
            (&[0x82, 0x00], WsError::Masking("client", "be")),
            (&[0xC2, 0x80, 0, 0, 0, 0], WsError::Reserved),
            (&[0x83, 0x80, 0, 0, 0, 0], WsError::Opcode(3)),
            (&[0x09, 0x80, 0, 0, 0, 0], WsError::Control),
            (&[0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0], WsError::Length),
        ];
        for (bytes, want) in cases {
            let mut reader = FrameReader::new(Role::Server);
            let got = reader.next(&mut BytesMut::from(bytes), &mut [0u8; 16]);
            assert_eq!(got, Err(want), "{bytes:?}");
        }
        let mut reader = FrameReader::new(Role::Client);
        let mut masked = BytesMut::new();
        encode_frame(Role::Client, 0x2, b"x", &mut masked);
        assert!(reader.next(&mut masked, &mut [0u8; 4]).is_err());
    }

    #[tokio::test]
    async fn half_close_each_way_and_pings() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = WsStream::new(a, Role::Client);
        let mut server = WsStream::new(b, Role::Server);
        let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let expect = sent.clone();
        let client_side = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            let mut answer = Vec::new();
            client.read_to_end(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, expect, "the server reads everything up to the Close");
        server.write_all(b"after your close").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(client_side.await.unwrap(), b"after your close");
    }

    #[tokio::test]
    async fn a_cut_connection_is_an_error_not_an_end() {
        let (a, b) = tokio::io::duplex(4096);
        let mut client = WsStream::new(a, Role::Client);
        let mut server = WsStream::new(b, Role::Server);
        client.write_all(b"partial").await.unwrap();
        drop(client);
        let mut got = Vec::new();
        let err = server.read_to_end(&mut got).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(got, b"partial");
    }
}
