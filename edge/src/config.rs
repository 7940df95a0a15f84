//! `edge run` settings: flags (or `EDGE_*` variables) over a YAML file over
//! defaults, checked once into a config that cannot be wrong afterwards.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use daemon::logging::LogFormat;
use serde::Deserialize;

use crate::config_check::{self, Problem};

/// The flags of `edge run`. Each has an `EDGE_*` variable and a key of the
/// same name (with `_`) in the `--config` file; a flag or variable wins over
/// the file.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// YAML file with any of the settings below (keys like `public_http`).
    #[arg(long, env = "EDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Public plain HTTP listener (HTTP/1.1, and HTTP/2 with prior knowledge:
    /// h2c). [default: 0.0.0.0:8080]
    #[arg(long, env = "EDGE_PUBLIC_HTTP", value_name = "ADDR")]
    pub public_http: Option<SocketAddr>,
    /// Public HTTPS listener (TLS 1.2 and 1.3, ALPN h2 and http/1.1). Needs
    /// --public-cert-dir. [default: none, no HTTPS]
    #[arg(long, env = "EDGE_PUBLIC_HTTPS", value_name = "ADDR")]
    pub public_https: Option<SocketAddr>,
    /// Directory of the HTTPS certificates: pairs NAME.pem (chain, leaf
    /// first) and NAME-key.pem. Each certificate serves the DNS names in its
    /// subject alternative names (`*.example.com` included); the directory
    /// is re-read within a second of a change, without a restart.
    #[arg(long, env = "EDGE_PUBLIC_CERT_DIR", value_name = "DIR")]
    pub public_cert_dir: Option<PathBuf>,
    /// Answer every request on the plain HTTP listener with `308` to the
    /// same URL on https:// (the port of --public-https unless it is 443).
    /// Needs --public-https.
    #[arg(long, env = "EDGE_REDIRECT_HTTP_TO_HTTPS")]
    pub redirect_http_to_https: bool,
    /// Longest a client may take over its TLS handshake; past it the
    /// connection is closed. [default: 10s]
    #[arg(long, env = "EDGE_TLS_HANDSHAKE_TIMEOUT", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub tls_handshake_timeout: Option<Duration>,
    /// Most concurrent streams (requests) on one HTTP/2 connection,
    /// announced in SETTINGS. [default: 256]
    #[arg(long, env = "EDGE_HTTP2_MAX_CONCURRENT_STREAMS", value_name = "N")]
    pub http2_max_concurrent_streams: Option<u32>,
    /// Largest HTTP/2 header list (decoded, as RFC 9113 counts it) a client
    /// may send, announced in SETTINGS. [default: 65536]
    #[arg(long, env = "EDGE_HTTP2_MAX_HEADER_LIST_SIZE", value_name = "BYTES")]
    pub http2_max_header_list_size: Option<u32>,
    /// QUIC (UDP) listener for connectors. [default: 0.0.0.0:7844]
    #[arg(long, env = "EDGE_TUNNEL_LISTEN", value_name = "ADDR")]
    pub tunnel_listen: Option<SocketAddr>,
    /// Admin listener for /metrics, /ready and /healthz. [default: 127.0.0.1:9080]
    #[arg(long, env = "EDGE_ADMIN", value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Tunnels file written by `edge tunnel create`; reloaded when it changes.
    #[arg(long, env = "EDGE_TUNNELS_FILE", value_name = "FILE")]
    pub tunnels_file: Option<PathBuf>,
    /// PEM certificate chain the edge presents to connectors.
    #[arg(long, env = "EDGE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of that certificate.
    #[arg(long, env = "EDGE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Location (data center) reported to connectors. [default: local]
    #[arg(long, env = "EDGE_LOCATION", value_name = "NAME")]
    pub location: Option<String>,
    /// Name of this edge in logs and registrations. [default: the host name]
    #[arg(long, env = "EDGE_ID", value_name = "NAME")]
    pub edge_id: Option<String>,
    /// How long SIGTERM waits for in-flight requests. [default: 30s]
    #[arg(long, env = "EDGE_GRACE_PERIOD", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub grace_period: Option<Duration>,
    /// How long a worker replaced by an upgrade (`edge upgrade`, SIGHUP)
    /// lets its in-flight requests, WebSockets and TCP connections finish
    /// before it closes them. Its successor serves everything new
    /// meanwhile, so a long period costs only memory. [default: 10m]
    #[arg(long, env = "EDGE_UPGRADE_GRACE_PERIOD", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub upgrade_grace_period: Option<Duration>,
    /// How long a new worker has to become ready in an upgrade; past it the
    /// upgrade fails and the old worker keeps serving. [default: 60s]
    #[arg(long, env = "EDGE_UPGRADE_TIMEOUT", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub upgrade_timeout: Option<Duration>,
    /// Serve in this process, binding the sockets itself, with no
    /// supervisor: no upgrade in place (a restart refuses connections
    /// while it lasts). For debugging and for managers that replace
    /// processes themselves.
    #[arg(long, env = "EDGE_SINGLE_PROCESS")]
    pub single_process: bool,
    /// After start, how long a request for a tunnel with no connector yet
    /// waits for one to register (connectors come back within seconds of
    /// a restart) before it gets 502. 0s turns it off. [default: 5s]
    #[arg(long, env = "EDGE_REGISTRATION_GRACE", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub registration_grace: Option<Duration>,
    /// Longest wait for a connector's response head. [default: 100s]
    #[arg(long, env = "EDGE_RESPONSE_TIMEOUT", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub response_timeout: Option<Duration>,
    /// Most public connections served at once. [default: 10000]
    #[arg(long, env = "EDGE_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,
    /// Most public connections from one client IP address (an IPv6 client:
    /// its /64) at once; past it a new connection gets `503` with
    /// `Retry-After` and is closed.
    /// [default: 256]
    #[arg(long, env = "EDGE_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Most requests in flight for one tunnel (all its connectors together);
    /// past it a request gets `503` with `Retry-After`, so one slow tunnel
    /// cannot take every connection of the edge. [default: 1000]
    #[arg(long, env = "EDGE_MAX_REQUESTS_PER_TUNNEL", value_name = "N")]
    pub max_requests_per_tunnel: Option<usize>,
    /// Longest wait for a connector to grant a request stream, and again to
    /// take the request head; past it the request gets `504`. [default: 10s]
    #[arg(long, env = "EDGE_STREAM_OPEN_TIMEOUT", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub stream_open_timeout: Option<Duration>,
    /// Longest pause in a body: the client sending its request body, the
    /// connector reading it, the connector sending the response body. A
    /// stalled upload gets `408` (client) or `504` (connector); a stalled
    /// response body is cut off. [default: 60s]
    #[arg(long, env = "EDGE_BODY_IDLE_TIMEOUT", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub body_idle_timeout: Option<Duration>,
    /// How long a new connector QUIC connection has, from its first packet,
    /// to finish the handshake and register. [default: 5s]
    #[arg(long, env = "EDGE_REGISTRATION_TIMEOUT", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub registration_timeout: Option<Duration>,
    /// Most connector connections that are not registered yet, in all; past
    /// it new ones are refused before the handshake. [default: 1024]
    #[arg(long, env = "EDGE_MAX_PENDING_REGISTRATIONS", value_name = "N")]
    pub max_pending_registrations: Option<usize>,
    /// Most connector connections not registered yet from one source IP
    /// address (IPv6: one /64). [default: 32]
    #[arg(long, env = "EDGE_MAX_PENDING_REGISTRATIONS_PER_IP", value_name = "N")]
    pub max_pending_registrations_per_ip: Option<usize>,
    /// Address the public TCP ports of the tunnels file (`tcp_ports`) are
    /// bound on. [default: 0.0.0.0]
    #[arg(long, env = "EDGE_PUBLIC_TCP_ADDRESS", value_name = "IP")]
    pub public_tcp_address: Option<IpAddr>,
    /// Most TCP connections (public TCP ports and `connector access`
    /// WebSockets together) from one client IP address (IPv6: its /64) at
    /// once; past it a new one is closed at once. [default: 64]
    #[arg(long, env = "EDGE_TCP_MAX_CONNECTIONS_PER_CLIENT", value_name = "N")]
    pub tcp_max_connections_per_client: Option<usize>,
    /// Most TCP connections (public TCP ports and `connector access`
    /// WebSockets together) to one tunnel at once; past it a new one is
    /// closed at once. [default: 4096]
    #[arg(long, env = "EDGE_TCP_MAX_CONNECTIONS_PER_TUNNEL", value_name = "N")]
    pub tcp_max_connections_per_tunnel: Option<usize>,
    /// Log format. [default: text]
    #[arg(long, env = "EDGE_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The `--config` file. Unknown keys are an error, so a typo is not ignored;
