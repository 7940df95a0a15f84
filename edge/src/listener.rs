//! The QUIC listener connectors dial: the registration handshake on the
//! control stream, then the connection's life in the registry until it ends
//! or the edge drains.
//!
//! A connection that has not registered yet is anybody's, so it gets little:
//! a place among `--max-pending-registrations` (and the per-address cap),
//! taken before the handshake; one stream and a receive window of one frame
//! (see [`tunnel::endpoint::server_config`]); and `--registration-timeout`
//! for the handshake and the registration together. Only a registered
//! connection gets the full windows.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::PROTOCOL_VERSION;
use tunnel::codec::Frame;
use tunnel::io::{IoError, read_control, write_frame};
use tunnel::message::{ControlMessage, Drain, Register, Registered, RejectReason, Rejected};

use crate::limits::{Counter, LogLimiter, Slot};
use crate::metrics::Metrics;
use crate::registry::{ConnRegistry, LiveConn};
use crate::tunnels::SharedTable;

/// How long a refused connector has to read the refusal before we close.
const REJECT_LINGER: Duration = Duration::from_secs(2);
/// Longest wait to hand a control message (drain) to a registered
/// connector that does not read its control stream.
const CONTROL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// At most one WARN line about refused connections per this interval.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Caps on connections that have not registered yet.
#[derive(Debug)]
pub struct PendingLimits {
    /// In all.
    pub global: Arc<Counter<()>>,
    /// Per source IP address.
    pub per_ip: Arc<Counter<IpAddr>>,
    /// The handshake and the registration, together.
    pub timeout: Duration,
    refusals: LogLimiter,
}

impl PendingLimits {
    /// `global` pending connections in all, `per_ip` from one address,
    /// each with `timeout` to register; `gauge` follows the total.
    pub fn new(
        global: usize,
        per_ip: usize,
        timeout: Duration,
        gauge: prometheus::IntGauge,
    ) -> Self {
        Self {
            global: Counter::with_gauge(global, gauge),
            per_ip: Counter::new(per_ip),
            timeout,
            refusals: LogLimiter::new(REFUSAL_LOG_EVERY),
        }
    }
}

/// A pending connection's places in both caps, given back when it registers
/// or fails.
type Pending = (Slot<()>, Slot<IpAddr>);

/// Accepts and registers connector connections.
pub struct TunnelListener {
    /// The tunnel table.
    pub table: SharedTable,
    /// Where registered connections go.
    pub registry: Arc<ConnRegistry>,
    /// Metrics.
    pub metrics: Metrics,
    /// This edge's id, sent in `Registered`.
    pub edge_id: String,
    /// This edge's location, sent in `Registered`.
    pub location: String,
    /// The drain deadline sent to connectors, in milliseconds: the grace
    /// period, or the upgrade grace period when a successor took over.
    pub drain_deadline: Arc<std::sync::atomic::AtomicU64>,
    /// Caps on connections not registered yet.
    pub pending: PendingLimits,
}

