//! `connector run` settings: a YAML file (`--config`) or quick-mode flags,
//! flags winning over the file, checked once into a [`ConnectorConfig`].
//!
//! ```yaml
//! edges: ["edge-a.example.net:7844", "edge-b.example.net:7844"]
//! token_file: /etc/warren/tunnel.token
//! ca_cert: /etc/warren/edge-ca.pem
//! ha_connections: 4
//! admin: 127.0.0.1:9081
//! grace_period: 30s
//! origin_request: { connect_timeout: 5s, response_timeout: 60s }
//! ingress:
//!   - hostname: app.example.com
//!     service: http://127.0.0.1:8000
//!   - service: http_status:404
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use daemon::config_check::Problem;
use daemon::logging::LogFormat;
use serde::Deserialize;
use tunnel::token::TunnelToken;

use crate::ingress::{Ingress, IngressError, RuleConfig};
use crate::origin::OriginRequest;
use crate::supervisor::EdgeTarget;

/// The environment variable that may hold the token instead of a file.
pub const TOKEN_ENV: &str = "CONNECTOR_TOKEN";

/// Flags of `connector run`. Each has a `CONNECTOR_*` variable; a flag or
/// variable wins over the same key in `--config`. Kept whole while the
/// connector runs: a reload resolves the same flags over the new file.
#[derive(Debug, Args, Default, Clone)]
pub struct RunArgs {
    /// YAML config file (edges, token_file, ca_cert, ingress, origin_request, ...).
    /// Re-read on SIGHUP and when it changes: new ingress rules and origin
    /// options apply to new requests without a restart; an invalid file is
    /// logged and the running config stays.
    #[arg(long, env = "CONNECTOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// How often to look at the --config file for a change (its time,
    /// size and inode; then its content); `0s` turns the polling off and
    /// leaves SIGHUP. [default: 250ms]
    #[arg(long, env = "CONNECTOR_CONFIG_POLL_INTERVAL", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub config_poll_interval: Option<Duration>,
    /// Edge to connect to, `host:port` (UDP). Repeat for several edges.
    #[arg(
        long = "edge",
        env = "CONNECTOR_EDGES",
        value_delimiter = ',',
        value_name = "ADDR"
    )]
    pub edges: Vec<String>,
    /// File holding the tunnel token. The token may also come from
    /// CONNECTOR_TOKEN; it is never accepted as a plain flag.
    #[arg(long, env = "CONNECTOR_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate(s) that sign the edges' certificates.
    #[arg(long, env = "CONNECTOR_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Name to verify in the edges' certificates. [default: the host part of each edge address]
    #[arg(long, env = "CONNECTOR_EDGE_SERVER_NAME", value_name = "NAME")]
    pub edge_server_name: Option<String>,
    /// Accept any edge certificate. Makes the tunnel open to interception:
    /// for local experiments only.
    #[arg(long, env = "CONNECTOR_DANGER_ACCEPT_INVALID_EDGE_CERTS")]
    pub danger_accept_invalid_edge_certs: bool,
    /// Quick mode: send every request to this origin (one catch-all rule):
    /// http://HOST:PORT, https://HOST:PORT, ws://, wss://, unix:/PATH
    /// (HTTP), or a TCP service for TCP streams: tcp://HOST:PORT,
    /// ssh://HOST[:PORT] (22), rdp://HOST[:PORT] (3389), unix+tcp:/PATH.
    #[arg(long, env = "CONNECTOR_URL", value_name = "URL")]
    pub url: Option<String>,
    /// Admin listener for /metrics, /ready and /healthz. [default: 127.0.0.1:9081]
    #[arg(long, env = "CONNECTOR_ADMIN", value_name = "ADDR")]
    pub admin: Option<SocketAddr>,
    /// Tunnel connections to keep, spread over the edges. [default: 4]
    #[arg(long, env = "CONNECTOR_HA_CONNECTIONS", value_name = "N")]
    pub ha_connections: Option<usize>,
    /// How long SIGTERM waits for in-flight requests. [default: 30s]
    #[arg(long, env = "CONNECTOR_GRACE_PERIOD", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub grace_period: Option<Duration>,
    /// First reconnect delay; doubles per failure. [default: 500ms]
    #[arg(long, env = "CONNECTOR_BACKOFF_BASE", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub backoff_base: Option<Duration>,
    /// Longest reconnect delay. [default: 30s]
    #[arg(long, env = "CONNECTOR_BACKOFF_MAX", value_name = "DURATION", value_parser = daemon::duration::parse)]
    pub backoff_max: Option<Duration>,
    /// Log format. [default: text]
    #[arg(long, env = "CONNECTOR_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    edges: Vec<String>,
    token_file: Option<PathBuf>,
    ca_cert: Option<PathBuf>,
    edge_server_name: Option<String>,
    #[serde(default)]
    danger_accept_invalid_edge_certs: bool,
    admin: Option<SocketAddr>,
    ha_connections: Option<usize>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    grace_period: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    backoff_base: Option<Duration>,
    #[serde(default, with = "daemon::duration::serde_text_opt")]
    backoff_max: Option<Duration>,
    log_format: Option<LogFormat>,
    /// Origin defaults for every rule.
    #[serde(default)]
    pub origin_request: OriginRequest,
    /// Ingress rules.
    #[serde(default)]
    pub ingress: Vec<RuleConfig>,
}

