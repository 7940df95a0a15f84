//! The public listeners: plain HTTP and, when configured, HTTPS. Both speak
//! HTTP/1.1 and HTTP/2 (h2 by ALPN over TLS, h2c with prior knowledge on
//! the plain listener) through hyper's auto builder, share one connection
//! cap and one per-address cap, and drain gracefully (HTTP/2 connections get
//! GOAWAY).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::forwarding::Scheme;
use crate::idle_io::WriteIdle;
use crate::limits::{Counter, LogLimiter, Slot};
use crate::proxy::{Proxy, ProxyBody};
use crate::public_tls::PublicTls;

/// How long a client has to send a complete HTTP/1.1 request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At a drain, how long connections accepted just before it get for their
/// first request to begin (a client sends it as it connects; a browser's
/// preconnect may never send one) before every connection of the listener
/// is shut down gracefully.
const FIRST_REQUEST_WAIT: Duration = Duration::from_secs(2);

/// HTTP/2 settings announced to every client.
#[derive(Debug, Clone, Copy)]
pub struct Http2Limits {
    /// Concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Largest header list a client may send.
    pub max_header_list_size: u32,
}

/// What both listeners share: the proxy, the caps, the protocol settings.
pub struct PublicServer {
    /// Serves the requests.
    pub proxy: Arc<Proxy>,
    /// `--max-connections`, for both listeners together.
    pub slots: Arc<Semaphore>,
    /// `--max-connections-per-ip`, for both listeners together.
    pub per_ip: Arc<Counter<IpAddr>>,
    /// HTTP/1.1 only. Each connection's protocol is known before it is
    /// served (ALPN, or a peek at the first bytes with a timeout), because
    /// hyper's own detection waits for those bytes without one.
    pub http1: Arc<auto::Builder<TokioExecutor>>,
    /// HTTP/2 only.
    pub http2: Arc<auto::Builder<TokioExecutor>>,
    /// Throttles the log line about refused connections.
    pub refusal_log: LogLimiter,
}

/// What a listener does with its connections.
#[derive(Clone)]
pub enum Listener {
    /// Plain HTTP; with `Some(port)`, every request is redirected to HTTPS
    /// on that port.
    Plain {
        /// `--redirect-http-to-https`: the HTTPS port.
        redirect_to: Option<u16>,
    },
    /// TLS, then HTTP.
    Tls(PublicTls),
}

/// The connections of a listener whose first request has not begun. A
/// client whose connection was accepted just before a drain sent its request
/// as it connected; a graceful shutdown before hyper read it would close the
/// socket with the request unread, which the kernel answers with a reset. So
/// the drain waits for these (up to [`FIRST_REQUEST_WAIT`]) before it shuts
/// connections down.
#[derive(Debug, Default)]
struct Fresh {
    count: AtomicUsize,
    notify: Notify,
}

impl Fresh {
    fn enter(self: &Arc<Self>) -> Arc<FreshPlace> {
        self.count.fetch_add(1, Ordering::SeqCst);
        Arc::new(FreshPlace {
            fresh: self.clone(),
            left: AtomicBool::new(false),
        })
    }

