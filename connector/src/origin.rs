//! Origin options and clients: one pooled HTTP client per ingress rule, with
//! connect and response timeouts and the rule's TLS settings.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::ingress::{Ingress, Service};

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
}

/// One client per rule (`None` for rules the connector answers itself).
#[derive(Debug, Clone)]
pub struct OriginClients(Vec<Option<reqwest::Client>>);

impl OriginClients {
    /// Builds the clients; fails when a CA file cannot be read.
    pub fn build(ingress: &Ingress) -> anyhow::Result<Self> {
        let mut clients = Vec::new();
        for (i, rule) in ingress.rules().iter().enumerate() {
            let client = match &rule.service {
                Service::Status(_) => None,
                Service::Http { .. } | Service::Unix(_) => Some(
                    client_for(&rule.service, &rule.origin)
                        .map_err(|e| anyhow::anyhow!("ingress rule #{}: {e}", i + 1))?,
                ),
            };
            clients.push(client);
        }
        Ok(Self(clients))
    }

    /// The client of rule `index`.
    pub fn get(&self, index: usize) -> Option<&reqwest::Client> {
        self.0.get(index).and_then(Option::as_ref)
    }
}

fn client_for(service: &Service, o: &OriginOptions) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(o.connect_timeout)
        .pool_max_idle_per_host(o.keep_alive_connections)
        .pool_idle_timeout(o.keep_alive_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tcp_nodelay(true)
        .http1_only();
    if let Some(path) = &o.ca_pool {
        let pem = std::fs::read(path)
            .map_err(|e| anyhow::anyhow!("cannot read ca_pool {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| anyhow::anyhow!("ca_pool {} is not PEM: {e}", path.display()))?;
        b = b.tls_certs_only(certs);
    }
    if o.no_tls_verify {
        b = b.tls_danger_accept_invalid_certs(true);
    }
    if let Service::Unix(path) = service {
        b = b.unix_socket(path.as_path());
    }
    Ok(b.build()?)
}
