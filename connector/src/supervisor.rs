//! High availability: N connection slots spread over the distinct edges.
//!
//! Slot `i` prefers edge `i % edges`. A slot whose preferred edge is down
//! fails over to the others, and while it serves elsewhere it probes its
//! preferred edge (with backoff) and moves back once it answers: make before
//! break, the old connection is unregistered and closed only when its
//! in-flight streams are done. A drain from an edge does the same towards
//! another edge. Reconnects after a loss use exponential backoff with jitter,
//! reset after a stable period.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::PROTOCOL_VERSION;
use tunnel::codec::Frame;
use tunnel::io::{read_control, write_frame};
use tunnel::message::{ControlMessage, Register};
use tunnel::token::TunnelToken;

use crate::backoff::Backoff;
use crate::metrics::Metrics;
use crate::reload::SharedStreams;

/// Longest wait for a QUIC handshake with an edge.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the edge's answer to a registration.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection up this long resets the reconnect backoff.
pub const STABLE_PERIOD: Duration = Duration::from_secs(5);

/// First wait before probing the preferred edge again; doubles per failure.
const PROBE_FIRST: Duration = Duration::from_millis(250);
/// A retiring connection stays open at least this long after Unregister,
/// for streams the edge opened before it read the Unregister.
const RETIRE_MIN: Duration = Duration::from_secs(1);

/// An edge to dial: an address (`host:port`) and the name its certificate has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeTarget {
    /// `host:port`, resolved at every dial.
    pub address: String,
    /// The TLS server name to verify.
    pub server_name: String,
}

/// Reconnect timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// First reconnect delay.
    pub backoff_base: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
}

/// Keeps the connection slots up.
pub struct Supervisor {
    /// QUIC client endpoint.
    pub endpoint: quinn::Endpoint,
    /// Distinct edges, in the configured order.
    pub edges: Vec<EdgeTarget>,
    /// The tunnel token.
    pub token: TunnelToken,
    /// This process's id.
    pub connector_id: String,
    /// Release version, sent at registration.
    pub version: String,
    /// Number of slots.
    pub ha_connections: usize,
    /// What stream tasks need: each takes the rules in force when it
    /// starts (a reload swaps them for later streams).
    pub streams: Arc<SharedStreams>,
    /// Metrics.
    pub metrics: Metrics,
    /// Registered connections now (readiness).
    pub registered: Arc<AtomicUsize>,
    /// Every stream task.
    pub stream_tasks: TaskTracker,
    /// Connections being retired.
    pub retiring: TaskTracker,
    /// Reconnect timing.
    pub timing: Timing,
    /// Longest a retiring connection waits for its streams.
    pub grace_period: Duration,
}

/// A registered connection.
struct EdgeConn {
    conn: quinn::Connection,
    control: quinn::SendStream,
    control_rx: mpsc::Receiver<ControlMessage>,
    edge: usize,
    in_flight: Arc<AtomicUsize>,
}

enum Ended {
    Shutdown,
    Lost(String),
    Drained(usize),
    Moved(EdgeConn),
}

#[derive(Debug)]
enum DialError {
    Rejected(Duration),
    Failed(String),
}

impl Supervisor {
    /// Starts every slot; they run until `cancel` fires.
    pub fn start(self: &Arc<Self>, cancel: &CancellationToken) -> Vec<JoinHandle<()>> {
        // Every edge's series exist from the start at zero, so the
        // dashboards' per-edge rates show 0 rather than no data.
        for edge in &self.edges {
            let address = edge.address.as_str();
            self.metrics.reconnects.with_label_values(&[address]);
            self.metrics.connect_errors.with_label_values(&[address]);
            self.metrics.drains.with_label_values(&[address]);
        }
        (0..self.ha_connections)
            .map(|slot| tokio::spawn(self.clone().run_slot(slot, cancel.clone())))
            .collect()
    }

