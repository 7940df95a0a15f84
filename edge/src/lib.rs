//! The Warren edge: accepts authenticated QUIC connections from connectors
//! and public HTTP traffic, and routes each request by hostname through a
//! tunnel to one of its connectors.
//!
//! - [`listener`]: the QUIC listener and the registration handshake.
//! - [`limits`]: caps per tunnel, per client address and on pending
//!   registrations, so a slow peer costs only its own tenant.
//! - [`registry`]: live connections and the choice of one per request.
//! - [`public`]: the public HTTP and HTTPS listeners (HTTP/1.1 and HTTP/2).
//! - [`public_tls`]: HTTPS certificates by SNI from a watched directory.
//! - [`proxy`]: a public request's way through a tunnel.
//! - [`request_head`]: checks on a public request's head before it is forwarded.
//! - [`forwarding`]: which headers cross the edge, and the forwarding headers it sets.
//! - [`request_metrics`]: a request's metrics, kept true when its client leaves.
//! - [`tunnels`]: the tunnels file and the hostname routing table.
//! - [`tcp`]: what TCP connections share (caps, the `tcp` stream, the relay).
//! - [`tcp_ports`]: the public TCP ports of the tunnels file.
//! - [`access`]: `connector access` WebSockets, carried as TCP.
//! - [`supervisor`]: `edge run`'s parent process, which owns the sockets
//!   and replaces its worker in place (`edge upgrade`).
//! - [`sockets`]: how a worker gets its sockets from the supervisor.
//! - [`steering`]: which generation's worker reads a tunnel datagram.
#![warn(missing_docs)]

pub mod access;
pub mod cli;
pub mod config;
pub mod config_check;
pub mod forwarding;
pub mod idle_io;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod proxy;
pub mod public;
pub mod public_tls;
pub mod registry;
pub mod request_head;
pub mod request_metrics;
pub mod sockets;
pub mod steering;
pub mod supervisor;
pub mod tcp;
pub mod tcp_ports;
pub mod tunnels;
pub mod websocket;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use daemon::release::Release;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::EdgeConfig;
use crate::listener::TunnelListener;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::registry::ConnRegistry;
use crate::sockets::SocketSource;
use crate::tunnels::{SharedTable, TunnelTable};

/// How often the tunnels file is checked for changes.
const TUNNELS_POLL: Duration = Duration::from_secs(1);
/// How often the public certificate directory is checked for changes.
const CERTS_POLL: Duration = Duration::from_secs(1);

/// How long a replaced worker's accept loops get to see the drain and drop
/// their listeners before it tells the supervisor it stopped accepting.
const STOP_ACCEPTING: Duration = Duration::from_millis(50);

/// Why a worker stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGTERM or SIGINT: the edge stops; connectors go to other edges.
    Shutdown(&'static str),
    /// SIGUSR2 from the supervisor: a successor serves already.
    Replaced,
}

