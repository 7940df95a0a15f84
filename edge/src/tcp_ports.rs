//! Public TCP ports (what rathole, bore and frp offer): each `tcp_ports`
//! entry of the tunnels file is a listener on `--public-tcp-address`, and
//! each connection it accepts becomes a `tcp` stream to the port's tunnel,
//! with the port's hostname as authority.
//!
//! The set of listeners follows the tunnels file: [`TcpPorts::sync`] runs at
//! start and at every reload, binds the ports that are new, closes the ones
//! that are gone (their open connections finish on their own), and tries
//! again the ports that could not be bound before. A port that cannot be
//! bound does not stop the edge: it is logged with the fix and counted.
//! Which tunnel a port belongs to is looked up per connection, so a port
//! that moves to another tunnel needs no rebind.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::proxy::Proxy;
use crate::sockets::SocketSource;
use crate::tcp::{self, Via};
use crate::tunnels::TunnelTable;

/// The listeners of the public TCP ports.
pub struct TcpPorts {
    proxy: Arc<Proxy>,
    address: IpAddr,
    /// Listening ports, each with the token that closes its listener.
    listening: Mutex<HashMap<u16, CancellationToken>>,
    /// Fires at shutdown: every listener stops accepting.
    drain: CancellationToken,
    /// Where listeners come from (under a supervisor they outlive us).
    sockets: SocketSource,
}

impl TcpPorts {
    /// No port yet; [`TcpPorts::sync`] binds them.
    pub fn new(
        proxy: Arc<Proxy>,
        address: IpAddr,
        drain: CancellationToken,
        sockets: SocketSource,
    ) -> Arc<Self> {
        Arc::new(Self {
            proxy,
            address,
            listening: Mutex::new(HashMap::new()),
            drain,
            sockets,
        })
    }

    /// Makes the listeners match `table`: closes the ports it no longer has,
    /// binds the ones not listening yet. Must run inside the runtime.
    pub fn sync(self: &Arc<Self>, table: &TunnelTable) {
        let metrics = &self.proxy.metrics;
        let mut listening = self.listening.lock().unwrap_or_else(|e| e.into_inner());
        listening.retain(|port, stop| {
            let keep = table.tcp_port(*port).is_some();
            if !keep {
                stop.cancel();
                self.sockets.release(SocketAddr::new(self.address, *port));
                tracing::info!(port, "public TCP port removed from the tunnels file; closed (open connections finish)");
            }
            keep
        });
        if !self.drain.is_cancelled() {
            for (&port, owner) in table.tcp_ports() {
                if listening.contains_key(&port) {
                    continue;
                }
                let addr = SocketAddr::new(self.address, port);
                match self.sockets.tcp(addr) {
                    Ok(listener) => {
                        let stop = self.drain.child_token();
                        listening.insert(port, stop.clone());
                        tracing::info!(%addr, tunnel = %owner.tunnel.id, hostname = owner.hostname,
                            "public TCP port listening");
                        tokio::spawn(self.clone().accept_loop(listener, port, stop));
                    }
                    Err(e) => {
                        metrics.tcp_port_bind_errors.inc();
                        tracing::error!(%addr, tunnel = %owner.tunnel.id, error = %e,
                            "cannot bind public TCP port {port}: free the port (or give the edge the \
                             right to bind it), or change this tunnel's tcp_ports in the tunnels file; \
                             tried again at the next reload of the tunnels file");
                    }
                }
            }
        }
        metrics.tcp_ports_bound.set(listening.len() as i64);
    }

