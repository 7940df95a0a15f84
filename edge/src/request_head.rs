//! The checks on a public request's head, and its translation into the
//! tunnel's [`RequestHead`]. Pure (no I/O), so a fuzz target can call it.
//!
//! Everything here runs before a tunnel stream is opened: a request the
//! edge cannot forward is answered 4xx without costing a connector anything,
//! and counted as the client's error, not the edge's.

use std::net::{Ipv6Addr, SocketAddr};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, HeaderName, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Method, StatusCode, Uri};
use tunnel::codec::{self, FrameError};
use tunnel::message::{RequestHead, StreamKind};

use crate::forwarding::{Scheme, forward_headers, socket_text};

/// The longest host name (RFC 1035) in a Host header or request target.
const MAX_HOST: usize = 253;

/// Why a request is refused before it is forwarded. Mapped to a status and a
/// short plain body in one place, [`RequestError::response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Neither a Host header nor an absolute-form target names the host.
    #[error("request has no Host header")]
    NoHost,
    /// More than one Host header (RFC 9110 §7.2 requires 400).
    #[error("request has more than one Host header")]
    DuplicateHost,
    /// The Host header or the target's authority is not `host[:port]`.
    #[error("Host header or request target authority is not a valid host[:port]")]
    InvalidHost,
    /// Both Content-Length and Transfer-Encoding: the body's length is
    /// ambiguous (RFC 9112 §6.3), the classic request-smuggling setup.
    #[error("request has both Content-Length and Transfer-Encoding")]
    AmbiguousLength,
    /// CONNECT: the edge is never a forward proxy.
    #[error("CONNECT is not supported")]
    Connect,
    /// The request target does not fit in a tunnel frame.
    #[error("request target is too long for a tunnel frame")]
    UriTooLong,
    /// The header section does not fit in a tunnel frame.
    #[error("request header section is too large for a tunnel frame: {0}")]
    HeadersTooLarge(FrameError),
}

impl RequestError {
    /// The status and body the client gets.
    pub fn response(&self) -> (StatusCode, &'static str) {
        match self {
            Self::NoHost => (StatusCode::BAD_REQUEST, "missing Host header"),
            Self::DuplicateHost => (StatusCode::BAD_REQUEST, "more than one Host header"),
            Self::InvalidHost => (StatusCode::BAD_REQUEST, "invalid Host header"),
            Self::AmbiguousLength => (
                StatusCode::BAD_REQUEST,
                "both Content-Length and Transfer-Encoding",
            ),
            Self::Connect => (StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not supported"),
            Self::UriTooLong => (StatusCode::URI_TOO_LONG, "request target too long"),
            Self::HeadersTooLarge(_) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers too large",
            ),
        }
    }
}

/// A request head ready to cross the tunnel: the head (to route by) and its
/// frame, encoded once, when it was checked to fit.
#[derive(Debug)]
pub struct ForwardHead {
    /// The head.
    pub head: RequestHead,
    /// Its encoded frame, written to the stream as it is.
    pub frame: Bytes,
}

/// Checks a request's head and builds the head sent through the tunnel:
/// the authority (an absolute-form target's wins over Host), the path, and
/// the headers as [`forward_headers`] filters them. Fails if the head would
/// not fit in one tunnel frame, so that is known before a stream is opened.
pub fn head_from_parts(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    has_body: bool,
    client: SocketAddr,
    request_id: &str,
    scheme: Scheme,
) -> Result<ForwardHead, RequestError> {
    head_of_kind(
        StreamKind::Http,
        method,
        uri,
        headers,
        has_body,
        client,
        request_id,
        scheme,
    )
}