/// Serves until SIGTERM or SIGINT (or, under the supervisor, SIGUSR2: a
/// successor took over), then drains. `sockets` says where the listening
/// sockets come from.
pub async fn run(cfg: EdgeConfig, release: Release, sockets: SocketSource) -> anyhow::Result<()> {
    // Installed first: SIGUSR2's default action would end the process.
    let replaced = if sockets.supervised() {
        let kind = tokio::signal::unix::SignalKind::user_defined2();
        Some(tokio::signal::unix::signal(kind).context("cannot listen for SIGUSR2")?)
    } else {
        None
    };
    let metrics = Metrics::new(&release.version);
    if release.fault_injection.any() {
        tracing::warn!(faults = ?release.fault_injection, "FAULT INJECTION is on in this release");
    }
    let certs = tunnel::endpoint::load_certs(&cfg.tls_cert)?;
    let key = tunnel::endpoint::load_key(&cfg.tls_key)?;
    let table = load_table(&cfg.tunnels_file)?;
    metrics.tunnels_configured.set(table.len() as i64);
    metrics.tunnel_tcp_series(&table);
    let table = SharedTable::new(table);
    let registry = Arc::new(ConnRegistry::new(metrics.clone(), cfg.registration_grace));

    let tunnel_socket = sockets.udp(cfg.tunnel_listen).with_context(|| {
        format!(
            "cannot bind the tunnel listener on UDP {}",
            cfg.tunnel_listen
        )
    })?;
    let generation = tunnel_socket.generation;
    let endpoint = tunnel::endpoint::server_endpoint_on(
        tunnel_socket.socket,
        tunnel::endpoint::server_config(certs, key)?,
        generation.map(|g| {
            Arc::new(move || {
                Box::new(steering::CidGenerator::new(g)) as Box<dyn quinn::ConnectionIdGenerator>
            }) as _
        }),
    )?;
    let public = sockets.tcp(cfg.public_http).with_context(|| {
        format!(
            "cannot bind the public HTTP listener on {}",
            cfg.public_http
        )
    })?;
    let public_https = match cfg.public_https {
        Some(addr) => Some(
            sockets
                .tcp(addr)
                .with_context(|| format!("cannot bind the public HTTPS listener on {addr}"))?,
        ),
        None => None,
    };
    let public_tls = match &cfg.public_cert_dir {
        Some(dir) => Some(public_tls::PublicTls::load(
            dir,
            cfg.tls_handshake_timeout,
            &metrics,
        )?),
        None => None,
    };
    let admin = sockets
        .tcp(cfg.admin)
        .with_context(|| format!("cannot bind the admin listener on {}", cfg.admin))?;

    let drain = CancellationToken::new();
    let stop_admin = CancellationToken::new();
    let public_tasks = TaskTracker::new();
    let tunnel_tasks = TaskTracker::new();

    let serving = Arc::new(AtomicBool::new(true));
    let never_ready = release.fault_injection.never_ready;
    let ready = {
        let serving = serving.clone();
        Arc::new(move || {
            if never_ready {
                Err("fault injection: this release never becomes ready".to_string())
            } else if serving.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("draining".to_string())
            }
        })
    };
    let admin_router = daemon::admin::router(metrics.registry.clone(), ready);

    let drain_deadline = Arc::new(AtomicU64::new(cfg.grace_period.as_millis() as u64));
    let listener = Arc::new(TunnelListener {
        table: table.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        edge_id: cfg.edge_id.clone(),
        location: cfg.location.clone(),
        drain_deadline: drain_deadline.clone(),
        pending: listener::PendingLimits::new(
            cfg.max_pending_registrations,
            cfg.max_pending_registrations_per_ip,
            cfg.registration_timeout,
            metrics.pending_registrations.clone(),
        ),
    });
    tokio::spawn(listener.accept_loop(endpoint.clone(), drain.clone(), tunnel_tasks.clone()));

    let table_handle = table.clone();
    let proxy = Arc::new(Proxy {
        table,
        registry: registry.clone(),
        metrics: metrics.clone(),
        response_timeout: cfg.response_timeout,
        limits: limits::RequestLimits {
            per_tunnel: limits::Counter::new(cfg.max_requests_per_tunnel),
            stream_open_timeout: cfg.stream_open_timeout,
            body_idle_timeout: cfg.body_idle_timeout,
        },
        faults: release.fault_injection.clone(),
        id_prefix: random_u64(),
        next_id: AtomicU64::new(0),
        tcp: tcp::TcpShared::new(
            cfg.tcp_max_connections_per_client,
            cfg.tcp_max_connections_per_tunnel,
            public_tasks.clone(),
        ),
    });
    let tcp_ports = tcp_ports::TcpPorts::new(
        proxy.clone(),
        cfg.public_tcp_address,
        drain.clone(),
        sockets.clone(),
    );
    tcp_ports.sync(&proxy.table.current());
    let reload_metrics = metrics.clone();
    let reload_registry = registry.clone();
    let reload_ports = tcp_ports.clone();
    tokio::spawn(tunnels::watch(
        cfg.tunnels_file.clone(),
        table_handle,
        TUNNELS_POLL,
        move |result| match result {
            Ok(t) => {
                reload_metrics.tunnels_configured.set(t.len() as i64);
                reload_metrics.tunnel_tcp_series(t);
                reload_registry.revoke_stale(t);
                reload_ports.sync(t);
            }
            Err(_) => reload_metrics.reload_errors.inc(),
        },
        drain.clone(),
    ));

    let server = Arc::new(public::PublicServer::new(
        proxy,
        cfg.max_connections,
        limits::Counter::new(cfg.max_connections_per_ip),
        public::Http2Limits {
            max_concurrent_streams: cfg.http2_max_concurrent_streams,
            max_header_list_size: cfg.http2_max_header_list_size,
        },
    ));
    // Connectors may register from here on; public traffic and the admin
    // endpoint wait until the supervisor says this worker serves.
    sockets
        .ready(&release.version)
        .await
        .context("the supervisor did not let this worker serve")?;
    let admin_task = tokio::spawn(daemon::admin::serve(
        admin,
        admin_router,
        stop_admin.clone(),
    ));
    let redirect_to = match (cfg.redirect_http_to_https, cfg.public_https) {
        (true, Some(addr)) => Some(addr.port()),
        _ => None,
    };
    public_tasks.spawn(server.clone().serve(
        public,
        public::Listener::Plain { redirect_to },
        drain.clone(),
        public_tasks.clone(),
    ));
    if let (Some(listener), Some(tls)) = (public_https, public_tls) {
        tokio::spawn(
            tls.clone()
                .watch(CERTS_POLL, metrics.clone(), drain.clone()),
        );
        public_tasks.spawn(server.serve(
            listener,
            public::Listener::Tls(tls),
            drain.clone(),
            public_tasks.clone(),
        ));
    }

    tracing::info!(version = %release.version, public_http = %cfg.public_http,
        public_https = ?cfg.public_https, public_tcp_ports = ?tcp_ports.ports(),
        tunnel_listen = %cfg.tunnel_listen, admin = %cfg.admin, location = %cfg.location,
        edge_id = %cfg.edge_id, generation = ?generation, "edge started");

    let stop = wait_for_stop(replaced).await;
    let mut grace = match stop {
        Stop::Shutdown(signal) => {
            tracing::info!(signal, grace_period = ?cfg.grace_period,
                "draining: no new public connections, connectors told to move away");
            cfg.grace_period
        }
        Stop::Replaced => {
            tracing::info!(upgrade_grace_period = ?cfg.upgrade_grace_period,
                "replaced by a new worker: it accepts from now on; this one finishes what it has \
                 and its connectors move their connections to the new one");
            cfg.upgrade_grace_period
        }
    };
    serving.store(false, Ordering::SeqCst);
    metrics.draining.set(1);
    drain_deadline.store(grace.as_millis() as u64, Ordering::SeqCst);
    drain.cancel();
    if stop == Stop::Replaced {
        // The successor answers /metrics and /ready from now on.
        stop_admin.cancel();
        tokio::time::sleep(STOP_ACCEPTING).await;
        sockets.draining().await;
    }
    public_tasks.close();
    let started = tokio::time::Instant::now();
    let finished = loop {
        tokio::select! {
            _ = public_tasks.wait() => break true,
            _ = tokio::time::sleep_until(started + grace) => break false,
            signal = daemon::signal::shutdown(), if grace > cfg.grace_period => {
                tracing::info!(signal, grace_period = ?cfg.grace_period,
                    "stopping: what is still in flight gets the grace period");
                grace = grace.min(started.elapsed() + cfg.grace_period);
            }
        }
    };
    if !finished {
        tracing::warn!(
            in_flight = metrics.in_flight.get(),
            "grace period over; closing the connections still in flight"
        );
    } else {
        tracing::info!("in-flight requests finished");
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"edge shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    tunnel_tasks.close();
    stop_admin.cancel();
    let _ = admin_task.await;
    tracing::info!("edge stopped");
    Ok(())
}