    /// The ports listening now, sorted.
    pub fn ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .listening
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        ports.sort_unstable();
        ports
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        port: u16,
        stop: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(5);
        loop {
            let (stream, client) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => { backoff = Duration::from_millis(5); x }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, don't spin.
                        tracing::warn!(port, error = %e, "accept failed on a public TCP port");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                _ = stop.cancelled() => break,
            };
            self.proxy
                .tcp
                .relays
                .spawn(self.clone().connection(stream, client, port));
        }
    }

    /// One accepted connection: caps, then the stream, then the relay. Any
    /// refusal closes the connection at once (a TCP port has no way to say
    /// why) and is counted.
    async fn connection(self: Arc<Self>, stream: TcpStream, client: SocketAddr, port: u16) {
        let proxy = &self.proxy;
        let metrics = &proxy.metrics;
        let Some(owner) = proxy.table.current().tcp_port(port).cloned() else {
            // Removed from the file between the accept and now.
            return;
        };
        let Ok(places) = proxy.tcp.admit(client.ip(), owner.tunnel.id, metrics) else {
            return;
        };
        metrics
            .tcp_connections
            .with_label_values(&[&owner.tunnel.label, Via::Port.as_str()])
            .inc();
        let _ = stream.set_nodelay(true);
        crate::websocket::keepalive(&stream);
        let destination = stream
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::new(self.address, port));
        let opened =
            match tcp::connect(proxy, &owner.tunnel, &owner.hostname, client, destination).await {
                Ok(o) => o,
                Err(e) => {
                    metrics.tcp_refused(tcp::refusal_reason(&e));
                    tracing::debug!(port, %client, tunnel = %owner.tunnel.id, error = %e,
                        "public TCP connection closed: no stream to the origin");
                    return;
                }
            };
        let (read, write) = stream.into_split();
        tcp::relay(
            opened,
            &owner.tunnel,
            Via::Port,
            read,
            write,
            metrics,
            places,
        )
        .await;
    }
}

/// Binds a listener (std's bind sets SO_REUSEADDR, so a port closed at a
/// reload can be bound again at the next one despite TIME_WAIT).
#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Counter, RequestLimits};
    use crate::metrics::Metrics;
    use crate::registry::ConnRegistry;
    use crate::tunnels::{SharedTable, TunnelsFile};

    fn proxy(metrics: &Metrics) -> Arc<Proxy> {
        Arc::new(Proxy {
            table: SharedTable::default(),
            registry: Arc::new(ConnRegistry::new(metrics.clone(), Duration::ZERO)),
            metrics: metrics.clone(),
            response_timeout: Duration::from_secs(1),
            limits: RequestLimits {
                per_tunnel: Counter::new(1),
                stream_open_timeout: Duration::from_secs(1),
                body_idle_timeout: Duration::from_secs(1),
            },
            faults: Default::default(),
            id_prefix: 0,
            next_id: Default::default(),
            tcp: tcp::TcpShared::new(1, 1, tokio_util::task::TaskTracker::new()),
        })
    }

    fn table(ports: &[u16]) -> TunnelTable {
        let ports: String = ports
            .iter()
            .map(|p| format!("\n      - {{port: {p}, hostname: a.example.com}}"))
            .collect();
        let yaml = format!(
            "tunnels:\n  - id: 00000000-0000-4000-8000-000000000001\n    hostnames: [a.example.com]\n    \
             secret_sha256: '{}'\n    tcp_ports:{ports}\n",
            "00".repeat(32)
        );
        let file: TunnelsFile = serde_yaml::from_str(&yaml).unwrap();
        TunnelTable::build(&file).unwrap()
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[tokio::test]
    async fn ports_follow_the_table_and_a_failed_bind_is_retried_at_the_next_sync() {
        let metrics = Metrics::new("test");
        let drain = CancellationToken::new();
        let ports = TcpPorts::new(
            proxy(&metrics),
            [127, 0, 0, 1].into(),
            drain.clone(),
            SocketSource::Direct,
        );
        let (a, b) = (free_port(), free_port());
        let squatter = std::net::TcpListener::bind(("127.0.0.1", b)).unwrap();

        ports.sync(&table(&[a, b]));
        assert_eq!(ports.ports(), [a]);
        assert_eq!(metrics.tcp_port_bind_errors.get(), 1);
        assert_eq!(metrics.tcp_ports_bound.get(), 1);
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", a))
                .await
                .is_ok()
        );

        // The port is free now; the next reload binds it and drops `a`.
        drop(squatter);
        ports.sync(&table(&[b]));
        assert_eq!(ports.ports(), [b]);
        assert_eq!(metrics.tcp_ports_bound.get(), 1);
        assert!(
            tokio::net::TcpStream::connect(("127.0.0.1", b))
                .await
                .is_ok()
        );
        let mut closed = false;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", a))
                .await
                .is_err()
            {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(closed, "the removed port still accepts");

        // After shutdown began, nothing is bound again.
        drain.cancel();
        ports.sync(&table(&[b, a]));
        assert_eq!(ports.ports(), [b], "a draining edge binds no new port");
    }
}
