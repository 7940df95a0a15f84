//! A public request's way through the edge: route it by its host to a
//! tunnel, proxy it over a new QUIC stream on one of the tunnel's
//! connections, and stream the answer back.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use tokio::task::JoinHandle;
use tunnel::codec::Frame as TunnelFrame;
use tunnel::io::{BodyPart, BodyReader, IoError, read_response_head, write_data, write_frame};
use tunnel::message::{HeaderList, ResponseHead, StreamErrorKind, Trailers};

use crate::forwarding::{Scheme, connection_named};
use crate::limits::{LimitError, RequestLimits, Slot};
use crate::metrics::Metrics;
use crate::public::PublicConnection;
use crate::registry::{ConnRegistry, InFlight};
use crate::request_head::{ForwardHead, RequestError, head_from_parts};
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
    /// A limit or a timeout on a slow peer stopped the request.
    #[error("{0}")]
    Limit(#[from] LimitError),
    /// The connector could not reach the origin.
    #[error("connector reported: {}", .0.as_str())]
    Origin(StreamErrorKind),
    /// A fault-injection release failed this request on purpose.
    #[error("fault injection")]
    Injected,
    /// An access WebSocket for a hostname whose tunnel serves no TCP there.
    #[error("no TCP service for this hostname")]
    NoTcpService,
    /// An access WebSocket without a valid RFC 6455 handshake.
    #[error("invalid WebSocket handshake")]
    BadHandshake,
    /// A TCP connection cap (per client address or per tunnel) is reached.
    #[error("too many TCP connections ({0})")]
    TcpLimit(&'static str),
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
            Self::Limit(e) => e.response(),
            Self::Origin(kind) => match kind {
                StreamErrorKind::OriginTimeout => (StatusCode::GATEWAY_TIMEOUT, kind.as_str()),
                StreamErrorKind::BadRequest => (StatusCode::BAD_REQUEST, kind.as_str()),
                other => (StatusCode::BAD_GATEWAY, other.as_str()),
            },
            Self::Injected => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "fault injection: synthetic error from a test release",
            ),
            Self::NoTcpService => (StatusCode::NOT_FOUND, "no TCP service for this hostname"),
            Self::BadHandshake => (
                StatusCode::BAD_REQUEST,
                "a WebSocket needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            ),
            Self::TcpLimit(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many TCP connections; retry later",
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
    /// Backstop for the connector's response head, counted from the end
    /// of the request body.
    pub response_timeout: Duration,
    /// Caps and timeouts on slow connectors and clients.
    pub limits: RequestLimits,
    /// Faults a test release injects.
    pub faults: FaultInjection,
    /// Random prefix of request ids.
    pub id_prefix: u64,
    /// Request id counter.
    pub next_id: AtomicU64,
    /// Caps and tracked tasks of TCP connections (public ports and access).
    pub tcp: crate::tcp::TcpShared,
}

impl Proxy {
    /// The instance's random prefix and a counter, in 24 hex digits
    /// (formatted by hand: `format!` with padding cost more than the rest
    /// of the id's life).
    pub(crate) fn request_id(&self) -> String {
        request_id_text(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    /// Serves one request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<PublicConnection>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        self.metrics
            .public_request(req.version(), conn.scheme == Scheme::Https);
        let request_id = self.request_id();
        // Records the request even if this future is dropped at an .await
        // (the client disconnected).
        let mut record = RequestRecord::start(&self.metrics);
        let result = self
            .forward(req, &conn, &request_id, &mut record.tunnel)
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
        conn: &Arc<PublicConnection>,
        request_id: &str,
        tunnel_label: &mut String,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        if let Some(how) = crate::websocket::websocket_request(&req) {
            if crate::access::is_access(&req) {
                return crate::access::forward(self, req, how, conn, tunnel_label).await;
            }
            return crate::websocket::forward(self, req, how, conn, request_id, tunnel_label).await;
        }
        // Checked (and sized against a tunnel frame) before anything else,
        // so a bad request never reaches a connector.
        let ForwardHead { head, frame } = head_from_parts(
            req.method(),
            req.uri(),
            req.headers(),
            !http_body::Body::is_end_stream(req.body()),
            conn.client,
            request_id,
            conn.scheme,
        )?;
        let tunnel = self
            .table
            .current()
            .route(&head.authority)
            .ok_or(ProxyError::UnknownHost)?;
        tunnel_label.clone_from(&tunnel.label);
        if self.faults.http_500_ratio > 0.0 && chance(self.faults.http_500_ratio) {
            self.metrics.faults_injected.inc();
            return Err(ProxyError::Injected);
        }

        let (guard, mut send, mut recv) = self.open_stream(&tunnel.id).await?;
        self.write_head(&mut send, &mut recv, frame).await?;
        // A request without a body (most of them) finishes its stream with
        // the head, in the same packet; only a body needs its own task.
        let upload = if head.has_body {
            Some(tokio::spawn(pump_request(
                req.into_body(),
                send,
                self.limits.body_idle_timeout,
                self.metrics.clone(),
            )))
        } else {
            let _ = send.finish();
            None
        };

        let head = self.response_head(&mut recv, upload).await?;
        let (status, headers) = match head {
            ResponseHead::Response { status, headers } => (status, headers),
            ResponseHead::Error(kind) => return Err(ProxyError::Origin(kind)),
        };
        let status = StatusCode::from_u16(status)
            .map_err(|_| ProxyError::Origin(StreamErrorKind::OriginProtocol))?;
        let headers = to_header_map(headers);
        let reader = BodyReader::new(recv);
        let body = if headers.contains_key("grpc-status") {
            self.grpc_trailers_only_body(reader, guard).await?
        } else {
            response_body(
                reader,
                guard,
                self.limits.body_idle_timeout,
                self.metrics.clone(),
            )
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        Ok(resp)
    }

    /// The body of a response whose head carries `grpc-status`: a gRPC
    /// "trailers-only" answer (the call failed before any message), which
    /// ends with its head. gRPC clients accept it only when the HEADERS
    /// frame itself ends the HTTP/2 stream (grpcio reports `UNKNOWN: Stream
    /// removed` for a head followed by an empty DATA frame), so the edge
    /// waits for the end of the body, which follows the head at once, and
    /// answers with a body known to be empty. A body that comes after all
    /// streams as usual, its first frame put back in front.
    async fn grpc_trailers_only_body(
        &self,
        mut reader: BodyReader,
        guard: StreamGuard,
    ) -> Result<ProxyBody, ProxyError> {
        let idle = self.limits.body_idle_timeout;
        let first = match tokio::time::timeout(idle, reader.next()).await {
            Ok(Ok(None)) => return Ok(empty_body()),
            Ok(Ok(Some(BodyPart::Data(b)))) => BodyFrame::data(b),
            Ok(Ok(Some(BodyPart::Trailers(t)))) => BodyFrame::trailers(to_header_map(t.0)),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                self.metrics.timed_out("response_body_idle");
                reader.stop(STOP_TIMEOUT);
                return Err(ProxyError::Timeout);
            }
        };
        let rest = http_body_util::BodyStream::new(response_body(
            reader,
            guard,
            idle,
            self.metrics.clone(),
        ));
        let stream = futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok::<_, BoxError>(first)]),
            rest,
        );
        Ok(StreamBody::new(stream).boxed_unsync())
    }

    /// Opens a stream on the best connection; if opening fails (the
    /// connection just died), tries once more on another. The tunnel's
    /// request slot is taken first: past `--max-requests-per-tunnel` the
    /// request gets 503 before it can wait on anything. A connector that
    /// grants no stream within `--stream-open-timeout` gets the request 504.
    pub(crate) async fn open_stream(
        &self,
        tunnel: &tunnel::token::TunnelId,
    ) -> Result<(StreamGuard, quinn::SendStream, quinn::RecvStream), ProxyError> {
        let Some(slot) = self.limits.per_tunnel.try_acquire(*tunnel) else {
            self.metrics.limit_hit("requests_per_tunnel");
            return Err(LimitError::TunnelBusy.into());
        };
        let (conn, send, recv) = self.open_on_tunnel(tunnel).await?;
        let guard = StreamGuard {
            _conn: conn,
            _tunnel: slot,
        };
        Ok((guard, send, recv))
    }

    /// Opens a stream on the best connection of `tunnel`, without a request
    /// slot (TCP connections have caps of their own); see
    /// [`Proxy::open_stream`].
    pub(crate) async fn open_on_tunnel(
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
            let opened = tokio::time::timeout(
                self.limits.stream_open_timeout,
                guard.0.connection.open_bi(),
            )
            .await;
            let Ok(opened) = opened else {
                self.metrics.timed_out("stream_open");
                return Err(LimitError::StreamOpenTimeout.into());
            };
            match opened {
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

    /// Writes the request head; a connector that does not take it within
    /// `--stream-open-timeout` (no flow-control credit) gets the request 504.
    pub(crate) async fn write_head(
        &self,
        send: &mut quinn::SendStream,
        recv: &mut quinn::RecvStream,
        frame: Bytes,
    ) -> Result<(), ProxyError> {
        match tokio::time::timeout(self.limits.stream_open_timeout, send.write_chunk(frame)).await {
            Ok(written) => Ok(written.map_err(IoError::from)?),
            Err(_) => {
                self.metrics.timed_out("stream_open");
                let _ = send.reset(quinn::VarInt::from_u32(STOP_TIMEOUT));
                let _ = recv.stop(quinn::VarInt::from_u32(STOP_TIMEOUT));
                Err(LimitError::StreamOpenTimeout.into())
            }
        }
    }

    /// Waits for the response head. The response timeout starts once the
    /// request body is completely sent: an origin that reads a whole large
    /// upload before it answers must not get 504 while the data still
    /// flows (a stalled upload is the body idle timeout's business). A head
    /// that comes before the upload ends (an early 413, an echo) is taken
    /// at once.
    pub(crate) async fn response_head(
        &self,
        recv: &mut quinn::RecvStream,
        upload: Option<JoinHandle<Result<(), LimitError>>>,
    ) -> Result<ResponseHead, ProxyError> {
        let read = read_response_head(recv);
        tokio::pin!(read);
        if let Some(upload) = upload {
            tokio::select! {
                head = &mut read => return Ok(head?),
                sent = upload => {
                    if let Ok(Err(e)) = sent {
                        return Err(e.into());
                    }
                }
            }
        }
        match tokio::time::timeout(self.response_timeout, read).await {
            Ok(head) => Ok(head?),
            Err(_) => {
                self.metrics.timed_out("response_head");
                Err(ProxyError::Timeout)
            }
        }
    }
}

/// What a proxied request holds until its response body ends: its place
/// among the connection's streams and among the tunnel's requests.
#[derive(Debug)]
pub struct StreamGuard {
    _conn: InFlight,
    _tunnel: Slot<tunnel::token::TunnelId>,
}

/// The stream error code the edge uses when it gives up on a stalled peer.
const STOP_TIMEOUT: u32 = 3;

/// Copies the client's body into the stream, then finishes it; resolves
/// when the body is completely sent (the response timer starts then). If the
/// client's body fails or pauses longer than `idle`, or the connector reads
/// nothing for `idle`, the stream is reset so the origin sees an abort, not a
/// short body. A connector that stops the stream (its origin answered
/// early) ends the upload without an error: its response head follows.
async fn pump_request(
    mut body: Incoming,
    mut send: quinn::SendStream,
    idle: Duration,
    metrics: Metrics,
) -> Result<(), LimitError> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(None) => break,
            Ok(Some(Ok(frame))) => frame,
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "client body failed; resetting the stream");
                let _ = send.reset(quinn::VarInt::from_u32(1));
                return Err(LimitError::RequestBodyFailed);
            }
            Err(_) => {
                metrics.timed_out("request_body_idle");
                let _ = send.reset(quinn::VarInt::from_u32(STOP_TIMEOUT));
                return Err(LimitError::RequestBodyIdle);
            }
        };
        let written = match frame.into_data() {
            Ok(data) => tokio::time::timeout(idle, write_data(&mut send, data)).await,
            // Request trailers (gRPC clients send them over h2) go as the
            // stream's trailers frame; nothing follows them.
            Err(frame) => match frame.into_trailers() {
                Ok(t) => {
                    let t = TunnelFrame::Trailers(Trailers(trailer_list(&t)));
                    tokio::time::timeout(idle, write_frame(&mut send, &t)).await
                }
                Err(_) => continue,
            },
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the connector stopped reading the request body");
                return Ok(());
            }
            Err(_) => {
                metrics.timed_out("upload_stalled");
                let _ = send.reset(quinn::VarInt::from_u32(STOP_TIMEOUT));
                return Err(LimitError::UploadStalled);
            }
        }
    }
    let _ = send.finish();
    Ok(())
}

