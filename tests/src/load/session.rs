//! The load's long-lived sessions: WebSockets (`GET /ws` through an edge's
//! public HTTP address, echoed by the origin) and TCP connections (through
//! an edge's public TCP port to a TCP echo origin).
//!
//! Each slot keeps one session open at a time. A session sends a numbered
//! message every interval and checks its echo; after its lifetime (or when
//! the load ends) it closes cleanly: its half-close (a Close frame, or FIN)
//! answered by the peer's own with nothing in between. Then the slot opens
//! the next one. So sessions are open across every restart the test makes,
//! and each ends well within the connectors' grace period, as a drain needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tunnel::websocket::{Role, WsStream};

use super::{Cause, Failure, Kind, Shared};

/// A session's connection, whatever carries it.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What the sessions of one kind did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionCount {
    /// Sessions opened (or tried).
    pub opened: u64,
    /// Sessions that closed cleanly, every echo intact.
    pub finished: u64,
    /// Sessions that failed (each is in the report's failures).
    pub failed: u64,
    /// Messages echoed intact.
    pub messages: u64,
}

/// The counts a kind's slots share.
#[derive(Default)]
pub(super) struct Counters {
    opened: AtomicU64,
    finished: AtomicU64,
    failed: AtomicU64,
    messages: AtomicU64,
}

impl Counters {
    pub(super) fn count(&self) -> SessionCount {
        SessionCount {
            opened: self.opened.load(Ordering::SeqCst),
            finished: self.finished.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            messages: self.messages.load(Ordering::SeqCst),
        }
    }
}

/// Runs slot `slot` of `kind` until `close` turns true; then the session in
/// progress closes cleanly and the slot ends.
pub(super) async fn slot(
    shared: Arc<Shared>,
    kind: Kind,
    slot: usize,
    counters: Arc<Counters>,
    mut close: watch::Receiver<bool>,
) {
    let target = slot % shared.spec.targets.len();
    let interval = shared.spec.mix.session_interval;
    let mut n = 0u64;
    while !*close.borrow() {
        let sent = shared.since_start();
        let id = format!("{}-{slot}-{n}", kind.short_name());
        n += 1;
        counters.opened.fetch_add(1, Ordering::SeqCst);
        match session(&shared, kind, target, &id, &counters, &mut close).await {
            Ok(()) => {
                counters.finished.fetch_add(1, Ordering::SeqCst);
            }
            Err(cause) => {
                counters.failed.fetch_add(1, Ordering::SeqCst);
                shared.tally.lock().unwrap().failures.push(Failure {
                    at: shared.since_start(),
                    sent,
                    target: shared.spec.targets[target].name.clone(),
                    kind,
                    cause,
                });
                // Not a tight loop against a target that is down.
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = close.wait_for(|c| *c) => {}
                }
            }
        }
    }
}

/// One session: open, echo a message every interval for the lifetime (or
/// until `close`), close cleanly. Each step has the request limit.
async fn session(
    shared: &Shared,
    kind: Kind,
    target: usize,
    id: &str,
    counters: &Counters,
    close: &mut watch::Receiver<bool>,
) -> Result<(), Cause> {
    let mix = &shared.spec.mix;
    let limit = shared.spec.request_timeout;
    let within = |what: &'static str| move |_| Cause::Timeout(format!("{what} within {limit:?}"));
    let mut io = tokio::time::timeout(limit, open(shared, kind, target))
        .await
        .map_err(within("not open"))??;
    let born = Instant::now();
    let mut buf = Vec::new();
    for k in 0u64.. {
        let message = format!("{id} message {k}\n");
        tokio::time::timeout(limit, echo(&mut io, message.as_bytes(), &mut buf))
            .await
            .map_err(within("no echo"))??;
        counters.messages.fetch_add(1, Ordering::SeqCst);
        if born.elapsed() >= mix.session_lifetime {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(mix.session_interval) => {}
            _ = close.wait_for(|c| *c) => break,
        }
    }
    tokio::time::timeout(limit, close_cleanly(&mut io))
        .await
        .map_err(within("no clean close"))?
}

/// Sends `message` and reads its echo, byte for byte.
async fn echo(io: &mut Box<dyn Io>, message: &[u8], buf: &mut Vec<u8>) -> Result<(), Cause> {
    io.write_all(message)
        .await
        .map_err(|e| Cause::from_io(&e))?;
    io.flush().await.map_err(|e| Cause::from_io(&e))?;
    buf.resize(message.len(), 0);
    match io.read_exact(buf).await {
        Ok(_) if buf[..] == *message => Ok(()),
        Ok(_) => Err(Cause::Truncated(format!(
            "echo {:?} of {:?}",
            String::from_utf8_lossy(buf),
            String::from_utf8_lossy(message)
        ))),
        Err(e) => Err(Cause::from_io(&e)),
    }
}

/// Our half-close, then the peer's, with nothing between them.
async fn close_cleanly(io: &mut Box<dyn Io>) -> Result<(), Cause> {
    io.shutdown().await.map_err(|e| Cause::from_io(&e))?;
    let mut rest = Vec::new();
    io.read_to_end(&mut rest)
        .await
        .map_err(|e| Cause::from_io(&e))?;
    if rest.is_empty() {
        Ok(())
    } else {
        Err(Cause::Truncated(format!(
            "{} bytes after our close",
            rest.len()
        )))
    }
}

async fn open(shared: &Shared, kind: Kind, target: usize) -> Result<Box<dyn Io>, Cause> {
    let t = &shared.spec.targets[target];
    match kind {
        Kind::WebSocket => open_websocket(shared, t.addr).await,
        _ => {
            let addr = t
                .tcp
                .ok_or_else(|| Cause::Other(format!("{} has no TCP address", t.name)))?;
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| Cause::from_io(&e))?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream))
        }
    }
}

/// `GET /ws` with an upgrade to a WebSocket, the answer's accept key checked.
async fn open_websocket(shared: &Shared, addr: std::net::SocketAddr) -> Result<Box<dyn Io>, Cause> {
    let (mut sender, conn) = super::connect_http1(addr).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let key = tunnel::websocket::client_key();
    let req = Request::builder()
        .uri("/ws")
        .header(header::HOST, &shared.spec.host)
        .header(header::UPGRADE, "websocket")
        .header(header::CONNECTION, "Upgrade")
        .header(header::SEC_WEBSOCKET_VERSION, "13")
        .header(header::SEC_WEBSOCKET_KEY, &key)
        .body(Full::new(Bytes::new()))
        .map_err(|e| Cause::Other(format!("build request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Cause::from_hyper(&e))?;
    let status = resp.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(Cause::from_status(status).unwrap_or(Cause::StatusOther(status.as_u16())));
    }
    let accept = tunnel::websocket::accept_key(key.as_bytes());
    let got = resp.headers().get(header::SEC_WEBSOCKET_ACCEPT);
    if got.and_then(|v| v.to_str().ok()) != Some(accept.as_str()) {
        return Err(Cause::Other(
            "a 101 without our Sec-WebSocket-Accept".into(),
        ));
    }
    let upgraded = hyper::upgrade::on(resp)
        .await
        .map_err(|e| Cause::from_hyper(&e))?;
    Ok(Box::new(WsStream::new(
        TokioIo::new(upgraded),
        Role::Client,
    )))
}
