//! Caps on what one party can hold on the edge, so a slow or hostile peer
//! costs its own tenant, never another one: concurrent requests per tunnel,
//! public connections per client address, pending (not yet registered) QUIC
//! connections in all and per source address.
//!
//! A [`Counter`] hands out [`Slot`]s per key up to its cap; a slot gives its
//! place back when dropped, so no path (error, timeout, a client that goes
//! away mid-request) can leak one.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use prometheus::IntGauge;
use tunnel::token::TunnelId;

/// Counts holders per key and refuses past a cap.
#[derive(Debug)]
pub struct Counter<K> {
    counts: Mutex<HashMap<K, usize>>,
    cap: usize,
    /// Follows the total across keys, when given.
    gauge: Option<IntGauge>,
}

impl<K: Hash + Eq + Clone> Counter<K> {
    /// A counter that lets at most `cap` holders share one key.
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            cap,
            gauge: None,
        })
    }

    /// As [`Counter::new`], keeping `gauge` at the total across keys.
    pub fn with_gauge(cap: usize, gauge: IntGauge) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::new(HashMap::new()),
            cap,
            gauge: Some(gauge),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for `key`, or `None` when `key` already holds `cap` of them.
    pub fn try_acquire(self: &Arc<Self>, key: K) -> Option<Slot<K>> {
        let mut counts = self.lock();
        let n = counts.entry(key.clone()).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        drop(counts);
        if let Some(g) = &self.gauge {
            g.inc();
        }
        Some(Slot {
            counter: self.clone(),
            key: Some(key),
        })
    }

    /// The most holders one key may have.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Holders of `key` now.
    pub fn held(&self, key: &K) -> usize {
        self.lock().get(key).copied().unwrap_or(0)
    }

    /// Keys with at least one holder (the map never keeps empty keys, so it
    /// stays as small as what is held).
    pub fn keys(&self) -> usize {
        self.lock().len()
    }

    fn release(&self, key: &K) {
        let mut counts = self.lock();
        if let Some(n) = counts.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(key);
            }
        }
        drop(counts);
        if let Some(g) = &self.gauge {
            g.dec();
        }
    }
}

/// One place in a [`Counter`], given back on drop.
#[derive(Debug)]
pub struct Slot<K: Hash + Eq + Clone> {
    counter: Arc<Counter<K>>,
    key: Option<K>,
}

impl<K: Hash + Eq + Clone> Drop for Slot<K> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.counter.release(&key);
        }
    }
}

/// What a client over `--max-connections-per-ip` gets before the edge
/// closes the connection: a complete answer, so it knows to back off.
pub const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\nretry-after: 1\r\nconnection: close\r\n\
content-length: 64\r\n\r\n503 Service Unavailable: too many connections from your address\n";

/// The key a per-address cap counts a client under: its IPv4 address, or
/// the /64 of an IPv6 address (one host usually holds a whole /64, so
/// counting single IPv6 addresses would not cap it at all).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// The limits every proxied request runs under.
#[derive(Debug)]
pub struct RequestLimits {
    /// Requests in flight per tunnel.
    pub per_tunnel: Arc<Counter<TunnelId>>,
    /// Wait for a connector to grant a stream, and to take the head.
    pub stream_open_timeout: Duration,
    /// Longest pause in a request or response body.
    pub body_idle_timeout: Duration,
}

/// A request the edge stopped because a limit, a timeout or the client's
/// own body ended it. Each maps to a status that tells the client what
/// happened; none is the origin's fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// The tunnel already has `--max-requests-per-tunnel` requests in flight.
    #[error("too many requests in flight for this tunnel")]
    TunnelBusy,
    /// The connector granted no stream, or did not take the request head,
    /// within `--stream-open-timeout`.
    #[error("the connector did not take the request within the stream open timeout")]
    StreamOpenTimeout,
    /// The client sent no request body bytes for `--body-idle-timeout`.
    #[error("the client's request body stalled")]
    RequestBodyIdle,
    /// The client's request body failed (reset, bad chunked encoding).
    #[error("the client's request body failed")]
    RequestBodyFailed,
    /// The connector read no request body bytes for `--body-idle-timeout`.
    #[error("the connector stopped reading the request body")]
    UploadStalled,
}

