//! Origin options and clients: one pooled client per ingress rule (hyper's,
//! with a connector that always dials the rule's origin), with connect and
//! response timeouts and the rule's TLS settings. The client speaks HTTP/1.1,
//! or HTTP/2 only with `http2_origin` (h2c prior knowledge for `http://` and
//! unix sockets, ALPN `h2` for `https://`): gRPC origins need HTTP/2.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::{Client, ResponseFuture};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::ingress::{Ingress, Service};
use crate::upload::RequestBody;

/// Default of `origin_request.request_body_idle_timeout`.
pub const DEFAULT_REQUEST_BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Origin settings as written in the config (all optional, so a rule's
/// settings can lie over the top-level ones).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginRequest {
    /// Longest wait for a TCP (and TLS) connection to the origin. [default: 10s]
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    pub connect_timeout: Option<Duration>,
    /// Longest wait for the origin's response head, counted from the end of
    /// the request body. [default: 90s]
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    pub response_timeout: Option<Duration>,
    /// Longest wait for the next bytes of a request body from the tunnel
    /// (the client stalled), or for the origin to take more of it (the
    /// origin stalled). The response timeout starts only once the body is
    /// complete, so this is what bounds a stalled upload. [default: 60s]
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    pub request_body_idle_timeout: Option<Duration>,
    /// PEM file of CAs trusted for an https origin (instead of the system's).
    #[serde(default)]
    pub ca_pool: Option<PathBuf>,
    /// Accept any origin certificate. For origins with self-signed certs only.
    #[serde(default)]
    pub no_tls_verify: Option<bool>,
    /// Host header sent to the origin instead of the client's.
    #[serde(default)]
    pub http_host_header: Option<String>,
    /// Idle connections kept per origin. [default: 100]
    #[serde(default)]
    pub keep_alive_connections: Option<usize>,
    /// How long an idle origin connection is kept. [default: 90s]
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    pub keep_alive_timeout: Option<Duration>,
    /// Speak HTTP/2 to the origin (cloudflared's `http2Origin`): h2c with
    /// prior knowledge for `http://` and unix sockets, TLS with ALPN `h2`
    /// for `https://`. Needed for gRPC. [default: false, HTTP/1.1]
    #[serde(default)]
    pub http2_origin: Option<bool>,
    /// TCP services only: write a PROXY protocol header with the real
    /// client's address before any payload. The only value is `v2`. As a
    /// top-level default it applies to the TCP rules. [default: none]
    #[serde(default)]
    pub proxy_protocol: Option<String>,
}

impl OriginRequest {
    /// These settings, falling back to `base` for the ones not set.
    pub fn over(&self, base: &OriginRequest) -> OriginRequest {
        OriginRequest {
            connect_timeout: self.connect_timeout.or(base.connect_timeout),
            response_timeout: self.response_timeout.or(base.response_timeout),
            request_body_idle_timeout: self
                .request_body_idle_timeout
                .or(base.request_body_idle_timeout),
            ca_pool: self.ca_pool.clone().or_else(|| base.ca_pool.clone()),
            no_tls_verify: self.no_tls_verify.or(base.no_tls_verify),
            http_host_header: self
                .http_host_header
                .clone()
                .or_else(|| base.http_host_header.clone()),
            keep_alive_connections: self.keep_alive_connections.or(base.keep_alive_connections),
            keep_alive_timeout: self.keep_alive_timeout.or(base.keep_alive_timeout),
            http2_origin: self.http2_origin.or(base.http2_origin),
            proxy_protocol: self
                .proxy_protocol
                .clone()
                .or_else(|| base.proxy_protocol.clone()),
        }
    }

