//! The origin the tests and the benchmark put behind a connector: small,
//! real HTTP/1.1, with the endpoints the checks need.
//!
//! | path | answer |
//! |---|---|
//! | `GET /hello` | `hello from origin` |
//! | `GET /headers` | the request headers as JSON |
//! | `POST /echo` | the request body, streamed back |
//! | `POST /sink` | `{"bytes": N, "sha256": "..."}` of the body |
//! | `GET /bytes?size=N&seed=S` | N bytes of pattern S (see [`crate::pattern`]) |
//! | `GET /sse?id=X&events=N[&interval_ms=M]` | N server-sent events (M ms apart, default 0), then holds the response open until `POST /release?id=X` |
//! | `GET /slow?ms=N` | waits N ms, then answers |
//! | `GET /status/N` | status N |
//! | `GET /stats` | `{"slow_started": N}` |
//! | `GET /ws` (WebSocket upgrade) | echoes every byte of every data frame; answers a Close with its own |

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

#[derive(Default)]
struct OriginState {
    releases: Mutex<HashMap<String, Arc<Notify>>>,
    slow_started: AtomicU64,
}

impl OriginState {
    fn notify(&self, id: &str) -> Arc<Notify> {
        self.releases
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

/// The origin's routes.
pub fn router() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hello from origin\n" }))
        .route("/headers", get(headers))
        .route("/echo", post(echo).put(echo))
        .route("/sink", post(sink))
        .route("/bytes", get(bytes))
        .route("/sse", get(sse))
        .route("/release", post(release))
        .route("/slow", get(slow))
        .route("/status/{code}", get(status))
        .route("/stats", get(stats))
        .route("/ws", get(websocket))
        .with_state(Arc::new(OriginState::default()))
}

/// Serves the origin on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener) {
    let _ = axum::serve(listener, router()).await;
}

/// Starts the origin on `addr` in this process; returns the task.
pub async fn spawn(addr: std::net::SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind origin {addr}: {e}"));
    tokio::spawn(serve(listener))
}

async fn headers(h: HeaderMap) -> impl IntoResponse {
    let map: HashMap<String, String> = h
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    axum::Json(map)
}

async fn echo(h: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(Body::from_stream(body.into_data_stream()));
    if let Some(len) = h.get(header::CONTENT_LENGTH) {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, len.clone());
    }
    resp
}

async fn sink(body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0u64;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => {
                n += c.len() as u64;
                ctx.update(&c);
            }
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        }
    }
    axum::Json(serde_json::json!({
        "bytes": n,
        "sha256": crate::pattern::hex(ctx.finish().as_ref()),
    }))
    .into_response()
}

#[derive(Deserialize)]
struct BytesQuery {
    size: u64,
    #[serde(default)]
    seed: u64,
}

async fn bytes(Query(q): Query<BytesQuery>) -> Response {
    let stream =
        futures_util::stream::iter(crate::pattern::chunks(q.seed, q.size).map(Ok::<_, Infallible>));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, q.size.to_string().parse().unwrap());
    resp
}

#[derive(Deserialize)]
struct SseQuery {
    id: String,
    events: u32,
    /// Pause before each event after the first, so a stream carries events
    /// for a while (as across a restart under load).
    #[serde(default)]
    interval_ms: u64,
    /// `0`: end the stream after its events instead of holding it open
    /// until released.
    #[serde(default = "yes")]
    hold: u8,
}

fn yes() -> u8 {
    1
}

async fn sse(State(s): State<Arc<OriginState>>, Query(q): Query<SseQuery>) -> Response {
    let release = s.notify(&q.id);
    let interval = Duration::from_millis(q.interval_ms);
    let stream = async_stream(q.events, interval, (q.hold != 0).then_some(release));
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, "text/event-stream".parse().unwrap());
    resp
}

fn async_stream(
    events: u32,
    interval: Duration,
    release: Option<Arc<Notify>>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    futures_util::stream::unfold(0u32, move |i| {
        let release = release.clone();
        async move {
            if i < events {
                if i > 0 && !interval.is_zero() {
                    tokio::time::sleep(interval).await;
                }
                Some((Ok(Bytes::from(format!("data: event {i}\n\n"))), i + 1))
            } else if i == events {
                // Hold the response open until the test releases it.
                if let Some(release) = release {
                    let _ = tokio::time::timeout(Duration::from_secs(60), release.notified()).await;
                }
                Some((Ok(Bytes::from_static(b"data: done\n\n")), i + 1))
            } else {
                None
            }
        }
    })
}

#[derive(Deserialize)]
struct IdQuery {
    id: String,
}

async fn release(State(s): State<Arc<OriginState>>, Query(q): Query<IdQuery>) -> &'static str {
    s.notify(&q.id).notify_one();
    "released\n"
}

#[derive(Deserialize)]
struct SlowQuery {
    ms: u64,
}

async fn slow(State(s): State<Arc<OriginState>>, Query(q): Query<SlowQuery>) -> String {
    s.slow_started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    format!("slow done after {} ms\n", q.ms)
}

async fn status(Path(code): Path<u16>) -> Response {
    StatusCode::from_u16(code)
        .unwrap_or(StatusCode::BAD_REQUEST)
        .into_response()
}

async fn stats(State(s): State<Arc<OriginState>>) -> impl IntoResponse {
    axum::Json(serde_json::json!({ "slow_started": s.slow_started.load(Ordering::SeqCst) }))
}

/// `GET /ws`: a WebSocket echo (through [`tunnel::websocket::WsStream`], so
/// message boundaries are not kept, only the bytes).
async fn websocket(mut req: axum::extract::Request) -> Response {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return (StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key\n").into_response();
    };
    if !upgrade {
        return (StatusCode::BAD_REQUEST, "not a WebSocket upgrade\n").into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut ws = tunnel::websocket::WsStream::new(
            TokioIo::new(upgraded),
            tunnel::websocket::Role::Server,
        );
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match ws.read(&mut buf).await {
                Ok(0) => {
                    let _ = ws.shutdown().await;
                    return;
                }
                Ok(n) => {
                    if ws.write_all(&buf[..n]).await.is_err() || ws.flush().await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            tunnel::websocket::accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
