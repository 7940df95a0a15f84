//! Frames over QUIC streams: the thin async layer over [`crate::codec`].
//!
//! Bodies are sent as data frames. The reader hands out body bytes as quinn
//! delivers them, without copying, and never holds more than one frame header
//! plus one control payload, so memory per stream stays bounded whatever the
//! body size; backpressure comes from QUIC flow control.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use quinn::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::codec::{self, Frame, FrameError, FrameHeader, FrameType, HEADER_LEN, MAX_PAYLOAD};
use crate::message::{ControlMessage, RequestHead, ResponseHead, Trailers};

/// A failure while moving frames over a stream.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The peer sent bytes that are not a valid frame.
    #[error("invalid frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// Reading from the stream failed (reset, connection lost).
    #[error("stream read failed: {0}")]
    Read(#[from] quinn::ReadError),
    /// Writing to the stream failed (stopped, connection lost).
    #[error("stream write failed: {0}")]
    Write(#[from] quinn::WriteError),
    /// The stream ended in the middle of a frame.
    #[error("stream ended in the middle of a frame")]
    Truncated,
    /// The stream ended where a frame was required.
    #[error("stream ended before the {0}")]
    Ended(&'static str),
    /// A frame of the wrong type arrived.
    #[error("expected a {expected} frame, got {got:?}")]
    Unexpected {
        /// What the protocol required here.
        expected: &'static str,
        /// What arrived.
        got: FrameType,
    },
    /// The connection failed or closed.
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    /// The stream was already finished.
    #[error("stream already closed")]
    Closed,
}

impl From<quinn::ReadExactError> for IoError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(_) => IoError::Truncated,
            quinn::ReadExactError::ReadError(e) => IoError::Read(e),
        }
    }
}

impl From<quinn::ClosedStream> for IoError {
    fn from(_: quinn::ClosedStream) -> Self {
        IoError::Closed
    }
}

/// Encodes and writes one frame.
pub async fn write_frame(send: &mut SendStream, frame: &Frame) -> Result<(), IoError> {
    // Sized for a typical head at once (growing from empty cost more than
    // the encoding), and handed to quinn as it is, not copied again.
    let mut buf = BytesMut::with_capacity(FRAME_BUFFER);
    codec::encode(frame, &mut buf)?;
    send.write_chunk(buf.freeze()).await?;
    Ok(())
}

/// The first allocation for an encoded frame: a response head from a
/// typical origin fits.
const FRAME_BUFFER: usize = 512;

/// Body pieces up to this size are copied into one buffer with their frame
/// header; larger ones are handed to quinn as they are. A small copy is
/// cheaper than what zero-copy costs for it: a second write, and the
/// sender's whole read buffer (8 KiB in hyper) held until the peer
/// acknowledges those few bytes.
const COPY_UP_TO: usize = 8 * 1024;

/// Writes body bytes as data frames of at most [`MAX_PAYLOAD`] bytes.
pub async fn write_data(send: &mut SendStream, mut data: Bytes) -> Result<(), IoError> {
    if data.len() <= COPY_UP_TO {
        if data.is_empty() {
            return Ok(());
        }
        let mut frame = BytesMut::with_capacity(HEADER_LEN + data.len());
        frame.extend_from_slice(&codec::data_header(data.len())?);
        frame.extend_from_slice(&data);
        send.write_chunk(frame.freeze()).await?;
        return Ok(());
    }
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(MAX_PAYLOAD));
        send.write_all(&codec::data_header(piece.len())?).await?;
        send.write_chunk(piece).await?;
    }
    Ok(())
}

/// Reads one frame header; `Ok(None)` when the stream ended cleanly first.
async fn read_header(recv: &mut RecvStream) -> Result<Option<FrameHeader>, IoError> {
    let mut head = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match recv.read(&mut head[filled..]).await? {
            Some(n) => filled += n,
            None if filled == 0 => return Ok(None),
            None => return Err(IoError::Truncated),
        }
    }
    Ok(Some(codec::decode_header(&head)?))
}

async fn read_payload(recv: &mut RecvStream, header: FrameHeader) -> Result<Frame, IoError> {
    let mut payload = vec![0u8; header.len];
    recv.read_exact(&mut payload).await?;
    Ok(codec::decode_payload(header, &payload)?)
}