/// SIGTERM or SIGINT; under a supervisor also SIGUSR2 (replaced).
async fn wait_for_stop(replaced: Option<tokio::signal::unix::Signal>) -> Stop {
    let replaced = async {
        match replaced {
            Some(mut s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        signal = daemon::signal::shutdown() => Stop::Shutdown(signal),
        _ = replaced => Stop::Replaced,
    }
}

fn load_table(path: &Path) -> anyhow::Result<TunnelTable> {
    let file = tunnels::load(path)?;
    TunnelTable::build(&file).with_context(|| format!("tunnels file {}", path.display()))
}

fn random_u64() -> u64 {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// `edge tunnel create`: adds the tunnel and returns the token to print.
pub fn tunnel_create(path: &Path, new: &tunnels::NewTunnel) -> anyhow::Result<String> {
    let token = tunnels::create(path, new)?;
    tracing::info!(tunnel = %token.tunnel_id, file = %path.display(), "tunnel created");
    Ok(token.to_string())
}

/// `edge dev-cert`: writes `ca.pem`, `edge.pem` and `edge-key.pem`.
pub fn dev_cert(out: &Path, sans: &[String]) -> anyhow::Result<()> {
    let certs = tunnel::dev_cert::generate(sans).context("cannot generate certificates")?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let write = |name: &str, body: &str| {
        let p = out.join(name);
        std::fs::write(&p, body).with_context(|| format!("cannot write {}", p.display()))
    };
    write("ca.pem", &certs.ca_pem)?;
    write("edge.pem", &certs.cert_pem)?;
    write_private(&out.join("edge-key.pem"), &certs.key_pem)?;
    Ok(())
}

/// Writes a secret that only its owner can ever read: into a new file
/// created mode 0600 (whatever the umask; a chmod after writing would leave
/// it readable for a moment), which then replaces any file already at
/// `path`, whatever that file's mode was.
fn write_private(path: &Path, body: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let write = || -> std::io::Result<()> {
        // A leftover of an interrupted run: create_new refuses to reuse it.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(body.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write()
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
        .with_context(|| format!("cannot write {}", path.display()))
}
