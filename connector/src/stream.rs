//! One proxied request: read the head the edge sent, pick the ingress rule,
//! call the origin, and stream its answer back. Bodies stream both ways; an
//! origin failure becomes a typed error frame, never a leaked internal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method};
use http_body_util::BodyExt;
use quinn::{RecvStream, SendStream};
use tunnel::codec::Frame;
use tunnel::io::{BodyPart, BodyReader, IoError, read_request_head, write_data, write_frame};
use tunnel::message::{HeaderList, RequestHead, ResponseHead, StreamErrorKind, Trailers};

use crate::ingress::{Ingress, Service};
use crate::metrics::Metrics;
use crate::origin::OriginClients;

/// How long the edge has to send a request head on a new stream.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC error code for a stream abandoned because the origin failed mid-body.
const ORIGIN_BODY_FAILED: u32 = 2;

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
    let (index, rule) = ctx.ingress.find(&head.authority, &head.path);
    let status = match &rule.service {
        Service::Status(code) => {
            let resp = ResponseHead::Response {
                status: *code,
                headers: vec![("content-length".into(), b"0".to_vec())],
            };
            let _ = write_frame(&mut send, &Frame::ResponseHead(resp)).await;
            let _ = send.finish();
            Some(*code)
        }
        Service::Http { .. } | Service::Unix(_) => {
            let Some(client) = ctx.origins.get(index) else {
                return;
            };
            proxy(
                &ctx,
                client,
                &rule.service,
                &rule.origin,
                head,
                send,
                recv,
                started,
            )
            .await
        }
    };
    if let Some(status) = status {
        ctx.metrics
            .requests
            .with_label_values(&[&ctx.tunnel, daemon::metrics::status_class(status)])
            .inc();
    }
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    ctx: &StreamContext,
    client: &reqwest::Client,
    service: &Service,
    origin: &crate::origin::OriginOptions,
    head: RequestHead,
    mut send: SendStream,
    recv: RecvStream,
    started: Instant,
) -> Option<u16> {
    let request_id = head.request_id.clone();
    let req = match build_request(service, origin, head, recv) {
        Ok(r) => r,
        Err(kind) => return answer_error(ctx, &mut send, kind).await,
    };
    let resp = match tokio::time::timeout(origin.response_timeout, client.execute(req)).await {
        Err(_) => return answer_error(ctx, &mut send, StreamErrorKind::OriginTimeout).await,
        Ok(Err(e)) => {
            let kind = classify(&e);
            tracing::warn!(request_id, kind = kind.as_str(), error = %e, "origin request failed");
            return answer_error(ctx, &mut send, kind).await;
        }
        Ok(Ok(resp)) => resp,
    };
    ctx.metrics
        .request_duration
        .with_label_values(&[&ctx.tunnel])
        .observe(started.elapsed().as_secs_f64());
    let status = resp.status().as_u16();
    let headers: HeaderList = resp
        .headers()
        .iter()
        .filter(|(n, _)| !tunnel::message::is_hop_by_hop(n.as_str()))
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let head = ResponseHead::Response { status, headers };
    if write_frame(&mut send, &Frame::ResponseHead(head))
        .await
        .is_err()
    {
        return Some(status);
    }
    let mut body = http::Response::<reqwest::Body>::from(resp).into_body();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(request_id, error = %e, "origin body failed; aborting the stream");
                ctx.metrics.origin_errors.with_label_values(&["body"]).inc();
                let _ = send.reset(quinn::VarInt::from_u32(ORIGIN_BODY_FAILED));
                return Some(status);
            }
        };
        let sent = match frame.into_data() {
            Ok(data) => write_data(&mut send, data).await,
            Err(frame) => match frame.into_trailers() {
                Ok(t) => {
                    let list = t
                        .iter()
                        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
                        .collect();
                    write_frame(&mut send, &Frame::Trailers(Trailers(list))).await
                }
                Err(_) => Ok(()),
            },
        };
        if sent.is_err() {
            // The client went away: dropping the body aborts the origin request.
            return Some(status);
        }
    }
    let _ = send.finish();
    Some(status)
}

fn build_request(
    service: &Service,
    origin: &crate::origin::OriginOptions,
    head: RequestHead,
    recv: RecvStream,
) -> Result<reqwest::Request, StreamErrorKind> {
    let method =
        Method::from_bytes(head.method.as_bytes()).map_err(|_| StreamErrorKind::BadRequest)?;
    let url = match service {
        Service::Http { scheme, authority } => format!("{scheme}://{authority}{}", head.path),
        // The socket is the origin; the URL only carries the path.
        Service::Unix(_) => format!("http://localhost{}", head.path),
        Service::Status(_) => return Err(StreamErrorKind::Internal),
    };
    let url = reqwest::Url::parse(&url).map_err(|_| StreamErrorKind::BadRequest)?;
    let mut req = reqwest::Request::new(method, url);
    let headers = req.headers_mut();
    for (name, value) in &head.headers {
        if tunnel::message::is_hop_by_hop(name) || name.eq_ignore_ascii_case("host") {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(n, v);
        }
    }
    let host = origin
        .http_host_header
        .as_deref()
        .unwrap_or(&head.authority);
    if let Ok(v) = HeaderValue::from_str(host) {
        headers.insert(http::header::HOST, v);
    }
    if head.has_body {
        *req.body_mut() = Some(reqwest::Body::wrap_stream(request_body(BodyReader::new(
            recv,
        ))));
    }
    Ok(req)
}

/// The request body as a stream of bytes, read from the tunnel as the origin
/// asks for it (backpressure end to end).
fn request_body(
    reader: BodyReader,
) -> impl futures_util::Stream<Item = Result<Bytes, IoError>> + Send + 'static {
    futures_util::stream::unfold(Some(reader), |state| async move {
        let mut reader = state?;
        loop {
            match reader.next().await {
                Ok(Some(BodyPart::Data(b))) => return Some((Ok(b), Some(reader))),
                // HTTP/1.1 request trailers are rare; they are not forwarded.
                Ok(Some(BodyPart::Trailers(_))) => continue,
                Ok(None) => return None,
                Err(e) => return Some((Err(e), None)),
            }
        }
    })
}

async fn answer_error(
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

/// Which side failed, from a reqwest error: timeouts, refused or unreachable
/// origins, TLS failures, and everything else as a protocol error.
fn classify(e: &reqwest::Error) -> StreamErrorKind {
    if e.is_timeout() {
        return StreamErrorKind::OriginTimeout;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.downcast_ref::<rustls::Error>().is_some() {
            return StreamErrorKind::OriginTls;
        }
        source = s.source();
    }
    if e.is_connect() {
        StreamErrorKind::OriginUnreachable
    } else {
        StreamErrorKind::OriginProtocol
    }
}
