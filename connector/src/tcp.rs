//! A `tcp` stream: one TCP connection of a client (through a public TCP port
//! on the edge, or `connector access`) to a TCP service of the ingress
//! rules.
//!
//! The rule is matched on the stream's hostname and the path `/`; it must be
//! a TCP service (`tcp://`, `ssh://`, `rdp://`, `unix+tcp:`), or the stream
//! is refused with BadRequest. The connector dials the origin within the
//! rule's `connect_timeout`, writes the PROXY protocol header if the rule
//! asks for it, answers 200, then relays bytes both ways with backpressure
//! and half-close ([`tunnel::io::relay`]) until both sides are done. A
//! refused or unreachable origin is OriginUnreachable, a connect that takes
//! too long OriginTimeout. After the 200 nothing times out: an idle
//! connection stays open for as long as both peers do; dead peers are found
//! by TCP keep-alive on the origin socket and QUIC keep-alive on the tunnel.
//!
//! The edge may send the client's first bytes before the 200 (an SSH client
//! speaks first); they wait in the stream, bounded by QUIC flow control,
//! and reach the origin after the PROXY header.

use std::fmt;
use std::io;
use std::path::Path;
use std::time::Duration;

use daemon::metrics::GaugeGuard;
use prometheus::IntCounter;
use quinn::{RecvStream, SendStream};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixStream};
use tunnel::codec::Frame;
use tunnel::hostname;
use tunnel::io::{BodyReader, ByteMeter, relay, write_frame};
use tunnel::message::{RequestHead, ResponseHead, StreamErrorKind};

use crate::ingress::Service;
use crate::metrics::error_kind_label;
use crate::proxy_protocol::{Addresses, Version};
use crate::stream::{StreamContext, answer_error, error_chain};

/// QUIC error code for a TCP stream abandoned because one side failed.
const RELAY_FAILED: u32 = 2;
/// The request header that carries the address the client connected to on
/// the edge (the PROXY header's destination).
pub const DESTINATION_HEADER: &str = "warren-destination";

/// Serves one `tcp` stream to the end.
pub async fn serve(ctx: &StreamContext, head: RequestHead, mut send: SendStream, recv: RecvStream) {
    let request_id = head.request_id.as_str();
    let Some(host) = hostname::normalize(&head.authority) else {
        tracing::warn!(request_id, hostname = %head.authority.escape_debug(),
            "refused a TCP stream: its hostname is not a hostname");
        refuse(ctx, &mut send, StreamErrorKind::BadRequest).await;
        return;
    };
    let (index, rule) = ctx.ingress.find(&host, "/");
    let origin = match &rule.service {
        Service::Tcp { authority, .. } => Origin::Tcp(authority),
        Service::UnixTcp(path) => Origin::Unix(path),
        other => {
            tracing::warn!(request_id, hostname = %host, rule = index + 1, service = %other,
                "refused a TCP stream: the rule for this hostname is not a TCP service (tcp://, ssh://, rdp://, unix+tcp:); add one to the ingress rules");
            refuse(ctx, &mut send, StreamErrorKind::BadRequest).await;
            return;
        }
    };
    let timeout = rule.origin.connect_timeout;
    let mut conn = match dial(origin, timeout).await {
        Ok(c) => c,
        Err(e) => {
            let kind = e.kind();
            tracing::warn!(request_id, hostname = %host, origin = %origin, kind = error_kind_label(kind),
                error = %e, "TCP origin connect failed");
            refuse(ctx, &mut send, kind).await;
            return;
        }
    };
    if rule.origin.proxy_protocol == Some(Version::V2) {
        let header = proxy_header(&head, &conn, &host);
        if let Err(e) = conn.write_all(&header).await {
            let kind = StreamErrorKind::OriginUnreachable;
            tracing::warn!(request_id, hostname = %host, origin = %origin, kind = error_kind_label(kind),
                error = %e, "TCP origin closed before it took the PROXY protocol header");
            refuse(ctx, &mut send, kind).await;
            return;
        }
    }
    let ok = ResponseHead::Response {
        status: 200,
        headers: Vec::new(),
    };
    if write_frame(&mut send, &Frame::ResponseHead(ok))
        .await
        .is_err()
    {
        // The edge gave up on the stream (its client left).
        return;
    }
    let _open = GaugeGuard::new(
        ctx.metrics
            .tcp_streams_open
            .with_label_values(&[&ctx.tunnel]),
    );
    let meter = Meter {
        to_origin: ctx
            .metrics
            .tcp_bytes
            .with_label_values(&[&ctx.tunnel, "to_origin"]),
        to_client: ctx
            .metrics
            .tcp_bytes
            .with_label_values(&[&ctx.tunnel, "to_client"]),
    };
    let tunnel_in = BodyReader::new(recv);
    // Owned halves: no lock between the two directions; shutting down the
    // write half sends the origin a FIN (half-close) and keeps reading.
    let outcome = match conn {
        Conn::Tcp(s) => {
            let (r, w) = s.into_split();
            relay(tunnel_in, send, r, w, RELAY_FAILED, &meter).await
        }
        Conn::Unix(s) => {
            let (r, w) = s.into_split();
            relay(tunnel_in, send, r, w, RELAY_FAILED, &meter).await
        }
    };
    if let Err(e) = outcome {
        tracing::debug!(request_id, hostname = %host, error = %e, "TCP stream ended with an error");
    }
}

/// Answers the stream with an error, counted by kind.
async fn refuse(ctx: &StreamContext, send: &mut SendStream, kind: StreamErrorKind) {
    ctx.metrics
        .tcp_errors
        .with_label_values(&[&ctx.tunnel, error_kind_label(kind)])
        .inc();
    answer_error(ctx, send, kind).await;
}