/// How to trust edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// A CA file.
    Ca(PathBuf),
    /// Anything (the loudly named flag).
    DangerAcceptAny,
}

/// Checked settings of a running connector.
#[derive(Debug)]
pub struct ConnectorConfig {
    /// Distinct edges.
    pub edges: Vec<EdgeTarget>,
    /// The token.
    pub token: TunnelToken,
    /// Edge trust.
    pub trust: Trust,
    /// Ingress rules.
    pub ingress: Ingress,
    /// Admin listener.
    pub admin: SocketAddr,
    /// Slots.
    pub ha_connections: usize,
    /// Drain grace.
    pub grace_period: Duration,
    /// Reconnect timing.
    pub backoff_base: Duration,
    /// Reconnect cap.
    pub backoff_max: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// The config file, re-read on SIGHUP and when it changes.
    pub config_file: Option<PathBuf>,
    /// How often the config file is polled for a change; zero: never.
    pub config_poll: Duration,
}

/// A setting that is missing or wrong. Never includes the token.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// What the file is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("config file {path} is invalid: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where.
        reason: String,
    },
    /// A setting is missing or wrong.
    #[error("{0}")]
    Invalid(String),
    /// Every problem found, each with where it is.
    #[error("{}", list_problems(.0))]
    Problems(Vec<Problem>),
    /// The ingress rules are wrong.
    #[error(transparent)]
    Ingress(#[from] crate::ingress::IngressError),
}

fn list_problems(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let mut text = format!("{} problems:", many.len());
            for p in many {
                text.push_str(&format!("\n  {p}"));
            }
            text
        }
    }
}

/// Reads a config file and checks it whole: every unknown key and every
/// value of the wrong type, each with its path. The settings come back
/// without the keys that have problems (`None` only when even that does not
/// make a config).
pub fn read_file(path: &Path) -> Result<(Option<FileConfig>, Vec<Problem>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what: "config file",
        path: path.to_path_buf(),
        source,
    })?;
    let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let (kept, mut problems) = daemon::config_check::check(&value, &crate::config_shape::FILE);
    let file = match serde_yaml::from_value::<FileConfig>(kept) {
        Ok(file) => Some(file),
        Err(e) => {
            // The checks above report why (a missing required key).
            if problems.is_empty() {
                problems.push(Problem::new("", e.to_string()));
            }
            None
        }
    };
    Ok((file, problems))
}

/// Ingress problems at their place in the file: `ingress[1]` is rule #2.
fn ingress_problems(errors: Vec<IngressError>, from_url: bool) -> Vec<Problem> {
    errors
        .into_iter()
        .map(|e| match (&e, from_url) {
            (_, true) => Problem::new("--url", e.to_string()),
            (IngressError::Rule { rule, .. }, false) => {
                Problem::new(format!("ingress[{}]", rule - 1), e.to_string())
            }
            (IngressError::Empty, false) => Problem::new("ingress", e.to_string()),
            (IngressError::Defaults(why), false) => Problem::new("origin_request", why.clone()),
        })
        .collect()
}

