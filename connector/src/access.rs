//! `connector access tcp|ssh`: the client side of TCP through the tunnel.
//!
//! Each local connection (an accepted socket for `tcp`, stdin/stdout for
//! `ssh`) becomes one WebSocket to the edge, `GET /` with `Host: <hostname>`
//! and the `warren-tcp` subprotocol; the edge carries it as a `tcp` stream
//! to the connector that serves the hostname. After the 101 the bytes go as
//! binary frames both ways. A local EOF sends a Close frame (no more data
//! from us) and the other direction keeps going until the edge's Close, so
//! a half-closed client still gets the whole answer.
//!
//! No token is sent: the edge is the authentication boundary (it only
//! accepts these WebSockets for hostnames whose tunnel declares TCP).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::header::{CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, UPGRADE};
use http::{HeaderValue, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tunnel::websocket::{Role, SUBPROTOCOL, WsStream};

/// Flags shared by `access tcp` and `access ssh`.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessArgs {
    /// The hostname of the TCP service, as the edge's tunnels file lists it
    /// in `tcp_hostnames` (sent as the Host header and, over https, as the
    /// TLS server name).
    #[arg(long, value_name = "HOST")]
    pub hostname: String,
    /// The edge's listener: `https://EDGE[:PORT]` (TLS, the certificate
    /// must be valid for --hostname) or `http://EDGE[:PORT]` (plain, for a
    /// listener behind your own TLS or on a trusted network).
    #[arg(long, value_name = "URL")]
    pub edge_url: String,
    /// Trust only the CA certificates in this PEM file for the edge
    /// (a private CA) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// How long to wait for the TCP connection, the TLS handshake and the
    /// edge's answer to the WebSocket request, all together.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub connect_timeout: Duration,
}

/// `connector access` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AccessCommand {
    /// Listen on a local TCP address; each accepted connection is carried
    /// to the TCP service of --hostname.
    ///
    /// Example: `connector access tcp --hostname db.example.com --listen
    /// 127.0.0.1:5433 --edge-url https://edge.example.com`, then connect
    /// your client to 127.0.0.1:5433. A connection the edge refuses is
    /// closed and the reason logged; the listener keeps serving.
    Tcp {
        /// The hostname, edge and trust flags.
        #[command(flatten)]
        access: AccessArgs,
        /// The local address to listen on, e.g. 127.0.0.1:2222.
        #[arg(long, value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Carry stdin/stdout to the TCP service of --hostname: an SSH
    /// ProxyCommand.
    ///
    /// Once:
    ///
    ///   ssh -o ProxyCommand='connector access ssh --hostname %h --edge-url https://edge.example.com' \
    ///       user@ssh.example.com
    ///
    /// or in ~/.ssh/config:
    ///
    ///   Host ssh.example.com
    ///       ProxyCommand connector access ssh --hostname %h --edge-url https://edge.example.com
    ///
    /// ssh replaces %h with the host you typed. When the edge refuses, exits
    /// non-zero with one line on stderr naming the status and its likely
    /// cause.
    #[command(verbatim_doc_comment)]
    Ssh {
        /// The hostname, edge and trust flags.
        #[command(flatten)]
        access: AccessArgs,
    },
}

/// Where and how to reach the edge, checked once.
#[derive(Clone)]
pub struct Dialer {
    hostname: String,
    /// `HOST:PORT` of the edge listener.
    address: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    timeout: Duration,
}

