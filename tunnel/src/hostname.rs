//! Hostnames as both programs read them: from a Host header (any case, with
//! or without a port) and from patterns (exact, or `*.` wildcards).

use std::fmt;

/// A hostname pattern from a tunnels file or an ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostPattern {
    /// Matches exactly this name.
    Exact(String),
    /// `*.example.com`: matches any name that ends in `.example.com`
    /// (one label or more), not `example.com` itself. Holds `example.com`.
    Wildcard(String),
}

/// Why a hostname pattern is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty.
    #[error("hostname is empty")]
    Empty,
    /// Has a port.
    #[error("hostname `{0}` has a port: ports are not part of a hostname pattern")]
    HasPort(String),
    /// A `*` somewhere other than a leading `*.` label.
    #[error("hostname `{0}`: a wildcard is only allowed as a leading `*.` label")]
    BadWildcard(String),
    /// Characters outside letters, digits, `-` and `.`, or an empty label.
    #[error("hostname `{0}` is not a valid DNS name")]
    Invalid(String),
}

impl HostPattern {
    /// Parses `app.example.com` or `*.example.com` (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, HostError> {
        let t = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if t.is_empty() {
            return Err(HostError::Empty);
        }
        if t.contains(':') {
            return Err(HostError::HasPort(text.to_string()));
        }
        let (wild, name) = match t.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, t.clone()),
        };
        if name.contains('*') {
            return Err(HostError::BadWildcard(text.to_string()));
        }
        let valid = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
        if !valid || name.len() > 253 {
            return Err(HostError::Invalid(text.to_string()));
        }
        Ok(if wild {
            Self::Wildcard(name)
        } else {
            Self::Exact(name)
        })
    }

    /// Whether a normalised host (see [`normalize`]) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => host == name,
            Self::Wildcard(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(n) => f.write_str(n),
            Self::Wildcard(n) => write!(f, "*.{n}"),
        }
    }
}

/// The host of a Host header or URL authority: lower-case, without port or
/// trailing dot. `None` when nothing is left.
pub fn normalize(authority: &str) -> Option<String> {
    let a = authority.trim();
    let host = if let Some(rest) = a.strip_prefix('[') {
        // [v6]:port
        rest.split(']').next().unwrap_or_default()
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        }
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// The wildcard suffixes that could match `host`, most specific first:
/// `a.b.example.com` gives `b.example.com`, `example.com`, `com`.
pub fn wildcard_suffixes(host: &str) -> impl Iterator<Item = &str> {
    host.match_indices('.').map(move |(i, _)| &host[i + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_table() {
        let cases = [
            ("App.Example.COM", Some("app.example.com")),
            ("app.example.com:8080", Some("app.example.com")),
            ("app.example.com.", Some("app.example.com")),
            ("[::1]:80", Some("::1")),
            ("127.0.0.1:80", Some("127.0.0.1")),
            ("", None),
            (":80", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), want, "{input}");
        }
    }

    #[test]
    fn pattern_table() {
        let w = HostPattern::parse("*.Example.com").unwrap();
        assert_eq!(w, HostPattern::Wildcard("example.com".into()));
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("badexample.com"));
        let e = HostPattern::parse("app.example.com").unwrap();
        assert!(e.matches("app.example.com"));
        assert!(!e.matches("x.app.example.com"));
        for bad in [
            "",
            "a:80",
            "a.*.com",
            "*x.com",
            "a..b",
            "sp ace.com",
            "**.a.com",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            wildcard_suffixes("a.b.c").collect::<Vec<_>>(),
            vec!["b.c", "c"]
        );
    }
}
