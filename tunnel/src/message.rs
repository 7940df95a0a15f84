//! The messages of the tunnel protocol and their payload encodings.
//!
//! Control messages travel on the first bidirectional stream of a connection,
//! opened by the connector. Every proxied request gets its own stream, opened
//! by the edge: a [`RequestHead`], then the body as data frames; the connector
//! answers with a [`ResponseHead`], the body, and [`Trailers`] if any.

use std::time::Duration;

use bytes::BytesMut;

use crate::codec::FrameError;
use crate::token::{Secret, TunnelId};
use crate::wire::{Reader, Writer};

/// At most this many header fields in one head or trailers frame.
pub const MAX_HEADERS: usize = 256;

/// A header list: names are lower-case ASCII, values are raw bytes.
pub type HeaderList = Vec<(String, Vec<u8>)>;

/// A connector asks to serve a tunnel on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    /// The highest protocol version the connector speaks.
    pub protocol_version: u8,
    /// The tunnel to serve.
    pub tunnel_id: TunnelId,
    /// The tunnel secret from the token.
    pub secret: Secret,
    /// Identifies the connector process across its connections.
    pub connector_id: String,
    /// Which of the connector's HA connections this is.
    pub conn_index: u8,
    /// The connector's release version, for the edge's logs and metrics.
    pub connector_version: String,
}

/// The edge accepted a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// The edge process that holds the connection.
    pub edge_id: String,
    /// The edge's location (data center).
    pub location: String,
}

/// Why the edge refused a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// The tunnel exists but the secret does not match.
    BadToken,
    /// No tunnel with that id is configured on this edge.
    UnknownTunnel,
    /// The connector speaks a protocol version this edge does not.
    UnsupportedVersion,
    /// The edge is shutting down and takes no new connections.
    Draining,
    /// The registration message could not be understood.
    Malformed,
    /// A reason this build does not know, from a newer peer.
    Other(u8),
}

impl RejectReason {
    fn code(self) -> u8 {
        match self {
            Self::BadToken => 1,
            Self::UnknownTunnel => 2,
            Self::UnsupportedVersion => 3,
            Self::Draining => 4,
            Self::Malformed => 5,
            Self::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Self {
        match c {
            1 => Self::BadToken,
            2 => Self::UnknownTunnel,
            3 => Self::UnsupportedVersion,
            4 => Self::Draining,
            5 => Self::Malformed,
            c => Self::Other(c),
        }
    }

    /// A stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadToken => "bad_token",
            Self::UnknownTunnel => "unknown_tunnel",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Draining => "draining",
            Self::Malformed => "malformed",
            Self::Other(_) => "other",
        }
    }
}

/// The edge refused a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Why.
    pub reason: RejectReason,
    /// A short explanation for the connector's log (never a secret).
    pub message: String,
    /// How long the connector should wait before it tries again.
    pub retry_after: Duration,
}

/// The edge asks the connector to move this connection elsewhere before the
/// deadline (make before break).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drain {
    /// Time left before the edge closes the connection.
    pub deadline: Duration,
}

/// A message on the control stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlMessage {
    /// Connector to edge: serve this tunnel.
    Register(Register),
    /// Edge to connector: accepted.
    Registered(Registered),
    /// Edge to connector: refused.
    Rejected(Rejected),
    /// Edge to connector: move away.
    Drain(Drain),
    /// Connector to edge: this connection takes no new streams.
    Unregister,
}

/// What a request stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// An HTTP request and response.
    Http,
    /// An HTTP upgrade to WebSocket, then raw bytes both ways.
    WebSocket,
    /// A raw TCP connection.
    Tcp,
}

/// The head of a proxied request, written by the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// What the stream carries.
    pub kind: StreamKind,
    /// HTTP method.
    pub method: String,
    /// The host the client asked for (the Host header).
    pub authority: String,
    /// Path and query.
    pub path: String,
    /// Whether a body follows (an HTTP/1.1 request without Content-Length
    /// or Transfer-Encoding has none, and the origin must not be sent one).
    pub has_body: bool,
    /// Request headers, hop-by-hop ones removed.
    pub headers: HeaderList,
    /// The public client's address.
    pub client_addr: String,
    /// The request id the edge assigned.
    pub request_id: String,
}

