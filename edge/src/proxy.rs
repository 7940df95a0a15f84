//! The public HTTP/1.1 listener: route each request by its Host header to a
//! tunnel, proxy it over a new QUIC stream on one of the tunnel's
//! connections, and stream the answer back.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::codec::Frame;
use tunnel::io::{BodyPart, BodyReader, IoError, read_response_head, write_data, write_frame};
use tunnel::message::{HeaderList, ResponseHead, StreamErrorKind};

use crate::forwarding::connection_named;
use crate::metrics::Metrics;
use crate::registry::{ConnRegistry, InFlight};
use crate::request_head::{RequestError, head_from_parts};
use crate::request_metrics::RequestRecord;
use crate::tunnels::SharedTable;
use daemon::release::FaultInjection;

/// A boxed error for response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body of every response the edge sends.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request id header added to every proxied request and its response.
pub const REQUEST_ID: &str = "x-request-id";

/// Why the edge answers itself instead of the origin. Mapped to a status and
/// a short plain-text body in one place, [`ProxyError::response`]; internal
/// detail goes to the log, never to the client.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request cannot be forwarded as it is (the client's error).
    #[error("refused request: {0}")]
    Request(#[from] RequestError),
    /// No tunnel serves this hostname.
    #[error("no tunnel for this hostname")]
    UnknownHost,
    /// The tunnel has no live connector connection.
    #[error("tunnel has no live connection")]
    NoConnection,
    /// The tunnel stream failed.
    #[error("tunnel stream failed: {0}")]
    Tunnel(#[from] IoError),
    /// The connector did not answer in time.
    #[error("no response head within the response timeout")]
    Timeout,
    /// The connector could not reach the origin.
    #[error("connector reported: {}", .0.as_str())]
    Origin(StreamErrorKind),
    /// A fault-injection release failed this request on purpose.
    #[error("fault injection")]
    Injected,
}

impl ProxyError {
    /// The status and body the client gets.
    pub fn response(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Request(e) => e.response(),
            Self::UnknownHost => (
                StatusCode::NOT_FOUND,
                "no tunnel is configured for this hostname",
            ),
            Self::NoConnection => (
                StatusCode::BAD_GATEWAY,
                "no connector is connected for this hostname",
            ),
            Self::Tunnel(_) => (StatusCode::BAD_GATEWAY, "tunnel error"),
            Self::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "connector did not answer in time",
            ),
            Self::Origin(kind) => match kind {
                StreamErrorKind::OriginTimeout => (StatusCode::GATEWAY_TIMEOUT, kind.as_str()),
                StreamErrorKind::BadRequest => (StatusCode::BAD_REQUEST, kind.as_str()),
                other => (StatusCode::BAD_GATEWAY, other.as_str()),
            },
            Self::Injected => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "fault injection: synthetic error from a test release",
            ),
        }
    }
}

/// Everything a request needs.
pub struct Proxy {
    /// The tunnel table.
    pub table: SharedTable,
    /// Live connections.
    pub registry: Arc<ConnRegistry>,
    /// Metrics.
    pub metrics: Metrics,
    /// Backstop for the connector's response head.
    pub response_timeout: Duration,
    /// Faults a test release injects.
    pub faults: FaultInjection,
    /// Random prefix of request ids.
    pub id_prefix: u64,
    /// Request id counter.
    pub next_id: AtomicU64,
}

impl Proxy {
    fn request_id(&self) -> String {
        format!(
            "{:016x}{:08x}",
            self.id_prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let request_id = self.request_id();
        // Records the request even if this future is dropped at an .await
        // (the client disconnected).
        let mut record = RequestRecord::start(&self.metrics);
        let result = self
            .forward(req, client, &request_id, &mut record.tunnel)
            .await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(e) => {
                let (status, text) = e.response();
                if matches!(e, ProxyError::Tunnel(_) | ProxyError::Timeout) {
                    tracing::warn!(request_id, error = %e, "proxy error");
                } else {
                    tracing::debug!(request_id, error = %e, "answered by the edge");
                }
                plain(status, text)
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().entry(REQUEST_ID).or_insert(v);
        }
        record.finish(resp.status());
        Ok(resp)
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        client: SocketAddr,
        request_id: &str,
        tunnel_label: &mut String,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        // Checked (and sized against a tunnel frame) before anything else,
        // so a bad request never reaches a connector.
        let head = head_from_parts(
            req.method(),
            req.uri(),
            req.headers(),
            !http_body::Body::is_end_stream(req.body()),
            client,
            request_id,
        )?;
        let tunnel = self
            .table
            .current()
            .route(&head.authority)
            .ok_or(ProxyError::UnknownHost)?;
        *tunnel_label = tunnel.id.to_string();
        if self.faults.http_500_ratio > 0.0 && chance(self.faults.http_500_ratio) {
            self.metrics.faults_injected.inc();
            return Err(ProxyError::Injected);
        }

        let (guard, mut send, mut recv) = self.open_stream(&tunnel.id).await?;
        write_frame(&mut send, &Frame::RequestHead(head)).await?;
        tokio::spawn(pump_request(req.into_body(), send));

        let head = tokio::time::timeout(self.response_timeout, read_response_head(&mut recv))
            .await
            .map_err(|_| ProxyError::Timeout)??;
        let (status, headers) = match head {
            ResponseHead::Response { status, headers } => (status, headers),
            ResponseHead::Error(kind) => return Err(ProxyError::Origin(kind)),
        };
        let mut resp = Response::new(response_body(BodyReader::new(recv), guard));
        *resp.status_mut() = StatusCode::from_u16(status)
            .map_err(|_| ProxyError::Origin(StreamErrorKind::OriginProtocol))?;
        *resp.headers_mut() = to_header_map(headers);
        Ok(resp)
    }

    /// Opens a stream on the best connection; if opening fails (the
    /// connection just died), tries once more on another.
    async fn open_stream(
        &self,
        tunnel: &tunnel::token::TunnelId,
    ) -> Result<(InFlight, quinn::SendStream, quinn::RecvStream), ProxyError> {
        let started = Instant::now();
        let mut skip = None;
        for attempt in 0..3 {
            let guard = match &skip {
                None => self.registry.pick_or_wait(tunnel).await,
                Some(failed) => self.registry.pick(tunnel, Some(failed)),
            }
            .ok_or(ProxyError::NoConnection)?;
            match guard.0.connection.open_bi().await {
                Ok((send, recv)) => {
                    self.metrics
                        .stream_open
                        .observe(started.elapsed().as_secs_f64());
                    return Ok((guard, send, recv));
                }
                Err(e) => {
                    tracing::debug!(attempt, error = %e, "cannot open a stream; trying another connection");
                    skip = Some(guard.0.clone());
                }
            }
        }
        Err(ProxyError::NoConnection)
    }
}

/// Copies the client's body into the stream, then finishes it. If the
/// client's body fails, the stream is reset so the origin sees an abort, not
/// a short body.
async fn pump_request(mut body: Incoming, mut send: quinn::SendStream) {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data()
                    && write_data(&mut send, data).await.is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "client body failed; resetting the stream");
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return;
            }
        }
    }
    let _ = send.finish();
}

