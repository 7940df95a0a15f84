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
//!   - service: http_status:404
//! ```

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
    /// http), `wss://HOST:PORT` (as https), `unix:/PATH` or `http_status:NNN`.
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
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Http { scheme, authority } => write!(f, "{scheme}://{authority}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
            Self::Status(s) => write!(f, "http_status:{s}"),
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
    let origin = cfg
        .origin_request
        .over(origin_defaults)
        .resolve()
        .map_err(|e| reasons.push(format!("origin_request: {e}")))
        .ok();
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
            "service `{t}` is not a URL: use http://HOST:PORT, https://HOST:PORT, ws://HOST:PORT, wss://HOST:PORT, unix:/PATH or http_status:NNN"
        ));
    };
    // A WebSocket origin is an HTTP origin that answers the upgrade:
    // `ws://` is dialled as `http://`, `wss://` as `https://`, and plain
    // requests matched by the rule go there too.
    let scheme = match scheme {
        "http" | "ws" => "http",
        "https" | "wss" => "https",
        "tcp" | "ssh" | "rdp" => {
            return Err(format!(
                "service `{t}`: `{scheme}://` services are not supported by this connector yet; use http:// or https://"
            ));
        }
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
            "tcp://127.0.0.1:22",
            "ws://a/b",
            "wss://",
        ] {
            assert!(parse_service(bad).is_err(), "{bad}");
        }
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