    async fn none_left(&self) {
        loop {
            let notified = self.notify.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A connection's place among the fresh ones: given back when its first
/// request begins, or when it ends without one.
#[derive(Debug)]
struct FreshPlace {
    fresh: Arc<Fresh>,
    left: AtomicBool,
}

impl FreshPlace {
    fn request_began(&self) {
        if !self.left.swap(true, Ordering::SeqCst)
            && self.fresh.count.fetch_sub(1, Ordering::SeqCst) == 1
        {
            self.fresh.notify.notify_waiters();
        }
    }
}

impl Drop for FreshPlace {
    fn drop(&mut self) {
        self.request_began();
    }
}

impl PublicServer {
    /// Shared state for both listeners.
    pub fn new(
        proxy: Arc<Proxy>,
        max_connections: usize,
        per_ip: Arc<Counter<IpAddr>>,
        h2: Http2Limits,
    ) -> Self {
        let builder = || {
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_concurrent_streams(h2.max_concurrent_streams)
                .max_header_list_size(h2.max_header_list_size)
                // RFC 8441 extended CONNECT, for WebSocket over HTTP/2.
                .enable_connect_protocol();
            builder
        };
        Self {
            proxy,
            slots: Arc::new(Semaphore::new(max_connections)),
            per_ip,
            http1: Arc::new(builder().http1_only()),
            http2: Arc::new(builder().http2_only()),
            refusal_log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Accepts connections until `drain` fires, then lets each connection
    /// finish its in-flight requests and closes it (HTTP/1.1 after the
    /// current response, HTTP/2 with GOAWAY). Past `--max-connections` in
    /// all the edge stops accepting; past the per-address cap it refuses the
    /// connection at once (plain HTTP: with a 503), without reading a
    /// request, so one address cannot take every connection.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        kind: Listener,
        drain: CancellationToken,
        tasks: TaskTracker,
    ) {
        let listen_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let fresh = Arc::new(Fresh::default());
        let mut accept_backoff = Duration::from_millis(5);
        loop {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
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
            let Some(ip_slot) = self
                .per_ip
                .try_acquire(crate::limits::address_key(client.ip()))
            else {
                self.proxy.metrics.limit_hit("connections_per_ip");
                if let Some(suppressed) = self.refusal_log.allow() {
                    tracing::warn!(client = %client.ip(), suppressed,
                        "connection refused: too many connections from this address");
                }
                if matches!(kind, Listener::Plain { .. }) {
                    // Best effort and never a wait: the socket buffer takes
                    // it. (Over TLS there is no plain text to send before a
                    // handshake, which is what the cap saves.)
                    let _ = stream.try_write(crate::limits::TOO_MANY_CONNECTIONS);
                }
                continue;
            };
            let _ = stream.set_nodelay(true);
            crate::websocket::keepalive(&stream);
            let watcher = graceful.watcher();
            let first = fresh.enter();
            let this = self.clone();
            let kind = kind.clone();
            // Where the client connected to: an access WebSocket's TCP
            // stream carries it as the PROXY v2 destination.
            let local = if listen_addr.ip().is_unspecified() {
                stream.local_addr().unwrap_or(listen_addr)
            } else {
                // Bound to one address: no system call needed to know it.
                listen_addr
            };
            let conn = PublicConnection::new(
                client,
                local,
                match kind {
                    Listener::Plain { .. } => Scheme::Http,
                    Listener::Tls(_) => Scheme::Https,
                },
                (permit, ip_slot),
                self.proxy.metrics.public_connections.clone(),
            );
            tasks.spawn(this.connection(stream, kind, watcher, first, conn));
        }
        drop(listener);
        let _ = tokio::time::timeout(FIRST_REQUEST_WAIT, fresh.none_left()).await;
        graceful.shutdown().await;
    }

    /// One connection's life: the TLS handshake if any, then HTTP.
    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        kind: Listener,
        watcher: hyper_util::server::graceful::Watcher,
        first: Arc<FreshPlace>,
        conn: Arc<PublicConnection>,
    ) {
        let client = conn.client;
        let metrics = &self.proxy.metrics;

        // h2c with prior knowledge starts with the HTTP/2 preface; anything
        // else is HTTP/1.1. Over TLS, ALPN says which (below).
        let plain_h2 = match kind {
            Listener::Plain { .. } => {
                match tokio::time::timeout(HEADER_READ_TIMEOUT, starts_with_h2_preface(&stream))
                    .await
                {
                    Ok(Ok(h2)) => h2,
                    Ok(Err(e)) => {
                        tracing::debug!(%client, error = %e, "public connection failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%client, "no request within the header read timeout");
                        return;
                    }
                }
            }
            Listener::Tls(_) => false,
        };
        let io = WriteIdle::new(
            stream,
            self.proxy.limits.body_idle_timeout,
            metrics.timeouts.with_label_values(&["client_write_idle"]),
        );
        let result = match kind {
            Listener::Plain {
                redirect_to: Some(port),
            } => {
                let proxy = self.proxy.clone();
                let started = first.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    started.request_began();
                    std::future::ready(redirect(&proxy, &req, port))
                });
                let builder = if plain_h2 { &self.http2 } else { &self.http1 };
                let conn = builder.serve_connection(TokioIo::new(io), service);
                watcher.watch(conn).await
            }
            Listener::Plain { redirect_to: None } => {
                let proxy = self.proxy.clone();
                let started = first.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    started.request_began();
                    proxy.clone().handle(req, conn.clone())
                });
                let builder = if plain_h2 { &self.http2 } else { &self.http1 };
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                watcher.watch(conn).await
            }
            Listener::Tls(tls) => {
                let tls_stream = match tls.accept(io).await {
                    Ok(s) => s,
                    Err(reason) => {
                        metrics
                            .tls_handshake_failures
                            .with_label_values(&[reason.as_str()])
                            .inc();
                        tracing::debug!(%client, reason = reason.as_str(), "TLS handshake failed");
                        return;
                    }
                };
                let proxy = self.proxy.clone();
                let started = first.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    started.request_began();
                    proxy.clone().handle(req, conn.clone())
                });
                let h2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2");
                let builder = if h2 { &self.http2 } else { &self.http1 };
                let conn =
                    builder.serve_connection_with_upgrades(TokioIo::new(tls_stream), service);
                watcher.watch(conn).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%client, error = %e, "public connection ended with an error");
        }
    }
}

