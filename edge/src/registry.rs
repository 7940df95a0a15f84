//! The live connector connections of every tunnel, and the choice of one for
//! each request: the live connection with the fewest streams in flight.
//!
//! A freshly started edge has no connections yet: its connectors are on
//! other edges and come back within a second or two (they probe their
//! preferred edge). For a grace period after start, a request for a tunnel
//! without a connection waits for one to register instead of failing with
//! 502, so restarting an edge (a release) costs its clients a short delay,
//! not errors.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use tunnel::token::{SecretHash, TunnelId};

use crate::metrics::Metrics;
use crate::tunnels::TunnelTable;

/// One registered connector connection.
#[derive(Debug)]
pub struct LiveConn {
    /// The QUIC connection.
    pub connection: quinn::Connection,
    /// The tunnel it serves.
    pub tunnel: TunnelId,
    /// The connector process.
    pub connector_id: String,
    /// Which of the connector's HA connections.
    pub conn_index: u8,
    /// The secret hash it registered with: a rotated secret revokes it.
    pub secret_hash: SecretHash,
    in_flight: AtomicUsize,
    /// The connector said Unregister: no new streams.
    unregistered: AtomicBool,
}

impl LiveConn {
    /// A connection that just registered.
    pub fn new(
        connection: quinn::Connection,
        tunnel: TunnelId,
        connector_id: String,
        conn_index: u8,
        secret_hash: SecretHash,
    ) -> Self {
        Self {
            connection,
            tunnel,
            connector_id,
            conn_index,
            secret_hash,
            in_flight: AtomicUsize::new(0),
            unregistered: AtomicBool::new(false),
        }
    }

    /// Stop routing new requests here.
    pub fn unregister(&self) {
        self.unregistered.store(true, Ordering::SeqCst);
    }

    fn usable(&self) -> bool {
        !self.unregistered.load(Ordering::SeqCst) && self.connection.close_reason().is_none()
    }

    /// Streams in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }
}

/// Counts a stream in flight on a connection until dropped.
#[derive(Debug)]
pub struct InFlight(pub Arc<LiveConn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Every live connection, by tunnel.
pub struct ConnRegistry {
    by_tunnel: Mutex<HashMap<TunnelId, Vec<Arc<LiveConn>>>>,
    rotate: AtomicUsize,
    metrics: Metrics,
    /// Woken at every registration.
    registered: Notify,
    /// Until when a request waits for its tunnel's first connection.
    grace_until: Instant,
}

impl ConnRegistry {
    /// An empty registry that keeps `edge_tunnel_connections` up to date;
    /// for `registration_grace` from now, [`ConnRegistry::pick_or_wait`]
    /// waits for connectors to register.
    pub fn new(metrics: Metrics, registration_grace: Duration) -> Self {
        Self {
            by_tunnel: Mutex::new(HashMap::new()),
            rotate: AtomicUsize::new(0),
            metrics,
            registered: Notify::new(),
            grace_until: Instant::now() + registration_grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TunnelId, Vec<Arc<LiveConn>>>> {
        self.by_tunnel.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a registered connection.
    pub fn add(&self, conn: Arc<LiveConn>) {
        let mut map = self.lock();
        let list = map.entry(conn.tunnel).or_default();
        list.push(conn.clone());
        self.set_gauge(&conn.tunnel, list.len());
        drop(map);
        self.registered.notify_waiters();
    }

    /// Removes a connection that ended.
    pub fn remove(&self, conn: &Arc<LiveConn>) {
        let mut map = self.lock();
        if let Some(list) = map.get_mut(&conn.tunnel) {
            list.retain(|c| !Arc::ptr_eq(c, conn));
            let n = list.len();
            if n == 0 {
                map.remove(&conn.tunnel);
            }
            self.set_gauge(&conn.tunnel, n);
        }
    }

    fn set_gauge(&self, tunnel: &TunnelId, n: usize) {
        self.metrics
            .tunnel_connections
            .with_label_values(&[&tunnel.to_string()])
            .set(n as i64);
    }

    /// The usable connection of `tunnel` with the fewest streams in flight,
    /// ties broken in rotation; `skip` leaves out one that just failed.
    pub fn pick(&self, tunnel: &TunnelId, skip: Option<&Arc<LiveConn>>) -> Option<InFlight> {
        let map = self.lock();
        let list = map.get(tunnel)?;
        let n = list.len();
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let best = (0..n)
            .map(|i| &list[(start + i) % n])
            .filter(|c| c.usable() && !skip.is_some_and(|s| Arc::ptr_eq(s, c)))
            .min_by_key(|c| c.in_flight())?
            .clone();
        best.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight(best))
    }

    /// As [`ConnRegistry::pick`], but during the registration grace after
    /// start a tunnel without a connection is waited for (until the grace
    /// ends) rather than refused.
    pub async fn pick_or_wait(&self, tunnel: &TunnelId) -> Option<InFlight> {
        loop {
            // Registered before looking, so a registration between the look
            // and the wait is not missed.
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            if let Some(conn) = self.pick(tunnel, None) {
                return Some(conn);
            }
            if Instant::now() >= self.grace_until {
                return None;
            }
            if tokio::time::timeout_at(self.grace_until, registered)
                .await
                .is_err()
            {
                return self.pick(tunnel, None);
            }
        }
    }

    /// Every live connection.
    pub fn all(&self) -> Vec<Arc<LiveConn>> {
        self.lock().values().flatten().cloned().collect()
    }

    /// Closes connections whose tunnel was removed or whose secret changed.
    pub fn revoke_stale(&self, table: &TunnelTable) {
        for conn in self.all() {
            let valid = table
                .get(&conn.tunnel)
                .is_some_and(|t| t.secret_hash == conn.secret_hash);
            if !valid {
                tracing::warn!(tunnel = %conn.tunnel, connector = %conn.connector_id,
                    "tunnel removed or secret rotated; closing its connection");
                conn.connection
                    .close(quinn::VarInt::from_u32(2), b"tunnel revoked");
                self.remove(&conn);
            }
        }
    }
}