    async fn run_slot(self: Arc<Self>, slot: usize, cancel: CancellationToken) {
        let preferred = slot % self.edges.len();
        let mut backoff = Backoff::new(
            self.timing.backoff_base,
            self.timing.backoff_max,
            seed(slot),
        );
        let mut next: Option<EdgeConn> = None;
        let mut avoid: Option<usize> = None;
        let mut dialed_before = false;
        loop {
            let conn = match next.take() {
                Some(c) => c,
                None => {
                    let order = self.dial_order(preferred, avoid.take());
                    if dialed_before {
                        self.metrics
                            .reconnects
                            .with_label_values(&[&self.edges[order[0]].address])
                            .inc();
                    }
                    dialed_before = true;
                    let this = self.clone();
                    let mut dialing =
                        tokio::spawn(async move { this.dial_first(slot, &order).await });
                    let result = tokio::select! {
                        r = &mut dialing => r.unwrap_or_else(|e| {
                            tracing::error!(slot, error = %e, "dial task failed");
                            Err(Duration::ZERO)
                        }),
                        _ = cancel.cancelled() => {
                            // A registration under way is let finish and
                            // then unregistered, never dropped: the edge may
                            // already route requests to it.
                            self.retire_when_dialed(dialing);
                            return;
                        }
                    };
                    match result {
                        Ok(c) => c,
                        Err(retry_after) => {
                            let wait = backoff.next_delay().max(retry_after);
                            tracing::info!(
                                slot,
                                wait_ms = wait.as_millis() as u64,
                                "no edge took the connection; retrying"
                            );
                            tokio::select! {
                                _ = tokio::time::sleep(wait) => continue,
                                _ = cancel.cancelled() => return,
                            }
                        }
                    }
                }
            };
            let up_since = Instant::now();
            let ended = self.serve(conn, slot, preferred, &cancel).await;
            if up_since.elapsed() >= STABLE_PERIOD {
                backoff.reset();
            }
            match ended {
                Ended::Shutdown => return,
                Ended::Moved(new) => next = Some(new),
                // The draining edge refused a replacement (it stops, not
                // upgrades in place): the others first.
                Ended::Drained(edge) => avoid = Some(edge),
                Ended::Lost(reason) => {
                    let wait = backoff.next_delay();
                    tracing::warn!(slot, %reason, wait_ms = wait.as_millis() as u64, "tunnel connection lost; reconnecting");
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = cancel.cancelled() => return,
                    }
                }
            }
        }
    }

    /// Preferred edge first, then the others in ring order; an edge that
    /// just drained us and took no replacement goes last.
    fn dial_order(&self, preferred: usize, avoid: Option<usize>) -> Vec<usize> {
        let n = self.edges.len();
        let mut order: Vec<usize> = (0..n).map(|i| (preferred + i) % n).collect();
        if let Some(a) = avoid
            && n > 1
        {
            order.retain(|&e| e != a);
            order.push(a);
        }
        order
    }

    /// Dials the edges in `order` until one registers us. On failure returns
    /// the longest retry-after any edge asked for.
    async fn dial_first(&self, slot: usize, order: &[usize]) -> Result<EdgeConn, Duration> {
        let mut retry_after = Duration::ZERO;
        for &edge in order {
            match self.dial(slot, edge).await {
                Ok(c) => return Ok(c),
                Err(DialError::Rejected(after)) => retry_after = retry_after.max(after),
                Err(DialError::Failed(why)) => {
                    tracing::warn!(slot, edge = %self.edges[edge].address, error = %why, "cannot reach edge");
                }
            }
        }
        Err(retry_after)
    }

    async fn dial(&self, slot: usize, edge: usize) -> Result<EdgeConn, DialError> {
        let target = &self.edges[edge];
        let result = self.dial_inner(slot, edge, target).await;
        if let Err(DialError::Failed(_)) = &result {
            self.metrics
                .connect_errors
                .with_label_values(&[&target.address])
                .inc();
        }
        result
    }

    async fn dial_inner(
        &self,
        slot: usize,
        edge: usize,
        target: &EdgeTarget,
    ) -> Result<EdgeConn, DialError> {
        let failed = |e: &dyn std::fmt::Display| DialError::Failed(e.to_string());
        let addr: SocketAddr = tokio::net::lookup_host(&target.address)
            .await
            .map_err(|e| failed(&e))?
            .next()
            .ok_or_else(|| {
                DialError::Failed(format!("{} resolves to no address", target.address))
            })?;
        let connecting = self
            .endpoint
            .connect(addr, &target.server_name)
            .map_err(|e| failed(&e))?;
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| DialError::Failed("QUIC handshake timed out".into()))?
            .map_err(|e| failed(&e))?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| failed(&e))?;
        let register = ControlMessage::Register(Register {
            protocol_version: PROTOCOL_VERSION,
            tunnel_id: self.token.tunnel_id,
            secret: self.token.secret.clone(),
            connector_id: self.connector_id.clone(),
            conn_index: u8::try_from(slot).unwrap_or(u8::MAX),
            connector_version: self.version.clone(),
        });
        write_frame(&mut send, &Frame::Control(register))
            .await
            .map_err(|e| failed(&e))?;
        let reply = tokio::time::timeout(REGISTER_TIMEOUT, read_control(&mut recv))
            .await
            .map_err(|_| DialError::Failed("no answer to the registration".into()))?
            .map_err(|e| failed(&e))?;
        match reply {
            Some(ControlMessage::Registered(r)) => {
                tracing::info!(slot, edge = %target.address, edge_id = ?r.edge_id,
                    location = ?r.location, "tunnel connection registered");
                let (tx, rx) = mpsc::channel(8);
                tokio::spawn(read_control_stream(recv, tx));
                Ok(EdgeConn {
                    conn,
                    control: send,
                    control_rx: rx,
                    edge,
                    in_flight: Arc::new(AtomicUsize::new(0)),
                })
            }
            Some(ControlMessage::Rejected(r)) => {
                self.metrics
                    .registration_failures
                    .with_label_values(&[&target.address, r.reason.as_str()])
                    .inc();
                tracing::error!(slot, edge = %target.address, reason = r.reason.as_str(),
                    detail = ?r.message, "edge refused the registration");
                conn.close(quinn::VarInt::from_u32(0), b"rejected");
                Err(DialError::Rejected(r.retry_after))
            }
            other => {
                conn.close(quinn::VarInt::from_u32(1), b"protocol error");
                Err(DialError::Failed(format!(
                    "unexpected answer to the registration: {other:?}"
                )))
            }
        }
    }

    async fn serve(
        self: &Arc<Self>,
        mut c: EdgeConn,
        slot: usize,
        preferred: usize,
        cancel: &CancellationToken,
    ) -> Ended {
        let address = self.edges[c.edge].address.clone();
        let _live = LiveGuard::new(self, &address);
        // A preferred edge that drained us is usually restarting (a
        // release) and back within a second or two: probe it soon, then
        // back off for one that stays away.
        let mut probe = (c.edge != preferred).then(|| {
            let b = Backoff::new(PROBE_FIRST, Duration::from_secs(30), seed(slot));
            (b, Instant::now() + PROBE_FIRST)
        });
        let mut probe_task: Option<JoinHandle<Result<EdgeConn, DialError>>> = None;
        // A drained connection's replacement, dialed before it is let go.
        let mut replacement: Option<JoinHandle<Result<EdgeConn, DialError>>> = None;
        let mut drain_deadline = self.grace_period;
        let ended = loop {
            let probe_at = probe.as_ref().map(|(_, at)| *at);
            tokio::select! {
                _ = cancel.cancelled() => {
                    self.retire(c, self.grace_period);
                    break Ended::Shutdown;
                }
                stream = c.conn.accept_bi() => match stream {
                    Ok((send, recv)) => self.spawn_stream(&c.in_flight, send, recv),
                    Err(e) => break Ended::Lost(e.to_string()),
                },
                msg = c.control_rx.recv() => match msg {
                    Some(ControlMessage::Drain(d)) => {
                        // Make before break: the drained connection stays
                        // registered (the edge may still route requests it
                        // accepted to it) until a replacement registers. An
                        // edge upgraded in place answers on the same address
                        // with its new worker; one that stops refuses at once.
                        self.metrics.drains.with_label_values(&[&address]).inc();
                        tracing::info!(slot, edge = %address, deadline = ?d.deadline,
                            "edge is draining; dialing it again before letting this connection go");
                        drain_deadline = d.deadline;
                        if replacement.is_none() {
                            let this = self.clone();
                            let edge = c.edge;
                            replacement = Some(tokio::spawn(async move { this.dial(slot, edge).await }));
                        }
                    }
                    Some(other) => tracing::debug!(?other, "ignoring control message"),
                    None => break Ended::Lost("control stream closed by the edge".into()),
                },
                _ = sleep_until_opt(probe_at), if probe_task.is_none() && probe_at.is_some() => {
                    let this = self.clone();
                    probe_task = Some(tokio::spawn(async move { this.dial(slot, preferred).await }));
                }
                done = join_opt(&mut replacement), if replacement.is_some() => {
                    replacement = None;
                    match done {
                        Some(Ok(new)) => {
                            tracing::info!(slot, edge = %address,
                                "replacement registered; retiring the drained connection");
                            self.retire(c, drain_deadline);
                            break Ended::Moved(new);
                        }
                        _ => {
                            tracing::info!(slot, edge = %address,
                                "the draining edge takes no new connection; moving to another");
                            let edge = c.edge;
                            self.retire(c, drain_deadline);
                            break Ended::Drained(edge);
                        }
                    }
                }
                done = join_opt(&mut probe_task), if probe_task.is_some() => {
                    probe_task = None;
                    match done {
                        Some(Ok(new)) => {
                            tracing::info!(slot, from = %address, to = %self.edges[preferred].address,
                                "preferred edge is back; moving the connection");
                            self.retire(c, self.grace_period);
                            break Ended::Moved(new);
                        }
                        _ => {
                            if let Some((b, at)) = probe.as_mut() {
                                *at = Instant::now() + b.next_delay();
                            }
                        }
                    }
                }
            }
        };
        // A probe still dialing may register: unregister it then, never
        // drop a connection the edge may already route requests to.
        for task in [probe_task.take(), replacement.take()]
            .into_iter()
            .flatten()
        {
            self.retire_when_dialed(task);
        }
        ended
    }

    fn spawn_stream(
        &self,
        in_flight: &Arc<AtomicUsize>,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) {
        let ctx = self.streams.current();
        let guard = StreamGuard::new(in_flight.clone(), self.metrics.clone());
        self.stream_tasks.spawn(async move {
            crate::stream::serve(ctx, send, recv).await;
            drop(guard);
        });
    }

    /// Waits for a dial that is no longer wanted (shutdown, or a probe
    /// whose slot moved on) and retires its connection if it registered.
    fn retire_when_dialed<E: Send + 'static>(
        self: &Arc<Self>,
        dialing: JoinHandle<Result<EdgeConn, E>>,
    ) {
        let this = self.clone();
        self.retiring.spawn(async move {
            if let Ok(Ok(conn)) = dialing.await {
                this.retire(conn, this.grace_period);
            }
        });
    }

    /// Unregisters a connection and closes it once its streams are done (or
    /// the deadline passes), accepting streams the edge opened meanwhile.
    fn retire(&self, c: EdgeConn, deadline: Duration) {
        let EdgeConn {
            conn,
            mut control,
            in_flight,
            ..
        } = c;
        let streams = self.streams.clone();
        let metrics = self.metrics.clone();
        let tasks = self.stream_tasks.clone();
        let deadline = Instant::now() + deadline.min(self.grace_period).max(RETIRE_MIN);
        let earliest = Instant::now() + RETIRE_MIN;
        self.retiring.spawn(async move {
            let _ = write_frame(&mut control, &Frame::Control(ControlMessage::Unregister)).await;
            loop {
                tokio::select! {
                    stream = conn.accept_bi() => match stream {
                        Ok((send, recv)) => {
                            let ctx = streams.current();
                            let guard = StreamGuard::new(in_flight.clone(), metrics.clone());
                            tasks.spawn(async move {
                                crate::stream::serve(ctx, send, recv).await;
                                drop(guard);
                            });
                        }
                        Err(_) => return,
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        let now = Instant::now();
                        let idle = in_flight.load(Ordering::SeqCst) == 0;
                        if (idle && now >= earliest) || now >= deadline {
                            break;
                        }
                    }
                }
            }
            let _ = control.finish();
            conn.close(quinn::VarInt::from_u32(0), b"connection moved");
        });
    }
}