    /// Fills in defaults and checks the values.
    pub fn resolve(&self) -> Result<OriginOptions, String> {
        let o = OriginOptions {
            connect_timeout: self.connect_timeout.unwrap_or(Duration::from_secs(10)),
            response_timeout: self.response_timeout.unwrap_or(Duration::from_secs(90)),
            request_body_idle_timeout: self
                .request_body_idle_timeout
                .unwrap_or(DEFAULT_REQUEST_BODY_IDLE_TIMEOUT),
            ca_pool: self.ca_pool.clone(),
            no_tls_verify: self.no_tls_verify.unwrap_or(false),
            http_host_header: self.http_host_header.clone(),
            keep_alive_connections: self.keep_alive_connections.unwrap_or(100),
            keep_alive_timeout: self.keep_alive_timeout.unwrap_or(Duration::from_secs(90)),
            http2_origin: self.http2_origin.unwrap_or(false),
            proxy_protocol: self
                .proxy_protocol
                .as_deref()
                .map(crate::proxy_protocol::Version::parse)
                .transpose()?,
        };
        if o.connect_timeout.is_zero() {
            return Err("connect_timeout must be more than zero".into());
        }
        if o.response_timeout.is_zero() {
            return Err("response_timeout must be more than zero".into());
        }
        if o.request_body_idle_timeout.is_zero() {
            return Err("request_body_idle_timeout must be more than zero".into());
        }
        if let Some(h) = &o.http_host_header
            && http::HeaderValue::from_str(h).is_err()
        {
            return Err(format!(
                "http_host_header `{h}` is not a valid header value"
            ));
        }
        Ok(o)
    }
}

/// Checked origin settings of one rule.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginOptions {
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Response-head timeout, from the end of the request body.
    pub response_timeout: Duration,
    /// Idle timeout of the request body.
    pub request_body_idle_timeout: Duration,
    /// Trusted CAs for https origins.
    pub ca_pool: Option<PathBuf>,
    /// Skip origin certificate checks.
    pub no_tls_verify: bool,
    /// Host header override.
    pub http_host_header: Option<String>,
    /// Idle pool size per origin.
    pub keep_alive_connections: usize,
    /// Idle pool timeout.
    pub keep_alive_timeout: Duration,
    /// HTTP/2 (only) to the origin.
    pub http2_origin: bool,
    /// The PROXY protocol header a TCP rule writes first (`None` on every
    /// rule that is not TCP).
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
}

/// One client per rule (`None` for rules the connector answers itself).
#[derive(Debug, Clone)]
pub struct OriginClients(Vec<Option<OriginClient>>);

impl OriginClients {
    /// Builds the clients; fails when a CA file cannot be read.
    pub fn build(ingress: &Ingress) -> anyhow::Result<Self> {
        Self::build_with(ingress, |_| None)
    }

    /// Builds the clients of a reloaded `ingress`, taking over the client
    /// (and so its pool of idle origin connections) of a rule of `old` with
    /// the same service and options. A rule with a `ca_pool` always gets a
    /// new client, so a reload reads its CA file again.
    pub fn rebuild(
        ingress: &Ingress,
        old: &Ingress,
        old_clients: &OriginClients,
    ) -> anyhow::Result<Self> {
        Self::build_with(ingress, |rule| {
            if rule.origin.ca_pool.is_some() {
                return None;
            }
            let same = old
                .rules()
                .iter()
                .position(|o| o.service == rule.service && o.origin == rule.origin)?;
            old_clients.get(same).cloned()
        })
    }

    fn build_with(
        ingress: &Ingress,
        reuse: impl Fn(&crate::ingress::Rule) -> Option<OriginClient>,
    ) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for (i, rule) in ingress.rules().iter().enumerate() {
            let client = match &rule.service {
                // The connector answers these itself, or dials them in
                // `crate::tcp` (a connection per stream, no pool).
                Service::Status(_) | Service::Tcp { .. } | Service::UnixTcp(_) => None,
                Service::Http { .. } | Service::Unix(_) => match reuse(rule) {
                    Some(client) => Some(client),
                    None => Some(
                        OriginClient::new(&rule.service, &rule.origin)
                            .map_err(|e| anyhow::anyhow!("ingress rule #{}: {e}", i + 1))?,
                    ),
                },
            };
            clients.push(client);
        }
        Ok(Self(clients))
    }

    /// The client of rule `index`.
    pub fn get(&self, index: usize) -> Option<&OriginClient> {
        self.0.get(index).and_then(Option::as_ref)
    }
}

