//! Ingress rules, with cloudflared's semantics: an ordered list of
//! (hostname, path regex) to a service; the first rule that matches wins, and
//! the last rule must match everything.
//!
//! ```yaml
//! ingress:
//!   - hostname: app.example.com
//!     path: ^/api/
//!     service: http://127.0.0.1:8000
//!   - hostname: "*.example.com"
//!     service: https://127.0.0.1:8443
//!     origin_request: { no_tls_verify: true }
//!   - hostname: ssh.example.com
//!     service: ssh://127.0.0.1:22
//!   - service: http_status:404
//! ```
//!
//! A rule's service is of one of two kinds. HTTP services (`http://`,
//! `https://`, `ws://`, `wss://`, `unix:`) serve `http` and `websocket`
//! streams; TCP services (`tcp://`, `ssh://`, `rdp://`, `unix+tcp:`) serve
//! `tcp` streams, raw bytes both ways. A stream of the other kind is refused
//! (BadRequest): raw bytes to an HTTP origin would pass by the connector's
//! checks of the request target, and an HTTP request to a TCP origin means
//! nothing to it. That is why a unix stream socket for TCP is named
//! `unix+tcp:/PATH` rather than `unix:/PATH`, which stays HTTP over a unix
//! socket.

use std::fmt;
use std::path::PathBuf;

use regex::Regex;
use serde::Deserialize;
use tunnel::hostname::{self, HostPattern};

use crate::origin::{OriginOptions, OriginRequest};

/// One rule as written in the config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Exact or `*.` wildcard hostname; absent or `*` matches every host.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Regular expression matched against the request path; absent matches every path.
    #[serde(default)]
    pub path: Option<String>,
    /// `http://HOST:PORT`, `https://HOST:PORT`, `ws://HOST:PORT` (as
    /// http), `wss://HOST:PORT` (as https), `unix:/PATH` (HTTP over a unix
    /// socket), `http_status:NNN`, or a TCP service: `tcp://HOST:PORT`,
    /// `ssh://HOST[:PORT]` (port 22), `rdp://HOST[:PORT]` (port 3389),
    /// `unix+tcp:/PATH` (a unix stream socket).
    pub service: String,
    /// Origin options for this rule, over the top-level `origin_request`.
    #[serde(default)]
    pub origin_request: OriginRequest,
}

/// Where a rule sends requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// An HTTP or HTTPS origin: scheme and authority, no path.
    Http {
        /// `http` or `https`.
        scheme: String,
        /// `host:port`.
        authority: String,
    },
    /// HTTP over a unix socket.
    Unix(PathBuf),
    /// A fixed status with an empty body, served by the connector itself.
    Status(u16),
    /// A TCP origin for `tcp` streams: raw bytes both ways.
    Tcp {
        /// `tcp`, `ssh` or `rdp`, as written (they differ only in the
        /// default port).
        scheme: &'static str,
        /// `host:port`, the port filled in.
        authority: String,
    },
    /// A unix stream socket for `tcp` streams (`unix+tcp:/PATH`).
    UnixTcp(PathBuf),
}

impl Service {
    /// Whether this service serves `tcp` streams (and only those).
    pub fn is_tcp(&self) -> bool {
        matches!(self, Self::Tcp { .. } | Self::UnixTcp(_))
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { scheme, authority } => write!(f, "{scheme}://{authority}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Status(s) => write!(f, "http_status:{s}"),
            Self::Tcp { scheme, authority } => write!(f, "{scheme}://{authority}"),
            Self::UnixTcp(p) => write!(f, "unix+tcp:{}", p.display()),
        }
    }
}

/// A checked rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Hostname pattern; `None` matches all.
    pub hostname: Option<HostPattern>,
    /// Path regex; `None` matches all.
    pub path: Option<Regex>,
    /// Where requests go.
    pub service: Service,
    /// Origin options, defaults filled in.
    pub origin: OriginOptions,
}

impl Rule {
    fn matches(&self, host: &str, path: &str) -> bool {
        self.hostname.as_ref().is_none_or(|h| h.matches(host))
            && self.path.as_ref().is_none_or(|re| re.is_match(path))
    }
}

/// A rule that cannot work, named by its 1-based number as cloudflared does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// No rules at all.
    #[error(
        "ingress has no rules: add at least a catch-all last rule, for example `- service: http_status:404`"
    )]
    Empty,
    /// The top-level `origin_request` is invalid (so every rule is).
    #[error("origin_request: {0}")]
    Defaults(String),
    /// One rule is invalid.
    #[error("ingress rule #{rule}: {reason}")]
    Rule {
        /// 1-based rule number.
        rule: usize,
        /// What is wrong.
        reason: String,
    },
}