/// Why a connector could not produce an origin response. Each maps to one
/// status code at the edge; the response body names only the category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamErrorKind {
    /// The origin refused or could not be reached.
    OriginUnreachable,
    /// The origin did not answer in time.
    OriginTimeout,
    /// The TLS handshake with the origin failed.
    OriginTls,
    /// The origin broke the protocol.
    OriginProtocol,
    /// The request head was invalid.
    BadRequest,
    /// Something failed inside the connector.
    Internal,
    /// A kind this build does not know.
    Other(u8),
}

impl StreamErrorKind {
    fn code(self) -> u8 {
        match self {
            Self::OriginUnreachable => 1,
            Self::OriginTimeout => 2,
            Self::OriginTls => 3,
            Self::OriginProtocol => 4,
            Self::BadRequest => 5,
            Self::Internal => 6,
            Self::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Self {
        match c {
            1 => Self::OriginUnreachable,
            2 => Self::OriginTimeout,
            3 => Self::OriginTls,
            4 => Self::OriginProtocol,
            5 => Self::BadRequest,
            6 => Self::Internal,
            c => Self::Other(c),
        }
    }

    /// A short, stable description for response bodies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OriginUnreachable => "origin unreachable",
            Self::OriginTimeout => "origin timeout",
            Self::OriginTls => "origin TLS error",
            Self::OriginProtocol => "origin protocol error",
            Self::BadRequest => "bad request",
            Self::Internal => "connector error",
            Self::Other(_) => "tunnel error",
        }
    }
}

/// The connector's answer to a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseHead {
    /// The origin answered.
    Response {
        /// HTTP status code.
        status: u16,
        /// Response headers, hop-by-hop ones removed.
        headers: HeaderList,
    },
    /// No origin response: a typed error.
    Error(StreamErrorKind),
}

/// Trailing headers after a body (gRPC needs them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trailers(pub HeaderList);

pub(crate) fn encode_control(msg: &ControlMessage, out: &mut BytesMut) -> Result<(), FrameError> {
    let mut w = Writer::new(out);
    match msg {
        ControlMessage::Register(r) => {
            w.u8(r.protocol_version);
            w.bytes("tunnel_id", &r.tunnel_id.0)?;
            w.bytes("secret", &r.secret.0)?;
            w.str("connector_id", &r.connector_id)?;
            w.u8(r.conn_index);
            w.str("connector_version", &r.connector_version)?;
        }
        ControlMessage::Registered(r) => {
            w.str("edge_id", &r.edge_id)?;
            w.str("location", &r.location)?;
        }
        ControlMessage::Rejected(r) => {
            w.u8(r.reason.code());
            w.str("message", &r.message)?;
            w.u32(duration_ms(r.retry_after));
        }
        ControlMessage::Drain(d) => w.u32(duration_ms(d.deadline)),
        ControlMessage::Unregister => {}
    }
    Ok(())
}

pub(crate) fn decode_register(r: &mut Reader<'_>) -> Result<ControlMessage, FrameError> {
    let protocol_version = r.u8()?;
    let tunnel_id = TunnelId(
        r.bytes()?
            .try_into()
            .map_err(|_| FrameError::InvalidField("tunnel_id"))?,
    );
    let secret = Secret(
        r.bytes()?
            .try_into()
            .map_err(|_| FrameError::InvalidField("secret"))?,
    );
    Ok(ControlMessage::Register(Register {
        protocol_version,
        tunnel_id,
        secret,
        connector_id: r.string("connector_id")?,
        conn_index: r.u8()?,
        connector_version: r.string("connector_version")?,
    }))
}

pub(crate) fn decode_registered(r: &mut Reader<'_>) -> Result<ControlMessage, FrameError> {
    Ok(ControlMessage::Registered(Registered {
        edge_id: r.string("edge_id")?,
        location: r.string("location")?,
    }))
}