/// The PROXY v2 header of this stream; LOCAL (and a log line) when the
/// edge's client address does not parse.
fn proxy_header(head: &RequestHead, conn: &Conn, host: &str) -> Vec<u8> {
    let destination = head
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(DESTINATION_HEADER))
        .map(|(_, v)| v.as_slice());
    let peer = match conn {
        Conn::Tcp(s) => s.peer_addr().ok(),
        Conn::Unix(_) => None,
    };
    match Addresses::for_stream(&head.client_addr, destination, peer) {
        Some(a) => a.v2_header(),
        None => {
            tracing::warn!(request_id = head.request_id, hostname = host,
                client_addr = %head.client_addr.escape_debug(),
                "the stream's client address is not IP:PORT; sending a PROXY header with command LOCAL (no address)");
            Addresses::Local.v2_header()
        }
    }
}

/// Where a TCP rule's connections go.
#[derive(Clone, Copy)]
enum Origin<'a> {
    /// `host:port`.
    Tcp(&'a str),
    /// A unix stream socket.
    Unix(&'a Path),
}

impl fmt::Display for Origin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => f.write_str(a),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A connection to a TCP rule's origin.
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.write_all(bytes).await,
            Self::Unix(s) => s.write_all(bytes).await,
        }
    }
}

/// Why the origin could not be reached, with the OS error's text.
#[derive(Debug, thiserror::Error)]
enum DialError {
    /// No connection within the rule's `connect_timeout`.
    #[error("no connection within the connect timeout ({0:?})")]
    Timeout(Duration),
    /// Refused, unreachable, or a name that does not resolve: the dialer's
    /// error chain, and the kind of the OS error under it.
    #[error("{text}")]
    Tcp {
        /// What failed, down to the OS error.
        text: String,
        /// The OS error's kind, when there is one.
        os: Option<io::ErrorKind>,
    },
    /// The unix socket is missing or refuses.
    #[error("{0}")]
    Unix(io::Error),
}

impl DialError {
    fn kind(&self) -> StreamErrorKind {
        let os = match self {
            Self::Timeout(_) => return StreamErrorKind::OriginTimeout,
            Self::Tcp { os, .. } => *os,
            Self::Unix(e) => Some(e.kind()),
        };
        // The kernel, or the dialer's per-address timer, gave up first.
        if os == Some(io::ErrorKind::TimedOut) {
            StreamErrorKind::OriginTimeout
        } else {
            StreamErrorKind::OriginUnreachable
        }
    }
}

/// Connects to the origin within `timeout`, with the settings of the HTTP
/// origins' sockets (no Nagle delay, keep-alive probes).
async fn dial(origin: Origin<'_>, timeout: Duration) -> Result<Conn, DialError> {
    let connect = async {
        match origin {
            Origin::Unix(path) => UnixStream::connect(path)
                .await
                .map(Conn::Unix)
                .map_err(DialError::Unix),
            Origin::Tcp(authority) => {
                let uri: http::Uri = format!("http://{authority}/").parse().map_err(
                    |e: http::uri::InvalidUri| DialError::Tcp {
                        text: e.to_string(),
                        os: None,
                    },
                )?;
                let mut connector = crate::origin::tcp_connector(timeout);
                tower_service::Service::call(&mut connector, uri)
                    .await
                    .map(|io| Conn::Tcp(io.into_inner()))
                    .map_err(|e| DialError::Tcp {
                        text: error_chain(&e),
                        os: os_error_kind(&e),
                    })
            }
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(DialError::Timeout(timeout)),
    }
}

/// The kind of the OS error under a dialer's error.
fn os_error_kind(e: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut source = Some(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// `connector_tcp_bytes_total` of one stream, the label lookups done once.
struct Meter {
    to_origin: IntCounter,
    to_client: IntCounter,
}

impl ByteMeter for Meter {
    fn to_peer(&self, n: usize) {
        self.to_origin.inc_by(n as u64);
    }

    fn to_tunnel(&self, n: usize) {
        self.to_client.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_refused_port_is_unreachable_and_a_listener_connects() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conn = dial(Origin::Tcp(&addr), Duration::from_secs(5))
            .await
            .unwrap();
        assert!(matches!(conn, Conn::Tcp(_)));
        drop(listener);
        let err = dial(Origin::Tcp(&addr), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StreamErrorKind::OriginUnreachable, "{err}");
        assert!(err.to_string().contains("refused"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_unix_socket_is_unreachable() {
        let path = std::env::temp_dir().join(format!("conn-tcp-none-{}.sock", std::process::id()));
        let err = dial(Origin::Unix(&path), Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert_eq!(err.kind(), StreamErrorKind::OriginUnreachable, "{err}");
    }

    #[test]
    fn timeouts_are_timeouts_and_the_rest_unreachable() {
        let tcp = |os| DialError::Tcp {
            text: String::new(),
            os,
        };
        let table = [
            (
                DialError::Timeout(Duration::from_secs(1)),
                StreamErrorKind::OriginTimeout,
            ),
            (
                tcp(Some(io::ErrorKind::TimedOut)),
                StreamErrorKind::OriginTimeout,
            ),
            (
                tcp(Some(io::ErrorKind::ConnectionRefused)),
                StreamErrorKind::OriginUnreachable,
            ),
            (tcp(None), StreamErrorKind::OriginUnreachable),
            (
                DialError::Unix(io::ErrorKind::NotFound.into()),
                StreamErrorKind::OriginUnreachable,
            ),
        ];
        for (err, kind) in table {
            assert_eq!(err.kind(), kind, "{err:?}");
        }
    }
}
