//! A small HTTP/2-only origin (h2c, prior knowledge), the kind a rule with
//! `origin_request.http2_origin: true` points at: it records what each
//! request brought (version, `:authority`, `te`, the body's length and
//! digest, the trailers) and answers with trailers of its own.
//!
//! - `/echo`: 200, the request body back, then the trailers
//!   `x-origin-trailer: done` and `grpc-status: 0`.
//! - `/trailers-only`: 200 with `grpc-status: 5` and `grpc-message` in the
//!   headers and no body (the HEADERS frame ends the stream), the way a gRPC
//!   server answers a call that fails before any message.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};

/// The `grpc-message` of `/trailers-only`.
pub const TRAILERS_ONLY_MESSAGE: &str = "no such thing";

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// HTTP version on the origin connection.
    pub version: Version,
    /// `:authority`.
    pub authority: Option<String>,
    /// Path and query.
    pub path: String,
    /// The `te` header.
    pub te: Option<String>,
    /// Body length.
    pub body_len: usize,
    /// SHA-256 of the body.
    pub body_sha256: Vec<u8>,
    /// The request trailers, if any came.
    pub trailers: Option<HeaderMap>,
}

/// A running origin; stops when dropped.
pub struct H2Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl H2Origin {
    /// Listens on `addr`.
    pub async fn start(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind h2 origin {addr}: {e}"));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| answer(req, log.clone()));
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    /// Every request seen so far, in the order they completed.
    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for H2Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

async fn answer(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
) -> Result<Response<Body>, hyper::Error> {
    let version = req.version();
    let authority = req.uri().authority().map(|a| a.to_string());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let te = req
        .headers()
        .get(http::header::TE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let collected = req.into_body().collect().await?;
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    seen.lock().unwrap().push(SeenRequest {
        version,
        authority,
        path: path.clone(),
        te,
        body_len: body.len(),
        body_sha256: ring::digest::digest(&ring::digest::SHA256, &body)
            .as_ref()
            .to_vec(),
        trailers,
    });
    if path == "/trailers-only" {
        let mut resp = Response::new(Empty::new().boxed_unsync());
        let h = resp.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from_static("5"));
        h.insert(
            "grpc-message",
            HeaderValue::from_static(TRAILERS_ONLY_MESSAGE),
        );
        return Ok(resp);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-origin-trailer", HeaderValue::from_static("done"));
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
    let body = StreamBody::new(futures_util::stream::iter(frames));
    Ok(Response::new(body.boxed_unsync()))
}