/// [`config_check`] reports every bad key and value of a file at once.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    public_http: Option<SocketAddr>,
    public_https: Option<SocketAddr>,
    public_cert_dir: Option<PathBuf>,
    redirect_http_to_https: Option<bool>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    tls_handshake_timeout: Option<Duration>,
    http2_max_concurrent_streams: Option<u32>,
    http2_max_header_list_size: Option<u32>,
    tunnel_listen: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    tunnels_file: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    location: Option<String>,
    edge_id: Option<String>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    grace_period: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    upgrade_grace_period: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    upgrade_timeout: Option<Duration>,
    single_process: Option<bool>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    registration_grace: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    response_timeout: Option<Duration>,
    max_connections: Option<usize>,
    max_connections_per_ip: Option<usize>,
    max_requests_per_tunnel: Option<usize>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    stream_open_timeout: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    body_idle_timeout: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    registration_timeout: Option<Duration>,
    max_pending_registrations: Option<usize>,
    max_pending_registrations_per_ip: Option<usize>,
    public_tcp_address: Option<IpAddr>,
    tcp_max_connections_per_client: Option<usize>,
    tcp_max_connections_per_tunnel: Option<usize>,
    log_format: Option<LogFormat>,
}

/// Checked settings of a running edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Public HTTP listener.
    pub public_http: SocketAddr,
    /// Public HTTPS listener, if any.
    pub public_https: Option<SocketAddr>,
    /// Its certificate directory (set exactly when `public_https` is).
    pub public_cert_dir: Option<PathBuf>,
    /// The plain listener redirects to HTTPS.
    pub redirect_http_to_https: bool,
    /// Longest TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// HTTP/2 streams per connection.
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 header list size.
    pub http2_max_header_list_size: u32,
    /// QUIC listener.
    pub tunnel_listen: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The tunnels file.
    pub tunnels_file: PathBuf,
    /// TLS certificate chain.
    pub tls_cert: PathBuf,
    /// TLS key.
    pub tls_key: PathBuf,
    /// Location name.
    pub location: String,
    /// This edge's name.
    pub edge_id: String,
    /// Drain grace period.
    pub grace_period: Duration,
    /// Drain grace period of a worker replaced by an upgrade.
    pub upgrade_grace_period: Duration,
    /// How long a new worker has to become ready.
    pub upgrade_timeout: Duration,
    /// No supervisor: this process binds and serves.
    pub single_process: bool,
    /// After start, how long a request waits for its tunnel's first connector.
    pub registration_grace: Duration,
    /// Backstop for a connector's response head.
    pub response_timeout: Duration,
    /// Connection cap on the public listener.
    pub max_connections: usize,
    /// Public connections per client IP address.
    pub max_connections_per_ip: usize,
    /// Requests in flight per tunnel.
    pub max_requests_per_tunnel: usize,
    /// Wait for a connector to grant a stream, and to take the request head.
    pub stream_open_timeout: Duration,
    /// Longest pause in a request or response body.
    pub body_idle_timeout: Duration,
    /// Handshake plus registration of a new connector connection.
    pub registration_timeout: Duration,
    /// Connector connections not registered yet, in all.
    pub max_pending_registrations: usize,
    /// Connector connections not registered yet, per source IP address.
    pub max_pending_registrations_per_ip: usize,
    /// Address the public TCP ports bind on.
    pub public_tcp_address: IpAddr,
    /// TCP connections per client IP address.
    pub tcp_max_connections_per_client: usize,
    /// TCP connections per tunnel.
    pub tcp_max_connections_per_tunnel: usize,
    /// Log format.
    pub log_format: LogFormat,
}

