//! One proxied request: read the head the edge sent, pick the ingress rule,
//! call the origin, and stream its answer back. Bodies stream both ways; an
//! origin failure becomes a typed error frame, never a leaked internal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use quinn::{RecvStream, SendStream};
use tunnel::codec::Frame;
use tunnel::hostname;
use tunnel::io::{BodyReader, read_request_head, write_data, write_frame};
use tunnel::message::{
    HeaderList, RequestHead, ResponseHead, StreamErrorKind, StreamKind, Trailers,
};

use crate::ingress::{Ingress, Service};
use crate::metrics::Metrics;
use crate::origin::{ConnectError, OriginClient, OriginClients, OriginOptions};
use crate::target::{OriginTarget, TargetError};
use crate::upload::{self, Upload, UploadState, Waited};

/// How long the edge has to send a request head on a new stream.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a finished stream waits for the edge to acknowledge its last
/// bytes (see [`finish_acked`]).
const FINISH_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC error code for a stream abandoned because the origin failed mid-body.
const ORIGIN_BODY_FAILED: u32 = 2;
/// `connector_bad_requests_total` reason: the request body stalled.
pub const BODY_IDLE: &str = "request_body_idle_timeout";
/// `connector_bad_requests_total` reason: the tunnel reset the request body.
pub const BODY_ABORTED: &str = "request_body_aborted";
/// `connector_bad_requests_total` reason: an HTTP or WebSocket stream
/// matched a rule with a TCP service.
pub const NOT_HTTP_SERVICE: &str = "not_http_service";

/// What a stream needs from the connector.
pub struct StreamContext {
    /// Ingress rules.
    pub ingress: Arc<Ingress>,
    /// Origin clients, by rule.
    pub origins: OriginClients,
    /// Metrics.
    pub metrics: Metrics,
    /// The tunnel id, for metric labels.
    pub tunnel: String,
}

/// Serves one request stream to the end.
pub async fn serve(ctx: Arc<StreamContext>, mut send: SendStream, mut recv: RecvStream) {
    let started = Instant::now();
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_request_head(&mut recv)).await {
        Ok(Ok(head)) => head,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "bad request stream");
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
        Err(_) => {
            let _ = send.reset(quinn::VarInt::from_u32(1));
            return;
        }
    };
    // A TCP connection has no HTTP target: its own rule matching and dial.
    if head.kind == StreamKind::Tcp {
        crate::tcp::serve(&ctx, head, send, recv).await;
        return;
    }
    // Checked once: the rule is matched on exactly the path the origin gets.
    let target = match check_head(&head) {
        Ok(t) => t,
        Err(e) => {
            tracing::info!(request_id = ?head.request_id, reason = e.as_str(), error = %e,
                "refused a request head from the edge");
            ctx.metrics
                .bad_requests
                .with_label_values(&[e.as_str()])
                .inc();
            let status = answer_error(&ctx, &mut send, StreamErrorKind::BadRequest).await;
            count(&ctx, status);
            return;
        }
    };
    let (index, rule) = ctx.ingress.find(&head.authority, target.path());
    let status = match &rule.service {
        Service::Status(code) => {
            let resp = ResponseHead::Response {
                status: *code,
                headers: vec![("content-length".into(), b"0".to_vec())],
            };
            let _ = write_frame(&mut send, &Frame::ResponseHead(resp)).await;
            count(&ctx, Some(*code));
            finish_acked(&mut send).await;
            None
        }
        Service::Tcp { .. } | Service::UnixTcp(_) => {
            tracing::warn!(request_id = ?head.request_id, hostname = %head.authority,
                rule = index + 1, service = %rule.service,
                "an HTTP request matched a rule with a TCP service; refused (TCP services take only TCP streams)");
            ctx.metrics
                .bad_requests
                .with_label_values(&[NOT_HTTP_SERVICE])
                .inc();
            answer_error(&ctx, &mut send, StreamErrorKind::BadRequest).await
        }
        Service::Http { .. } | Service::Unix(_) => {
            let Some(client) = ctx.origins.get(index) else {
                return;
            };
            let origin = &rule.origin;
            if head.kind == StreamKind::WebSocket {
                crate::websocket::proxy(&ctx, client, origin, head, &target, send, recv, started)
                    .await
            } else {
                proxy(&ctx, client, origin, head, &target, send, recv, started).await
            }
        }
    };
    count(&ctx, status);
}

/// Counts an answered request; `None`: counted already, or not an answer.
fn count(ctx: &StreamContext, status: Option<u16>) {
    if let Some(status) = status {
        ctx.metrics
            .requests
            .with_label_values(&[&ctx.tunnel, daemon::metrics::status_class(status)])
            .inc();
    }
}

/// The method, target and authority of a head, checked (see [`crate::target`]).
fn check_head(head: &RequestHead) -> Result<OriginTarget, TargetError> {
    if http::uri::Authority::try_from(head.authority.as_str())
        .map_or(true, |a| a.as_str().contains('@'))
        || hostname::normalize(&head.authority).is_none()
    {
        return Err(TargetError::BadAuthority);
    }
    if Method::from_bytes(head.method.as_bytes()).is_err() {
        return Err(TargetError::BadMethod);
    }
    OriginTarget::parse(&head.method, &head.path)
}

