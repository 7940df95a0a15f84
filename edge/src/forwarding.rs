//! Which request headers cross the edge, and the forwarding headers it sets.
//!
//! Trust model: the edge is the first hop Warren trusts. Anything a public
//! client sends about where a request came from (`Forwarded`,
//! `X-Forwarded-For`, `X-Forwarded-Host`, `X-Forwarded-Proto`, `X-Real-IP`)
//! is a claim by an anonymous peer, so the edge drops those headers and sets
//! each one itself from what it saw: the TCP peer's address, the authority it
//! routed by, and the scheme of its listener. An origin behind a connector can
//! therefore believe these headers exactly as far as it believes the edge.
//! There is no list of trusted proxies in front of the edge (a CDN in front
//! would need one; nothing in Warren's deployment puts one there).
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) and every header named in the
//! `Connection` header are removed in both directions: they describe the
//! client's (or origin's) connection, not the message.

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use tunnel::message::{HeaderList, is_hop_by_hop};

use crate::proxy::REQUEST_ID;

/// Headers the edge always sets itself, replacing whatever the client sent.
pub const SET_BY_EDGE: [&str; 5] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// The scheme of the public listener a request came in on, as
/// `X-Forwarded-Proto` and `Forwarded: proto=` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// The plain listener (`--public-http`).
    Http,
    /// The TLS listener (`--public-https`).
    Https,
}

impl Scheme {
    /// `http` or `https`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The request headers sent to the origin: hop-by-hop headers, headers named
/// in `Connection`, `Host` (the head's authority carries it) and any client
/// forwarding headers removed; the edge's own forwarding headers and request
/// id added.
pub fn forward_headers(
    headers: &HeaderMap,
    authority: &str,
    client: SocketAddr,
    request_id: &str,
    scheme: Scheme,
) -> HeaderList {
    let nominated = connection_named(
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .map(|v| v.as_bytes()),
    );
    let mut out: HeaderList = Vec::with_capacity(headers.len() + SET_BY_EDGE.len() + 1);
    for (name, value) in headers {
        let n = name.as_str();
        if is_hop_by_hop(n)
            || n == "host"
            || n == REQUEST_ID
            || SET_BY_EDGE.contains(&n)
            || nominated.iter().any(|c| c == n)
        {
            continue;
        }
        out.push((n.to_string(), value.as_bytes().to_vec()));
    }
    // Formatted once: an address's Display is slow enough to show up in a
    // profile, and four headers carry it.
    let ip = client.ip();
    let ip_text = ip_text(ip);
    out.push(("x-forwarded-for".into(), ip_text.as_bytes().to_vec()));
    out.push(("x-real-ip".into(), ip_text.as_bytes().to_vec()));
    out.push(("x-forwarded-host".into(), authority.as_bytes().to_vec()));
    out.push((
        "x-forwarded-proto".into(),
        scheme.as_str().as_bytes().to_vec(),
    ));
    out.push((
        "forwarded".into(),
        forwarded(ip, &ip_text, authority, scheme).into_bytes(),
    ));
    out.push((REQUEST_ID.into(), request_id.as_bytes().to_vec()));
    out
}

/// The RFC 7239 `Forwarded` value for one hop. An IPv6 address and a host
/// with a port are quoted, as the RFC's grammar requires; the authority was
/// validated before (no quotes or backslashes in it).
fn forwarded(ip: IpAddr, ip_text: &str, authority: &str, scheme: Scheme) -> String {
    let mut out = String::with_capacity(32 + ip_text.len() + authority.len());
    out.push_str("for=");
    match ip {
        IpAddr::V4(_) => out.push_str(ip_text),
        IpAddr::V6(_) => {
            out.push_str("\"[");
            out.push_str(ip_text);
            out.push_str("]\"");
        }
    }
    out.push_str(";host=");
    if authority.contains(':') {
        out.push('"');
        out.push_str(authority);
        out.push('"');
    } else {
        out.push_str(authority);
    }
    out.push_str(";proto=");
    out.push_str(scheme.as_str());
    out
}

/// An address as text. IPv4 (nearly every client) by hand: `Display` for
/// an address goes through the formatting machinery once per octet, and
/// was the largest single cost of building a request head.
pub fn ip_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut out = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// `ip:port` as `SocketAddr` displays it, by way of [`ip_text`].
pub fn socket_text(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(v4) => {
            let mut out = ip_text(IpAddr::V4(*v4.ip()));
            out.push(':');
            push_decimal(&mut out, v4.port());
            out
        }
        SocketAddr::V6(_) => addr.to_string(),
    }
}

