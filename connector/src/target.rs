//! The request target the edge sent, checked once, and the origin URL built
//! from it.
//!
//! The edge is a peer, not a friend: a rogue or buggy edge can put anything
//! in a request head's path. Two things must hold whatever it sends:
//!
//! - **Path rules cannot be bypassed.** Ingress rules match a path regex, so
//!   the path the regex sees must be exactly the path the origin gets. We
//!   *refuse* dot-segments (`.` and `..`, raw or percent-encoded in any case,
//!   also hidden behind `%2f`, `\`, `%5c` or a `;` parameter) with 400 rather
//!   than normalise them: every normaliser (ours, the URL library's, the
//!   origin framework's, a servlet container's `..;`) resolves a different set
//!   of tricks, so "normalise once" still leaves the origin free to resolve
//!   one more; and real clients (browsers, curl, HTTP libraries) already remove
//!   dot-segments before they send, so refusing costs nothing legitimate.
//!   The rule is then matched on [`OriginTarget::path`], the path exactly as
//!   it goes into the origin URL.
//! - **The origin is the rule's, never the peer's.** Only origin-form targets
//!   (`/path?query`) and `*` (for `OPTIONS`) are accepted. The path and query
//!   are *set* on the rule's parsed URL, never pasted after it as text (where
//!   `@evil/`, `.evil.example/` or `0:9000/` would change the host), and the
//!   final scheme, host and port are checked against the rule's.

use std::borrow::Cow;
use std::sync::LazyLock;

use bytes::Bytes;
use http::uri::PathAndQuery;
use reqwest::Url;

use crate::ingress::Service;

/// Why a request target is refused (the edge gets a 400 `BadRequest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not origin-form (`/path`): absolute-form, authority-form, `//host`,
    /// or something that does not start with `/` at all.
    #[error("the request target is not origin-form (/path?query)")]
    NotOriginForm,
    /// `*` with a method other than OPTIONS.
    #[error("the asterisk request target is only valid with OPTIONS")]
    Asterisk,
    /// A `.` or `..` segment, in any spelling.
    #[error("the path has a dot-segment (. or ..)")]
    DotSegment,
    /// A character that has no business in a request target (control
    /// characters, space, `#`, `\`), raw or percent-encoded.
    #[error("the request target has a forbidden character")]
    BadCharacter,
    /// A method the connector does not proxy as HTTP (CONNECT: TCP comes as
    /// a `tcp` stream, see [`crate::tcp`]) or that is invalid.
    #[error("the method is not proxied")]
    BadMethod,
    /// The Host the edge sent is not a plain host[:port].
    #[error("the authority is not a plain host[:port]")]
    BadAuthority,
    /// The URL built for the origin does not point at the rule's origin.
    /// Unreachable by construction; checked so that a future change cannot
    /// silently open an SSRF.
    #[error("the origin URL does not point at the rule's origin")]
    HostChanged,
}

impl TargetError {
    /// A stable label for `connector_bad_requests_total{reason}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOriginForm => "not_origin_form",
            Self::Asterisk => "asterisk",
            Self::DotSegment => "dot_segment",
            Self::BadCharacter => "bad_character",
            Self::BadMethod => "bad_method",
            Self::BadAuthority => "bad_authority",
            Self::HostChanged => "host_changed",
        }
    }

    /// Every reason, so the metric's series exist from the start.
    pub const ALL: [TargetError; 7] = [
        Self::NotOriginForm,
        Self::Asterisk,
        Self::DotSegment,
        Self::BadCharacter,
        Self::BadMethod,
        Self::BadAuthority,
        Self::HostChanged,
    ];
}

/// A checked request target: what the rules match and the origin gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginTarget {
    /// The path, as it appears in the origin URL (`*` for `OPTIONS *`).
    path: String,
    /// The query, as it appears in the origin URL.
    query: Option<String>,
}

/// How many rounds of percent-decoding a path segment gets when looking for
/// hidden dot-segments (`%252e` is `%2e` after one round, `.` after two).
const DECODE_ROUNDS: usize = 3;