/// What went wrong opening the WebSocket; the text is the one line a user
/// sees.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No TCP connection to the edge.
    #[error("cannot connect to the edge at {address}: {source}")]
    Connect {
        /// The edge address dialed.
        address: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// The TLS handshake with the edge failed.
    #[error(
        "TLS handshake with the edge at {address} failed: {source} (is the edge's certificate valid for the hostname? use --ca-cert for a private CA)"
    )]
    Tls {
        /// The edge address dialed.
        address: String,
        /// The handshake error.
        source: std::io::Error,
    },
    /// The HTTP/1.1 exchange failed.
    #[error("the edge's answer to the WebSocket request failed: {0}")]
    Http(#[from] hyper::Error),
    /// The edge answered, but not with 101.
    #[error("the edge answered {status}: {cause}")]
    Refused {
        /// The edge's status.
        status: StatusCode,
        /// The likely cause and fix.
        cause: String,
    },
    /// A 101 that is not a valid `warren-tcp` WebSocket.
    #[error("the edge's 101 is not a valid WebSocket answer: {0}")]
    BadUpgrade(&'static str),
    /// Nothing within --connect-timeout.
    #[error("no answer from the edge within {0:?} (--connect-timeout)")]
    Timeout(Duration),
}

impl Dialer {
    /// Checks the flags: the URL's scheme and host, the CA file.
    pub fn new(args: &AccessArgs) -> anyhow::Result<Self> {
        let hostname = args.hostname.trim().to_ascii_lowercase();
        if hostname.is_empty() || HeaderValue::from_str(&hostname).is_err() {
            anyhow::bail!("--hostname `{}` is not a hostname", args.hostname);
        }
        let (tls, address) = parse_edge_url(&args.edge_url)?;
        let tls = if tls {
            let server_name = ServerName::try_from(hostname.clone()).map_err(|_| {
                anyhow::anyhow!("--hostname `{hostname}` is not a valid TLS server name")
            })?;
            let config = tls_config(args.ca_cert.as_deref())?;
            Some((TlsConnector::from(config), server_name))
        } else {
            if args.ca_cert.is_some() {
                anyhow::bail!(
                    "--ca-cert is for an https:// --edge-url; `{}` is plain http",
                    args.edge_url
                );
            }
            None
        };
        Ok(Self {
            hostname,
            address,
            tls,
            timeout: args.connect_timeout,
        })
    }

    /// Opens one WebSocket to the edge and checks the 101.
    pub async fn open(&self) -> Result<WsStream<TokioIo<hyper::upgrade::Upgraded>>, OpenError> {
        tokio::time::timeout(self.timeout, self.open_inner())
            .await
            .map_err(|_| OpenError::Timeout(self.timeout))?
    }

    async fn open_inner(&self) -> Result<WsStream<TokioIo<hyper::upgrade::Upgraded>>, OpenError> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .map_err(|source| OpenError::Connect {
                address: self.address.clone(),
                source,
            })?;
        // Interactive traffic (ssh keystrokes) must not wait for Nagle.
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(
                connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|source| OpenError::Tls {
                        address: self.address.clone(),
                        source,
                    })?,
            ),
        };
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "edge connection failed");
            }
        });
        let key = tunnel::websocket::client_key();
        let req = http::Request::builder()
            .uri("/")
            .header(HOST, &self.hostname)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "Upgrade")
            .header("sec-websocket-version", "13")
            .header(SEC_WEBSOCKET_KEY, &key)
            .header("sec-websocket-protocol", SUBPROTOCOL)
            .body(Empty::<bytes::Bytes>::new())
            .map_err(|_| OpenError::BadUpgrade("request"))?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        if status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(OpenError::Refused {
                status,
                cause: refusal_cause(status, &self.hostname),
            });
        }
        check_upgrade(resp.headers(), &key)?;
        let upgraded = hyper::upgrade::on(resp).await?;
        Ok(WsStream::new(TokioIo::new(upgraded), Role::Client))
    }
}

/// The 101's headers: the accept key for our key, and our subprotocol.
fn check_upgrade(headers: &http::HeaderMap, key: &str) -> Result<(), OpenError> {
    let want = tunnel::websocket::accept_key(key.as_bytes());
    match headers.get(SEC_WEBSOCKET_ACCEPT) {
        Some(v) if v.as_bytes() == want.as_bytes() => {}
        Some(_) => return Err(OpenError::BadUpgrade("wrong Sec-WebSocket-Accept")),
        None => return Err(OpenError::BadUpgrade("no Sec-WebSocket-Accept")),
    }
    let proto = headers
        .get("sec-websocket-protocol")
        .map(|v| v.as_bytes().trim_ascii());
    if proto != Some(SUBPROTOCOL.as_bytes()) {
        return Err(OpenError::BadUpgrade(
            "no Sec-WebSocket-Protocol: warren-tcp (an edge without TCP support?)",
        ));
    }
    Ok(())
}