pub(crate) fn decode_rejected(r: &mut Reader<'_>) -> Result<ControlMessage, FrameError> {
    Ok(ControlMessage::Rejected(Rejected {
        reason: RejectReason::from_code(r.u8()?),
        message: r.string("message")?,
        retry_after: Duration::from_millis(r.u32()?.into()),
    }))
}

pub(crate) fn decode_drain(r: &mut Reader<'_>) -> Result<ControlMessage, FrameError> {
    Ok(ControlMessage::Drain(Drain {
        deadline: Duration::from_millis(r.u32()?.into()),
    }))
}

pub(crate) fn encode_request_head(h: &RequestHead, out: &mut BytesMut) -> Result<(), FrameError> {
    let mut w = Writer::new(out);
    w.u8(match h.kind {
        StreamKind::Http => 1,
        StreamKind::WebSocket => 2,
        StreamKind::Tcp => 3,
    });
    w.str("method", &h.method)?;
    w.str("authority", &h.authority)?;
    w.str("path", &h.path)?;
    w.u8(u8::from(h.has_body));
    write_headers(&mut w, &h.headers)?;
    w.str("client_addr", &h.client_addr)?;
    w.str("request_id", &h.request_id)?;
    Ok(())
}

pub(crate) fn decode_request_head(r: &mut Reader<'_>) -> Result<RequestHead, FrameError> {
    let kind = match r.u8()? {
        1 => StreamKind::Http,
        2 => StreamKind::WebSocket,
        3 => StreamKind::Tcp,
        _ => return Err(FrameError::InvalidField("kind")),
    };
    Ok(RequestHead {
        kind,
        method: r.string("method")?,
        authority: r.string("authority")?,
        path: r.string("path")?,
        has_body: match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(FrameError::InvalidField("has_body")),
        },
        headers: read_headers(r)?,
        client_addr: r.string("client_addr")?,
        request_id: r.string("request_id")?,
    })
}

pub(crate) fn encode_response_head(h: &ResponseHead, out: &mut BytesMut) -> Result<(), FrameError> {
    let mut w = Writer::new(out);
    match h {
        ResponseHead::Response { status, headers } => {
            w.u8(0);
            w.u16(*status);
            write_headers(&mut w, headers)?;
        }
        ResponseHead::Error(kind) => {
            w.u8(1);
            w.u8(kind.code());
        }
    }
    Ok(())
}

pub(crate) fn decode_response_head(r: &mut Reader<'_>) -> Result<ResponseHead, FrameError> {
    match r.u8()? {
        0 => {
            let status = r.u16()?;
            if !(100..=999).contains(&status) {
                return Err(FrameError::InvalidField("status"));
            }
            Ok(ResponseHead::Response {
                status,
                headers: read_headers(r)?,
            })
        }
        1 => Ok(ResponseHead::Error(StreamErrorKind::from_code(r.u8()?))),
        _ => Err(FrameError::InvalidField("response_head")),
    }
}

pub(crate) fn encode_trailers(t: &Trailers, out: &mut BytesMut) -> Result<(), FrameError> {
    write_headers(&mut Writer::new(out), &t.0)
}

pub(crate) fn decode_trailers(r: &mut Reader<'_>) -> Result<Trailers, FrameError> {
    Ok(Trailers(read_headers(r)?))
}

fn write_headers(w: &mut Writer<'_>, headers: &HeaderList) -> Result<(), FrameError> {
    if headers.len() > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders(headers.len()));
    }
    w.u16(headers.len() as u16);
    for (name, value) in headers {
        w.str("header name", name)?;
        w.bytes("header value", value)?;
    }
    Ok(())
}

fn read_headers(r: &mut Reader<'_>) -> Result<HeaderList, FrameError> {
    let count = r.u16()? as usize;
    if count > MAX_HEADERS {
        return Err(FrameError::TooManyHeaders(count));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.string("header name")?;
        if name.is_empty() {
            return Err(FrameError::InvalidField("header name"));
        }
        headers.push((name, r.bytes()?.to_vec()));
    }
    Ok(headers)
}

fn duration_ms(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// Headers that describe one hop, not the message: never forwarded through
/// the tunnel (RFC 9110 section 7.6.1).
pub fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}