impl OriginTarget {
    /// Checks the method and the target the edge sent.
    pub fn parse(method: &str, raw: &str) -> Result<Self, TargetError> {
        if method.eq_ignore_ascii_case("CONNECT") {
            return Err(TargetError::BadMethod);
        }
        if raw == "*" {
            return if method == "OPTIONS" {
                Ok(Self {
                    path: "*".into(),
                    query: None,
                })
            } else {
                Err(TargetError::Asterisk)
            };
        }
        // `//host/...` is origin-form by the grammar, but every URL parser
        // reads it as a network-path reference: refuse it.
        if !raw.starts_with('/') || raw.starts_with("//") {
            return Err(TargetError::NotOriginForm);
        }
        if raw
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'#' || b == b'\\')
        {
            return Err(TargetError::BadCharacter);
        }
        let (path, query) = match raw.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (raw, None),
        };
        for segment in path.split('/') {
            check_segment(segment)?;
        }
        // What the URL library makes of it (it percent-encodes what must be
        // encoded); rules are matched on this, the origin gets this. Text
        // it would leave as it is skips it.
        if path.bytes().all(kept_in_path) && query.is_none_or(|q| q.bytes().all(kept_in_query)) {
            return Ok(Self {
                path: path.to_string(),
                query: query.map(str::to_string),
            });
        }
        Ok(Self::through_url(path, query))
    }

    /// `path` and `query` as the URL library writes them.
    fn through_url(path: &str, query: Option<&str>) -> Self {
        static BASE: LazyLock<Url> =
            LazyLock::new(|| Url::parse("http://origin.invalid/").expect("valid literal"));
        let mut url = BASE.clone();
        url.set_path(path);
        url.set_query(query);
        Self {
            path: url.path().to_string(),
            query: url.query().map(str::to_string),
        }
    }

    /// The target of the origin request: the path and query exactly as the
    /// rules saw them. The HTTP client cannot write an asterisk-form
    /// target, so `OPTIONS *` goes out as `OPTIONS /`.
    pub fn path_and_query(&self) -> Result<PathAndQuery, TargetError> {
        if self.path == "*" {
            return Ok(PathAndQuery::from_static("/"));
        }
        let text = match &self.query {
            Some(q) => {
                let mut t = String::with_capacity(self.path.len() + 1 + q.len());
                t.push_str(&self.path);
                t.push('?');
                t.push_str(q);
                t
            }
            None => self.path.clone(),
        };
        PathAndQuery::from_maybe_shared(Bytes::from(text)).map_err(|_| TargetError::BadCharacter)
    }

    /// The path rules are matched on.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The URL of this target on a rule's origin, checked to point there.
    /// The proxy itself sends [`OriginTarget::path_and_query`] under the
    /// rule's own scheme and authority, on a connection its client always
    /// opens to the rule's origin, so no text of the target can reach the
    /// host; this is the same target as one URL, for tools and tests. As
    /// there, `OPTIONS *` becomes `OPTIONS /`.
    pub fn origin_url(&self, service: &Service) -> Result<Url, TargetError> {
        let base = match service {
            Service::Http { scheme, authority } => format!("{scheme}://{authority}/"),
            // The socket is the origin; the URL only carries the path.
            Service::Unix(_) => "http://localhost/".to_string(),
            // No HTTP origin: nothing for a request target to point at.
            Service::Status(_) | Service::Tcp { .. } | Service::UnixTcp(_) => {
                return Err(TargetError::HostChanged);
            }
        };
        let base = Url::parse(&base).map_err(|_| TargetError::HostChanged)?;
        let mut url = base.clone();
        url.set_path(if self.path == "*" { "/" } else { &self.path });
        url.set_query(self.query.as_deref());
        let same_origin = url.scheme() == base.scheme()
            && url.host() == base.host()
            && url.port_or_known_default() == base.port_or_known_default()
            && url.username().is_empty()
            && url.password().is_none()
            && (self.path == "*" || url.path() == self.path);
        if !same_origin {
            return Err(TargetError::HostChanged);
        }
        Ok(url)
    }
}