fn response_body(reader: BodyReader, guard: InFlight) -> ProxyBody {
    let stream = futures_util::stream::unfold(Some((reader, guard)), |state| async move {
        let (mut reader, guard) = state?;
        match reader.next().await {
            Ok(Some(BodyPart::Data(b))) => Some((Ok(BodyFrame::data(b)), Some((reader, guard)))),
            Ok(Some(BodyPart::Trailers(t))) => Some((
                Ok(BodyFrame::trailers(to_header_map(t.0))),
                Some((reader, guard)),
            )),
            Ok(None) => None,
            Err(e) => Some((Err(Box::new(e) as BoxError), None)),
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// Builds a header map, leaving out hop-by-hop headers, headers the origin
/// named in `Connection`, and any that are not valid HTTP (a peer bug must
/// not break the response).
fn to_header_map(list: HeaderList) -> HeaderMap {
    let nominated = connection_named(
        list.iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .map(|(_, v)| v.as_slice()),
    );
    let mut map = HeaderMap::with_capacity(list.len());
    for (name, value) in list {
        if tunnel::message::is_hop_by_hop(&name)
            || nominated.iter().any(|c| name.eq_ignore_ascii_case(c))
        {
            continue;
        }
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(&value),
        ) {
            (Ok(n), Ok(v)) => {
                map.append(n, v);
            }
            _ => tracing::debug!(name, "dropping an invalid header from the connector"),
        }
    }
    map
}

fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
    let body = format!(
        "{} {}: {text}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// True with probability `p`.
fn chance(p: f64) -> bool {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 4];
    if SystemRandom::new().fill(&mut b).is_err() {
        return false;
    }
    (u32::from_le_bytes(b) as f64 / u32::MAX as f64) < p
}

/// Accepts public connections until `drain` fires, then lets each connection
/// finish its in-flight request and closes it (graceful shutdown).
pub async fn serve_public(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    max_connections: usize,
    drain: CancellationToken,
    tasks: TaskTracker,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(max_connections));
    let mut accept_backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = drain.cancelled() => break,
        };
        let (stream, client) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { accept_backoff = Duration::from_millis(5); x }
                Err(e) => {
                    // Out of file descriptors and the like: back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(accept_backoff).await;
                    accept_backoff = (accept_backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = drain.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let proxy = proxy.clone();
        let metrics = proxy.metrics.clone();
        let service = hyper::service::service_fn(move |req| proxy.clone().handle(req, client));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        metrics.public_connections.inc();
        tasks.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%client, error = %e, "public connection ended with an error");
            }
            metrics.public_connections.dec();
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_headers_named_in_connection_are_dropped() {
        let list = vec![
            ("Connection".to_string(), b"X-Internal, close".to_vec()),
            ("x-internal".to_string(), b"secret".to_vec()),
            ("keep-alive".to_string(), b"timeout=5".to_vec()),
            ("content-type".to_string(), b"text/plain".to_vec()),
        ];
        let map = to_header_map(list);
        assert_eq!(map.len(), 1, "{map:?}");
        assert_eq!(map["content-type"], "text/plain");
    }

    #[test]
    fn every_error_maps_to_a_short_plain_answer() {
        let cases = [
            (ProxyError::UnknownHost, 404),
            (ProxyError::NoConnection, 502),
            (ProxyError::Timeout, 504),
            (ProxyError::Origin(StreamErrorKind::OriginTimeout), 504),
            (ProxyError::Origin(StreamErrorKind::OriginUnreachable), 502),
            (ProxyError::Request(RequestError::NoHost), 400),
            (ProxyError::Request(RequestError::UriTooLong), 414),
            (ProxyError::Injected, 500),
        ];
        for (err, want) in cases {
            let (status, text) = err.response();
            assert_eq!(status.as_u16(), want, "{err:?}");
            assert!(text.len() < 80 && !text.contains('{'), "{text}");
        }
    }
}