/// Reads one whole frame (data frames included); `Ok(None)` at a clean end.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Frame>, IoError> {
    match read_header(recv).await? {
        None => Ok(None),
        Some(header) => Ok(Some(read_payload(recv, header).await?)),
    }
}

/// Reads the next control message; `Ok(None)` when the peer finished the stream.
pub async fn read_control(recv: &mut RecvStream) -> Result<Option<ControlMessage>, IoError> {
    match read_header(recv).await? {
        None => Ok(None),
        Some(h) => match read_payload(recv, h).await? {
            Frame::Control(msg) => Ok(Some(msg)),
            _ => Err(IoError::Unexpected {
                expected: "control",
                got: h.kind,
            }),
        },
    }
}

/// Reads the request head that opens a request stream. For a head without
/// a body, the end of the stream that came with it is read too (see
/// [`drain_arrived`]).
pub async fn read_request_head(recv: &mut RecvStream) -> Result<RequestHead, IoError> {
    let h = read_header(recv)
        .await?
        .ok_or(IoError::Ended("request head"))?;
    match read_payload(recv, h).await? {
        Frame::RequestHead(head) => {
            if !head.has_body {
                drain_arrived(recv, 0);
            }
            Ok(head)
        }
        _ => Err(IoError::Unexpected {
            expected: "request head",
            got: h.kind,
        }),
    }
}

/// Reads the response head that answers a request stream.
pub async fn read_response_head(recv: &mut RecvStream) -> Result<ResponseHead, IoError> {
    let h = read_header(recv)
        .await?
        .ok_or(IoError::Ended("response head"))?;
    match read_payload(recv, h).await? {
        Frame::ResponseHead(head) => Ok(head),
        _ => Err(IoError::Unexpected {
            expected: "response head",
            got: h.kind,
        }),
    }
}

/// One piece of a body read from a stream.
#[derive(Debug)]
pub enum BodyPart {
    /// Body bytes.
    Data(Bytes),
    /// Trailing headers; nothing follows them.
    Trailers(Trailers),
}

/// Reads a body (data frames, then optional trailers, then the end of the
/// stream) piece by piece, handing out quinn's buffers without copying.
#[derive(Debug)]
pub struct BodyReader {
    recv: RecvStream,
    /// Bytes left in the data frame being read.
    remaining: usize,
    done: bool,
}

impl BodyReader {
    /// Reads the body that follows a head on `recv`.
    pub fn new(recv: RecvStream) -> Self {
        Self {
            recv,
            remaining: 0,
            done: false,
        }
    }

    /// The next piece, or `Ok(None)` at the end of the body.
    pub async fn next(&mut self) -> Result<Option<BodyPart>, IoError> {
        loop {
            if self.done {
                return Ok(None);
            }
            if self.remaining > 0 {
                let chunk = self
                    .recv
                    .read_chunk(self.remaining, true)
                    .await?
                    .ok_or(IoError::Truncated)?;
                self.remaining -= chunk.bytes.len();
                return Ok(Some(BodyPart::Data(chunk.bytes)));
            }
            let Some(header) = read_header(&mut self.recv).await? else {
                self.done = true;
                return Ok(None);
            };
            match header.kind {
                FrameType::Data => self.remaining = header.len,
                FrameType::Trailers => {
                    if let Frame::Trailers(t) = read_payload(&mut self.recv, header).await? {
                        self.done = true;
                        return Ok(Some(BodyPart::Trailers(t)));
                    }
                }
                other => {
                    return Err(IoError::Unexpected {
                        expected: "data or trailers",
                        got: other,
                    });
                }
            }
        }
    }

    /// Tells the peer to stop sending (for example when the client went away).
    pub fn stop(&mut self, code: u32) {
        self.done = true;
        let _ = self.recv.stop(quinn::VarInt::from_u32(code));
    }
}

impl Drop for BodyReader {
    /// hyper stops reading a body once it has its Content-Length, so the
    /// end of the stream, which usually came in the same packet as the last
    /// bytes, is left unread; take it now (see [`drain_arrived`]).
    fn drop(&mut self) {
        if !self.done {
            drain_arrived(&mut self.recv, DRAIN_LIMIT);
        }
    }
}