/// Proxies one HTTP request; returns the status to count, or `None` when it
/// counted it itself (a complete answer, counted before the wait for the
/// edge's acknowledgement).
#[allow(clippy::too_many_arguments)]
async fn proxy(
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
    let (req, upload) = match build_request(client, origin, head, target, recv) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(request_id, reason = e.as_str(), error = %e, "refused to build the origin request");
            ctx.metrics
                .bad_requests
                .with_label_values(&[e.as_str()])
                .inc();
            return answer_error(ctx, &mut send, StreamErrorKind::BadRequest).await;
        }
    };
    let exec = client.request(req);
    let waited = match upload.clone() {
        Some(u) => u.wait_response(exec, origin.response_timeout).await,
        None => upload::wait_response_no_body(exec, origin.response_timeout).await,
    };
    let resp = match waited {
        Waited::Response(Ok(resp)) => resp,
        Waited::Response(Err(e)) => {
            // A body that ended early fails the origin request too; blame
            // the side that stopped, not the origin.
            if let Some(state) = upload.as_ref().map(Upload::state)
                && matches!(state, UploadState::Stalled | UploadState::Failed)
            {
                return upload_ended(ctx, &mut send, &request_id, state).await;
            }
            let kind = classify(&e);
            tracing::warn!(request_id, kind = kind.as_str(), error = %error_chain(&e), "origin request failed");
            return answer_error(ctx, &mut send, kind).await;
        }
        Waited::ResponseTimeout => {
            return answer_error(ctx, &mut send, StreamErrorKind::OriginTimeout).await;
        }
        Waited::OriginStalled => {
            tracing::warn!(
                request_id,
                "origin stopped reading the request body for the idle timeout"
            );
            return answer_error(ctx, &mut send, StreamErrorKind::OriginTimeout).await;
        }
        Waited::Upload(state) => return upload_ended(ctx, &mut send, &request_id, state).await,
    };
    ctx.metrics
        .request_duration
        .with_label_values(&[&ctx.tunnel])
        .observe(started.elapsed().as_secs_f64());
    let status = resp.status().as_u16();
    let (parts, mut body) = resp.into_parts();
    let head = ResponseHead::Response {
        status,
        headers: header_list(&parts.headers, |n| !tunnel::message::is_hop_by_hop(n)),
    };
    if write_frame(&mut send, &Frame::ResponseHead(head))
        .await
        .is_err()
    {
        return Some(status);
    }
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                match upload.as_ref().map(Upload::state) {
                    Some(UploadState::Stalled) => {
                        tracing::info!(
                            request_id,
                            "request body stalled mid-response; aborting the stream"
                        );
                        ctx.metrics
                            .bad_requests
                            .with_label_values(&[BODY_IDLE])
                            .inc();
                    }
                    _ => {
                        tracing::warn!(request_id, error = %e, "origin body failed; aborting the stream");
                        ctx.metrics.origin_errors.with_label_values(&["body"]).inc();
                    }
                }
                let _ = send.reset(quinn::VarInt::from_u32(ORIGIN_BODY_FAILED));
                return Some(status);
            }
        };
        let sent = match frame.into_data() {
            Ok(data) => write_data(&mut send, data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(t) => {
                    write_frame(
                        &mut send,
                        &Frame::Trailers(Trailers(header_list(&t, |_| true))),
                    )
                    .await
                }
                Err(_) => Ok(()),
            },
        };
        if sent.is_err() {
            // The client went away: dropping the body aborts the origin request.
            return Some(status);
        }
    }
    // Counted now: the wait for the edge's acknowledgement is not the
    // request's business.
    count(ctx, Some(status));
    finish_acked(&mut send).await;
    None
}

/// Ends a stream and waits until the edge has acknowledged all of it (or
/// reset it), so that the stream counts as in flight until its answer has
/// arrived: a retiring connection is closed only once nothing is in flight,
/// and closing a QUIC connection drops the data not yet delivered.
pub(crate) async fn finish_acked(send: &mut SendStream) {
    if send.finish().is_ok() {
        let _ = tokio::time::timeout(FINISH_ACK_TIMEOUT, send.stopped()).await;
    }
}

/// The origin's headers for the tunnel; `keep` says which.
pub(crate) fn header_list(headers: &http::HeaderMap, keep: impl Fn(&str) -> bool) -> HeaderList {
    let mut list = Vec::with_capacity(headers.len());
    for (n, v) in headers {
        let name = n.as_str();
        if keep(name) {
            list.push((name.to_owned(), v.as_bytes().to_vec()));
        }
    }
    list
}