/// Appends a port in decimal, without the formatting machinery.
fn push_decimal(out: &mut String, mut n: u16) {
    let mut digits = [0u8; 5];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
}

/// The header names listed in `Connection` values, lower-cased.
pub fn connection_named<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<String> {
    values
        .flat_map(|v| v.split(|b| *b == b','))
        .filter_map(|token| std::str::from_utf8(token).ok())
        .map(|token| token.trim().to_ascii_lowercase())
        .filter(|token| !token.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn get(out: &HeaderList, n: &str) -> Vec<String> {
        out.iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            .collect()
    }

    #[test]
    fn client_forwarding_headers_are_replaced_not_appended() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "admin.internal"),
            ("x-real-ip", "10.0.0.2"),
            ("forwarded", "for=10.0.0.3"),
            (REQUEST_ID, "spoofed"),
            ("host", "app.test"),
            ("accept", "*/*"),
        ] {
            h.append(n, HeaderValue::from_static(v));
        }
        let out = forward_headers(
            &h,
            "app.test:8080",
            "127.0.0.9:5555".parse().unwrap(),
            "rid",
            Scheme::Http,
        );
        assert_eq!(get(&out, "x-forwarded-for"), ["127.0.0.9"]);
        assert_eq!(get(&out, "x-real-ip"), ["127.0.0.9"]);
        assert_eq!(get(&out, "x-forwarded-proto"), ["http"]);
        assert_eq!(get(&out, "x-forwarded-host"), ["app.test:8080"]);
        assert_eq!(
            get(&out, "forwarded"),
            ["for=127.0.0.9;host=\"app.test:8080\";proto=http"]
        );
        assert_eq!(get(&out, REQUEST_ID), ["rid"]);
        assert!(get(&out, "host").is_empty());
        assert_eq!(get(&out, "accept"), ["*/*"]);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.append(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.append("connection", HeaderValue::from_static(" x-other ,"));
        h.append("x-secret", HeaderValue::from_static("1"));
        h.append("x-other", HeaderValue::from_static("2"));
        h.append("keep-alive", HeaderValue::from_static("timeout=5"));
        h.append("upgrade", HeaderValue::from_static("h2c"));
        h.append("x-kept", HeaderValue::from_static("3"));
        let out = forward_headers(
            &h,
            "app.test",
            "127.0.0.9:5555".parse().unwrap(),
            "rid",
            Scheme::Http,
        );
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        for gone in ["connection", "x-secret", "x-other", "keep-alive", "upgrade"] {
            assert!(!names.contains(&gone), "{gone} in {names:?}");
        }
        assert_eq!(get(&out, "x-kept"), ["3"]);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for text in [
            "0.0.0.0:0",
            "127.0.0.1:8080",
            "10.20.30.40:65535",
            "255.255.255.255:1",
            "1.100.19.200:10",
            "[::1]:5555",
            "[2001:db8::7]:443",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(socket_text(addr), addr.to_string());
            assert_eq!(ip_text(addr.ip()), addr.ip().to_string());
        }
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let out = forward_headers(
            &HeaderMap::new(),
            "app.test",
            "[::1]:5555".parse().unwrap(),
            "rid",
            Scheme::Https,
        );
        assert_eq!(
            get(&out, "forwarded"),
            ["for=\"[::1]\";host=app.test;proto=https"]
        );
        assert_eq!(get(&out, "x-forwarded-proto"), ["https"]);
        assert_eq!(get(&out, "x-forwarded-for"), ["::1"]);
    }
}
