//! The access endpoint: a WebSocket from `connector access tcp|ssh` on a
//! public HTTP or HTTPS listener (HTTP/1.1). The subprotocol `warren-tcp`
//! in `Sec-WebSocket-Protocol` marks it; a WebSocket without it is proxied
//! to a `ws://` origin as usual ([`crate::websocket`]).
//!
//! The edge answers it itself: 404 unless the hostname's tunnel declares TCP
//! on that hostname (`tcp_hostnames` or a `tcp_ports` hostname), with no
//! stream opened; otherwise it opens a `tcp` stream, waits for the
//! connector's 200, and only then answers 101. The WebSocket's binary frames
//! then carry the TCP bytes both ways ([`tunnel::websocket::WsStream`]); a
//! Close frame is a half-close, as a FIN is on a public TCP port.

use std::sync::Arc;

use http::header::{
    CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tunnel::message::StreamErrorKind;
use tunnel::websocket::{Role, SUBPROTOCOL, WsStream, accept_key};

use crate::proxy::{Proxy, ProxyBody, ProxyError};
use crate::public::PublicConnection;
use crate::tcp::{self, Via};
use crate::websocket::Handshake;

/// Whether a WebSocket request is an access WebSocket: `warren-tcp` among
/// its `Sec-WebSocket-Protocol` values (comma-separated, any number of
/// lines).
pub fn is_access<B>(req: &Request<B>) -> bool {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|p| p.trim_ascii() == SUBPROTOCOL.as_bytes())
        })
}

/// Serves an access WebSocket (see the module doc). The caps on TCP
/// connections apply: past them the client gets 503 with `Retry-After`.
pub(crate) async fn forward(
    proxy: &Proxy,
    mut req: Request<Incoming>,
    handshake: Handshake,
    conn: &Arc<PublicConnection>,
    tunnel_label: &mut String,
) -> Result<Response<ProxyBody>, ProxyError> {
    let authority = crate::request_head::authority(req.uri(), req.headers())?;
    let host = tunnel::hostname::normalize(&authority).ok_or(ProxyError::NoTcpService)?;
    let table = proxy.table.current();
    let Some(tunnel) = table.route(&host).filter(|t| t.serves_tcp(&host)) else {
        proxy.metrics.tcp_refused("no_tcp_service");
        return Err(ProxyError::NoTcpService);
    };
    drop(table);
    tunnel_label.clone_from(&tunnel.label);
    // `connector access` speaks HTTP/1.1; an RFC 8441 CONNECT has no key to
    // answer and no 101, so it is refused rather than half-supported.
    let key = match (
        handshake,
        req.headers().get(SEC_WEBSOCKET_KEY),
        req.headers().get(SEC_WEBSOCKET_VERSION),
    ) {
        (Handshake::Http1, Some(key), Some(v)) if v == "13" && !key.is_empty() => {
            accept_key(key.as_bytes())
        }
        _ => return Err(ProxyError::BadHandshake),
    };
    let accept = HeaderValue::from_str(&key).map_err(|_| ProxyError::BadHandshake)?;
    let places = proxy
        .tcp
        .admit(conn.client.ip(), tunnel.id, &proxy.metrics)
        .map_err(ProxyError::TcpLimit)?;
    proxy
        .metrics
        .tcp_connections
        .with_label_values(&[&tunnel.label, Via::Access.as_str()])
        .inc();
    let opened = match tcp::connect(proxy, &tunnel, &host, conn.client, conn.local).await {
        Ok(o) => o,
        Err(e) => {
            proxy.metrics.tcp_refused(tcp::refusal_reason(&e));
            // The connector has no TCP rule for the hostname: to the client
            // that is the same as a tunnel that declares none.
            return Err(match e {
                ProxyError::Origin(StreamErrorKind::BadRequest) => ProxyError::NoTcpService,
                other => other,
            });
        }
    };
    let upgrade = hyper::upgrade::on(&mut req);
    let metrics = proxy.metrics.clone();
    // The relay outlives this handler (hyper sends the 101, then hands the
    // connection over) and keeps the connection's places in the caps.
    let conn = conn.clone();
    proxy.tcp.relays.spawn(async move {
        let upgraded = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::debug!(tunnel = %tunnel.id, error = %e, "access client upgrade failed");
                opened.abort();
                return;
            }
        };
        let ws = WsStream::new(upgraded, Role::Server);
        let (read, write) = tokio::io::split(ws);
        tcp::relay(opened, &tunnel, Via::Access, read, write, &metrics, places).await;
        drop(conn);
    });
    let mut resp = Response::new(crate::proxy::empty_body());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(SEC_WEBSOCKET_ACCEPT, accept);
    h.insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subprotocol_marks_an_access_websocket() {
        let req = |protocols: &[&str]| {
            let mut b = Request::get("/")
                .header("connection", "upgrade")
                .header("upgrade", "websocket");
            for p in protocols {
                b = b.header("sec-websocket-protocol", *p);
            }
            b.body(()).unwrap()
        };
        assert!(is_access(&req(&["warren-tcp"])));
        assert!(is_access(&req(&["chat, warren-tcp"])));
        assert!(is_access(&req(&["chat", " warren-tcp "])));
        assert!(!is_access(&req(&[])));
        assert!(!is_access(&req(&["chat"])));
        assert!(!is_access(&req(&["warren-tcp2"])));
    }
}