/// The most already-arrived bytes [`drain_arrived`] throws away looking for
/// the end of a stream.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Reads, without waiting, what has already arrived on `recv`, up to `limit`
/// bytes (thrown away), to see the end of the stream. quinn answers a
/// stream dropped before its end was read with STOP_SENDING, even when the
/// peer's FIN is already here (it cannot tell that from data still missing):
/// a packet of its own, and an immediate ACK from the peer, on every request.
/// A stream whose end is read closes quietly. Returns whether it ended.
pub fn drain_arrived(recv: &mut RecvStream, limit: usize) -> bool {
    // Nothing waits on this stream any more: a no-op waker is enough.
    let mut cx = Context::from_waker(Waker::noop());
    let mut seen = 0;
    loop {
        let read = pin!(recv.read_chunk(limit.saturating_sub(seen).max(1), true));
        match read.poll(&mut cx) {
            Poll::Ready(Ok(None)) => return true,
            Poll::Ready(Ok(Some(chunk))) => {
                seen += chunk.bytes.len();
                if seen > limit {
                    return false;
                }
            }
            Poll::Ready(Err(_)) | Poll::Pending => return false,
        }
    }
}

/// The most bytes [`relay`] reads from its peer at once.
const RELAY_BUFFER: usize = 16 * 1024;

/// How long a finished relay waits for the peer to acknowledge the end of
/// its stream (one round trip, in practice).
const FINISH_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The tunnel stream failed or was reset.
    #[error("tunnel stream: {0}")]
    Tunnel(#[from] IoError),
    /// The upgraded connection failed.
    #[error("upgraded connection: {0}")]
    Peer(#[from] std::io::Error),
    /// The peer sent trailers, which a WebSocket cannot carry.
    #[error("the tunnel peer sent trailers on a WebSocket")]
    Trailers,
}

/// Counts the bytes a [`relay`] moves, as they move (a long TCP connection
/// shows its traffic while it lasts, not when it ends). `()` counts nothing.
pub trait ByteMeter {
    /// `n` bytes arrived from the tunnel and were written to the peer.
    fn to_peer(&self, n: usize);
    /// `n` bytes read from the peer were sent into the tunnel.
    fn to_tunnel(&self, n: usize);
}

impl ByteMeter for () {
    fn to_peer(&self, _: usize) {}
    fn to_tunnel(&self, _: usize) {}
}

/// Relays a byte-stream peer (an upgraded WebSocket, a TCP connection) and a
/// tunnel stream: bytes both ways as data frames, with backpressure on each
/// side and half-close: the tunnel's end of stream shuts down `peer_write`,
/// `peer_read`'s EOF finishes the stream. Ends when both directions are
/// done, or at the first error (then the stream is reset and stopped with
/// `code`, and the caller drops the peer's connection). No timer: an idle
/// relay stays open.
pub async fn relay<R, W>(
    mut tunnel_in: BodyReader,
    mut tunnel_out: SendStream,
    mut peer_read: R,
    mut peer_write: W,
    code: u32,
    meter: &impl ByteMeter,
) -> Result<(), RelayError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let result = {
        let up = async {
            while let Some(part) = tunnel_in.next().await? {
                match part {
                    BodyPart::Data(b) => {
                        peer_write.write_all(&b).await?;
                        meter.to_peer(b.len());
                    }
                    BodyPart::Trailers(_) => return Err(RelayError::Trailers),
                }
            }
            peer_write.shutdown().await?;
            Ok::<(), RelayError>(())
        };
        let down = async {
            let mut buf = BytesMut::with_capacity(RELAY_BUFFER);
            loop {
                buf.reserve(RELAY_BUFFER);
                let n = peer_read.read_buf(&mut buf).await?;
                if n == 0 {
                    break;
                }
                write_data(&mut tunnel_out, buf.split().freeze()).await?;
                meter.to_tunnel(n);
            }
            tunnel_out.finish().map_err(IoError::from)?;
            // The relay runs until the other side has all of it: its caller
            // may close the connection once no stream runs, and closing a
            // QUIC connection drops what was not yet delivered.
            let _ = tokio::time::timeout(FINISH_ACK_WAIT, tunnel_out.stopped()).await;
            Ok::<(), RelayError>(())
        };
        tokio::try_join!(up, down).map(|_| ())
    };
    if result.is_err() {
        let _ = tunnel_out.reset(quinn::VarInt::from_u32(code));
        tunnel_in.stop(code);
    }
    result
}