/// The ingress rules of a config file, checked (`connector ingress ...`);
/// every problem of the file at once.
pub fn ingress_from_file(path: &Path) -> Result<Ingress, ConfigError> {
    let (file, mut problems) = read_file(path)?;
    if let Some(file) = file {
        match Ingress::check_all(&file.ingress, &file.origin_request) {
            Ok(ingress) if problems.is_empty() => return Ok(ingress),
            Ok(_) => {}
            Err(errors) => problems.extend(ingress_problems(errors, false)),
        }
    }
    Err(in_file(path, problems))
}

fn in_file(path: &Path, problems: Vec<Problem>) -> ConfigError {
    ConfigError::Parse {
        path: path.to_path_buf(),
        reason: list_problems(&problems),
    }
}

impl RunArgs {
    /// Merges flags over the file over defaults and checks the result,
    /// reporting every problem at once.
    pub fn resolve(self) -> Result<ConnectorConfig, ConfigError> {
        let mut problems: Vec<Problem> = Vec::new();
        let (file, file_ok) = match &self.config {
            Some(p) => {
                let (file, found) = read_file(p)?;
                problems.extend(found);
                let ok = file.is_some();
                (file.unwrap_or_default(), ok)
            }
            None => (FileConfig::default(), true),
        };
        let mut problem = |path: &str, message: String| problems.push(Problem::new(path, message));

        let edge_list = if self.edges.is_empty() {
            file.edges
        } else {
            self.edges
        };
        if edge_list.is_empty() {
            problem("edges", "no edges: pass --edge HOST:PORT (repeatable), set CONNECTOR_EDGES, or list `edges` in the config file".into());
        }
        let server_name = self.edge_server_name.or(file.edge_server_name);
        let mut edges: Vec<EdgeTarget> = Vec::new();
        for address in edge_list {
            match edge_target(&address, server_name.as_deref()) {
                Ok(target) if !edges.contains(&target) => edges.push(target),
                Ok(_) => {}
                Err(e) => problem("edges", e),
            }
        }

        let token = match read_token(self.token_file.or(file.token_file).as_deref()) {
            Ok(t) => Some(t),
            Err(e) => {
                problem("token_file", e.to_string());
                None
            }
        };

        let trust = if self.danger_accept_invalid_edge_certs
            || file.danger_accept_invalid_edge_certs
        {
            Some(Trust::DangerAcceptAny)
        } else {
            match self.ca_cert.or(file.ca_cert) {
                Some(p) => Some(Trust::Ca(p)),
                None => {
                    problem("ca_cert", "no CA for the edges' certificates: pass --ca-cert FILE (or `ca_cert` in the config file)".into());
                    None
                }
            }
        };

        let ingress = match (self.url, file.ingress.is_empty()) {
            (Some(_), false) => {
                problem(
                    "ingress",
                    "both --url and `ingress` rules are given: use one or the other".into(),
                );
                None
            }
            (Some(url), true) => match Ingress::single(&url, &file.origin_request) {
                Ok(i) => Some(i),
                Err(e) => {
                    problems.extend(ingress_problems(vec![e], true));
                    None
                }
            },
            (None, false) => match Ingress::check_all(&file.ingress, &file.origin_request) {
                Ok(i) => Some(i),
                Err(errors) => {
                    problems.extend(ingress_problems(errors, false));
                    None
                }
            },
            // A file whose rules were unreadable already said why.
            (None, true) if !file_ok => None,
            (None, true) => {
                problems.push(Problem::new(
                    "ingress",
                    "nothing to serve: pass --url URL or give `ingress` rules in the config file",
                ));
                None
            }
        };
        let mut problem = |path: &str, message: String| problems.push(Problem::new(path, message));

        let ha_connections = self.ha_connections.or(file.ha_connections).unwrap_or(4);
        if !(1..=64).contains(&ha_connections) {
            problem(
                "ha_connections",
                format!("ha_connections is {ha_connections}; it must be from 1 to 64"),
            );
        }
        let backoff_base = self
            .backoff_base
            .or(file.backoff_base)
            .unwrap_or(Duration::from_millis(500));
        let backoff_max = self
            .backoff_max
            .or(file.backoff_max)
            .unwrap_or(Duration::from_secs(30));
        if backoff_base.is_zero() || backoff_max < backoff_base {
            problem(
                "backoff_base",
                "backoff_base must be more than zero and at most backoff_max".into(),
            );
        }
        let (Some(token), Some(trust), Some(ingress), true) =
            (token, trust, ingress, problems.is_empty())
        else {
            return Err(match &self.config {
                Some(path) => in_file(path, problems),
                None => ConfigError::Problems(problems),
            });
        };
        Ok(ConnectorConfig {
            edges,
            token,
            trust,
            ingress,
            admin: self
                .admin
                .or(file.admin)
                .unwrap_or_else(|| ([127, 0, 0, 1], 9081).into()),
            ha_connections,
            grace_period: self
                .grace_period
                .or(file.grace_period)
                .unwrap_or(Duration::from_secs(30)),
            backoff_base,
            backoff_max,
            log_format: self.log_format.or(file.log_format).unwrap_or_default(),
            config_file: self.config,
            config_poll: self
                .config_poll_interval
                .unwrap_or(crate::reload::DEFAULT_POLL),
        })
    }
}