/// One line on what a refusal most likely means and what to check.
fn refusal_cause(status: StatusCode, hostname: &str) -> String {
    match status.as_u16() {
        404 => format!(
            "the edge has no TCP service for {hostname}: check `tcp_hostnames` in the edge's tunnels file"
        ),
        502 => format!(
            "no connector of {hostname}'s tunnel is connected, or it could not reach the origin (refused): check the connector's log and its ingress rule for {hostname}"
        ),
        504 => format!(
            "the connector's origin for {hostname} did not accept the connection in time: check that it listens"
        ),
        400 => format!(
            "the edge or the connector refused the request: does the connector's rule for {hostname} point at a tcp:// or ssh:// service?"
        ),
        429 | 503 => format!(
            "the edge's connection limits for {hostname}'s tunnel or for this client are reached: retry later"
        ),
        _ => format!("unexpected answer to the WebSocket request for {hostname}"),
    }
}

/// The edge URL: (TLS?, `HOST:PORT`).
fn parse_edge_url(url: &str) -> anyhow::Result<(bool, String)> {
    let bad = |why: &str| {
        anyhow::anyhow!("--edge-url `{url}` {why}: give https://EDGE[:PORT] or http://EDGE[:PORT]")
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let tls = match parsed.scheme() {
        "https" => true,
        "http" => false,
        other => return Err(bad(&format!("has scheme `{other}`"))),
    };
    let host = parsed.host_str().ok_or_else(|| bad("has no host"))?;
    if !matches!(parsed.path(), "" | "/") || parsed.query().is_some() {
        return Err(bad("has a path; the WebSocket always goes to /"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(bad("has credentials; none are needed"));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| bad("has no port"))?;
    // host_str keeps IPv6 brackets, which is what a socket address wants.
    Ok((tls, format!("{host}:{port}")))
}

/// TLS to the edge: the system's roots through the platform verifier (as
/// the connector's https origins), or only the CAs of `--ca-cert`.
fn tls_config(ca_cert: Option<&Path>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match ca_cert {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-cert {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert
                    .map_err(|e| anyhow::anyhow!("--ca-cert {} is not PEM: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| anyhow::anyhow!("--ca-cert {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                anyhow::bail!("--ca-cert {} holds no certificate", path.display());
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(rustls_platform_verifier::Verifier::new(
                provider,
            )?)),
    };
    let mut config = builder.with_no_client_auth();
    // The WebSocket upgrade is HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Read buffer per direction: large frames for bulk transfers, bounded
/// memory per connection.
const COPY_BUFFER: usize = 64 * 1024;

/// Copies both ways until both directions ended: local EOF -> Close frame
/// to the edge; the edge's Close -> shutdown of the local write side.
/// Returns the bytes sent and received.
pub async fn splice<R, W, S>(
    local_read: R,
    mut local_write: W,
    ws: S,
) -> std::io::Result<(u64, u64)>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (ws_read, mut ws_write) = tokio::io::split(ws);
    let up = async {
        let mut local = BufReader::with_capacity(COPY_BUFFER, local_read);
        let n = tokio::io::copy_buf(&mut local, &mut ws_write).await?;
        ws_write.shutdown().await?;
        Ok::<_, std::io::Error>(n)
    };
    let down = async {
        let mut ws = BufReader::with_capacity(COPY_BUFFER, ws_read);
        let n = tokio::io::copy_buf(&mut ws, &mut local_write).await?;
        local_write.shutdown().await?;
        Ok::<_, std::io::Error>(n)
    };
    tokio::try_join!(up, down)
}

/// `connector access tcp`: serves the listener until SIGTERM/SIGINT.
pub async fn serve_tcp(dialer: Dialer, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen} (--listen)"))?;
    let local = listener.local_addr()?;
    tracing::info!(listen = %local, hostname = %dialer.hostname, edge = %dialer.address,
        "access tcp listening");
    let dialer = Arc::new(dialer);
    let accept = async {
        loop {
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let dialer = dialer.clone();
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let ws = match dialer.open().await {
                    Ok(ws) => ws,
                    Err(e) => {
                        // Dropping the socket closes the client's
                        // connection; the listener keeps serving.
                        tracing::warn!(%peer, hostname = %dialer.hostname, "{e}");
                        return;
                    }
                };
                let (r, w) = sock.into_split();
                match splice(r, w, ws).await {
                    Ok((up, down)) => {
                        tracing::debug!(%peer, bytes_sent = up, bytes_received = down, "connection done")
                    }
                    Err(e) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
                }
            });
        }
    };
    tokio::select! {
        () = accept => Ok(()),
        signal = daemon::signal::shutdown() => {
            tracing::info!(signal, "access tcp stopping");
            Ok(())
        }
    }
}

/// `connector access ssh`: stdin/stdout through one WebSocket. Returns
/// when the edge's side has ended (ssh waits for our stdout to close).
pub async fn run_ssh(dialer: Dialer) -> anyhow::Result<()> {
    let ws = dialer.open().await?;
    let (ws_read, mut ws_write) = tokio::io::split(ws);
    let up = async {
        let mut stdin = BufReader::with_capacity(COPY_BUFFER, tokio::io::stdin());
        tokio::io::copy_buf(&mut stdin, &mut ws_write).await?;
        ws_write.shutdown().await
    };
    let down = async {
        let mut ws = BufReader::with_capacity(COPY_BUFFER, ws_read);
        let mut stdout = tokio::io::stdout();
        tokio::io::copy_buf(&mut ws, &mut stdout).await?;
        stdout.flush().await
    };
    // Stdout cannot be half-closed while the process lives, and ssh waits
    // for its EOF: once the edge's side is done, so are we. Until then,
    // ssh's EOF on stdin is passed on as a Close frame.
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            r = &mut up, if !up_done => {
                up_done = true;
                r.context("sending to the edge")?;
            }
            r = &mut down => {
                return r.context("receiving from the edge");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_urls_are_checked() {
        let cases: &[(&str, Option<(bool, &str)>)] = &[
            (
                "https://edge.example.com",
                Some((true, "edge.example.com:443")),
            ),
            (
                "https://edge.example.com/",
                Some((true, "edge.example.com:443")),
            ),
            ("http://127.0.0.1:8080", Some((false, "127.0.0.1:8080"))),
            ("http://[::1]:8080", Some((false, "[::1]:8080"))),
            ("https://edge:8443", Some((true, "edge:8443"))),
            ("ws://edge", None),
            ("edge.example.com", None),
            ("https://edge.example.com/tunnel", None),
            ("https://user:pw@edge.example.com", None),
            ("https://edge.example.com/?a=b", None),
        ];
        for (url, want) in cases {
            let got = parse_edge_url(url).ok();
            assert_eq!(got.as_ref().map(|(t, a)| (*t, a.as_str())), *want, "{url}");
        }
    }

    #[test]
    fn refusals_name_the_cause() {
        let t = refusal_cause(StatusCode::NOT_FOUND, "ssh.example.com");
        assert!(
            t.contains("tcp_hostnames") && t.contains("ssh.example.com"),
            "{t}"
        );
        for s in [400, 429, 500, 502, 503, 504] {
            let t = refusal_cause(StatusCode::from_u16(s).unwrap(), "h");
            assert!(!t.is_empty() && !t.contains('\n'));
        }
    }

    #[test]
    fn a_101_needs_the_accept_key_and_the_subprotocol() {
        let key = tunnel::websocket::client_key();
        let mut h = http::HeaderMap::new();
        assert!(check_upgrade(&h, &key).is_err());
        h.insert(
            SEC_WEBSOCKET_ACCEPT,
            HeaderValue::from_str(&tunnel::websocket::accept_key(key.as_bytes())).unwrap(),
        );
        assert!(check_upgrade(&h, &key).is_err());
        h.insert(
            "sec-websocket-protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        assert!(check_upgrade(&h, &key).is_ok());
        h.insert(SEC_WEBSOCKET_ACCEPT, HeaderValue::from_static("AAAA"));
        assert!(check_upgrade(&h, &key).is_err());
    }

    #[tokio::test]
    async fn splice_passes_half_close_both_ways() {
        // Local side: a duplex pair; "ws" side: another duplex pair.
        let (local_client, local_ours) = tokio::io::duplex(1024);
        let (ws_ours, mut ws_peer) = tokio::io::duplex(1024);
        let (lr, lw) = tokio::io::split(local_ours);
        let task = tokio::spawn(splice(lr, lw, ws_ours));
        let (mut cr, mut cw) = tokio::io::split(local_client);
        use tokio::io::AsyncReadExt;
        cw.write_all(b"request").await.unwrap();
        cw.shutdown().await.unwrap();
        let mut got = Vec::new();
        ws_peer.read_to_end(&mut got).await.unwrap_or_default();
        // read_to_end on a duplex ends when our side shut down its write.
        assert_eq!(got, b"request");
        ws_peer.write_all(b"answer").await.unwrap();
        ws_peer.shutdown().await.unwrap();
        let mut answer = Vec::new();
        cr.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        assert_eq!(task.await.unwrap().unwrap(), (7, 6));
    }
}