impl LimitError {
    /// The status and short body the client gets.
    pub fn response(self) -> (StatusCode, &'static str) {
        match self {
            Self::TunnelBusy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too many requests in flight for this hostname; retry later",
            ),
            Self::StreamOpenTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "connector did not take the request in time",
            ),
            Self::RequestBodyIdle => (StatusCode::REQUEST_TIMEOUT, "request body stalled"),
            Self::RequestBodyFailed => (StatusCode::BAD_REQUEST, "request body ended abruptly"),
            Self::UploadStalled => (
                StatusCode::GATEWAY_TIMEOUT,
                "connector stopped reading the request body",
            ),
        }
    }
}

/// Logs a WARN line at most once per interval and says how many were left
/// out in between, so a flood of refusals cannot flood the log (the metrics
/// still count every one).
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    state: Mutex<(Option<std::time::Instant>, u64)>,
}

impl LogLimiter {
    /// At most one line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were
    /// suppressed since the last one; `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match s.0 {
            Some(last) if now.duration_since(last) < self.every => {
                s.1 += 1;
                None
            }
            _ => {
                let suppressed = s.1;
                *s = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_caps_each_key_and_frees_on_drop() {
        let gauge = IntGauge::new("t", "t").unwrap();
        let c = Counter::with_gauge(2, gauge.clone());
        let a1 = c.try_acquire("a").unwrap();
        let a2 = c.try_acquire("a").unwrap();
        assert!(c.try_acquire("a").is_none(), "third holder of one key");
        let b = c.try_acquire("b").expect("another key is unaffected");
        assert_eq!(gauge.get(), 3);
        drop(a1);
        assert_eq!(c.held(&"a"), 1);
        let _a3 = c.try_acquire("a").expect("a freed slot is reusable");
        drop((a2, b));
        assert_eq!(c.keys(), 1, "keys without holders are forgotten");
        assert_eq!(gauge.get(), 1);
    }

    #[test]
    fn the_log_limiter_counts_what_it_suppressed() {
        let l = LogLimiter::new(Duration::from_secs(3600));
        assert_eq!(l.allow(), Some(0));
        assert_eq!(l.allow(), None);
        assert_eq!(l.allow(), None);
        let l = LogLimiter {
            every: Duration::ZERO,
            state: Mutex::new((Some(std::time::Instant::now()), 2)),
        };
        assert_eq!(l.allow(), Some(2));
    }

    #[test]
    fn the_per_ip_refusal_is_a_whole_http_answer() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(head.contains("\r\nretry-after: 1"), "{head}");
        let len = format!("\r\ncontent-length: {}", body.len());
        assert!(head.contains(&len), "{head} vs {}", body.len());
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let key = |s: &str| address_key(s.parse().unwrap()).to_string();
        assert_eq!(key("127.0.0.9"), "127.0.0.9");
        assert_eq!(key("::ffff:10.1.2.3"), "10.1.2.3");
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:bbbb::7"), "2001:db8:1:2::");
    }

    #[test]
    fn every_limit_answers_a_client_status_with_a_short_body() {
        use LimitError::*;
        let cases = [
            (TunnelBusy, 503),
            (StreamOpenTimeout, 504),
            (RequestBodyIdle, 408),
            (RequestBodyFailed, 400),
            (UploadStalled, 504),
        ];
        for (e, want) in cases {
            let (status, text) = e.response();
            assert_eq!(status.as_u16(), want, "{e:?}");
            assert!(text.len() < 80, "{text}");
        }
    }
}