impl TunnelListener {
    /// Accepts connections until the endpoint closes. Once `drain` fires,
    /// new connections are refused at once so connectors go elsewhere.
    pub async fn accept_loop(
        self: Arc<Self>,
        endpoint: quinn::Endpoint,
        drain: CancellationToken,
        tasks: TaskTracker,
    ) {
        while let Some(incoming) = endpoint.accept().await {
            if drain.is_cancelled() {
                incoming.refuse();
                continue;
            }
            let Some((incoming, pending)) = self.admit(incoming) else {
                continue;
            };
            let this = self.clone();
            let drain = drain.clone();
            tasks.spawn(async move {
                let remote = incoming.remote_address();
                let deadline = Instant::now() + this.pending.timeout;
                match tokio::time::timeout_at(deadline, incoming).await {
                    Ok(Ok(conn)) => this.serve(conn, remote, drain, pending, deadline).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "QUIC handshake failed"),
                    Err(_) => {
                        this.metrics.timed_out("registration");
                        tracing::debug!(%remote, "QUIC handshake did not finish in time");
                    }
                }
            });
        }
    }

    /// Takes a place for a new connection among the pending ones, or turns
    /// it away before the handshake (which is what costs memory and CPU).
    /// An address that has not proven it can receive (it may be forged,
    /// to get a real connector's address refused) is asked to, with a
    /// stateless retry, before it is refused or when the edge is half full.
    fn admit(&self, incoming: quinn::Incoming) -> Option<(quinn::Incoming, Pending)> {
        let unproven = !incoming.remote_address_validated() && incoming.may_retry();
        let global = &self.pending.global;
        if unproven && 2 * global.held(&()) >= global.cap() {
            let _ = incoming.retry();
            return None;
        }
        let ip = crate::limits::address_key(incoming.remote_address().ip());
        let limit = match global.try_acquire(()) {
            None => "pending_registrations",
            Some(g) => match self.pending.per_ip.try_acquire(ip) {
                Some(p) => return Some((incoming, (g, p))),
                None => "pending_registrations_per_ip",
            },
        };
        if unproven {
            let _ = incoming.retry();
            return None;
        }
        self.metrics.limit_hit(limit);
        if let Some(suppressed) = self.pending.refusals.allow() {
            tracing::warn!(%ip, limit, suppressed,
                "connector connection refused before the handshake: too many pending registrations");
        }
        incoming.refuse();
        None
    }

    async fn serve(
        &self,
        conn: quinn::Connection,
        remote: SocketAddr,
        drain: CancellationToken,
        pending: Pending,
        deadline: Instant,
    ) {
        let registered = tokio::time::timeout_at(deadline, async {
            let (send, mut recv) = conn.accept_bi().await?;
            let msg = read_control(&mut recv).await?;
            Ok::<_, IoError>((send, recv, msg))
        })
        .await;
        let (mut send, mut recv, msg) = match registered {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                self.reject_quietly(&conn, remote, RejectReason::Malformed, &e.to_string());
                return;
            }
            Err(_) => {
                self.registration_timed_out(&conn, remote, "no registration in time");
                return;
            }
        };
        let reg = match msg {
            Some(ControlMessage::Register(reg)) => reg,
            _ => {
                let why = "the first control message must be a registration";
                self.reject(&conn, &mut send, remote, RejectReason::Malformed, why)
                    .await;
                return;
            }
        };
        let secret_hash = match self.check(&reg, &drain) {
            Ok(hash) => hash,
            Err((reason, why)) => {
                self.reject(&conn, &mut send, remote, reason, &why).await;
                return;
            }
        };
        let hello = ControlMessage::Registered(Registered {
            edge_id: self.edge_id.clone(),
            location: self.location.clone(),
        });
        let written =
            tokio::time::timeout_at(deadline, write_frame(&mut send, &Frame::Control(hello))).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "connector went away during registration");
                return;
            }
            Err(_) => {
                self.registration_timed_out(&conn, remote, "did not read the answer in time");
                return;
            }
        }
        // Registered: no longer anybody's. Full windows and streams.
        drop(pending);
        tunnel::endpoint::open_registered(&conn);
        let live = Arc::new(LiveConn::new(
            conn.clone(),
            reg.tunnel_id,
            reg.connector_id.clone(),
            reg.conn_index,
            secret_hash,
        ));
        self.registry.add(live.clone());
        self.metrics.registrations.inc();
        tracing::info!(%remote, tunnel = %reg.tunnel_id, connector = %reg.connector_id,
            conn_index = reg.conn_index, connector_version = %reg.connector_version,
            "connector registered");

        let mut drain_sent = false;
        let reason = loop {
            tokio::select! {
                msg = read_control(&mut recv) => match msg {
                    Ok(Some(ControlMessage::Unregister)) => {
                        tracing::info!(%remote, conn_index = reg.conn_index, "connector unregistered this connection");
                        live.unregister();
                    }
                    Ok(Some(other)) => tracing::debug!(%remote, ?other, "ignoring control message"),
                    Ok(None) => {
                        // The control stream is finished: no more control
                        // messages, but streams in flight may go on.
                        live.unregister();
                        break conn.closed().await.to_string();
                    }
                    Err(e) => {
                        live.unregister();
                        break e.to_string();
                    }
                },
                _ = drain.cancelled(), if !drain_sent => {
                    drain_sent = true;
                    let deadline = Duration::from_millis(self.drain_deadline.load(std::sync::atomic::Ordering::SeqCst));
                    let msg = Frame::Control(ControlMessage::Drain(Drain { deadline }));
                    let write = write_frame(&mut send, &msg);
                    match tokio::time::timeout(CONTROL_WRITE_TIMEOUT, write).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "cannot send drain"),
                        Err(_) => tracing::debug!(%remote, "connector does not read drain; it stays until the grace period ends"),
                    }
                }
                closed = conn.closed() => break closed.to_string(),
            }
        };
        self.registry.remove(&live);
        tracing::info!(%remote, tunnel = %reg.tunnel_id, conn_index = reg.conn_index, %reason,
            "connector connection ended");
    }

    /// Checks a registration: version, tunnel, secret (constant time), and
    /// whether we still take connections.
    fn check(
        &self,
        reg: &Register,
        drain: &CancellationToken,
    ) -> Result<tunnel::token::SecretHash, (RejectReason, String)> {
        if reg.protocol_version < PROTOCOL_VERSION {
            return Err((
                RejectReason::UnsupportedVersion,
                format!(
                    "protocol version {} is too old; this edge needs {PROTOCOL_VERSION}",
                    reg.protocol_version
                ),
            ));
        }
        let table = self.table.current();
        let Some(tunnel) = table.get(&reg.tunnel_id) else {
            return Err((
                RejectReason::UnknownTunnel,
                format!("no tunnel {} on this edge", reg.tunnel_id),
            ));
        };
        if !tunnel.secret_hash.verify(&reg.secret) {
            return Err((
                RejectReason::BadToken,
                format!("the token for tunnel {} is not valid", reg.tunnel_id),
            ));
        }
        if drain.is_cancelled() {
            return Err((RejectReason::Draining, "edge is shutting down".into()));
        }
        Ok(tunnel.secret_hash)
    }

    async fn reject(
        &self,
        conn: &quinn::Connection,
        send: &mut quinn::SendStream,
        remote: SocketAddr,
        reason: RejectReason,
        why: &str,
    ) {
        self.count_rejection(remote, reason, why);
        let msg = ControlMessage::Rejected(Rejected {
            reason,
            message: why.to_string(),
            retry_after: Duration::from_secs(1),
        });
        // A connector that does not read the refusal is not waited for.
        let msg = Frame::Control(msg);
        let write = write_frame(send, &msg);
        if let Ok(Ok(())) = tokio::time::timeout(REJECT_LINGER, write).await {
            let _ = send.finish();
            // Give the connector time to read the refusal and close first.
            let _ = tokio::time::timeout(REJECT_LINGER, conn.closed()).await;
        }
        conn.close(quinn::VarInt::from_u32(1), reason.as_str().as_bytes());
    }

    /// A connection that ran out of `--registration-timeout`: counted as a
    /// timeout and refused like any malformed registration.
    fn registration_timed_out(&self, conn: &quinn::Connection, remote: SocketAddr, why: &str) {
        self.metrics.timed_out("registration");
        self.reject_quietly(conn, remote, RejectReason::Malformed, why);
    }

    fn reject_quietly(
        &self,
        conn: &quinn::Connection,
        remote: SocketAddr,
        reason: RejectReason,
        why: &str,
    ) {
        self.count_rejection(remote, reason, why);
        conn.close(quinn::VarInt::from_u32(1), reason.as_str().as_bytes());
    }

    fn count_rejection(&self, remote: SocketAddr, reason: RejectReason, why: &str) {
        self.metrics
            .registration_failures
            .with_label_values(&[reason.as_str()])
            .inc();
        // A flood of bad registrations must not flood the log.
        match self.pending.refusals.allow() {
            Some(suppressed) => tracing::warn!(%remote, reason = reason.as_str(), why,
                suppressed, "registration refused"),
            None => tracing::debug!(%remote, reason = reason.as_str(), why, "registration refused"),
        }
    }
}