/// TCP keep-alive probes on origin connections (reqwest's defaults, which
/// the connector used before it drove hyper itself).
const TCP_KEEPALIVE: Duration = Duration::from_secs(15);
const TCP_KEEPALIVE_RETRIES: u32 = 3;
#[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// A TCP dialer with the origin sockets' settings: `connect_timeout` (per
/// address tried), no Nagle delay, keep-alive probes that find a dead peer
/// of an idle connection. HTTP origins and TCP services share it.
pub(crate) fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.set_keepalive(Some(TCP_KEEPALIVE));
    http.set_keepalive_interval(Some(TCP_KEEPALIVE));
    http.set_keepalive_retries(Some(TCP_KEEPALIVE_RETRIES));
    #[cfg(any(target_os = "android", target_os = "fuchsia", target_os = "linux"))]
    http.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT));
    http
}

/// The pooled client of one rule. Its requests carry an absolute URI made of
/// the scheme and authority computed once here (the pool key) and the
/// request's checked path; the connector ignores that URI and always dials
/// the rule's origin.
#[derive(Clone)]
pub struct OriginClient {
    client: Client<Dialer, RequestBody>,
    /// The client's dialer, for connections of their own (WebSocket).
    dialer: Dialer,
    scheme: Scheme,
    authority: Authority,
    http2: bool,
}

impl fmt::Debug for OriginClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginClient")
            .field("scheme", &self.scheme)
            .field("authority", &self.authority)
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

impl OriginClient {
    fn new(service: &Service, o: &OriginOptions) -> anyhow::Result<Self> {
        // Read (and checked) for every rule, as before: a bad file fails
        // the start even when no https origin uses it.
        let roots = o.ca_pool.as_deref().map(read_ca_pool).transpose()?;
        // The origin as reqwest saw it: the URL library's reading of the
        // rule's scheme and authority (IDNA, default ports), then `Uri`.
        let base = match service {
            Service::Http { scheme, authority } => format!("{scheme}://{authority}/"),
            // The socket is the origin; the URI only names the pool.
            Service::Unix(_) => "http://localhost/".to_string(),
            Service::Status(_) | Service::Tcp { .. } | Service::UnixTcp(_) => {
                anyhow::bail!("a status or TCP rule has no HTTP origin")
            }
        };
        let url = reqwest::Url::parse(&base)?;
        let uri: Uri = url.as_str().parse()?;
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            anyhow::bail!("origin `{base}` has no scheme or host");
        };
        let target = match service {
            Service::Unix(path) => DialTarget::Unix(path.clone()),
            _ => {
                let http = tcp_connector(o.connect_timeout);
                let tls = if scheme == Scheme::HTTPS {
                    let host = authority.host();
                    let host = host
                        .strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .unwrap_or(host);
                    Some(Tls {
                        connector: TlsConnector::from(tls_config(o, roots)?),
                        server_name: ServerName::try_from(host.to_string()).ok(),
                    })
                } else {
                    None
                };
                DialTarget::Tcp { http, uri, tls }
            }
        };
        let dialer = Dialer(Arc::new(Dial {
            target,
            connect_timeout: o.connect_timeout,
        }));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(o.keep_alive_timeout)
            .pool_max_idle_per_host(o.keep_alive_connections);
        if o.http2_origin {
            // One connection carries many streams; the pool keeps it for
            // the next request. No HTTP/1.1 fallback: an origin that wants
            // h2 (gRPC) would fail on it in a less clear way.
            builder.http2_only(true);
        }
        let client = builder.build(dialer.clone());
        Ok(Self {
            client,
            dialer,
            scheme,
            authority,
            http2: o.http2_origin,
        })
    }

    /// The request URI of a checked path and query on this origin.
    pub fn uri(&self, path_and_query: PathAndQuery) -> Uri {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).expect("scheme, authority and path make a URI")
    }

    /// `uri` (from [`OriginClient::uri`]) with `authority` in place of the
    /// origin's: the `:authority` of an HTTP/2 request.
    pub fn uri_at(&self, authority: Authority, uri: Uri) -> Uri {
        let mut parts = uri.into_parts();
        parts.authority = Some(authority);
        Uri::from_parts(parts).expect("a URI with another authority is a URI")
    }

    /// Whether this client speaks HTTP/2 to the origin (`http2_origin`).
    pub fn http2(&self) -> bool {
        self.http2
    }

    /// A new connection to the rule's origin, never one from the pool, with
    /// the client's connect timeout, TCP keep-alive and TLS settings: for a
    /// WebSocket upgrade, which takes the connection over for good.
    pub async fn connect_own(
        &self,
    ) -> Result<impl hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static, ConnectError>
    {
        tower_service::Service::call(&mut self.dialer.clone(), Uri::default()).await
    }

    /// Sends a request built with [`OriginClient::uri`].
    pub fn request(&self, req: http::Request<RequestBody>) -> ResponseFuture {
        self.client.request(req)
    }
}

