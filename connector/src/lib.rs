//! The Warren connector: dials out to several edges, keeps HA tunnel
//! connections, and forwards each proxied request to a local origin chosen
//! by ingress rules.
//!
//! - [`supervisor`]: the HA connection slots, failover, backoff, drain.
//! - [`stream`]: one proxied request, edge to origin and back.
//! - [`tcp`]: one TCP connection (`tcp` stream) to a TCP service.
//! - [`proxy_protocol`]: the PROXY protocol v2 header a TCP rule may send.
//! - [`ingress`]: rules and matching (cloudflared's semantics).
//! - [`reload`]: the config file re-read on SIGHUP and when it changes, the
//!   rules swapped for new streams.
//! - [`origin`]: origin options and pooled clients.
//! - [`target`]: the request target, checked, and the origin URL built from it.
//! - [`upload`]: the request body, with its idle timeout and completion.
//! - [`access`]: `connector access tcp|ssh`, the client side of TCP services.
#![warn(missing_docs)]

pub mod access;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod config_shape;
pub mod ingress;
pub mod metrics;
pub mod origin;
pub mod proxy_protocol;
pub mod reload;
pub mod stream;
pub mod supervisor;
pub mod target;
pub mod tcp;
pub mod upload;
pub mod websocket;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use daemon::release::Release;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tunnel::endpoint::EdgeTrust;

use crate::config::{ConnectorConfig, RunArgs, Trust};
use crate::metrics::Metrics;
use crate::origin::OriginClients;
use crate::reload::{Reloader, SharedStreams};
use crate::stream::StreamContext;
use crate::supervisor::{Supervisor, Timing};

