//! What the two ways TCP enters the edge share: a public TCP port
//! ([`crate::tcp_ports`]) and a `connector access` WebSocket
//! ([`crate::access`]). Both take places in the same caps (per client
//! address, per tunnel), open a stream of kind `tcp` with the same head, wait
//! for the connector's answer, then relay bytes with the same metrics.
//!
//! The head (DESIGN.md "Data plane contract"): kind `tcp`, method `CONNECT`,
//! the hostname as authority, an empty path, a body, the real client as
//! `client_addr`, and `warren-destination`: the address the client
//! connected to on the edge, which the connector writes as the PROXY v2
//! destination.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::BytesMut;
use daemon::metrics::GaugeGuard;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::TaskTracker;
use tunnel::io::{BodyReader, ByteMeter, IoError};
use tunnel::message::{RequestHead, ResponseHead, StreamErrorKind, StreamKind};
use tunnel::token::TunnelId;

use crate::forwarding::socket_text;
use crate::limits::{Counter, LimitError, LogLimiter, Slot, address_key};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyError};
use crate::registry::InFlight;
use crate::tunnels::Tunnel;

/// The head header that carries the address the client connected to.
pub const DESTINATION: &str = "warren-destination";

/// QUIC error code for a TCP relay abandoned because one side failed.
const RELAY_FAILED: u32 = 2;

/// How a TCP connection came in: the `via` label of its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// A public TCP port of the tunnels file.
    Port,
    /// A `connector access` WebSocket on a public HTTP(S) listener.
    Access,
}

impl Via {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Port => "port",
            Self::Access => "access",
        }
    }
}

/// Caps and tasks shared by every TCP connection of the edge.
pub struct TcpShared {
    /// `--tcp-max-connections-per-client`, by client address (IPv6: /64).
    pub per_client: Arc<Counter<IpAddr>>,
    /// `--tcp-max-connections-per-tunnel`.
    pub per_tunnel: Arc<Counter<TunnelId>>,
    /// Every relay (TCP connections and upgraded WebSockets), so shutdown
    /// waits for them up to the grace period.
    pub relays: TaskTracker,
    /// Throttles the log line about refused connections.
    pub refusal_log: LogLimiter,
}

/// A TCP connection's places in the caps, given back on drop.
pub struct Places {
    _client: Slot<IpAddr>,
    _tunnel: Slot<TunnelId>,
}

impl TcpShared {
    /// Caps of `per_client` and `per_tunnel` connections; relays go in
    /// `relays`.
    pub fn new(per_client: usize, per_tunnel: usize, relays: TaskTracker) -> Self {
        Self {
            per_client: Counter::new(per_client),
            per_tunnel: Counter::new(per_tunnel),
            relays,
            refusal_log: LogLimiter::new(std::time::Duration::from_secs(10)),
        }
    }

    /// Places for a connection from `client` to `tunnel`, or the reason
    /// (an `edge_tcp_refused_total` label, counted here) it is refused.
    pub fn admit(
        &self,
        client: IpAddr,
        tunnel: TunnelId,
        metrics: &Metrics,
    ) -> Result<Places, &'static str> {
        let refused = |reason: &'static str| {
            metrics.tcp_refused(reason);
            if let Some(suppressed) = self.refusal_log.allow() {
                tracing::warn!(client = %client, tunnel = %tunnel, reason, suppressed,
                    "TCP connection refused: a TCP connection cap is reached \
                     (--tcp-max-connections-per-client, --tcp-max-connections-per-tunnel)");
            }
            reason
        };
        let client_slot = self
            .per_client
            .try_acquire(address_key(client))
            .ok_or_else(|| refused("client_limit"))?;
        let tunnel_slot = self
            .per_tunnel
            .try_acquire(tunnel)
            .ok_or_else(|| refused("tunnel_limit"))?;
        Ok(Places {
            _client: client_slot,
            _tunnel: tunnel_slot,
        })
    }
}

/// A `tcp` stream the connector accepted (it answered 200): ready to relay.
pub struct Opened {
    conn: InFlight,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
}

impl Opened {
    /// Abandons the stream (the client went away before the relay began).
    pub fn abort(mut self) {
        let _ = self.send.reset(quinn::VarInt::from_u32(RELAY_FAILED));
        let _ = self.recv.stop(quinn::VarInt::from_u32(RELAY_FAILED));
    }
}

/// The `tcp` stream head.
pub fn head(
    hostname: &str,
    client: SocketAddr,
    destination: SocketAddr,
    id: String,
) -> RequestHead {
    RequestHead {
        kind: StreamKind::Tcp,
        method: "CONNECT".into(),
        authority: hostname.to_owned(),
        path: String::new(),
        has_body: true,
        headers: vec![(
            DESTINATION.to_owned(),
            socket_text(destination).into_bytes(),
        )],
        client_addr: socket_text(client),
        request_id: id,
    }
}

