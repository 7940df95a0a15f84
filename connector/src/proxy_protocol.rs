//! The PROXY protocol version 2 header (HAProxy's `proxy-protocol.txt`,
//! section 2.2) that a TCP rule with `origin_request.proxy_protocol: v2`
//! writes to its origin before any payload, so that the origin (nginx,
//! HAProxy, Postfix, ...) sees the real client's address instead of the
//! connector's. Bytes only, no I/O: [`crate::tcp`] writes them.
//!
//! Only the binary version 2 and only TCP over IPv4/IPv6 (or LOCAL): no
//! TLVs, which no origin needs for the client address.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 2 (high nibble), command LOCAL (low nibble): the connection was
/// not relayed for a client; the receiver uses the real socket addresses.
const VERSION_LOCAL: u8 = 0x20;
/// Version 2, command PROXY: the addresses that follow are the client's.
const VERSION_PROXY: u8 = 0x21;
/// AF_UNSPEC, UNSPEC transport (with LOCAL).
const UNSPEC: u8 = 0x00;
/// AF_INET (high nibble), STREAM (low nibble).
const TCP4: u8 = 0x11;
/// AF_INET6, STREAM.
const TCP6: u8 = 0x21;

/// The PROXY protocol versions a rule may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The binary version 2.
    V2,
}

impl Version {
    /// Reads `origin_request.proxy_protocol`; the error says what to write.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "v2" => Ok(Self::V2),
            other => Err(format!(
                "proxy_protocol `{other}` is not supported: write `v2` (the binary PROXY protocol version 2) or leave it out"
            )),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v2")
    }
}

/// What the header says about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addresses {
    /// Command PROXY: the client (source) and the address it connected to
    /// (destination), both of the same family.
    Proxy {
        /// The real client.
        source: SocketAddr,
        /// Where the client connected.
        destination: SocketAddr,
    },
    /// Command LOCAL, AF_UNSPEC: no client address is known.
    Local,
}