/// The checked rules.
#[derive(Debug, Clone)]
pub struct Ingress {
    rules: Vec<Rule>,
}

impl Ingress {
    /// Checks every rule against the defaults in `origin_defaults`; the
    /// first problem (see [`Ingress::check_all`] for all of them).
    pub fn new(
        rules: &[RuleConfig],
        origin_defaults: &OriginRequest,
    ) -> Result<Self, IngressError> {
        Self::check_all(rules, origin_defaults)
            .map_err(|errors| errors.into_iter().next().unwrap_or(IngressError::Empty))
    }

    /// Checks every rule, collecting every problem.
    pub fn check_all(
        rules: &[RuleConfig],
        origin_defaults: &OriginRequest,
    ) -> Result<Self, Vec<IngressError>> {
        if rules.is_empty() {
            return Err(vec![IngressError::Empty]);
        }
        let mut errors = Vec::new();
        // A bad default is one problem, not one per rule.
        let default_problem = origin_defaults.resolve().err();
        if let Some(e) = &default_problem {
            errors.push(IngressError::Defaults(e.clone()));
        }
        let mut checked = Vec::with_capacity(rules.len());
        for (i, cfg) in rules.iter().enumerate() {
            match check_rule(cfg, origin_defaults) {
                Ok(rule) => checked.push(rule),
                Err(reasons) => errors.extend(
                    reasons
                        .into_iter()
                        .filter(|r| default_problem.as_ref().is_none_or(|d| !r.ends_with(d)))
                        .map(|reason| IngressError::Rule {
                            rule: i + 1,
                            reason,
                        }),
                ),
            }
        }
        // Judged on the rules as written, so that a rule with another
        // problem still gets this one named.
        let last = rules.len();
        for (i, cfg) in rules.iter().enumerate() {
            let catch_all = is_catch_all(cfg);
            if i + 1 < last && catch_all {
                errors.push(IngressError::Rule {
                    rule: i + 1,
                    reason: "matches every request but is not the last rule, so the rules after it can never match".into(),
                });
            }
            if i + 1 == last && !catch_all {
                let what = describe(cfg);
                errors.push(IngressError::Rule {
                    rule: last,
                    reason: format!(
                        "the last rule must match every request, but this one has {what}; add a last rule without hostname or path, for example `- service: http_status:404`"
                    ),
                });
            }
        }
        // The top-level value is a default for TCP rules only (others
        // ignore it); with none, it is a mistake worth naming.
        if errors.is_empty()
            && origin_defaults.proxy_protocol.is_some()
            && !checked.iter().any(|r| r.service.is_tcp())
        {
            errors.push(IngressError::Defaults(
                "proxy_protocol is set but no rule is a TCP service (tcp://, ssh://, rdp://, unix+tcp:); remove it".into(),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self { rules: checked })
    }

    /// A single catch-all rule to `url` (quick mode's `--url`).
    pub fn single(url: &str, origin_defaults: &OriginRequest) -> Result<Self, IngressError> {
        Self::new(
            &[RuleConfig {
                service: url.to_string(),
                ..Default::default()
            }],
            origin_defaults,
        )
    }

    /// The first rule matching a request's Host and path, and its 0-based index.
    pub fn find(&self, authority: &str, path_and_query: &str) -> (usize, &Rule) {
        let host = hostname::normalize(authority).unwrap_or_default();
        let path = path_and_query
            .split_once('?')
            .map_or(path_and_query, |(p, _)| p);
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.matches(&host, path))
            // `new` guarantees a catch-all last rule.
            .unwrap_or_else(|| (self.rules.len() - 1, &self.rules[self.rules.len() - 1]))
    }

    /// Every rule, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// One rule checked, with every problem it has.
fn check_rule(cfg: &RuleConfig, origin_defaults: &OriginRequest) -> Result<Rule, Vec<String>> {
    let mut reasons = Vec::new();
    let hostname = match cfg.hostname.as_deref().map(str::trim) {
        None | Some("") | Some("*") => None,
        Some(h) => HostPattern::parse(h)
            .map_err(|e| reasons.push(e.to_string()))
            .ok(),
    };
    let path = match cfg.path.as_deref() {
        None | Some("") => None,
        Some(p) => Regex::new(p)
            .map_err(|e| {
                // The regex crate draws a caret under the error over several
                // lines; its last line says what is wrong.
                let why = e.to_string();
                let why = why
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                reasons.push(format!("path `{p}` is not a valid regex: {why}"));
            })
            .ok(),
    };
    let service = parse_service(&cfg.service)
        .map_err(|e| reasons.push(e))
        .ok();
    let mut origin = cfg
        .origin_request
        .over(origin_defaults)
        .resolve()
        .map_err(|e| reasons.push(format!("origin_request: {e}")))
        .ok();
    if let Some(service) = &service
        && !service.is_tcp()
    {
        if cfg.origin_request.proxy_protocol.is_some() {
            reasons.push(format!(
                "origin_request.proxy_protocol is only for TCP services (tcp://, ssh://, rdp://, unix+tcp:), and this rule's service is `{service}`; remove it from this rule"
            ));
        }
        // A top-level default applies to TCP rules only.
        if let Some(o) = &mut origin {
            o.proxy_protocol = None;
        }
    }
    match (service, origin) {
        (Some(service), Some(origin)) if reasons.is_empty() => Ok(Rule {
            hostname,
            path,
            service,
            origin,
        }),
        _ => Err(reasons),
    }
}

fn is_catch_all(cfg: &RuleConfig) -> bool {
    matches!(
        cfg.hostname.as_deref().map(str::trim),
        None | Some("") | Some("*")
    ) && matches!(cfg.path.as_deref(), None | Some(""))
}

fn describe(cfg: &RuleConfig) -> String {
    let hostname = cfg.hostname.as_deref().map(str::trim);
    let host = hostname.filter(|h| !h.is_empty() && *h != "*");
    let path = cfg.path.as_deref().filter(|p| !p.is_empty());
    match (host, path) {
        (Some(h), Some(p)) => format!("hostname `{h}` and path `{p}`"),
        (Some(h), None) => format!("hostname `{h}`"),
        (None, Some(p)) => format!("path `{p}`"),
        (None, None) => "no condition".into(),
    }
}

fn parse_service(text: &str) -> Result<Service, String> {
    let t = text.trim();
    if let Some(code) = t.strip_prefix("http_status:") {
        return match code.parse::<u16>() {
            Ok(c) if (100..=599).contains(&c) => Ok(Service::Status(c)),
            _ => Err(format!(
                "service `{t}`: http_status needs a status code from 100 to 599"
            )),
        };
    }
    if let Some(path) = t.strip_prefix("unix+tcp:") {
        if !path.starts_with('/') {
            return Err(format!(
                "service `{t}`: a unix socket path must be absolute"
            ));
        }
        return Ok(Service::UnixTcp(PathBuf::from(path)));
    }
    if let Some(path) = t.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!(
                "service `{t}`: a unix socket path must be absolute"
            ));
        }
        return Ok(Service::Unix(PathBuf::from(path)));
    }
    let Some((scheme, rest)) = t.split_once("://") else {
        return Err(format!(
            "service `{t}` is not a URL: use http://HOST:PORT, https://HOST:PORT, ws://HOST:PORT, wss://HOST:PORT, unix:/PATH, http_status:NNN, or for TCP tcp://HOST:PORT, ssh://HOST[:PORT], rdp://HOST[:PORT], unix+tcp:/PATH"
        ));
    };
    // A WebSocket origin is an HTTP origin that answers the upgrade:
    // `ws://` is dialled as `http://`, `wss://` as `https://`, and plain
    // requests matched by the rule go there too.
    let scheme = match scheme {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        "tcp" => return tcp_service(t, "tcp", None, rest),
        "ssh" => return tcp_service(t, "ssh", Some(22), rest),
        "rdp" => return tcp_service(t, "rdp", Some(3389), rest),
        other => return Err(format!("service `{t}`: unknown scheme `{other}`")),
    };
    let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
    if authority.is_empty() {
        return Err(format!("service `{t}` has no host"));
    }
    if !path.is_empty() {
        return Err(format!(
            "service `{t}` has a path; a service is an origin (scheme, host and port) only"
        ));
    }
    if authority.contains(['@', '?', '#', '\\'])
        || reqwest::Url::parse(&format!("{scheme}://{authority}/"))
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .is_none()
    {
        return Err(format!("service `{t}`: the host must be plain HOST:PORT"));
    }
    Ok(Service::Http {
        scheme: scheme.to_string(),
        authority: authority.to_string(),
    })
}