/// Opens a `tcp` stream to `hostname` on `tunnel` and waits for the
/// connector's answer: `Ok` on its 200, else the error (the connector's
/// [`StreamErrorKind`] as [`ProxyError::Origin`]).
pub async fn connect(
    proxy: &Proxy,
    tunnel: &Tunnel,
    hostname: &str,
    client: SocketAddr,
    destination: SocketAddr,
) -> Result<Opened, ProxyError> {
    let request_id = proxy.request_id();
    let head = head(hostname, client, destination, request_id.clone());
    let mut frame = BytesMut::with_capacity(128);
    tunnel::codec::encode_request_head(&head, &mut frame).map_err(IoError::from)?;
    let (conn, mut send, mut recv) = proxy.open_on_tunnel(&tunnel.id).await?;
    proxy
        .write_head(&mut send, &mut recv, frame.freeze())
        .await?;
    match proxy.response_head(&mut recv, None).await? {
        ResponseHead::Response { status: 200, .. } => Ok(Opened { conn, send, recv }),
        ResponseHead::Response { status, .. } => {
            tracing::debug!(
                request_id,
                status,
                "connector answered a tcp stream with a status other than 200"
            );
            let _ = send.reset(quinn::VarInt::from_u32(RELAY_FAILED));
            Err(ProxyError::Origin(StreamErrorKind::OriginProtocol))
        }
        ResponseHead::Error(kind) => {
            tracing::debug!(
                request_id,
                kind = kind.as_str(),
                "connector could not connect the tcp stream"
            );
            Err(ProxyError::Origin(kind))
        }
    }
}

/// The `edge_tcp_refused_total` reason for a failed [`connect`].
pub fn refusal_reason(e: &ProxyError) -> &'static str {
    match e {
        ProxyError::NoConnection => "no_connector",
        ProxyError::Origin(_) => "origin_error",
        ProxyError::NoTcpService => "no_tcp_service",
        ProxyError::TcpLimit(reason) => reason,
        ProxyError::Limit(LimitError::TunnelBusy) => "tunnel_limit",
        _ => "tunnel_error",
    }
}

/// Relays an opened stream and the client's connection until both are done
/// or one fails, with the tunnel's TCP metrics; the places are held until
/// it ends.
pub async fn relay<R, W>(
    opened: Opened,
    tunnel: &Tunnel,
    via: Via,
    client_read: R,
    client_write: W,
    metrics: &Metrics,
    places: Places,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let open = metrics
        .tcp_streams_open
        .with_label_values(&[&tunnel.label, via.as_str()]);
    let _open = GaugeGuard::new(open);
    let meter = TcpMeter {
        to_origin: metrics
            .tcp_bytes
            .with_label_values(&[&tunnel.label, "to_origin"]),
        to_client: metrics
            .tcp_bytes
            .with_label_values(&[&tunnel.label, "to_client"]),
    };
    let Opened { conn, send, recv } = opened;
    let relayed = tunnel::io::relay(
        BodyReader::new(recv),
        send,
        client_read,
        client_write,
        RELAY_FAILED,
        &meter,
    )
    .await;
    if let Err(e) = relayed {
        tracing::debug!(tunnel = %tunnel.id, via = via.as_str(), error = %e, "TCP relay ended with an error");
    }
    drop((conn, places));
}

/// Counts relayed bytes on the tunnel's two `edge_tcp_bytes_total` series.
struct TcpMeter {
    to_origin: IntCounter,
    to_client: IntCounter,
}

impl ByteMeter for TcpMeter {
    fn to_peer(&self, n: usize) {
        self.to_client.inc_by(n as u64);
    }

    fn to_tunnel(&self, n: usize) {
        self.to_origin.inc_by(n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_head_follows_the_contract_and_encodes() {
        let h = head(
            "ssh.example.com",
            "192.0.2.7:50000".parse().unwrap(),
            "127.0.0.1:2222".parse().unwrap(),
            "abc".into(),
        );
        assert_eq!(h.kind, StreamKind::Tcp);
        assert_eq!(h.method, "CONNECT");
        assert_eq!(h.path, "");
        assert!(h.has_body);
        assert_eq!(h.client_addr, "192.0.2.7:50000");
        assert_eq!(
            h.headers,
            vec![(DESTINATION.to_string(), b"127.0.0.1:2222".to_vec())]
        );
        let mut out = BytesMut::new();
        tunnel::codec::encode_request_head(&h, &mut out).unwrap();
        let v6 = head(
            "a.example.com",
            "[2001:db8::1]:9".parse().unwrap(),
            "[::1]:22".parse().unwrap(),
            "x".into(),
        );
        assert_eq!(v6.client_addr, "[2001:db8::1]:9");
    }

    #[test]
    fn caps_refuse_per_client_and_per_tunnel_and_count_why() {
        let metrics = Metrics::new("test");
        let shared = TcpShared::new(2, 3, TaskTracker::new());
        let t1: TunnelId = "00000000-0000-4000-8000-000000000001".parse().unwrap();
        let t2: TunnelId = "00000000-0000-4000-8000-000000000002".parse().unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = shared.admit(a, t1, &metrics).unwrap();
        let _p2 = shared.admit(a, t2, &metrics).unwrap();
        assert_eq!(shared.admit(a, t1, &metrics).err(), Some("client_limit"));
        let _p3 = shared.admit(b, t1, &metrics).unwrap();
        let _p4 = shared.admit(b, t1, &metrics).unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        assert_eq!(shared.admit(c, t1, &metrics).err(), Some("tunnel_limit"));
        assert_eq!(
            shared.per_client.held(&c),
            0,
            "a refused place is given back"
        );
        drop(p1);
        assert!(shared.admit(c, t1, &metrics).is_ok());
        let count = |r: &str| metrics.tcp_refused.with_label_values(&[r]).get();
        assert_eq!((count("client_limit"), count("tunnel_limit")), (1, 1));
    }

    #[test]
    fn refusal_reasons() {
        assert_eq!(refusal_reason(&ProxyError::NoConnection), "no_connector");
        assert_eq!(
            refusal_reason(&ProxyError::Origin(StreamErrorKind::OriginUnreachable)),
            "origin_error"
        );
        assert_eq!(refusal_reason(&ProxyError::Timeout), "tunnel_error");
    }
}