impl Addresses {
    /// The addresses for a stream from `client_addr` (the stream head's
    /// `IP:PORT`), `destination` (its `warren-destination` header) and the
    /// origin socket's peer (`None` for a unix socket).
    ///
    /// Both addresses must be of one family. The destination is used when
    /// it is of the client's family; otherwise the origin's address mapped
    /// to that family stands in (an IPv4 one as `::ffff:a.b.c.d` for an
    /// IPv6 client); an IPv6 origin for an IPv4 client makes both IPv6
    /// (the client as `::ffff:a.b.c.d`); with no origin address (a unix
    /// socket), the unspecified address and port 0. IPv4-mapped IPv6
    /// addresses count as IPv4. `None` when `client_addr` does not parse:
    /// the caller sends [`Addresses::Local`] and says so in the log.
    pub fn for_stream(
        client_addr: &str,
        destination: Option<&[u8]>,
        origin_peer: Option<SocketAddr>,
    ) -> Option<Self> {
        let source = canonical(client_addr.trim().parse().ok()?);
        let destination = destination
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| d.trim().parse::<SocketAddr>().ok())
            .map(canonical)
            .filter(|d| d.is_ipv4() == source.is_ipv4());
        let (source, destination) = match (destination, origin_peer.map(canonical)) {
            (Some(d), _) => (source, d),
            (None, Some(peer)) => match in_family(peer, source.is_ipv4()) {
                Some(p) => (source, p),
                // An IPv4 client, an IPv6-only origin address.
                None => (to_v6(source), peer),
            },
            (None, None) => {
                let any: IpAddr = if source.is_ipv4() {
                    [0, 0, 0, 0].into()
                } else {
                    Ipv6Addr::UNSPECIFIED.into()
                };
                (source, SocketAddr::new(any, 0))
            }
        };
        Some(Self::Proxy {
            source,
            destination,
        })
    }

    /// The v2 header, signature to the last address byte (16, 28 or 52 bytes).
    pub fn v2_header(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + 36);
        out.extend_from_slice(&SIGNATURE);
        match *self {
            Self::Local => {
                out.extend_from_slice(&[VERSION_LOCAL, UNSPEC, 0, 0]);
            }
            Self::Proxy {
                source,
                destination,
            } => {
                match (source.ip(), destination.ip()) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        // 2 addresses of 4 bytes, 2 ports.
                        out.extend_from_slice(&[VERSION_PROXY, TCP4, 0, 12]);
                        out.extend_from_slice(&s.octets());
                        out.extend_from_slice(&d.octets());
                    }
                    // `for_stream` never mixes families; mapped, should a
                    // caller do it.
                    (s, d) => {
                        // 2 addresses of 16 bytes, 2 ports.
                        out.extend_from_slice(&[VERSION_PROXY, TCP6, 0, 36]);
                        out.extend_from_slice(&v6(s).octets());
                        out.extend_from_slice(&v6(d).octets());
                    }
                }
                out.extend_from_slice(&source.port().to_be_bytes());
                out.extend_from_slice(&destination.port().to_be_bytes());
            }
        }
        out
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// `a` in the IPv4 (`v4`) or IPv6 family, when it can be written there.
fn in_family(a: SocketAddr, v4: bool) -> Option<SocketAddr> {
    match (a.ip(), v4) {
        (IpAddr::V4(_), true) | (IpAddr::V6(_), false) => Some(a),
        (IpAddr::V4(_), false) => Some(to_v6(a)),
        (IpAddr::V6(ip), true) => ip
            .to_ipv4_mapped()
            .map(|ip| SocketAddr::new(ip.into(), a.port())),
    }
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(v6(a.ip()).into(), a.port())
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_header_bytes() {
        let h = Addresses::Proxy {
            source: addr("192.0.2.10:51000"),
            destination: addr("198.51.100.7:2222"),
        }
        .v2_header();
        let want: Vec<u8> = [
            &[
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
            ][..],
            &[0x21, 0x11, 0x00, 0x0c],
            &[192, 0, 2, 10],
            &[198, 51, 100, 7],
            &51000u16.to_be_bytes(),
            &[0x08, 0xae],
        ]
        .concat();
        assert_eq!(h, want);
        assert_eq!(h.len(), 28);
    }

    #[test]
    fn ipv6_header_bytes() {
        let h = Addresses::Proxy {
            source: addr("[2001:db8::1]:443"),
            destination: addr("[2001:db8::2]:22"),
        }
        .v2_header();
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x21, 0x00, 0x24]);
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        want.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        want.extend_from_slice(&[0x01, 0xbb, 0x00, 0x16]);
        assert_eq!(h, want);
        assert_eq!(h.len(), 52);
    }

    #[test]
    fn local_header_bytes() {
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(Addresses::Local.v2_header(), want);
    }

    #[test]
    fn addresses_for_a_stream_table() {
        let origin4 = Some(addr("127.0.0.5:22"));
        let origin6 = Some(addr("[::1]:22"));
        let dest4 = Some(&b"203.0.113.1:2222"[..]);
        let dest6 = Some(&b"[2001:db8::9]:2222"[..]);
        let proxy = |s: &str, d: &str| {
            Some(Addresses::Proxy {
                source: addr(s),
                destination: addr(d),
            })
        };
        /// Client address, destination header, origin peer, the addresses.
        type Row<'a> = (
            &'a str,
            Option<&'a [u8]>,
            Option<SocketAddr>,
            Option<Addresses>,
        );
        let table: [Row; 11] = [
            // The destination header, when of the client's family.
            (
                "192.0.2.1:4000",
                dest4,
                origin4,
                proxy("192.0.2.1:4000", "203.0.113.1:2222"),
            ),
            (
                "[2001:db8::1]:4000",
                dest6,
                origin4,
                proxy("[2001:db8::1]:4000", "[2001:db8::9]:2222"),
            ),
            // Missing or of the other family: the origin's address.
            (
                "192.0.2.1:4000",
                None,
                origin4,
                proxy("192.0.2.1:4000", "127.0.0.5:22"),
            ),
            (
                "192.0.2.1:4000",
                dest6,
                origin4,
                proxy("192.0.2.1:4000", "127.0.0.5:22"),
            ),
            (
                "[2001:db8::1]:4000",
                dest4,
                origin4,
                proxy("[2001:db8::1]:4000", "[::ffff:127.0.0.5]:22"),
            ),
            // An IPv4 client to an IPv6 origin: both IPv6.
            (
                "192.0.2.1:4000",
                None,
                origin6,
                proxy("[::ffff:192.0.2.1]:4000", "[::1]:22"),
            ),
            // A unix socket origin and no destination: unspecified.
            (
                "192.0.2.1:4000",
                None,
                None,
                proxy("192.0.2.1:4000", "0.0.0.0:0"),
            ),
            (
                "[2001:db8::1]:4000",
                Some(b"garbage"),
                None,
                proxy("[2001:db8::1]:4000", "[::]:0"),
            ),
            // IPv4-mapped addresses are IPv4.
            (
                "[::ffff:192.0.2.1]:4000",
                Some(b"[::ffff:203.0.113.1]:2222"),
                origin6,
                proxy("192.0.2.1:4000", "203.0.113.1:2222"),
            ),
            // No client address: LOCAL.
            ("", dest4, origin4, None),
            ("not-an-address", dest4, origin4, None),
        ];
        for (client, dest, origin, want) in table {
            assert_eq!(
                Addresses::for_stream(client, dest, origin),
                want,
                "{client} {dest:?} {origin:?}"
            );
        }
    }

    #[test]
    fn only_v2_is_a_version() {
        assert_eq!(Version::parse("v2"), Ok(Version::V2));
        for bad in ["v1", "V2", "2", "", "true"] {
            let err = Version::parse(bad).unwrap_err();
            assert!(err.contains("`v2`"), "{err}");
        }
    }
}