/// A setting that is missing or wrong, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not YAML.
    #[error("config file {path} is invalid: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What serde said, with the line.
        reason: String,
    },
    /// Settings that are unknown, missing or wrong: every one of them.
    #[error("{}", problem_list(.config.as_deref(), .problems))]
    Invalid {
        /// The config file, if one was given (problem lines refer to it).
        config: Option<PathBuf>,
        /// Each problem, in file order, then missing settings, then checks.
        problems: Vec<Problem>,
    },
}

fn problem_list(config: Option<&Path>, problems: &[Problem]) -> String {
    let mut out = match problems.len() {
        1 => "1 problem in the settings".to_string(),
        n => format!("{n} problems in the settings"),
    };
    if let Some(path) = config {
        out.push_str(&format!(" (config file {})", path.display()));
    }
    out.push(':');
    for p in problems {
        out.push_str(&format!("\n  - {p}"));
    }
    out
}

impl RunArgs {
    /// Merges flags over the file over defaults and checks the result.
    pub fn resolve(self) -> Result<EdgeConfig, ConfigError> {
        let (file, mut problems) = match &self.config {
            Some(path) => read_file(path)?,
            None => (FileConfig::default(), Vec::new()),
        };
        let mut missing = Vec::new();
        let mut required = |v: Option<PathBuf>, flag: &str, env: &str, key: &str| {
            v.unwrap_or_else(|| {
                missing.push(Problem::new(
                    key,
                    format!(
                        "is required: pass {flag}, set {env}, or put `{key}` in the config file"
                    ),
                ));
                PathBuf::new()
            })
        };
        let cfg = EdgeConfig {
            public_http: self
                .public_http
                .or(file.public_http)
                .unwrap_or_else(|| ([0, 0, 0, 0], 8080).into()),
            public_https: self.public_https.or(file.public_https),
            public_cert_dir: self.public_cert_dir.or(file.public_cert_dir),
            redirect_http_to_https: self.redirect_http_to_https
                || file.redirect_http_to_https.unwrap_or(false),
            tls_handshake_timeout: self
                .tls_handshake_timeout
                .or(file.tls_handshake_timeout)
                .unwrap_or(Duration::from_secs(10)),
            http2_max_concurrent_streams: self
                .http2_max_concurrent_streams
                .or(file.http2_max_concurrent_streams)
                .unwrap_or(256),
            http2_max_header_list_size: self
                .http2_max_header_list_size
                .or(file.http2_max_header_list_size)
                .unwrap_or(64 * 1024),
            tunnel_listen: self
                .tunnel_listen
                .or(file.tunnel_listen)
                .unwrap_or_else(|| ([0, 0, 0, 0], 7844).into()),
            admin: self
                .admin
                .or(file.admin)
                .unwrap_or_else(|| ([127, 0, 0, 1], 9080).into()),
            tunnels_file: required(
                self.tunnels_file.or(file.tunnels_file),
                "--tunnels-file",
                "EDGE_TUNNELS_FILE",
                "tunnels_file",
            ),
            tls_cert: required(
                self.tls_cert.or(file.tls_cert),
                "--tls-cert",
                "EDGE_TLS_CERT",
                "tls_cert",
            ),
            tls_key: required(
                self.tls_key.or(file.tls_key),
                "--tls-key",
                "EDGE_TLS_KEY",
                "tls_key",
            ),
            location: self
                .location
                .or(file.location)
                .unwrap_or_else(|| "local".into()),
            edge_id: self
                .edge_id
                .or(file.edge_id)
                .unwrap_or_else(default_edge_id),
            grace_period: self
                .grace_period
                .or(file.grace_period)
                .unwrap_or(Duration::from_secs(30)),
            upgrade_grace_period: self
                .upgrade_grace_period
                .or(file.upgrade_grace_period)
                .unwrap_or(Duration::from_secs(600)),
            upgrade_timeout: self
                .upgrade_timeout
                .or(file.upgrade_timeout)
                .unwrap_or(Duration::from_secs(60)),
            single_process: self.single_process || file.single_process.unwrap_or(false),
            registration_grace: self
                .registration_grace
                .or(file.registration_grace)
                .unwrap_or(Duration::from_secs(5)),
            response_timeout: self
                .response_timeout
                .or(file.response_timeout)
                .unwrap_or(Duration::from_secs(100)),
            max_connections: self
                .max_connections
                .or(file.max_connections)
                .unwrap_or(10_000),
            max_connections_per_ip: self
                .max_connections_per_ip
                .or(file.max_connections_per_ip)
                .unwrap_or(256),
            max_requests_per_tunnel: self
                .max_requests_per_tunnel
                .or(file.max_requests_per_tunnel)
                .unwrap_or(1000),
            stream_open_timeout: self
                .stream_open_timeout
                .or(file.stream_open_timeout)
                .unwrap_or(Duration::from_secs(10)),
            body_idle_timeout: self
                .body_idle_timeout
                .or(file.body_idle_timeout)
                .unwrap_or(Duration::from_secs(60)),
            registration_timeout: self
                .registration_timeout
                .or(file.registration_timeout)
                .unwrap_or(Duration::from_secs(5)),
            max_pending_registrations: self
                .max_pending_registrations
                .or(file.max_pending_registrations)
                .unwrap_or(1024),
            max_pending_registrations_per_ip: self
                .max_pending_registrations_per_ip
                .or(file.max_pending_registrations_per_ip)
                .unwrap_or(32),
            public_tcp_address: self
                .public_tcp_address
                .or(file.public_tcp_address)
                .unwrap_or(IpAddr::from([0, 0, 0, 0])),
            tcp_max_connections_per_client: self
                .tcp_max_connections_per_client
                .or(file.tcp_max_connections_per_client)
                .unwrap_or(64),
            tcp_max_connections_per_tunnel: self
                .tcp_max_connections_per_tunnel
                .or(file.tcp_max_connections_per_tunnel)
                .unwrap_or(4096),
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
        };
        problems.extend(missing);
        problems.extend(cfg.problems());
        if problems.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigError::Invalid {
                config: self.config,
                problems,
            })
        }
    }
}