fn build_request(
    client: &OriginClient,
    origin: &OriginOptions,
    head: RequestHead,
    target: &OriginTarget,
    recv: RecvStream,
) -> Result<(http::Request<upload::RequestBody>, Option<Upload>), TargetError> {
    let method = Method::from_bytes(head.method.as_bytes()).map_err(|_| TargetError::BadMethod)?;
    let mut uri = client.uri(target.path_and_query()?);
    let mut upload = None;
    let body = if head.has_body {
        let (body, watch) = upload::body(BodyReader::new(recv), origin.request_body_idle_timeout);
        upload = Some(watch);
        body
    } else {
        upload::no_body()
    };
    let mut req = http::Request::new(body);
    *req.method_mut() = method;
    let headers = req.headers_mut();
    copy_headers(head.headers, headers);
    let host = origin
        .http_host_header
        .as_deref()
        .unwrap_or(&head.authority);
    // HTTP/2 names the host in `:authority`, taken from the URI, and an
    // origin that serves several names reads it there (RFC 9113 §8.3.1):
    // the host goes in the URI instead of a Host header. The pool then
    // keeps one connection per host, which the dialer still opens to the
    // rule's origin.
    if client.http2()
        && let Ok(a) = http::uri::Authority::try_from(host)
    {
        uri = client.uri_at(a, uri);
    } else if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(http::header::HOST, v);
    }
    *req.uri_mut() = uri;
    Ok((req, upload))
}

/// The tunnel's request headers for the origin: no hop-by-hop headers
/// except `te: trailers`, no Host (set from the authority), nothing that is
/// not valid HTTP.
fn copy_headers(list: HeaderList, headers: &mut http::HeaderMap) {
    headers.reserve(list.len() + 1);
    for (name, value) in list {
        if (tunnel::message::is_hop_by_hop(&name) && !is_te_trailers(&name, &value))
            || name.eq_ignore_ascii_case("host")
        {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)),
        ) {
            headers.append(n, v);
        }
    }
}

/// `te: trailers` (the client takes trailers; gRPC servers require it) is
/// the one `te` that crosses: any other value is about the client's hop.
fn is_te_trailers(name: &str, value: &[u8]) -> bool {
    name.eq_ignore_ascii_case("te") && value.eq_ignore_ascii_case(b"trailers")
}

/// Answers a request whose body stopped coming from the tunnel. The client
/// (or the edge) stopped, not the origin: a 400, counted as a bad request
/// so that slow clients do not look like a failing origin.
async fn upload_ended(
    ctx: &StreamContext,
    send: &mut SendStream,
    request_id: &str,
    state: UploadState,
) -> Option<u16> {
    let reason = if state == UploadState::Stalled {
        BODY_IDLE
    } else {
        BODY_ABORTED
    };
    tracing::info!(
        request_id,
        reason,
        "request body ended early; origin request abandoned"
    );
    ctx.metrics.bad_requests.with_label_values(&[reason]).inc();
    answer_error(ctx, send, StreamErrorKind::BadRequest).await
}

pub(crate) async fn answer_error(
    ctx: &StreamContext,
    send: &mut SendStream,
    kind: StreamErrorKind,
) -> Option<u16> {
    ctx.metrics
        .origin_errors
        .with_label_values(&[kind.as_str()])
        .inc();
    let _ = write_frame(send, &Frame::ResponseHead(ResponseHead::Error(kind))).await;
    let _ = send.finish();
    Some(match kind {
        StreamErrorKind::OriginTimeout => 504,
        StreamErrorKind::BadRequest => 400,
        _ => 502,
    })
}

/// An error and its sources, for the log: the client's own text only says
/// which step failed.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Which side failed, from the client's error: timeouts, refused or
/// unreachable origins, TLS failures, and everything else as a protocol
/// error (the same reading as reqwest's `is_timeout` and `is_connect`).
pub(crate) fn classify(e: &hyper_util::client::legacy::Error) -> StreamErrorKind {
    let (mut tls, mut connect) = (false, e.is_connect());
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectError>() {
            connect = true;
            match c {
                ConnectError::Timeout(_) => return StreamErrorKind::OriginTimeout,
                ConnectError::Tls(_) => tls = true,
                _ => {}
            }
        }
        if s.is::<rustls::Error>() {
            tls = true;
        }
        if s.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_timeout)
            || s.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return StreamErrorKind::OriginTimeout;
        }
        source = s.source();
    }
    if tls {
        StreamErrorKind::OriginTls
    } else if connect {
        StreamErrorKind::OriginUnreachable
    } else {
        StreamErrorKind::OriginProtocol
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_crosses_only_as_trailers() {
        for (value, kept) in [
            (&b"trailers"[..], true),
            (b"TRAILERS", true),
            (b"gzip", false),
            (b"trailers, gzip", false),
            (b"", false),
        ] {
            let mut headers = http::HeaderMap::new();
            let list = vec![
                ("TE".to_string(), value.to_vec()),
                ("connection".to_string(), b"te".to_vec()),
                ("host".to_string(), b"other.test".to_vec()),
                ("content-type".to_string(), b"application/grpc".to_vec()),
            ];
            copy_headers(list, &mut headers);
            let te: Vec<_> = headers.get_all("te").iter().collect();
            assert_eq!(te.len(), usize::from(kept), "{value:?}: {headers:?}");
            if kept {
                assert_eq!(te[0].as_bytes(), value);
            }
            assert_eq!(headers.len(), 1 + usize::from(kept), "{headers:?}");
            assert_eq!(headers["content-type"], "application/grpc");
        }
    }
}