/// Runs the connector until SIGTERM or SIGINT, then drains: each tunnel
/// connection is unregistered (the edges stop sending it new requests), the
/// requests in flight finish within the grace period, then it exits. `args`
/// are the flags `cfg` was resolved from: a reload (SIGHUP, or a change of
/// the config file) resolves them again over the new file.
pub async fn run(cfg: ConnectorConfig, args: RunArgs, release: Release) -> anyhow::Result<()> {
    // First: from here on a SIGHUP reloads instead of ending the process.
    let hangup = reload::hangup_signal();
    // The process-wide provider, for any TLS client that looks for one (the
    // origin clients and the edge endpoint name ring themselves).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Metrics::new(&release.version);
    let trust = match &cfg.trust {
        Trust::Ca(path) => EdgeTrust::Ca(tunnel::endpoint::load_certs(path)?),
        Trust::DangerAcceptAny => {
            tracing::warn!(
                "--danger-accept-invalid-edge-certs is set: edge certificates are NOT verified"
            );
            EdgeTrust::DangerAcceptAnyCertificate
        }
    };
    let ipv6 = cfg.edges.iter().any(|e| e.address.starts_with('['));
    let endpoint =
        tunnel::endpoint::client_endpoint(tunnel::endpoint::client_config(trust)?, ipv6)?;
    let origins = OriginClients::build(&cfg.ingress)?;
    let admin = daemon::admin::bind(cfg.admin).await?;

    let registered = Arc::new(AtomicUsize::new(0));
    let ready = {
        let registered = registered.clone();
        let never = release.fault_injection.never_ready;
        Arc::new(move || {
            if never {
                return Err("fault injection: this release never becomes ready".to_string());
            }
            match registered.load(Ordering::SeqCst) {
                0 => Err("no registered tunnel connection".to_string()),
                _ => Ok(()),
            }
        })
    };
    let stop_admin = CancellationToken::new();
    let admin_task = tokio::spawn(daemon::admin::serve(
        admin,
        daemon::admin::router(metrics.registry.clone(), ready),
        stop_admin.clone(),
    ));

    let tunnel_id = cfg.token.tunnel_id.to_string();
    metrics.init_tunnel(&tunnel_id);
    let streams = Arc::new(SharedStreams::new(StreamContext {
        ingress: Arc::new(cfg.ingress.clone()),
        origins,
        metrics: metrics.clone(),
        tunnel: tunnel_id.clone(),
    }));
    let reloader = Reloader::new(args, &cfg, streams.clone(), metrics.clone());
    let supervisor = Arc::new(Supervisor {
        endpoint: endpoint.clone(),
        edges: cfg.edges.clone(),
        token: cfg.token,
        connector_id: connector_id(),
        version: release.version.clone(),
        ha_connections: cfg.ha_connections,
        streams,
        metrics: metrics.clone(),
        registered,
        stream_tasks: TaskTracker::new(),
        retiring: TaskTracker::new(),
        timing: Timing {
            backoff_base: cfg.backoff_base,
            backoff_max: cfg.backoff_max,
        },
        grace_period: cfg.grace_period,
    });
    let cancel = CancellationToken::new();
    let slots = supervisor.start(&cancel);
    let watcher = tokio::spawn(reloader.watch(cfg.config_poll, hangup, cancel.clone()));
    tracing::info!(version = %release.version, tunnel = %tunnel_id,
        edges = ?cfg.edges.iter().map(|e| &e.address).collect::<Vec<_>>(),
        ha_connections = cfg.ha_connections, admin = %cfg.admin,
        config = ?cfg.config_file, config_poll = ?cfg.config_poll, "connector started");

    let signal = daemon::signal::shutdown().await;
    tracing::info!(signal, grace_period = ?cfg.grace_period,
        "draining: unregistering connections, finishing in-flight requests");
    cancel.cancel();
    let _ = watcher.await;
    for slot in slots {
        let _ = slot.await;
    }
    supervisor.retiring.close();
    supervisor.stream_tasks.close();
    let drained = tokio::time::timeout(cfg.grace_period, async {
        supervisor.retiring.wait().await;
        supervisor.stream_tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            in_flight = metrics.in_flight.get(),
            "grace period over; closing streams still in flight"
        );
    }
    endpoint.close(quinn::VarInt::from_u32(0), b"connector shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    stop_admin.cancel();
    let _ = admin_task.await;
    tracing::info!("connector stopped");
    Ok(())
}

fn connector_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut b = [0u8; 8];
    let _ = SystemRandom::new().fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `connector ingress rule URL`: the matching rule as text for people.
pub fn describe_match(ingress: &ingress::Ingress, url: &str) -> anyhow::Result<String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        anyhow::anyhow!("`{url}` is not a URL (like https://app.example.com/path): {e}")
    })?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("`{url}` has no host"))?;
    // A TCP connection is matched on its hostname and the path `/`.
    let tcp_url = matches!(parsed.scheme(), "tcp" | "ssh" | "rdp");
    // Url::parse resolves dot-segments; the connector refuses them, so the
    // target is checked as typed, the same way a live request's is.
    let raw = raw_target(url);
    let target = match tcp_url {
        true => None,
        false => Some(
            target::OriginTarget::parse("GET", &raw)
                .map_err(|e| anyhow::anyhow!("the connector answers `{raw}` with 400: {e}"))?,
        ),
    };
    let (index, rule) = ingress.find(host, target.as_ref().map_or("/", |t| t.path()));
    let mut out = format!("Matched rule #{}\n", index + 1);
    if let Some(h) = &rule.hostname {
        out.push_str(&format!("\thostname: {h}\n"));
    }
    if let Some(p) = &rule.path {
        out.push_str(&format!("\tpath: {}\n", p.as_str()));
    }
    out.push_str(&format!("\tservice: {}\n", rule.service));
    if let Some(v) = rule.origin.proxy_protocol {
        out.push_str(&format!("\tproxy_protocol: {v}\n"));
    }
    // A rule serves one kind of stream; say so when the URL is of the other.
    match (tcp_url, rule.service.is_tcp()) {
        (true, false) => out.push_str(
            "\tnote: not a TCP service: a TCP connection for this hostname is refused (BadRequest)\n",
        ),
        (false, true) => out.push_str(
            "\tnote: a TCP service: it takes TCP connections only; an HTTP request for this hostname gets 400\n",
        ),
        _ => {}
    }
    Ok(out)
}

/// The request target of a URL as a client would send it: what follows the
/// authority, without the fragment.
fn raw_target(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split('#').next().unwrap_or_default();
    match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('?') => format!("/{}", &rest[i..]),
        Some(i) => rest[i..].to_string(),
        None => "/".to_string(),
    }
}