impl EdgeConfig {
    /// Every value that cannot work, not just the first.
    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut check = |bad: bool, key: &str, reason: &str| {
            if bad {
                out.push(Problem::new(key, reason));
            }
        };
        check(
            self.max_connections == 0,
            "max_connections",
            "must be at least 1",
        );
        for (key, n) in [
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_requests_per_tunnel", self.max_requests_per_tunnel),
            ("max_pending_registrations", self.max_pending_registrations),
            (
                "max_pending_registrations_per_ip",
                self.max_pending_registrations_per_ip,
            ),
            (
                "tcp_max_connections_per_client",
                self.tcp_max_connections_per_client,
            ),
            (
                "tcp_max_connections_per_tunnel",
                self.tcp_max_connections_per_tunnel,
            ),
        ] {
            check(n == 0, key, "must be at least 1");
        }
        check(
            self.location.trim().is_empty(),
            "location",
            "must not be empty",
        );
        check(
            self.edge_id.trim().is_empty(),
            "edge_id",
            "must not be empty",
        );
        for (key, d) in [
            ("response_timeout", self.response_timeout),
            ("stream_open_timeout", self.stream_open_timeout),
            ("body_idle_timeout", self.body_idle_timeout),
            ("registration_timeout", self.registration_timeout),
            ("tls_handshake_timeout", self.tls_handshake_timeout),
        ] {
            check(d.is_zero(), key, "must be more than zero");
        }
        check(
            self.http2_max_concurrent_streams == 0,
            "http2_max_concurrent_streams",
            "must be at least 1",
        );
        check(
            self.http2_max_header_list_size < 1024,
            "http2_max_header_list_size",
            "must be at least 1024 bytes (browsers send more than that)",
        );
        match (&self.public_https, &self.public_cert_dir) {
            (Some(_), None) => check(
                true,
                "public_cert_dir",
                "is required with public_https: pass --public-cert-dir, set EDGE_PUBLIC_CERT_DIR, or put `public_cert_dir` in the config file",
            ),
            (None, Some(_)) => check(
                true,
                "public_https",
                "is required with public_cert_dir (a certificate directory without an HTTPS listener serves nothing): pass --public-https ADDR, or remove public_cert_dir",
            ),
            (Some(addr), Some(dir)) => {
                check(
                    *addr == self.public_http || *addr == self.admin,
                    "public_https",
                    "must differ from public_http and admin",
                );
                check(
                    !dir.is_dir(),
                    "public_cert_dir",
                    &format!(
                        "{} is not a readable directory: create it (it may start empty) or fix the path",
                        dir.display()
                    ),
                );
            }
            (None, None) => {}
        }
        check(
            self.redirect_http_to_https && self.public_https.is_none(),
            "redirect_http_to_https",
            "needs public_https: the redirect would point to a listener that does not exist",
        );
        check(
            self.public_http == self.admin,
            "admin",
            "must differ from public_http",
        );
        out
    }
}