fn read_ca_pool(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let pem = std::fs::read(path)
        .map_err(|e| anyhow::anyhow!("cannot read ca_pool {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert =
            cert.map_err(|e| anyhow::anyhow!("ca_pool {} is not PEM: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("ca_pool {}: {e}", path.display()))?;
    }
    Ok(roots)
}

/// TLS to an https origin: the system's roots (through the platform
/// verifier, as reqwest did), or only `ca_pool`'s, or no checks at all with
/// `no_tls_verify`; HTTP/1.1 in the ALPN, or only `h2` with `http2_origin`
/// (an origin that does not offer it fails the handshake: a clear error
/// instead of HTTP/2 frames sent to an HTTP/1.1 server).
fn tls_config(
    o: &OriginOptions,
    roots: Option<rustls::RootCertStore>,
) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if o.no_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate))
    } else if let Some(roots) = roots {
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(rustls_platform_verifier::Verifier::new(
                provider,
            )?))
    };
    let mut config = builder.with_no_client_auth();
    config.alpn_protocols = if o.http2_origin {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// `no_tls_verify`: any certificate and any signature, as reqwest's
/// `danger_accept_invalid_certs` did.
#[derive(Debug)]
struct AcceptAnyCertificate;

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![
            SignatureScheme::RSA_PKCS1_SHA1,
            SignatureScheme::ECDSA_SHA1_Legacy,
            SignatureScheme::RSA_PKCS1_SHA256,
            SignatureScheme::ECDSA_NISTP256_SHA256,
            SignatureScheme::RSA_PKCS1_SHA384,
            SignatureScheme::ECDSA_NISTP384_SHA384,
            SignatureScheme::RSA_PKCS1_SHA512,
            SignatureScheme::ECDSA_NISTP521_SHA512,
            SignatureScheme::RSA_PSS_SHA256,
            SignatureScheme::RSA_PSS_SHA384,
            SignatureScheme::RSA_PSS_SHA512,
            SignatureScheme::ED25519,
            SignatureScheme::ED448,
        ]
    }
}

