//! The QUIC listener connectors dial: the registration handshake on the
//! control stream, then the connection's life in the registry until it ends
//! or the edge drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::PROTOCOL_VERSION;
use tunnel::codec::Frame;
use tunnel::io::{IoError, read_control, write_frame};
use tunnel::message::{ControlMessage, Drain, Register, Registered, RejectReason, Rejected};

use crate::metrics::Metrics;
use crate::registry::{ConnRegistry, LiveConn};
use crate::tunnels::SharedTable;

/// How long a new connection has to open its control stream and register.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused connector has to read the refusal before we close.
const REJECT_LINGER: Duration = Duration::from_secs(2);

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
    /// The drain deadline sent to connectors.
    pub grace_period: Duration,
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
            let this = self.clone();
            let drain = drain.clone();
            tasks.spawn(async move {
                let remote = incoming.remote_address();
                match incoming.await {
                    Ok(conn) => this.serve(conn, remote, drain).await,
                    Err(e) => tracing::debug!(%remote, error = %e, "QUIC handshake failed"),
                }
            });
        }
    }

    async fn serve(&self, conn: quinn::Connection, remote: SocketAddr, drain: CancellationToken) {
        let registered = tokio::time::timeout(REGISTER_TIMEOUT, async {
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
                self.reject_quietly(
                    &conn,
                    remote,
                    RejectReason::Malformed,
                    "no registration in time",
                );
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
        if let Err(e) = write_frame(&mut send, &Frame::Control(hello)).await {
            tracing::debug!(%remote, error = %e, "connector went away during registration");
            return;
        }
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
                    let msg = ControlMessage::Drain(Drain { deadline: self.grace_period });
                    if let Err(e) = write_frame(&mut send, &Frame::Control(msg)).await {
                        tracing::debug!(%remote, error = %e, "cannot send drain");
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
        if write_frame(send, &Frame::Control(msg)).await.is_ok() {
            let _ = send.finish();
            // Give the connector time to read the refusal and close first.
            let _ = tokio::time::timeout(REJECT_LINGER, conn.closed()).await;
        }
        conn.close(quinn::VarInt::from_u32(1), reason.as_str().as_bytes());
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
        tracing::warn!(%remote, reason = reason.as_str(), why, "registration refused");
    }
}
