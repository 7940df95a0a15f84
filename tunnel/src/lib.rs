//! The Warren tunnel protocol, shared by `edge` and `connector`.
//!
//! - [`codec`]: frames to bytes and back, with hard limits; no I/O.
//! - [`message`]: control messages, request and response heads, trailers.
//! - [`token`]: tunnel tokens and the hashes the edge keeps of them.
//! - [`io`]: frames over quinn streams.
//! - [`endpoint`]: QUIC/TLS 1.3 endpoint builders.
//! - [`hostname`]: Host headers and hostname patterns.
//! - [`dev_cert`]: a local CA and edge certificate.
//! - [`websocket`]: WebSocket frames for `connector access` (TCP over a WebSocket).
#![warn(missing_docs)]

pub mod codec;
pub mod dev_cert;
pub mod endpoint;
pub mod hostname;
pub mod io;
pub mod message;
pub mod token;
pub mod websocket;
mod wire;

/// The protocol version carried in every frame and in the ALPN string.
pub const PROTOCOL_VERSION: u8 = 1;

/// The ALPN string: a connector and an edge that disagree on the protocol
/// version fail the TLS handshake with a clear "no application protocol".
pub const ALPN: &[u8] = b"warren-tunnel/1";