/// Why a new origin connection failed (the cause is its source).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection (and TLS handshake) took longer than `connect_timeout`.
    #[error("connecting took longer than {0:?}")]
    Timeout(Duration),
    /// No TCP connection (refused, unreachable, no address for the name).
    #[error("cannot connect")]
    Tcp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// No connection to the unix socket.
    #[error("cannot connect to the unix socket")]
    Unix(#[source] io::Error),
    /// The TLS handshake failed: certificate, protocol, ALPN.
    #[error("TLS handshake failed")]
    Tls(#[source] rustls::Error),
    /// The connection failed during the TLS handshake.
    #[error("connection failed during the TLS handshake")]
    Handshake(#[source] io::Error),
    /// The origin's host is not a name TLS can check.
    #[error("the origin host is not a valid TLS server name")]
    ServerName,
}

struct Tls {
    connector: TlsConnector,
    /// `None` when the host is not a valid server name (fails each connect,
    /// as it did with reqwest).
    server_name: Option<ServerName<'static>>,
}

enum DialTarget {
    Tcp {
        http: HttpConnector,
        uri: Uri,
        tls: Option<Tls>,
    },
    Unix(PathBuf),
}

struct Dial {
    target: DialTarget,
    connect_timeout: Duration,
}

impl Dial {
    async fn connect(&self) -> Result<OriginIo, ConnectError> {
        match &self.target {
            DialTarget::Unix(path) => Ok(OriginIo::Unix(
                UnixStream::connect(path)
                    .await
                    .map_err(ConnectError::Unix)?,
            )),
            DialTarget::Tcp { http, uri, tls } => {
                let mut http = http.clone();
                let tcp = tower_service::Service::call(&mut http, uri.clone())
                    .await
                    .map_err(|e| ConnectError::Tcp(Box::new(e)))?
                    .into_inner();
                let Some(tls) = tls else {
                    return Ok(OriginIo::Tcp(tcp));
                };
                let name = tls.server_name.clone().ok_or(ConnectError::ServerName)?;
                match tls.connector.connect(name, tcp).await {
                    Ok(stream) => Ok(OriginIo::Tls(Box::new(stream))),
                    Err(e) => match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                        Some(tls) => Err(ConnectError::Tls(tls.clone())),
                        None => Err(ConnectError::Handshake(e)),
                    },
                }
            }
        }
    }
}

/// The client's connector: always the rule's origin, whatever the URI.
#[derive(Clone)]
struct Dialer(Arc<Dial>);

impl tower_service::Service<Uri> for Dialer {
    type Response = TokioIo<OriginIo>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let dial = self.0.clone();
        Box::pin(async move {
            match tokio::time::timeout(dial.connect_timeout, dial.connect()).await {
                Ok(io) => io.map(TokioIo::new),
                Err(_) => Err(ConnectError::Timeout(dial.connect_timeout)),
            }
        })
    }
}

/// One origin connection.
enum OriginIo {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
    /// A unix socket.
    Unix(UnixStream),
}

impl Connection for OriginIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

macro_rules! each_io {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            OriginIo::Tcp($s) => {
                let $s = Pin::new($s);
                $e
            }
            OriginIo::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
            OriginIo::Unix($s) => {
                let $s = Pin::new($s);
                $e
            }
        }
    };
}