/// The client's first bytes are the HTTP/2 connection preface (h2c with
/// prior knowledge). Peeks, so hyper still reads every byte; waits as long
/// as the bytes so far are a prefix of the preface (the caller bounds it).
/// A public connection: who it is from, its scheme, and its places in
/// `--max-connections` and `--max-connections-per-ip`. Shared by the
/// connection's task and what outlives it (a WebSocket relay after hyper
/// hands the upgraded connection over), so the places are given back, and
/// `edge_public_connections` lowered, only when the last of them ends.
pub struct PublicConnection {
    /// The client's address.
    pub client: SocketAddr,
    /// The edge's address the client connected to.
    pub local: SocketAddr,
    /// The listener's scheme, for the forwarding headers.
    pub scheme: Scheme,
    _places: (OwnedSemaphorePermit, Slot<IpAddr>),
    open: IntGauge,
}

impl PublicConnection {
    fn new(
        client: SocketAddr,
        local: SocketAddr,
        scheme: Scheme,
        places: (OwnedSemaphorePermit, Slot<IpAddr>),
        open: IntGauge,
    ) -> Arc<Self> {
        open.inc();
        Arc::new(Self {
            client,
            local,
            scheme,
            _places: places,
            open,
        })
    }
}

impl Drop for PublicConnection {
    fn drop(&mut self) {
        self.open.dec();
    }
}

async fn starts_with_h2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            // HTTP/1.1, or a client that left: HTTP/1.1 handles both.
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // Part of the preface: a peek would return the same bytes at once,
        // so wait a little for the rest (rare: clients send it whole).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `308` to the same URL on https://; `400` for a request without a valid
/// Host, as the proxy would answer it.
fn redirect(
    proxy: &Proxy,
    req: &Request<Incoming>,
    https_port: u16,
) -> Result<Response<ProxyBody>, Infallible> {
    proxy.metrics.public_request(req.version(), false);
    let authority = match crate::request_head::authority(req.uri(), req.headers()) {
        Ok(a) => a,
        Err(e) => {
            let (status, text) = e.response();
            return Ok(crate::proxy::plain(status, text));
        }
    };
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = redirect_location(&authority, https_port, path);
    let mut resp = crate::proxy::plain(StatusCode::PERMANENT_REDIRECT, "use https");
    match HeaderValue::from_str(&location) {
        Ok(v) => {
            resp.headers_mut().insert(http::header::LOCATION, v);
        }
        // The authority was validated and the path came from hyper: this
        // cannot happen, but a bad header must not panic.
        Err(_) => return Ok(crate::proxy::plain(StatusCode::BAD_REQUEST, "bad request")),
    }
    Ok(resp)
}

/// `https://HOST[:PORT]PATH`: the authority's host without its port, the
/// HTTPS port unless it is 443.
fn redirect_location(authority: &str, https_port: u16, path: &str) -> String {
    let host = match authority.strip_prefix('[') {
        // `[v6]:port`: keep the brackets.
        Some(rest) => match rest.split_once(']') {
            Some((v6, _)) => format!("[{v6}]"),
            None => authority.to_owned(),
        },
        None => authority
            .split_once(':')
            .map_or(authority, |(h, _)| h)
            .to_owned(),
    };
    let path = if path.starts_with('/') { path } else { "/" };
    if https_port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{https_port}{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_keep_path_and_query_and_swap_the_port() {
        let cases = [
            ("app.test", 443, "/a?b=c", "https://app.test/a?b=c"),
            ("app.test:8080", 443, "/", "https://app.test/"),
            ("app.test:8080", 8443, "/x", "https://app.test:8443/x"),
            ("[::1]:8080", 8443, "/", "https://[::1]:8443/"),
            ("[::1]", 443, "/p", "https://[::1]/p"),
            ("app.test", 443, "*", "https://app.test/"),
        ];
        for (authority, port, path, want) in cases {
            assert_eq!(
                redirect_location(authority, port, path),
                want,
                "{authority}"
            );
        }
    }
}