fn edge_target(address: &str, server_name: Option<&str>) -> Result<EdgeTarget, String> {
    let a = address.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split_once("]:").map(|(h, _)| h)
    } else {
        a.rsplit_once(':').map(|(h, _)| h)
    };
    let port_ok = a
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok_and(|p| p != 0));
    match host {
        Some(h) if !h.is_empty() && port_ok => Ok(EdgeTarget {
            address: a.to_string(),
            server_name: server_name.unwrap_or(h).to_string(),
        }),
        _ => Err(format!(
            "edge `{a}` is not HOST:PORT (for example 127.0.0.1:7844 or edge.example.net:7844)"
        )),
    }
}

/// Reads the token from a file, or from `CONNECTOR_TOKEN`. Errors name the
/// source, never the content.
fn read_token(file: Option<&Path>) -> Result<TunnelToken, ConfigError> {
    let (text, source) = match file {
        Some(path) => (
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                what: "token file",
                path: path.to_path_buf(),
                source,
            })?,
            format!("token file {}", path.display()),
        ),
        None => match std::env::var(TOKEN_ENV) {
            Ok(t) => (t, TOKEN_ENV.to_string()),
            Err(_) => {
                return Err(ConfigError::Invalid(format!(
                    "no tunnel token: pass --token-file FILE or set {TOKEN_ENV}"
                )));
            }
        },
    };
    text.trim()
        .parse()
        .map_err(|e| ConfigError::Invalid(format!("{source}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_addresses_table() {
        let ok = [
            ("127.0.0.1:7844", "127.0.0.1"),
            ("edge.example.net:7844", "edge.example.net"),
            ("[::1]:7844", "::1"),
        ];
        for (a, name) in ok {
            assert_eq!(edge_target(a, None).unwrap().server_name, name);
        }
        assert_eq!(
            edge_target("127.0.0.1:7844", Some("edge.local"))
                .unwrap()
                .server_name,
            "edge.local"
        );
        for bad in ["127.0.0.1", ":7844", "host:0", "host:x"] {
            assert!(edge_target(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_token_file_is_named_but_not_echoed() {
        let path = std::env::temp_dir().join(format!("conn-token-{}", std::process::id()));
        std::fs::write(&path, "wrn1_not-a-real-token-value").unwrap();
        let err = read_token(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("token file"), "{err}");
        assert!(!err.contains("not-a-real-token-value"), "{err}");
        std::fs::remove_file(&path).unwrap();
    }
}