impl AsyncRead for OriginIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each_io!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for OriginIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        each_io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each_io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            OriginIo::Tcp(s) => s.is_write_vectored(),
            OriginIo::Tls(s) => s.is_write_vectored(),
            OriginIo::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_io!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::header::HOST;
    use http_body_util::{BodyExt, Full};
    use tokio::net::{TcpListener, UnixListener};
    use tunnel::message::StreamErrorKind;

    use super::*;
    use crate::stream::classify;

    /// Answers every request with its method, target and Host.
    fn serve<I>(io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| {
                let host = req
                    .headers()
                    .get(HOST)
                    .map_or("-".to_string(), |h| h.to_str().unwrap().to_string());
                let text = format!("{} {} {host}", req.method(), req.uri());
                async move {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        bytes::Bytes::from(text),
                    )))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }

    fn options(f: impl FnOnce(&mut OriginRequest)) -> OriginOptions {
        let mut o = OriginRequest::default();
        f(&mut o);
        o.resolve().unwrap()
    }

    async fn get(
        c: &OriginClient,
        target: &'static str,
    ) -> Result<String, hyper_util::client::legacy::Error> {
        let mut req = http::Request::new(crate::upload::no_body());
        *req.uri_mut() = c.uri(PathAndQuery::from_static(target));
        req.headers_mut()
            .insert(HOST, http::HeaderValue::from_static("app.test"));
        let resp = c.request(req).await?;
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        Ok(String::from_utf8(body.to_vec()).unwrap())
    }

    fn temp_path(name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("warren-origin-{}-{n}-{name}", std::process::id()))
    }

    #[tokio::test]
    async fn http_origins_pool_their_connections_as_configured() {
        for (keep, want_conns) in [(100, 1), (0, 3)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let accepted = Arc::new(AtomicUsize::new(0));
            let count = accepted.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    serve(tcp);
                }
            });
            let service = Service::Http {
                scheme: "http".into(),
                authority: addr.to_string(),
            };
            let c = OriginClient::new(
                &service,
                &options(|o| o.keep_alive_connections = Some(keep)),
            )
            .unwrap();
            for _ in 0..3 {
                assert_eq!(get(&c, "/a/b?c=d").await.unwrap(), "GET /a/b?c=d app.test");
                // The connection goes back to the pool once the answer is read.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert_eq!(accepted.load(Ordering::SeqCst), want_conns, "keep {keep}");
        }
    }

    #[tokio::test]
    async fn unix_socket_origins() {
        let path = temp_path("app.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                serve(s);
            }
        });
        let c = OriginClient::new(&Service::Unix(path.clone()), &options(|_| {})).unwrap();
        assert_eq!(get(&c, "/x?y").await.unwrap(), "GET /x?y app.test");
        // Without the socket file, a new client cannot connect.
        std::fs::remove_file(&path).unwrap();
        let c = OriginClient::new(&Service::Unix(path), &options(|_| {})).unwrap();
        let e = get(&c, "/gone").await.unwrap_err();
        assert_eq!(classify(&e), StreamErrorKind::OriginUnreachable, "{e:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let service = Service::Http {
            scheme: "http".into(),
            authority: addr.to_string(),
        };
        let c = OriginClient::new(&service, &options(|_| {})).unwrap();
        let e = get(&c, "/").await.unwrap_err();
        assert_eq!(classify(&e), StreamErrorKind::OriginUnreachable, "{e:?}");
    }

    #[tokio::test]
    async fn https_origins_check_the_certificate_as_configured() {
        let certs = tunnel::dev_cert::generate(&[]).unwrap();
        let ca = temp_path("ca.pem");
        std::fs::write(&ca, &certs.ca_pem).unwrap();
        let chain = CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
        let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                        serve(tls);
                    }
                });
            }
        });
        let service = Service::Http {
            scheme: "https".into(),
            authority: addr.to_string(),
        };

        let trusted = options(|o| o.ca_pool = Some(ca.clone()));
        let c = OriginClient::new(&service, &trusted).unwrap();
        assert_eq!(get(&c, "/s").await.unwrap(), "GET /s app.test");

        let insecure = options(|o| o.no_tls_verify = Some(true));
        let c = OriginClient::new(&service, &insecure).unwrap();
        assert_eq!(get(&c, "/s").await.unwrap(), "GET /s app.test");

        // The system's roots do not know the throw-away CA.
        let c = OriginClient::new(&service, &options(|_| {})).unwrap();
        let e = get(&c, "/s").await.unwrap_err();
        assert_eq!(classify(&e), StreamErrorKind::OriginTls, "{e:?}");

        // TLS to a plain-HTTP origin fails the handshake too.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_addr = plain.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = plain.accept().await {
                serve(tcp);
            }
        });
        let service = Service::Http {
            scheme: "https".into(),
            authority: plain_addr.to_string(),
        };
        let c = OriginClient::new(&service, &insecure).unwrap();
        let e = get(&c, "/s").await.unwrap_err();
        assert_eq!(classify(&e), StreamErrorKind::OriginTls, "{e:?}");
        std::fs::remove_file(&ca).unwrap();
    }

    /// What an HTTP/2 origin saw of a request.
    #[derive(Debug, Default)]
    struct Seen {
        version: Option<http::Version>,
        authority: Option<String>,
        host: Option<String>,
        te: Option<String>,
        body: Vec<u8>,
        trailers: Option<http::HeaderMap>,
    }

    /// An HTTP/2-only origin: records each request and answers `hello`
    /// with a `grpc-status: 0` trailer.
    fn serve_h2<I>(io: I, seen: Arc<std::sync::Mutex<Vec<Seen>>>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        tokio::spawn(async move {
            let svc =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let text = |n| {
                            req.headers()
                                .get(n)
                                .map(|v: &http::HeaderValue| v.to_str().unwrap().to_string())
                        };
                        let mut s = Seen {
                            version: Some(req.version()),
                            authority: req.uri().authority().map(|a| a.to_string()),
                            host: text(HOST),
                            te: text(http::header::TE),
                            ..Seen::default()
                        };
                        let collected = req.into_body().collect().await.unwrap();
                        s.trailers = collected.trailers().cloned();
                        s.body = collected.to_bytes().to_vec();
                        seen.lock().unwrap().push(s);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                        let frames = [
                            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                bytes::Bytes::from_static(b"hello"),
                            )),
                            Ok(hyper::body::Frame::trailers(trailers)),
                        ];
                        let body =
                            http_body_util::StreamBody::new(futures_util::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(http::Response::new(body))
                    }
                });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(io), svc)
                .await;
        });
    }

    /// A request with a body and trailers, as the tunnel's upload makes it.
    fn with_trailers(c: &OriginClient, host: &'static str) -> http::Request<RequestBody> {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("abc"));
        let frames = [
            Ok::<_, crate::upload::UploadError>(hyper::body::Frame::data(
                bytes::Bytes::from_static(b"ping"),
            )),
            Ok(hyper::body::Frame::trailers(trailers)),
        ];
        let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
        let mut req = http::Request::new(http_body_util::Either::Right(body.boxed_unsync()));
        *req.method_mut() = http::Method::POST;
        let uri = c.uri(PathAndQuery::from_static("/pkg.Svc/Call"));
        *req.uri_mut() = c.uri_at(Authority::from_static(host), uri);
        req.headers_mut()
            .insert(http::header::TE, http::HeaderValue::from_static("trailers"));
        req
    }

    #[tokio::test]
    async fn http2_origins_get_h2c_with_trailers_both_ways_on_one_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, log) = (accepted.clone(), seen.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                serve_h2(tcp, log.clone());
            }
        });
        let service = Service::Http {
            scheme: "http".into(),
            authority: addr.to_string(),
        };
        let c = OriginClient::new(&service, &options(|o| o.http2_origin = Some(true))).unwrap();
        assert!(c.http2());
        // Concurrent requests share the one connection (h2 streams).
        let calls = (0..3).map(|_| {
            let c = c.clone();
            async move {
                let resp = c.request(with_trailers(&c, "app.test")).await.unwrap();
                assert_eq!(resp.version(), http::Version::HTTP_2);
                let collected = resp.into_body().collect().await.unwrap();
                let trailers = collected.trailers().cloned().expect("response trailers");
                assert_eq!(trailers["grpc-status"], "0");
                assert_eq!(&collected.to_bytes()[..], b"hello");
            }
        });
        futures_util::future::join_all(calls).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        for s in seen.iter() {
            assert_eq!(s.version, Some(http::Version::HTTP_2));
            assert_eq!(s.authority.as_deref(), Some("app.test"), "{s:?}");
            assert_eq!(s.host, None, "HTTP/2 names the host in :authority only");
            assert_eq!(s.te.as_deref(), Some("trailers"));
            assert_eq!(s.body, b"ping");
            let t = s.trailers.as_ref().expect("request trailers");
            assert_eq!(t["x-checksum"], "abc");
        }
    }

    #[tokio::test]
    async fn http2_unix_socket_origins_get_h2c() {
        let path = temp_path("h2.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                serve_h2(s, log.clone());
            }
        });
        let h2 = options(|o| o.http2_origin = Some(true));
        let c = OriginClient::new(&Service::Unix(path.clone()), &h2).unwrap();
        let resp = c.request(with_trailers(&c, "app.test")).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        let seen = seen.lock().unwrap();
        assert_eq!(seen[0].authority.as_deref(), Some("app.test"));
        assert_eq!(seen[0].trailers.as_ref().unwrap()["x-checksum"], "abc");
        std::fs::remove_file(&path).unwrap();
    }

    #[tokio::test]
    async fn http2_https_origins_negotiate_h2_by_alpn() {
        let certs = tunnel::dev_cert::generate(&[]).unwrap();
        let chain = CertificateDer::pem_slice_iter(certs.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key =
            rustls::pki_types::PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
        let server = |alpn: &[u8]| {
            let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .unwrap();
            config.alpn_protocols = vec![alpn.to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        };
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut origins = Vec::new();
        for (alpn, h2) in [(&b"h2"[..], true), (b"http/1.1", false)] {
            let acceptor = server(alpn);
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            origins.push(listener.local_addr().unwrap());
            let seen = seen.clone();
            tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        if h2 {
                            serve_h2(tls, seen.clone());
                        } else {
                            serve(tls);
                        }
                    }
                }
            });
        }
        let h2 = options(|o| {
            o.http2_origin = Some(true);
            o.no_tls_verify = Some(true);
        });
        let service = |addr: std::net::SocketAddr| Service::Http {
            scheme: "https".into(),
            authority: addr.to_string(),
        };
        let c = OriginClient::new(&service(origins[0]), &h2).unwrap();
        let resp = c.request(with_trailers(&c, "app.test")).await.unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        let collected = resp.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        assert_eq!(
            seen.lock().unwrap()[0].trailers.as_ref().unwrap()["x-checksum"],
            "abc"
        );

        // An origin that offers only HTTP/1.1 fails the handshake: a TLS
        // error the operator can read, not h2 frames sent to HTTP/1.1.
        let c = OriginClient::new(&service(origins[1]), &h2).unwrap();
        let e = c.request(with_trailers(&c, "app.test")).await.unwrap_err();
        assert_eq!(classify(&e), StreamErrorKind::OriginTls, "{e:?}");
    }

    #[test]
    fn http2_origin_is_off_by_default_and_set_per_rule_over_the_defaults() {
        let defaults: OriginRequest = serde_yaml::from_str("http2_origin: true").unwrap();
        let rule = OriginRequest::default();
        assert!(rule.over(&defaults).resolve().unwrap().http2_origin);
        let off: OriginRequest = serde_yaml::from_str("http2_origin: false").unwrap();
        assert!(!off.over(&defaults).resolve().unwrap().http2_origin);
        assert!(
            !rule
                .over(&OriginRequest::default())
                .resolve()
                .unwrap()
                .http2_origin
        );
    }

    #[tokio::test]
    async fn a_connect_that_takes_too_long_is_a_timeout() {
        // A listener that never accepts, its queue filled: new connects
        // hang (loopback drops the SYN).
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut held = Vec::new();
        loop {
            match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
                Ok(Ok(s)) => held.push(s),
                Ok(Err(e)) => panic!("{e}"),
                Err(_) => break,
            }
            assert!(held.len() < 100, "the queue never filled");
        }
        let service = Service::Http {
            scheme: "http".into(),
            authority: addr.to_string(),
        };
        let c = OriginClient::new(
            &service,
            &options(|o| o.connect_timeout = Some(Duration::from_millis(200))),
        )
        .unwrap();
        let e = get(&c, "/").await.unwrap_err();
        assert_eq!(classify(&e), StreamErrorKind::OriginTimeout, "{e:?}");
        drop((listener, held));
    }
}