/// The response body, read from the stream as the client takes it. A
/// connector that sends nothing for `idle` in the middle of a body gets its
/// stream stopped, and the client sees the body cut off (not a clean end).
pub(crate) fn response_body(
    reader: BodyReader,
    guard: StreamGuard,
    idle: Duration,
    metrics: Metrics,
) -> ProxyBody {
    let state = Some((reader, guard, metrics));
    let stream = futures_util::stream::unfold(state, move |state| async move {
        let (mut reader, guard, metrics) = state?;
        match tokio::time::timeout(idle, reader.next()).await {
            Ok(Ok(Some(BodyPart::Data(b)))) => {
                Some((Ok(BodyFrame::data(b)), Some((reader, guard, metrics))))
            }
            Ok(Ok(Some(BodyPart::Trailers(t)))) => Some((
                Ok(BodyFrame::trailers(to_header_map(t.0))),
                Some((reader, guard, metrics)),
            )),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some((Err(Box::new(e) as BoxError), None)),
            Err(_) => {
                metrics.timed_out("response_body_idle");
                reader.stop(STOP_TIMEOUT);
                let e: BoxError =
                    "the connector sent no response body within the idle timeout".into();
                Some((Err(e), None))
            }
        }
    });
    StreamBody::new(stream).boxed_unsync()
}