/// The file's settings, and a problem for each key that is unknown or wrong.
fn read_file(path: &Path) -> Result<(FileConfig, Vec<Problem>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    config_check::parse_all(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn default_edge_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "edge".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            tunnels_file: Some("t.yaml".into()),
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_apply() {
        let cfg = args().resolve().unwrap();
        assert_eq!(cfg.public_http, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(cfg.grace_period, Duration::from_secs(30));
        assert_eq!(cfg.max_connections_per_ip, 256);
        assert_eq!(cfg.max_requests_per_tunnel, 1000);
        assert_eq!(cfg.stream_open_timeout, Duration::from_secs(10));
        assert_eq!(cfg.body_idle_timeout, Duration::from_secs(60));
        assert_eq!(cfg.registration_timeout, Duration::from_secs(5));
        assert_eq!(cfg.max_pending_registrations, 1024);
        assert_eq!(cfg.max_pending_registrations_per_ip, 32);
        assert_eq!(cfg.public_https, None);
        assert_eq!(cfg.http2_max_concurrent_streams, 256);
        assert_eq!(cfg.http2_max_header_list_size, 65536);
        assert_eq!(cfg.tls_handshake_timeout, Duration::from_secs(10));
        assert_eq!(cfg.public_tcp_address, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(cfg.tcp_max_connections_per_client, 64);
        assert_eq!(cfg.tcp_max_connections_per_tunnel, 4096);
    }

    #[test]
    fn tcp_settings_come_from_the_file_and_zero_caps_are_refused() {
        let file = std::env::temp_dir().join(format!("edge-cfg-tcp-{}.yaml", std::process::id()));
        std::fs::write(
            &file,
            "public_tcp_address: 127.0.0.9\ntcp_max_connections_per_client: 3\n\
             tcp_max_connections_per_tunnel: 0\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(file.clone());
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.contains("tcp_max_connections_per_tunnel: must be at least 1"),
            "{err}"
        );
        let mut a = args();
        a.config = Some(file.clone());
        a.tcp_max_connections_per_tunnel = Some(7);
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.public_tcp_address, IpAddr::from([127, 0, 0, 9]));
        assert_eq!(cfg.tcp_max_connections_per_client, 3);
        assert_eq!(cfg.tcp_max_connections_per_tunnel, 7);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn https_needs_both_halves_and_an_existing_directory() {
        let mut a = args();
        a.public_cert_dir = Some("/nonexistent/certs".into());
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.contains("public_https: is required with public_cert_dir"),
            "{err}"
        );

        let mut a = args();
        a.public_https = Some("127.0.0.1:8443".parse().unwrap());
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("public_cert_dir: is required"), "{err}");
        assert!(err.contains("--public-cert-dir"), "{err}");

        let mut a = args();
        a.public_https = Some("127.0.0.1:8443".parse().unwrap());
        a.public_cert_dir = Some("/nonexistent/certs".into());
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent/certs is not a readable directory"),
            "{err}"
        );

        let mut a = args();
        a.redirect_http_to_https = true;
        let err = a.resolve().unwrap_err().to_string();
        assert!(
            err.contains("redirect_http_to_https: needs public_https"),
            "{err}"
        );

        let mut a = args();
        a.public_https = Some("127.0.0.1:8443".parse().unwrap());
        a.public_cert_dir = Some(std::env::temp_dir());
        a.redirect_http_to_https = true;
        let cfg = a.resolve().unwrap();
        assert!(cfg.redirect_http_to_https);
    }

    #[test]
    fn https_and_http2_settings_come_from_the_file_too() {
        let file = std::env::temp_dir().join(format!("edge-cfg-https-{}.yaml", std::process::id()));
        let text = format!(
            "public_https: 127.0.0.1:8443\npublic_cert_dir: {}\nredirect_http_to_https: true\n\
             tls_handshake_timeout: 3s\nhttp2_max_concurrent_streams: 50\n\
             http2_max_header_list_size: 16384\n",
            std::env::temp_dir().display()
        );
        std::fs::write(&file, text).unwrap();
        let mut a = args();
        a.config = Some(file.clone());
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.public_https, Some("127.0.0.1:8443".parse().unwrap()));
        assert!(cfg.redirect_http_to_https);
        assert_eq!(cfg.tls_handshake_timeout, Duration::from_secs(3));
        assert_eq!(cfg.http2_max_concurrent_streams, 50);
        assert_eq!(cfg.http2_max_header_list_size, 16384);
        std::fs::remove_file(&file).unwrap();
    }

    #[test]
    fn a_zero_limit_or_timeout_is_refused_by_name() {
        let mut a = args();
        a.max_requests_per_tunnel = Some(0);
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("max_requests_per_tunnel"), "{err}");
        let mut a = args();
        a.body_idle_timeout = Some(Duration::ZERO);
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("body_idle_timeout"), "{err}");
    }

    #[test]
    fn missing_setting_names_flag_env_and_key() {
        let err = RunArgs::default().resolve().unwrap_err().to_string();
        assert!(err.contains("--tunnels-file"), "{err}");
        assert!(err.contains("EDGE_TUNNELS_FILE"), "{err}");
    }

    #[test]
    fn flags_win_over_the_file_and_typos_are_errors() {
        let dir = std::env::temp_dir().join(format!("edge-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("edge.yaml");
        std::fs::write(
            &file,
            "public_http: 127.0.0.1:1000\nlocation: ams\ngrace_period: 5s\n",
        )
        .unwrap();
        let mut a = args();
        a.config = Some(file.clone());
        a.public_http = Some("127.0.0.1:2000".parse().unwrap());
        let cfg = a.resolve().unwrap();
        assert_eq!(cfg.public_http, "127.0.0.1:2000".parse().unwrap());
        assert_eq!(cfg.location, "ams");
        assert_eq!(cfg.grace_period, Duration::from_secs(5));

        std::fs::write(&file, "public_htp: 127.0.0.1:1000\n").unwrap();
        let mut a = args();
        a.config = Some(file);
        let err = a.resolve().unwrap_err().to_string();
        assert!(err.contains("public_htp"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let file = std::env::temp_dir().join(format!("edge-cfg-all-{}.yaml", std::process::id()));
        let text =
            "public_htp: 127.0.0.1:1\nmax_connections: 0\nresponse_timeout: soon\nlocaton: ams\n";
        std::fs::write(&file, text).unwrap();
        let a = RunArgs {
            config: Some(file.clone()),
            tls_key: Some("k.pem".into()),
            ..Default::default()
        };
        let err = a.resolve().unwrap_err().to_string();
        for want in [
            "6 problems",
            "public_htp (line 1): unknown field, did you mean public_http?",
            "response_timeout (line 3): ",
            "locaton (line 4): unknown field, did you mean location?",
            "tunnels_file: is required: pass --tunnels-file",
            "tls_cert: is required",
            "max_connections: must be at least 1",
        ] {
            assert!(err.contains(want), "{want:?} not in:\n{err}");
        }
        std::fs::remove_file(&file).unwrap();
    }
}