/// [`head_from_parts`] for a stream of any kind. A WebSocket's head says a
/// body follows (the bytes after the upgrade), so the connector never looks
/// for the end of the stream right after the head.
#[allow(clippy::too_many_arguments)] // the parts of a request head, each one distinct
pub fn head_of_kind(
    kind: StreamKind,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    has_body: bool,
    client: SocketAddr,
    request_id: &str,
    scheme: Scheme,
) -> Result<ForwardHead, RequestError> {
    if method == Method::CONNECT {
        return Err(RequestError::Connect);
    }
    if headers.contains_key(CONTENT_LENGTH) && headers.contains_key(TRANSFER_ENCODING) {
        return Err(RequestError::AmbiguousLength);
    }
    let authority = authority(uri, headers)?;
    // `PathAndQuery`'s Display puts back the `/` an absolute-form target
    // may lack (`http://host?q` is `/?q`); `as_str` would send `?q`.
    let path = match uri.path_and_query() {
        Some(p) if p.as_str().starts_with('/') || p.as_str() == "*" => p.as_str().to_owned(),
        Some(p) => p.to_string(),
        None => "/".into(),
    };
    let head = RequestHead {
        kind,
        method: method.as_str().to_owned(),
        headers: forward_headers(headers, &authority, client, request_id, scheme),
        authority,
        path,
        has_body: has_body || kind == StreamKind::WebSocket,
        client_addr: socket_text(client),
        request_id: request_id.to_owned(),
    };
    let frame = encode_checked(&head)?;
    Ok(ForwardHead { head, frame })
}

/// Whether an HTTP/1.1 request asks for a WebSocket: `GET` with `upgrade`
/// among the `Connection` tokens and `websocket` among the `Upgrade`
/// protocols (RFC 6455 §4.1; names case-insensitive, lists comma-separated,
/// over any number of header lines).
pub fn is_websocket_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
        headers.get_all(name).iter().any(|v| {
            v.as_bytes().split(|b| *b == b',').any(|t| {
                // `Upgrade` may name a version (`websocket/13`): the name counts.
                let t = t.split(|b| *b == b'/').next().unwrap_or_default();
                t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())
            })
        })
    }
    method == Method::GET
        && has_token(headers, CONNECTION, "upgrade")
        && has_token(headers, UPGRADE, "websocket")
}

/// The host the request is for. A Host header must be single and valid even
/// when an absolute-form target overrides it (RFC 9110 §7.2, RFC 9112 §3.2.2).
pub(crate) fn authority(uri: &Uri, headers: &HeaderMap) -> Result<String, RequestError> {
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(RequestError::DuplicateHost);
    }
    let host = match host {
        None => None,
        Some(v) => match v.to_str() {
            Ok(text) if valid_authority(text) => Some(text),
            _ => return Err(RequestError::InvalidHost),
        },
    };
    match (uri.authority(), host) {
        (Some(target), _) if valid_authority(target.as_str()) => Ok(target.to_string()),
        (Some(_), _) => Err(RequestError::InvalidHost),
        (None, Some(host)) => Ok(host.to_string()),
        (None, None) => Err(RequestError::NoHost),
    }
}

/// `host[:port]` with a DNS-style name, an IPv4 address or a bracketed IPv6
/// address; no user info, no empty parts.
fn valid_authority(text: &str) -> bool {
    let (host_ok, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let Some((v6, after)) = rest.split_once(']') else {
                return false;
            };
            let port = match after {
                "" => None,
                _ => match after.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return false,
                },
            };
            (v6.parse::<Ipv6Addr>().is_ok(), port)
        }
        None => {
            let (name, port) = match text.split_once(':') {
                Some((n, p)) => (n, Some(p)),
                None => (text, None),
            };
            let name_ok = !name.is_empty()
                && name.len() <= MAX_HOST
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
            (name_ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    });
    host_ok && port_ok
}

/// Encodes the head as the tunnel will send it, which is also how to learn
/// now whether it fits.
fn encode_checked(head: &RequestHead) -> Result<Bytes, RequestError> {
    let mut out = BytesMut::with_capacity(256);
    match codec::encode_request_head(head, &mut out) {
        Ok(()) => Ok(out.freeze()),
        Err(FrameError::FieldTooLong("path")) => Err(RequestError::UriTooLong),
        Err(FrameError::TooLarge(_)) if head.path.len() > header_bytes(head) => {
            Err(RequestError::UriTooLong)
        }
        Err(e) => Err(RequestError::HeadersTooLarge(e)),
    }
}