/// A client's request trailers for the tunnel, without hop-by-hop fields
/// (they have no meaning in a trailer section either).
fn trailer_list(trailers: &HeaderMap) -> HeaderList {
    trailers
        .iter()
        .filter(|(n, _)| !tunnel::message::is_hop_by_hop(n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Builds a header map, leaving out hop-by-hop headers, headers the origin
/// named in `Connection`, and any that are not valid HTTP (a peer bug must
/// not break the response).
pub(crate) fn to_header_map(list: HeaderList) -> HeaderMap {
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

/// An empty body (a 101's).
pub(crate) fn empty_body() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A short plain-text answer from the edge itself.
pub(crate) fn plain(status: StatusCode, text: &str) -> Response<ProxyBody> {
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
    // The edge answers 503 only when a cap is reached: say when to retry.
    if status == StatusCode::SERVICE_UNAVAILABLE {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// `format!("{prefix:016x}{n:08x}")`, without the formatting machinery.
fn request_id_text(prefix: u64, n: u64) -> String {
    let mut id = String::with_capacity(32);
    push_hex(&mut id, prefix, 16);
    push_hex(&mut id, n, 8);
    id
}

/// Appends `v` in hex, zero-padded to at least `min_digits`.
fn push_hex(out: &mut String, v: u64, min_digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = min_digits.max((64 - v.leading_zeros()).div_ceil(4));
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize] as char);
    }
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
    fn request_ids_are_the_prefix_and_the_counter_in_fixed_width_hex() {
        for (prefix, n) in [
            (0u64, 0u64),
            (0x00ab_cdef_0123_4567, 0x2a),
            (u64::MAX, u64::from(u32::MAX)),
            (1, 1 << 32),
            (7, u64::MAX),
        ] {
            assert_eq!(request_id_text(prefix, n), format!("{prefix:016x}{n:08x}"));
        }
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
            (ProxyError::NoTcpService, 404),
            (ProxyError::BadHandshake, 400),
            (ProxyError::TcpLimit("client_limit"), 503),
        ];
        for (err, want) in cases {
            let (status, text) = err.response();
            assert_eq!(status.as_u16(), want, "{err:?}");
            assert!(text.len() < 80 && !text.contains('{'), "{text}");
        }
    }
}
