//! WebSocket upgrades on the public side: an HTTP/1.1 `GET` with
//! `Connection: upgrade` and `Upgrade: websocket` becomes a stream of kind
//! [`StreamKind::WebSocket`]. The connector performs the upgrade against the
//! origin; on its 101 the client gets a 101 with the origin's headers, and
//! then the upgraded connection and the stream carry raw bytes both ways
//! ([`tunnel::io::relay`]) until both sides are done or one fails.
//!
//! The handshake keeps the response timeout; after the 101 no HTTP timeout
//! applies (an idle WebSocket stays open). Dead peers are found by TCP
//! keep-alive on the public socket and QUIC keep-alive on the tunnel. The
//! tunnel's request slot is held for the WebSocket's whole life, so
//! `--max-requests-per-tunnel` counts open WebSockets too.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use prometheus::IntGauge;
use tunnel::io::{BodyReader, relay};
use tunnel::message::{ResponseHead, StreamErrorKind, StreamKind};

use crate::forwarding::Scheme;
use crate::proxy::{Proxy, ProxyBody, ProxyError, response_body, to_header_map};
use crate::request_head::{ForwardHead, head_of_kind};

pub use crate::request_head::is_websocket_upgrade;

/// QUIC error code for a WebSocket abandoned because one side failed.
const RELAY_FAILED: u32 = 2;

/// TCP keep-alive on public connections: an idle WebSocket has no timer,
/// so a client that vanished without a FIN is found by the kernel (first
/// probe after this long, then every this long, three tries).
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(15);

/// Turns on TCP keep-alive on an accepted public socket (best effort).
pub fn keepalive(stream: &tokio::net::TcpStream) {
    let ka = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE)
        .with_interval(TCP_KEEPALIVE)
        .with_retries(3);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&ka) {
        tracing::debug!(error = %e, "cannot turn on TCP keep-alive");
    }
}

/// Forwards an upgrade request (see [`is_websocket_upgrade`]).
pub(crate) async fn forward(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    client: SocketAddr,
    scheme: Scheme,
    request_id: &str,
    tunnel_label: &mut String,
) -> Result<Response<ProxyBody>, ProxyError> {
    let ForwardHead { head, frame } = head_of_kind(
        StreamKind::WebSocket,
        req.method(),
        req.uri(),
        req.headers(),
        false,
        client,
        request_id,
        scheme,
    )?;
    let tunnel = proxy
        .table
        .current()
        .route(&head.authority)
        .ok_or(ProxyError::UnknownHost)?;
    tunnel_label.clone_from(&tunnel.label);
    let (guard, mut send, mut recv) = proxy.open_stream(&tunnel.id).await?;
    proxy.write_head(&mut send, &mut recv, frame).await?;
    let (status, headers) = match proxy.response_head(&mut recv, None).await? {
        ResponseHead::Response { status, headers } => (status, headers),
        ResponseHead::Error(kind) => return Err(ProxyError::Origin(kind)),
    };
    let status = StatusCode::from_u16(status)
        .map_err(|_| ProxyError::Origin(StreamErrorKind::OriginProtocol))?;
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // The origin refused the upgrade (or is no WebSocket server): its
        // answer goes back as a normal response.
        let mut resp = Response::new(response_body(
            BodyReader::new(recv),
            guard,
            proxy.limits.body_idle_timeout,
            proxy.metrics.clone(),
        ));
        *resp.status_mut() = status;
        *resp.headers_mut() = to_header_map(headers);
        return Ok(resp);
    }
    let upgrade = hyper::upgrade::on(&mut req);
    let open = proxy
        .metrics
        .websockets_open
        .with_label_values(&[&tunnel.label]);
    let request_id = request_id.to_owned();
    // The relay outlives this request's handler: hyper sends the 101, then
    // hands over the connection.
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(request_id, error = %e, "client upgrade failed");
                let _ = send.reset(quinn::VarInt::from_u32(RELAY_FAILED));
                let _ = recv.stop(quinn::VarInt::from_u32(RELAY_FAILED));
                return;
            }
        };
        let _open = OpenGauge::new(open);
        let (client_read, client_write) = tokio::io::split(upgraded);
        let relayed = relay(
            BodyReader::new(recv),
            send,
            client_read,
            client_write,
            RELAY_FAILED,
        )
        .await;
        if let Err(e) = relayed {
            tracing::debug!(request_id, error = %e, "WebSocket ended with an error");
        }
        drop(guard);
    });
    let mut resp = Response::new(crate::proxy::empty_body());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let map = resp.headers_mut();
    *map = to_header_map(headers);
    // Hop-by-hop: the stream kind carried them; put them back for the client.
    map.insert(UPGRADE, HeaderValue::from_static("websocket"));
    map.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    Ok(resp)
}

/// `edge_websockets_open{tunnel}` up while this lives; down however the
/// relay ends (also when its task is dropped).
struct OpenGauge(IntGauge);

impl OpenGauge {
    fn new(g: IntGauge) -> Self {
        g.inc();
        Self(g)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}
