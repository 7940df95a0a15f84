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

use std::sync::Arc;
use std::time::Duration;

use daemon::metrics::GaugeGuard;
use http::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tunnel::io::{BodyReader, relay};
use tunnel::message::{ResponseHead, StreamErrorKind, StreamKind};

use crate::proxy::{Proxy, ProxyBody, ProxyError, response_body, to_header_map};
use crate::public::PublicConnection;
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

/// How a client asks for a WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// HTTP/1.1 `GET` with `Upgrade: websocket`: answered 101.
    Http1,
    /// HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441):
    /// answered 200, and the HTTP/2 stream carries the bytes.
    ExtendedConnect,
}

/// Whether (and how) a request asks for a WebSocket.
pub fn websocket_request<B>(req: &Request<B>) -> Option<Handshake> {
    if req.method() == Method::CONNECT {
        // hyper sets the protocol only on HTTP/2 extended CONNECT.
        return req
            .extensions()
            .get::<hyper::ext::Protocol>()
            .filter(|p| p.as_str().eq_ignore_ascii_case("websocket"))
            .map(|_| Handshake::ExtendedConnect);
    }
    is_websocket_upgrade(req.method(), req.headers()).then_some(Handshake::Http1)
}

/// Forwards a WebSocket request (see [`websocket_request`]). The origin
/// always gets an HTTP/1.1 upgrade: for extended CONNECT the edge makes it
/// a `GET` with a `Sec-WebSocket-Key` of its own, answers the client 200
/// (not 101) on the origin's 101, and drops `Sec-WebSocket-Accept`.
pub(crate) async fn forward(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    handshake: Handshake,
    conn: &Arc<PublicConnection>,
    request_id: &str,
    tunnel_label: &mut String,
) -> Result<Response<ProxyBody>, ProxyError> {
    let ForwardHead { head, frame } = match handshake {
        Handshake::Http1 => head_of_kind(
            StreamKind::WebSocket,
            req.method(),
            req.uri(),
            req.headers(),
            false,
            conn.client,
            request_id,
            conn.scheme,
        )?,
        Handshake::ExtendedConnect => {
            let mut headers = req.headers().clone();
            headers.insert(SEC_WEBSOCKET_KEY, new_key());
            head_of_kind(
                StreamKind::WebSocket,
                &Method::GET,
                req.uri(),
                &headers,
                false,
                conn.client,
                request_id,
                conn.scheme,
            )?
        }
    };
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
    // The relay outlives this request's handler, and an HTTP/1.1
    // connection's task too: hyper sends the 101, then hands over the
    // connection. It keeps the connection's places in the caps.
    let conn = conn.clone();
    // Tracked with the TCP relays: a draining worker (an upgrade in place,
    // SIGTERM) waits for open WebSockets, within its grace period, before
    // it exits and closes them.
    proxy.tcp.relays.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(request_id, error = %e, "client upgrade failed");
                let _ = send.reset(quinn::VarInt::from_u32(RELAY_FAILED));
                let _ = recv.stop(quinn::VarInt::from_u32(RELAY_FAILED));
                return;
            }
        };
        let _open = GaugeGuard::new(open);
        let (client_read, client_write) = tokio::io::split(upgraded);
        let relayed = relay(
            BodyReader::new(recv),
            send,
            client_read,
            client_write,
            RELAY_FAILED,
            &(),
        )
        .await;
        if let Err(e) = relayed {
            tracing::debug!(request_id, error = %e, "WebSocket ended with an error");
        }
        drop((guard, conn));
    });
    let mut map = to_header_map(headers);
    let status = match handshake {
        Handshake::Http1 => {
            // Hop-by-hop: the stream kind carried them; put them back.
            map.insert(UPGRADE, HeaderValue::from_static("websocket"));
            map.insert(CONNECTION, HeaderValue::from_static("upgrade"));
            StatusCode::SWITCHING_PROTOCOLS
        }
        Handshake::ExtendedConnect => {
            // RFC 8441 §5: 200, and the accept answers the edge's key, not
            // anything the client sent.
            map.remove(SEC_WEBSOCKET_ACCEPT);
            StatusCode::OK
        }
    };
    let mut resp = Response::new(crate::proxy::empty_body());
    *resp.status_mut() = status;
    *resp.headers_mut() = map;
    Ok(resp)
}

/// A fresh `Sec-WebSocket-Key` for the origin side of an RFC 8441 CONNECT.
fn new_key() -> HeaderValue {
    HeaderValue::from_str(&tunnel::websocket::client_key()).expect("base64 is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_keys_are_fresh_base64_nonces() {
        assert_eq!(new_key().len(), 24);
        assert_ne!(new_key(), new_key());
    }

    #[test]
    fn websocket_requests_by_version() {
        let mut h1 = Request::get("/chat")
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(())
            .unwrap();
        assert_eq!(websocket_request(&h1), Some(Handshake::Http1));
        h1.headers_mut().remove("upgrade");
        assert_eq!(websocket_request(&h1), None);

        let mut connect = Request::connect("https://a.example/chat").body(()).unwrap();
        assert_eq!(websocket_request(&connect), None, "plain CONNECT");
        connect
            .extensions_mut()
            .insert(hyper::ext::Protocol::from_static("websocket"));
        assert_eq!(
            websocket_request(&connect),
            Some(Handshake::ExtendedConnect)
        );
    }
}
