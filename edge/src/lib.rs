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
use crate::tunnels::{SharedTable, TunnelTable};

/// How often the tunnels file is checked for changes.
const TUNNELS_POLL: Duration = Duration::from_secs(1);
/// How often the public certificate directory is checked for changes.
const CERTS_POLL: Duration = Duration::from_secs(1);

/// Runs the edge until SIGTERM or SIGINT, then drains.
pub async fn run(cfg: EdgeConfig, release: Release) -> anyhow::Result<()> {
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

    let endpoint = tunnel::endpoint::server_endpoint(
        cfg.tunnel_listen,
        tunnel::endpoint::server_config(certs, key)?,
    )?;
    let public = tokio::net::TcpListener::bind(cfg.public_http)
        .await
        .with_context(|| {
            format!(
                "cannot bind the public HTTP listener on {}",
                cfg.public_http
            )
        })?;
    let public_https = match cfg.public_https {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
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
    let admin = daemon::admin::bind(cfg.admin).await?;

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
    let admin_task = tokio::spawn(daemon::admin::serve(
        admin,
        daemon::admin::router(metrics.registry.clone(), ready),
        stop_admin.clone(),
    ));

    let listener = Arc::new(TunnelListener {
        table: table.clone(),
        registry: registry.clone(),
        metrics: metrics.clone(),
        edge_id: cfg.edge_id.clone(),
        location: cfg.location.clone(),
        grace_period: cfg.grace_period,
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
    let tcp_ports = tcp_ports::TcpPorts::new(proxy.clone(), cfg.public_tcp_address, drain.clone());
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
        edge_id = %cfg.edge_id, "edge started");

    let signal = daemon::signal::shutdown().await;
    tracing::info!(signal, grace_period = ?cfg.grace_period,
        "draining: no new public connections, connectors told to move away");
    serving.store(false, Ordering::SeqCst);
    metrics.draining.set(1);
    drain.cancel();
    public_tasks.close();
    if tokio::time::timeout(cfg.grace_period, public_tasks.wait())
        .await
        .is_err()
    {
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