async fn read_control_stream(mut recv: quinn::RecvStream, tx: mpsc::Sender<ControlMessage>) {
    while let Ok(Some(msg)) = read_control(&mut recv).await {
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn join_opt<T>(task: &mut Option<JoinHandle<T>>) -> Option<T> {
    match task {
        Some(t) => t.await.ok(),
        None => std::future::pending().await,
    }
}

fn seed(slot: usize) -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b) ^ (slot as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Counts a registered, active connection (readiness and the gauge).
struct LiveGuard {
    registered: Arc<AtomicUsize>,
    gauge: prometheus::IntGauge,
}

impl LiveGuard {
    fn new(s: &Supervisor, address: &str) -> Self {
        let gauge = s.metrics.tunnel_connections.with_label_values(&[address]);
        gauge.inc();
        s.registered.fetch_add(1, Ordering::SeqCst);
        Self {
            registered: s.registered.clone(),
            gauge,
        }
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        self.registered.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Counts a stream in flight, on its connection and in the metrics.
struct StreamGuard {
    conn: Arc<AtomicUsize>,
    metrics: Metrics,
}

impl StreamGuard {
    fn new(conn: Arc<AtomicUsize>, metrics: Metrics) -> Self {
        conn.fetch_add(1, Ordering::SeqCst);
        metrics.in_flight.inc();
        Self { conn, metrics }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.conn.fetch_sub(1, Ordering::SeqCst);
        self.metrics.in_flight.dec();
    }
}