fn header_bytes(head: &RequestHead) -> usize {
    head.headers.iter().map(|(n, v)| n.len() + v.len()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn head(
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> Result<RequestHead, RequestError> {
        let mut map = HeaderMap::new();
        for (n, v) in headers {
            map.append(
                http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        head_from_parts(
            &method.parse().unwrap(),
            &uri.parse().unwrap(),
            &map,
            false,
            "127.0.0.9:5555".parse().unwrap(),
            "rid",
            Scheme::Http,
        )
        .map(|f| f.head)
    }

    /// Method, headers, and whether that is a WebSocket upgrade.
    type UpgradeCase<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

    #[test]
    fn websocket_upgrades_are_recognised_by_their_tokens() {
        let cases: &[UpgradeCase] = &[
            (
                "GET",
                &[("connection", "Upgrade"), ("upgrade", "websocket")],
                true,
            ),
            (
                "GET",
                &[
                    ("connection", "keep-alive, UPGRADE"),
                    ("upgrade", "WebSocket"),
                ],
                true,
            ),
            (
                "GET",
                &[
                    ("connection", "keep-alive"),
                    ("connection", "upgrade"),
                    ("upgrade", "h2c, websocket/13"),
                ],
                true,
            ),
            (
                "POST",
                &[("connection", "upgrade"), ("upgrade", "websocket")],
                false,
            ),
            ("GET", &[("upgrade", "websocket")], false),
            (
                "GET",
                &[("connection", "upgrade"), ("upgrade", "h2c")],
                false,
            ),
            (
                "GET",
                &[("connection", "upgraded"), ("upgrade", "websocket")],
                false,
            ),
            (
                "GET",
                &[("connection", "upgrade"), ("upgrade", "websockets")],
                false,
            ),
        ];
        for (method, headers, want) in cases {
            let mut map = HeaderMap::new();
            for (n, v) in *headers {
                map.append(
                    http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            let got = is_websocket_upgrade(&method.parse().unwrap(), &map);
            assert_eq!(got, *want, "{method} {headers:?}");
        }
    }

    #[test]
    fn a_websocket_head_has_its_kind_and_a_body_and_no_upgrade_headers() {
        let mut map = HeaderMap::new();
        map.insert(HOST, HeaderValue::from_static("a.example"));
        map.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        map.insert(UPGRADE, HeaderValue::from_static("websocket"));
        map.insert(
            "sec-websocket-key",
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        let f = head_of_kind(
            StreamKind::WebSocket,
            &Method::GET,
            &"/chat".parse().unwrap(),
            &map,
            false,
            "127.0.0.9:5555".parse().unwrap(),
            "rid",
            Scheme::Http,
        )
        .unwrap();
        assert_eq!(f.head.kind, StreamKind::WebSocket);
        assert!(f.head.has_body);
        let names: Vec<&str> = f.head.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert!(names.contains(&"sec-websocket-key"), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.eq_ignore_ascii_case("upgrade") || n.eq_ignore_ascii_case("connection")),
            "{names:?}"
        );
    }

    /// Request target, headers, and the authority (or refusal) expected.
    type HostCase<'a> = (
        &'a str,
        &'a [(&'a str, &'a str)],
        Result<&'a str, RequestError>,
    );

    #[test]
    fn hosts_table() {
        use RequestError::*;
        let cases: &[HostCase] = &[
            ("/", &[("host", "app.test")], Ok("app.test")),
            ("/", &[("host", "App.Test:8080")], Ok("App.Test:8080")),
            ("/", &[("host", "127.0.0.1:80")], Ok("127.0.0.1:80")),
            ("/", &[("host", "[::1]:8080")], Ok("[::1]:8080")),
            ("/", &[("host", "[::1]")], Ok("[::1]")),
            ("/", &[], Err(NoHost)),
            (
                "/",
                &[("host", "a.test"), ("host", "a.test")],
                Err(DuplicateHost),
            ),
            (
                "/",
                &[("host", "a.test"), ("host", "b.test")],
                Err(DuplicateHost),
            ),
            ("/", &[("host", "")], Err(InvalidHost)),
            ("/", &[("host", "user@app.test")], Err(InvalidHost)),
            ("/", &[("host", "app.test:")], Err(InvalidHost)),
            ("/", &[("host", "app.test:99999")], Err(InvalidHost)),
            ("/", &[("host", "app.test:80:80")], Err(InvalidHost)),
            ("/", &[("host", "app test")], Err(InvalidHost)),
            ("/", &[("host", "app.test/x")], Err(InvalidHost)),
            ("/", &[("host", "[::1")], Err(InvalidHost)),
            ("/", &[("host", "[nope]:80")], Err(InvalidHost)),
            (
                "http://app.test/x",
                &[("host", "other.test")],
                Ok("app.test"),
            ),
            ("http://app.test:81/x", &[], Ok("app.test:81")),
            (
                "http://u@app.test/x",
                &[("host", "app.test")],
                Err(InvalidHost),
            ),
            (
                "http://app.test/x",
                &[("host", "a"), ("host", "b")],
                Err(DuplicateHost),
            ),
            (
                "http://app.test/x",
                &[("host", "bad host")],
                Err(InvalidHost),
            ),
        ];
        for (uri, headers, want) in cases {
            let got = head("GET", uri, headers).map(|h| h.authority);
            assert_eq!(
                got.as_deref().map_err(Clone::clone),
                *want,
                "{uri} {headers:?}"
            );
        }
        let long = "a".repeat(MAX_HOST + 1);
        assert_eq!(head("GET", "/", &[("host", &long)]), Err(InvalidHost));
    }

    #[test]
    fn absolute_form_sends_only_the_path_and_the_target_host() {
        let h = head("GET", "http://app.test/a?b=1", &[("host", "evil.test")]).unwrap();
        assert_eq!(h.path, "/a?b=1");
        assert_eq!(h.authority, "app.test");
        let xfh = h.headers.iter().find(|(n, _)| n == "x-forwarded-host");
        assert_eq!(xfh.map(|(_, v)| v.as_slice()), Some(&b"app.test"[..]));
        assert!(!h.headers.iter().any(|(n, _)| n == "host"));
        assert_eq!(head("GET", "http://app.test", &[]).unwrap().path, "/");
        // Found by the request_head fuzz target: an empty path before a query.
        assert_eq!(
            head("GET", "http://app.test?admin", &[]).unwrap().path,
            "/?admin"
        );
    }

    #[test]
    fn framing_and_method_are_checked() {
        let both = [
            ("host", "app.test"),
            ("content-length", "3"),
            ("transfer-encoding", "chunked"),
        ];
        assert_eq!(head("POST", "/", &both), Err(RequestError::AmbiguousLength));
        assert_eq!(
            head("CONNECT", "app.test:443", &[("host", "app.test:443")]),
            Err(RequestError::Connect)
        );
        assert!(head("OPTIONS", "*", &[("host", "app.test")]).is_ok());
    }

    #[test]
    fn heads_too_large_for_a_frame_are_refused_by_kind() {
        let host = [("host", "app.test")];
        // http::Uri (and so hyper) refuses targets over 65534 bytes itself.
        let long_path = format!("/{}", "a".repeat(65_400));
        assert_eq!(
            head("GET", &long_path, &host),
            Err(RequestError::UriTooLong)
        );
        let path_60k = format!("/{}", "a".repeat(60_000));
        assert_eq!(
            head(
                "GET",
                &path_60k,
                &[("host", "app.test"), ("x-a", &"b".repeat(10_000))]
            ),
            Err(RequestError::UriTooLong)
        );
        let big = "b".repeat(70_000);
        let e = head("GET", "/", &[("host", "app.test"), ("x-big", &big)]).unwrap_err();
        assert!(matches!(e, RequestError::HeadersTooLarge(_)), "{e:?}");
        assert_eq!(e.response().0, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let half = "b".repeat(40_000);
        let e = head(
            "GET",
            "/",
            &[("host", "app.test"), ("x-a", &half), ("x-b", &half)],
        )
        .unwrap_err();
        assert!(matches!(e, RequestError::HeadersTooLarge(_)), "{e:?}");
        // Just under the limit still goes through.
        assert!(
            head(
                "GET",
                "/",
                &[("host", "app.test"), ("x-a", &"b".repeat(60_000))]
            )
            .is_ok()
        );
    }

    #[test]
    fn every_refusal_is_a_4xx_with_a_short_plain_answer() {
        let all = [
            RequestError::NoHost,
            RequestError::DuplicateHost,
            RequestError::InvalidHost,
            RequestError::AmbiguousLength,
            RequestError::Connect,
            RequestError::UriTooLong,
            RequestError::HeadersTooLarge(FrameError::TooLarge(1)),
        ];
        for e in all {
            let (status, text) = e.response();
            assert!(status.is_client_error(), "{e:?}");
            assert!(text.len() < 80, "{text}");
        }
    }
}