/// A `tcp://`, `ssh://` or `rdp://` service: `HOST[:PORT]` (IPv6 in
/// brackets), the port required unless the scheme has a default.
fn tcp_service(
    t: &str,
    scheme: &'static str,
    default_port: Option<u16>,
    rest: &str,
) -> Result<Service, String> {
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Err(format!("service `{t}` has no host"));
    }
    if rest.contains('/') {
        return Err(format!(
            "service `{t}` has a path; a TCP service is HOST:PORT only"
        ));
    }
    // The port is what follows the last `:` outside IPv6 brackets.
    let (host, port) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => {
                return Err(format!(
                    "service `{t}`: the port must be a number from 1 to 65535"
                ));
            }
        },
        (None, Some(p)) => p,
        (None, None) => {
            return Err(format!(
                "service `{t}` has no port: write {scheme}://HOST:PORT"
            ));
        }
    };
    if host.contains(['@', '?', '#', '\\', '/']) {
        return Err(format!("service `{t}`: the host must be plain HOST:PORT"));
    }
    if host.contains(':') && !host.starts_with('[') {
        return Err(format!(
            "service `{t}`: write an IPv6 address in brackets, like {scheme}://[::1]:{port}"
        ));
    }
    // The URL library's reading of the host (lower case, IDNA, IPv6 in
    // brackets), as for HTTP origins.
    let Some(host) = reqwest::Url::parse(&format!("http://{host}:{port}/"))
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .filter(|h| !h.is_empty())
    else {
        return Err(format!("service `{t}`: the host must be plain HOST:PORT"));
    };
    Ok(Service::Tcp {
        scheme,
        authority: format!("{host}:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Result<Ingress, IngressError> {
        let cfg: Vec<RuleConfig> = serde_yaml::from_str(yaml).unwrap();
        Ingress::new(&cfg, &OriginRequest::default())
    }

    #[test]
    fn services_table() {
        let ok = [
            ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
            (
                "https://origin.internal:8443/",
                "https://origin.internal:8443",
            ),
            ("http_status:404", "http_status:404"),
            ("unix:/run/app.sock", "unix:/run/app.sock"),
            // WebSocket origins are HTTP origins that answer the upgrade.
            ("ws://127.0.0.1:8000", "http://127.0.0.1:8000"),
            ("wss://origin.internal:8443", "https://origin.internal:8443"),
            // TCP services, the default port filled in.
            ("tcp://127.0.0.1:5432", "tcp://127.0.0.1:5432"),
            ("tcp://[::1]:5432/", "tcp://[::1]:5432"),
            ("ssh://127.0.0.1", "ssh://127.0.0.1:22"),
            (
                "ssh://Build-Box.internal:2200",
                "ssh://build-box.internal:2200",
            ),
            ("rdp://10.0.0.5", "rdp://10.0.0.5:3389"),
            ("rdp://[fe80::1]", "rdp://[fe80::1]:3389"),
            ("unix+tcp:/run/mqtt.sock", "unix+tcp:/run/mqtt.sock"),
        ];
        for (input, shown) in ok {
            assert_eq!(parse_service(input).unwrap().to_string(), shown);
        }
        for bad in [
            "127.0.0.1:8000",
            "ftp://x",
            "http://",
            "http://a/b",
            "http_status:42",
            "http_status:abc",
            "unix:rel.sock",
            "ws://a/b",
            "tcp://127.0.0.1",
            "tcp://127.0.0.1:0",
            "tcp://127.0.0.1:65536",
            "tcp://127.0.0.1:x",
            "tcp://:22",
            "tcp://",
            "ssh://",
            "ssh://a/b",
            "ssh://user@host:22",
            "ssh://::1",
            "ssh://[::1",
            "rdp://a b",
            "unix+tcp:rel.sock",
            "wss://",
        ] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tcp_services_in_rules_and_quick_mode() {
        let quick = Ingress::single("ssh://127.0.0.1:22", &OriginRequest::default()).unwrap();
        let (_, rule) = quick.find("ssh.example.com", "/");
        assert!(rule.service.is_tcp());
        assert_eq!(rule.service.to_string(), "ssh://127.0.0.1:22");
        let ingress = rules(
            "- hostname: ssh.example.com\n  service: ssh://127.0.0.1\n- hostname: mq.example.com\n  service: unix+tcp:/run/mq.sock\n- hostname: app.example.com\n  service: unix:/run/app.sock\n- service: http_status:404\n",
        )
        .unwrap();
        let kinds: Vec<bool> = ingress.rules().iter().map(|r| r.service.is_tcp()).collect();
        assert_eq!(kinds, [true, true, false, false]);
    }

    #[test]
    fn proxy_protocol_is_v2_and_only_on_tcp_rules() {
        let ok = rules(
            "- hostname: ssh.example.com\n  service: tcp://127.0.0.1:2222\n  origin_request: { proxy_protocol: v2 }\n- service: http_status:404\n",
        )
        .unwrap();
        assert_eq!(
            ok.rules()[0].origin.proxy_protocol,
            Some(crate::proxy_protocol::Version::V2)
        );
        assert_eq!(ok.rules()[1].origin.proxy_protocol, None);
        let err = rules(
            "- hostname: app.example.com\n  service: http://127.0.0.1:80\n  origin_request: { proxy_protocol: v2 }\n- service: http_status:404\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "ingress rule #1: origin_request.proxy_protocol is only for TCP services"
            ),
            "{err}"
        );
        assert!(err.contains("http://127.0.0.1:80"), "{err}");
        let err = rules(
            "- hostname: ssh.example.com\n  service: ssh://127.0.0.1\n  origin_request: { proxy_protocol: v1 }\n- service: http_status:404\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with(
                "ingress rule #1: origin_request: proxy_protocol `v1` is not supported"
            ),
            "{err}"
        );
        // A top-level default reaches the TCP rules only...
        let cfg: Vec<RuleConfig> = serde_yaml::from_str(
            "- hostname: ssh.example.com\n  service: ssh://127.0.0.1\n- hostname: app.example.com\n  service: http://127.0.0.1:80\n- service: http_status:404\n",
        )
        .unwrap();
        let defaults = OriginRequest {
            proxy_protocol: Some("v2".into()),
            ..Default::default()
        };
        let ingress = Ingress::new(&cfg, &defaults).unwrap();
        let set: Vec<bool> = ingress
            .rules()
            .iter()
            .map(|r| r.origin.proxy_protocol.is_some())
            .collect();
        assert_eq!(set, [true, false, false]);
        // ...and with none it is named as a mistake.
        let err = Ingress::new(&cfg[1..], &defaults).unwrap_err().to_string();
        assert!(
            err.starts_with("origin_request: proxy_protocol is set but no rule is a TCP service"),
            "{err}"
        );
        let bad = OriginRequest {
            proxy_protocol: Some("v3".into()),
            ..Default::default()
        };
        let errors = Ingress::check_all(&cfg, &bad).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].to_string().contains("`v3`"), "{errors:?}");
    }

    #[test]
    fn last_rule_must_be_a_catch_all_and_is_named() {
        let err = rules("- hostname: a.com\n  service: http://127.0.0.1:1\n- hostname: b.com\n  service: http://127.0.0.1:2\n")
            .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("ingress rule #2"), "{text}");
        assert!(text.contains("b.com"), "{text}");
        let err =
            rules("- service: http_status:404\n- hostname: a.com\n  service: http://127.0.0.1:1\n")
                .unwrap_err();
        assert!(err.to_string().starts_with("ingress rule #1"), "{err}");
        assert_eq!(rules("[]").unwrap_err(), IngressError::Empty);
        let err =
            rules("- path: '(['\n  service: http://127.0.0.1:1\n- service: http_status:404\n")
                .unwrap_err();
        assert!(err.to_string().contains("not a valid regex"), "{err}");
    }

    #[test]
    fn check_all_names_every_bad_rule() {
        let cfg: Vec<RuleConfig> = serde_yaml::from_str(
            "- path: '(['\n  service: http://127.0.0.1:1\n- service: ftp://x\n- hostname: a.com\n  service: http_status:999\n",
        )
        .unwrap();
        let errors = Ingress::check_all(&cfg, &OriginRequest::default()).unwrap_err();
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 5, "{text:#?}");
        assert!(
            text[0].starts_with("ingress rule #1: path `([` is not a valid regex"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("ingress rule #2: service `ftp://x`"),
            "{text:#?}"
        );
        assert!(
            text[2].starts_with("ingress rule #3: service `http_status:999`"),
            "{text:#?}"
        );
        assert!(
            text[3].starts_with("ingress rule #2: matches every request"),
            "{text:#?}"
        );
        assert!(
            text[4].starts_with("ingress rule #3: the last rule must match every request"),
            "{text:#?}"
        );
    }
}
