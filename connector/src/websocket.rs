//! A WebSocket stream: the upgrade against the origin over HTTP/1.1 on a
//! connection of its own, then raw bytes both ways until both sides are
//! done.
//!
//! The edge sends the client's request head (its `Upgrade` and `Connection`
//! headers are hop-by-hop: the stream kind carries them, and they are put
//! back here). The origin's 101 goes back as a response head with the
//! origin's headers; any other answer goes back as a normal response, body
//! included. After the 101 nothing times out: an idle WebSocket stays open
//! for as long as both peers do, and dead peers are found by TCP keep-alive
//! on the origin socket and QUIC keep-alive on the tunnel.

use std::time::Instant;

use http::header::{CONNECTION, HOST, UPGRADE};
use http::{HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use quinn::{RecvStream, SendStream};
use tunnel::codec::Frame;
use tunnel::io::{BodyReader, relay, write_data, write_frame};
use tunnel::message::{RequestHead, ResponseHead, StreamErrorKind};

use crate::origin::{ConnectError, OriginClient, OriginOptions};
use crate::stream::{StreamContext, answer_error, header_list};
use crate::target::OriginTarget;

/// QUIC error code for a WebSocket abandoned because one side failed.
const RELAY_FAILED: u32 = 2;

/// Why the upgrade request did not get an answer from the origin.
#[derive(Debug, thiserror::Error)]
enum UpgradeError {
    /// No connection to the origin.
    #[error("cannot connect to the origin: {0}")]
    Connect(#[from] ConnectError),
    /// The HTTP/1.1 exchange failed.
    #[error("the origin's HTTP/1.1 answer failed: {0}")]
    Http(#[from] hyper::Error),
    /// No response head within `connect_timeout + response_timeout`.
    #[error("the origin did not answer the upgrade in time")]
    Timeout,
}

impl UpgradeError {
    fn kind(&self) -> StreamErrorKind {
        match self {
            Self::Connect(ConnectError::Timeout(_)) | Self::Timeout => {
                StreamErrorKind::OriginTimeout
            }
            Self::Connect(ConnectError::Tls(_)) | Self::Connect(ConnectError::ServerName) => {
                StreamErrorKind::OriginTls
            }
            Self::Connect(_) => StreamErrorKind::OriginUnreachable,
            Self::Http(e) if e.is_timeout() => StreamErrorKind::OriginTimeout,
            Self::Http(_) => StreamErrorKind::OriginProtocol,
        }
    }
}

/// Relays one WebSocket stream; returns the status the origin answered
/// (101 for a WebSocket), for the request count.
#[allow(clippy::too_many_arguments)]
pub async fn proxy(
    ctx: &StreamContext,
    client: &OriginClient,
    origin: &OriginOptions,
    head: RequestHead,
    target: &OriginTarget,
    mut send: SendStream,
    recv: RecvStream,
    started: Instant,
) -> Option<u16> {
    let request_id = head.request_id.clone();
    let req = match upgrade_request(origin, head, target) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(request_id, reason = e.as_str(), error = %e, "refused to build the upgrade request");
            ctx.metrics
                .bad_requests
                .with_label_values(&[e.as_str()])
                .inc();
            return answer_error(ctx, &mut send, StreamErrorKind::BadRequest).await;
        }
    };
    // The handshake keeps a deadline (connect, then the response head);
    // what follows a 101 has none.
    let limit = origin.connect_timeout + origin.response_timeout;
    let resp = match tokio::time::timeout(limit, upgrade(client, req)).await {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => {
            let kind = e.kind();
            tracing::warn!(request_id, kind = kind.as_str(), error = %e, "WebSocket upgrade to the origin failed");
            return answer_error(ctx, &mut send, kind).await;
        }
        Err(_) => {
            let kind = UpgradeError::Timeout.kind();
            tracing::warn!(
                request_id,
                "the origin did not answer the WebSocket upgrade in time"
            );
            return answer_error(ctx, &mut send, kind).await;
        }
    };
    ctx.metrics
        .request_duration
        .with_label_values(&[&ctx.tunnel])
        .observe(started.elapsed().as_secs_f64());
    let status = resp.status().as_u16();
    let head = ResponseHead::Response {
        status,
        headers: header_list(resp.headers(), |n| !tunnel::message::is_hop_by_hop(n)),
    };
    if write_frame(&mut send, &Frame::ResponseHead(head))
        .await
        .is_err()
    {
        return Some(status);
    }
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Not a WebSocket origin (or it refused): its answer as it is.
        forward_body(resp.into_body(), &mut send).await;
        return Some(status);
    }
    let upgraded = match hyper::upgrade::on(resp).await {
        Ok(u) => TokioIo::new(u),
        Err(e) => {
            tracing::warn!(request_id, error = %e, "the origin's upgraded connection failed");
            let _ = send.reset(quinn::VarInt::from_u32(RELAY_FAILED));
            return Some(status);
        }
    };
    let _open = daemon::metrics::GaugeGuard::new(
        ctx.metrics
            .websockets_open
            .with_label_values(&[&ctx.tunnel]),
    );
    let (origin_read, origin_write) = tokio::io::split(upgraded);
    let outcome = relay(
        BodyReader::new(recv),
        send,
        origin_read,
        origin_write,
        RELAY_FAILED,
        &(),
    )
    .await;
    if let Err(e) = outcome {
        tracing::debug!(request_id, error = %e, "WebSocket ended with an error");
    }
    Some(status)
}

/// The origin's request: the client's headers (hop-by-hop ones were left at
/// the edge), the Host the rule says, and the upgrade put back.
fn upgrade_request(
    origin: &OriginOptions,
    head: RequestHead,
    target: &OriginTarget,
) -> Result<http::Request<Empty<bytes::Bytes>>, crate::target::TargetError> {
    let method = Method::from_bytes(head.method.as_bytes())
        .map_err(|_| crate::target::TargetError::BadMethod)?;
    let mut req = http::Request::new(Empty::new());
    *req.method_mut() = method;
    // Origin-form: this connection only ever talks to the rule's origin.
    *req.uri_mut() = http::Uri::from(target.path_and_query()?);
    let headers = req.headers_mut();
    headers.reserve(head.headers.len() + 3);
    for (name, value) in head.headers {
        if tunnel::message::is_hop_by_hop(&name) || name.eq_ignore_ascii_case("host") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)),
        ) {
            headers.append(n, v);
        }
    }
    let host = origin
        .http_host_header
        .as_deref()
        .unwrap_or(&head.authority);
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(HOST, v);
    }
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    Ok(req)
}

/// Connects (a connection of its own, never the pool's) and sends the
/// upgrade request; the connection task runs until the upgrade is taken
/// or the answer's body is read.
async fn upgrade(
    client: &OriginClient,
    req: http::Request<Empty<bytes::Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, UpgradeError> {
    let io = client.connect_own().await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(io)
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "WebSocket origin connection failed");
        }
    });
    Ok(sender.send_request(req).await?)
}

/// A non-101 answer's body, to the end (trailers are not expected here).
async fn forward_body(mut body: hyper::body::Incoming, send: &mut SendStream) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            let _ = send.reset(quinn::VarInt::from_u32(RELAY_FAILED));
            return;
        };
        if let Ok(data) = frame.into_data()
            && write_data(send, data).await.is_err()
        {
            return;
        }
    }
    let _ = send.finish();
}