/// Bytes the URL library leaves as they are in an http URL's path (those
/// of a dot-segment are refused before): unreserved, sub-delims, `:`, `@`,
/// `/` and `%` (it does not encode an existing `%`).
fn kept_in_path(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&b)
}

/// The same for the query, where `'` is encoded and `?` is not.
fn kept_in_query(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/?%".contains(&b)
}

/// Refuses a path segment that is, or hides, a dot-segment or a character
/// that changes how the origin splits the path.
fn check_segment(segment: &str) -> Result<(), TargetError> {
    let mut text = Cow::Borrowed(segment.as_bytes());
    for _ in 0..=DECODE_ROUNDS {
        // `\` is a separator to the URL library and to many servers; `;`
        // starts path parameters that servlet containers strip (`..;`).
        for piece in text.split(|&b| b == b'/' || b == b'\\') {
            let name = piece.split(|&b| b == b';').next().unwrap_or_default();
            if name == b"." || name == b".." {
                return Err(TargetError::DotSegment);
            }
        }
        if text.iter().any(|b| b.is_ascii_control()) {
            return Err(TargetError::BadCharacter);
        }
        match percent_decode(&text) {
            Some(decoded) => text = Cow::Owned(decoded),
            None => break,
        }
    }
    Ok(())
}

/// One round of percent-decoding; `None` when there was nothing to decode.
fn percent_decode(text: &[u8]) -> Option<Vec<u8>> {
    if !text.contains(&b'%') {
        return None;
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(text.len());
    let mut changed = false;
    let mut i = 0;
    while i < text.len() {
        if text[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                text.get(i + 1).copied().and_then(hex),
                text.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(hi << 4 | lo);
            changed = true;
            i += 3;
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    changed.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(authority: &str) -> Service {
        Service::Http {
            scheme: "http".into(),
            authority: authority.into(),
        }
    }

    #[test]
    fn dot_segments_are_refused_in_every_spelling() {
        let refused = [
            "/api/../admin",
            "/api/./admin",
            "/api/..",
            "/..",
            "/api/%2e%2e/admin",
            "/api/%2E%2E/admin",
            "/api/.%2E/admin",
            "/api/%2e./admin",
            "/api/.%2e",
            "/api/%2e/admin",
            "/api/..%2fadmin",
            "/api/..%2Fadmin",
            "/api/%2e%2e%2fadmin",
            "/api/..%5cadmin",
            "/api/..;/admin",
            "/api/..;jsessionid=x/admin",
            "/api/%252e%252e/admin",
            "/api/%25252e%25252e/admin",
        ];
        for raw in refused {
            assert_eq!(
                OriginTarget::parse("GET", raw),
                Err(TargetError::DotSegment),
                "{raw}"
            );
        }
    }

    #[test]
    fn targets_that_are_not_origin_form_are_refused() {
        let table = [
            ("@127.0.0.3:9000/steal", TargetError::NotOriginForm),
            ("0:9000/steal", TargetError::NotOriginForm),
            (".evil.example/steal", TargetError::NotOriginForm),
            ("http://127.0.0.3:9000/steal", TargetError::NotOriginForm),
            ("127.0.0.3:9000", TargetError::NotOriginForm),
            ("//127.0.0.3:9000/steal", TargetError::NotOriginForm),
            ("", TargetError::NotOriginForm),
            ("\\\\127.0.0.3\\steal", TargetError::NotOriginForm),
            ("/\\127.0.0.3/steal", TargetError::BadCharacter),
            ("/api/x y", TargetError::BadCharacter),
            ("/api/x#y", TargetError::BadCharacter),
            ("/api/x\r\nHost: evil", TargetError::BadCharacter),
            ("/api/x%00", TargetError::BadCharacter),
            ("/api/x%0d%0a", TargetError::BadCharacter),
        ];
        for (raw, want) in table {
            assert_eq!(OriginTarget::parse("GET", raw), Err(want), "{raw:?}");
        }
        assert_eq!(OriginTarget::parse("GET", "*"), Err(TargetError::Asterisk));
        assert_eq!(
            OriginTarget::parse("CONNECT", "/x"),
            Err(TargetError::BadMethod)
        );
    }

    #[test]
    fn ordinary_targets_pass_unchanged_and_keep_the_rule_origin() {
        let ok = [
            ("/", "/", None),
            ("/api/v1/users", "/api/v1/users", None),
            ("/api/x?q=1&r=/../a", "/api/x", Some("q=1&r=/../a")),
            ("/files/a.b/..c/c..", "/files/a.b/..c/c..", None),
            ("/.well-known/x", "/.well-known/x", None),
            (
                "/api/v4/projects/group%2Fproject",
                "/api/v4/projects/group%2Fproject",
                None,
            ),
            ("/a//b", "/a//b", None),
            ("/api/@127.0.0.3:9000", "/api/@127.0.0.3:9000", None),
        ];
        let service = http("127.0.0.1:8000");
        for (raw, path, query) in ok {
            let t = OriginTarget::parse("GET", raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
            assert_eq!(t.path(), path, "{raw}");
            assert_eq!(t.query.as_deref(), query, "{raw}");
            let url = t.origin_url(&service).unwrap();
            assert_eq!(url.host_str(), Some("127.0.0.1"), "{raw}");
            assert_eq!(url.port(), Some(8000), "{raw}");
            assert_eq!(url.path(), path, "{raw}");
        }
        let star = OriginTarget::parse("OPTIONS", "*").unwrap();
        assert_eq!(star.path(), "*");
        assert_eq!(star.origin_url(&service).unwrap().path(), "/");
        let unix = OriginTarget::parse("GET", "/x?y")
            .unwrap()
            .origin_url(&Service::Unix("/run/app.sock".into()))
            .unwrap();
        assert_eq!(unix.as_str(), "http://localhost/x?y");
    }

    #[test]
    fn the_origin_gets_the_path_and_query_the_rules_saw() {
        let table = [
            ("/", "/"),
            ("/api/x?q=1&r=/../a", "/api/x?q=1&r=/../a"),
            ("/x?", "/x?"),
            ("/caf\u{e9}/a b", ""),
            ("/caf\u{e9}/\"q\"?it's", "/caf%C3%A9/%22q%22?it%27s"),
            ("/a//b", "/a//b"),
        ];
        for (raw, want) in table {
            match OriginTarget::parse("GET", raw) {
                Ok(t) => assert_eq!(t.path_and_query().unwrap().as_str(), want, "{raw}"),
                Err(e) => assert!(want.is_empty(), "{raw}: {e}"),
            }
        }
        let star = OriginTarget::parse("OPTIONS", "*").unwrap();
        assert_eq!(star.path_and_query().unwrap().as_str(), "/");
    }

    proptest::proptest! {
        /// Text the URL library would leave alone skips it: the result is
        /// the same either way.
        #[test]
        fn skipping_the_url_library_changes_nothing(
            path in r#"/[a-zA-Z0-9._~!$&'()*+,;=:@/%?"<>`{}^|\[\]\u{e9}-]{0,24}"#
        ) {
            let (p, q) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path.as_str(), None),
            };
            if let Ok(t) = OriginTarget::parse("GET", &path) {
                proptest::prop_assert_eq!(t, OriginTarget::through_url(p, q));
            }
        }
    }

    #[test]
    fn a_port_less_rule_cannot_be_extended_by_the_path() {
        // Pasted as text, `http://127.0.0.1` + `0:9000/x` was 127.0.0.10:9000.
        let t = OriginTarget::parse("GET", "/0:9000/x").unwrap();
        let url = t.origin_url(&http("127.0.0.1")).unwrap();
        assert_eq!(url.as_str(), "http://127.0.0.1/0:9000/x");
    }
}
