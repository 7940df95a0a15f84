//! The live config (cloudflared calls this orchestration): the connector
//! re-reads its `--config` file on SIGHUP and when the file changes, checks
//! the new config whole, and swaps the ingress rules and origin clients that
//! new streams use. A stream keeps the rules it started with; a request in
//! flight never sees a half-applied config. An invalid file is logged with
//! its reason and counted, and the running config stays.
//!
//! What a reload applies: `ingress` and `origin_request` (the rules, their
//! services and every origin option). What only a restart applies (logged
//! as "changed; restart the connector to apply it", and
//! `connector_config_restart_required` is 1): the edges and their server
//! name, the token, the edge CA and its trust, `ha_connections`, the admin
//! address, `grace_period`, the backoff and the log format: they shape the
//! tunnel connections and listeners that exist already.
//!
//! The file is polled (its modification time, size and inode, then its
//! content) every `--config-poll-interval`; editing it in place can be seen
//! half-written: that reads as an invalid file (counted, the running config
//! stays) and the complete file is applied at the next poll. Writing a new
//! file and renaming it over the old one avoids the noise. Only the config
//! file itself is watched: after changing a file it names (an origin's
//! `ca_pool`), send SIGHUP.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use daemon::logging::LogFormat;
use tokio_util::sync::CancellationToken;
use tunnel::token::TunnelToken;

use crate::config::{ConnectorConfig, RunArgs, Trust};
use crate::metrics::Metrics;
use crate::origin::OriginClients;
use crate::stream::StreamContext;
use crate::supervisor::EdgeTarget;

/// How often the config file is looked at by default: a change is in force
/// well within a second.
pub const DEFAULT_POLL: Duration = Duration::from_millis(250);

/// The rules and origin clients that new streams take, swapped whole.
pub struct SharedStreams(RwLock<Arc<StreamContext>>);

impl SharedStreams {
    /// Starts with `ctx`.
    pub fn new(ctx: StreamContext) -> Self {
        Self(RwLock::new(Arc::new(ctx)))
    }

    /// What a stream starting now uses (to its end).
    pub fn current(&self) -> Arc<StreamContext> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, ctx: StreamContext) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ctx);
    }
}

/// The settings a running connector keeps until it restarts.
struct RestartOnly {
    edges: Vec<EdgeTarget>,
    token: TunnelToken,
    trust: Trust,
    admin: std::net::SocketAddr,
    ha_connections: usize,
    grace_period: Duration,
    backoff: (Duration, Duration),
    log_format: LogFormat,
}

impl RestartOnly {
    fn of(cfg: &ConnectorConfig) -> Self {
        Self {
            edges: cfg.edges.clone(),
            token: cfg.token.clone(),
            trust: cfg.trust.clone(),
            admin: cfg.admin,
            ha_connections: cfg.ha_connections,
            grace_period: cfg.grace_period,
            backoff: (cfg.backoff_base, cfg.backoff_max),
            log_format: cfg.log_format,
        }
    }

    /// The settings that differ in `new`, by their names in the file. Never
    /// the token's value.
    fn changed(&self, new: &Self) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |differs: bool, name: &'static str| {
            if differs {
                out.push(name);
            }
        };
        check(self.edges != new.edges, "edges / edge_server_name");
        check(self.token != new.token, "the tunnel token (token_file)");
        check(
            self.trust != new.trust,
            "ca_cert / danger_accept_invalid_edge_certs",
        );
        check(self.admin != new.admin, "admin");
        check(self.ha_connections != new.ha_connections, "ha_connections");
        check(self.grace_period != new.grace_period, "grace_period");
        check(self.backoff != new.backoff, "backoff_base / backoff_max");
        check(self.log_format != new.log_format, "log_format");
        out
    }
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// Ingress rules now in force.
    pub rules: usize,
    /// Settings the file changes that only a restart applies.
    pub restart_only: Vec<&'static str>,
}

/// Re-reads the config and swaps what new streams use.
pub struct Reloader {
    args: RunArgs,
    running: RestartOnly,
    streams: Arc<SharedStreams>,
    metrics: Metrics,
}

impl Reloader {
    /// A reloader for a connector started from `args`, resolved into
    /// `started`, whose streams take their rules from `streams`.
    pub fn new(
        args: RunArgs,
        started: &ConnectorConfig,
        streams: Arc<SharedStreams>,
        metrics: Metrics,
    ) -> Self {
        metrics.config_last_reload_successful.set(1);
        metrics.config_last_reload_success.set(unix_now());
        Self {
            args,
            running: RestartOnly::of(started),
            streams,
            metrics,
        }
    }

    /// The config file, if the connector has one.
    pub fn file(&self) -> Option<&Path> {
        self.args.config.as_deref()
    }

    /// Reads the config again (the same flags over the file), checks it
    /// whole, and puts its ingress rules and origin options in force for new
    /// streams. On any problem nothing changes and the error says why.
    pub fn reload(&self) -> anyhow::Result<Applied> {
        let outcome = self.try_reload();
        match &outcome {
            Ok(applied) => {
                self.metrics.config_reloads.inc();
                self.metrics.config_last_reload_successful.set(1);
                self.metrics.config_last_reload_success.set(unix_now());
                self.metrics
                    .config_restart_required
                    .set(i64::from(!applied.restart_only.is_empty()));
            }
            Err(_) => {
                self.metrics.config_reload_errors.inc();
                self.metrics.config_last_reload_successful.set(0);
            }
        }
        outcome
    }

    fn try_reload(&self) -> anyhow::Result<Applied> {
        let cfg = self.args.clone().resolve()?;
        let current = self.streams.current();
        let origins = OriginClients::rebuild(&cfg.ingress, &current.ingress, &current.origins)?;
        let restart_only = self.running.changed(&RestartOnly::of(&cfg));
        let rules = cfg.ingress.rules().len();
        self.streams.replace(StreamContext {
            ingress: Arc::new(cfg.ingress),
            origins,
            metrics: current.metrics.clone(),
            // The tunnel served is the one registered at start.
            tunnel: current.tunnel.clone(),
        });
        Ok(Applied {
            rules,
            restart_only,
        })
    }

    /// Reloads on SIGHUP, and when the file changes (polled every `poll`;
    /// zero: SIGHUP only), until `cancel` fires. `hangup` is the SIGHUP
    /// stream, taken at start so that a SIGHUP never kills the connector.
    pub async fn watch(
        self,
        poll: Duration,
        mut hangup: Option<tokio::signal::unix::Signal>,
        cancel: CancellationToken,
    ) {
        let file = self.file().map(Path::to_path_buf);
        let mut seen = file.as_deref().map(Seen::now);
        let polling = file.is_some() && !poll.is_zero();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                Some(()) = recv_opt(&mut hangup) => {
                    match &file {
                        Some(path) => {
                            seen = Some(Seen::now(path));
                            self.log_reload(self.reload(), "SIGHUP", path);
                        }
                        None => tracing::warn!(
                            "SIGHUP: this connector runs without --config (quick mode); there is no file to reload, flags need a restart"
                        ),
                    }
                }
                _ = tokio::time::sleep(poll), if polling => {
                    let (Some(path), Some(last)) = (&file, &mut seen) else { continue };
                    if last.changed(path) {
                        self.log_reload(self.reload(), "the file changed", path);
                    }
                }
            }
        }
    }

    fn log_reload(&self, outcome: anyhow::Result<Applied>, trigger: &str, path: &Path) {
        match outcome {
            Ok(applied) => {
                tracing::info!(trigger, file = %path.display(), rules = applied.rules,
                    "config reloaded: new requests use the new ingress rules and origin options");
                for setting in applied.restart_only {
                    tracing::warn!(trigger, file = %path.display(), setting,
                        "{setting} changed in the config file; restart the connector to apply it (the running value stays until then)");
                }
            }
            // One line per event, whatever the number of problems.
            Err(e) => tracing::error!(trigger, file = %path.display(),
                error = %format!("{e:#}").replace('\n', " "),
                "config reload refused: the new config is invalid; the running config stays in force"),
        }
    }
}

/// What the watcher last saw of the file: its stamp, and its content once
/// the stamp moved (a touch or a rewrite of the same bytes is no change).
struct Seen {
    stamp: Option<Stamp>,
    content: Option<Vec<u8>>,
}

type Stamp = (SystemTime, u64, u64);

impl Seen {
    fn now(path: &Path) -> Self {
        Self {
            stamp: stamp(path),
            content: std::fs::read(path).ok(),
        }
    }

    /// Whether the file changed since the last look; remembers this look.
    fn changed(&mut self, path: &Path) -> bool {
        let stamp = stamp(path);
        if stamp == self.stamp {
            return false;
        }
        self.stamp = stamp;
        let content = std::fs::read(path).ok();
        if content == self.content {
            return false;
        }
        self.content = content;
        true
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

async fn recv_opt(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Takes SIGHUP for reloads from now on (its default action ends the
/// process). `None`, logged, when the signal cannot be watched.
pub fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGHUP; the config file is reloaded only when it changes");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    struct Files {
        dir: PathBuf,
    }

    impl Files {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("connector-reload-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let token = TunnelToken::generate().unwrap().to_string();
            std::fs::write(dir.join("token"), token).unwrap();
            Self { dir }
        }

        fn config(&self) -> PathBuf {
            self.dir.join("connector.yaml")
        }

        /// Writes the config with `top` settings and `ingress` rules (YAML).
        fn write(&self, top: &str, ingress: &str) {
            let text = format!(
                "edges: [\"127.0.0.1:7844\"]\ntoken_file: {}\nca_cert: {}\n{top}ingress:\n{ingress}",
                self.dir.join("token").display(),
                self.dir.join("ca.pem").display(),
            );
            let tmp = self.dir.join("new.yaml");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.config()).unwrap();
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    const TWO_RULES: &str = "  - hostname: a.example.com\n    service: http://127.0.0.1:8001\n  - service: http_status:404\n";
    const THREE_RULES: &str = "  - hostname: b.example.com\n    service: http_status:204\n  - hostname: a.example.com\n    service: http://127.0.0.1:8001\n  - service: http_status:404\n";

    fn start(files: &Files) -> (Reloader, Arc<SharedStreams>, Metrics) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let args = RunArgs {
            config: Some(files.config()),
            ..RunArgs::default()
        };
        let cfg = args.clone().resolve().unwrap();
        let metrics = Metrics::new("test");
        let streams = Arc::new(SharedStreams::new(StreamContext {
            origins: OriginClients::build(&cfg.ingress).unwrap(),
            ingress: Arc::new(cfg.ingress.clone()),
            metrics: metrics.clone(),
            tunnel: "t".into(),
        }));
        let reloader = Reloader::new(args, &cfg, streams.clone(), metrics.clone());
        (reloader, streams, metrics)
    }

    #[test]
    fn a_valid_file_swaps_the_rules_for_new_streams_only() {
        let files = Files::new("valid");
        files.write("", TWO_RULES);
        let (reloader, streams, metrics) = start(&files);
        let in_flight = streams.current();

        files.write("", THREE_RULES);
        let applied = reloader.reload().unwrap();
        assert_eq!(applied.rules, 3);
        assert!(applied.restart_only.is_empty());
        assert_eq!(streams.current().ingress.find("b.example.com", "/").0, 0);
        // A stream that started before keeps its rules.
        assert_eq!(in_flight.ingress.rules().len(), 2);
        assert_eq!(in_flight.ingress.find("b.example.com", "/").0, 1);
        assert_eq!(metrics.config_reloads.get(), 1);
        assert_eq!(metrics.config_last_reload_successful.get(), 1);
        // The clients follow the rules to their new places.
        assert!(streams.current().origins.get(1).is_some());
        assert!(streams.current().origins.get(0).is_none());
    }

    #[test]
    fn an_invalid_file_is_refused_counted_and_the_rules_stay() {
        let files = Files::new("invalid");
        files.write("", TWO_RULES);
        let (reloader, streams, metrics) = start(&files);
        let before = streams.current();
        for (top, ingress, named) in [
            ("", "  - service: ftp://127.0.0.1:21\n", "ingress[0]"),
            ("ingres: []\n", TWO_RULES, "ingres"),
            (
                "",
                "  - hostname: b.example.com\n    service: http_status:204\n",
                "ingress[0]",
            ),
            ("ha_connections: 0\n", THREE_RULES, "ha_connections"),
        ] {
            files.write(top, ingress);
            let err = format!("{:#}", reloader.reload().unwrap_err());
            assert!(err.contains(named), "{named}: {err}");
            assert!(Arc::ptr_eq(&before, &streams.current()), "{named}");
        }
        assert_eq!(metrics.config_reload_errors.get(), 4);
        assert_eq!(metrics.config_reloads.get(), 0);
        assert_eq!(metrics.config_last_reload_successful.get(), 0);
        // A missing file too.
        std::fs::remove_file(files.config()).unwrap();
        assert!(reloader.reload().is_err());
        assert!(Arc::ptr_eq(&before, &streams.current()));
    }

    #[test]
    fn settings_only_a_restart_applies_are_named_and_the_rules_still_apply() {
        let files = Files::new("restart");
        files.write("", TWO_RULES);
        let (reloader, streams, metrics) = start(&files);
        files.write("ha_connections: 2\ngrace_period: 5s\n", THREE_RULES);
        let applied = reloader.reload().unwrap();
        assert_eq!(applied.restart_only, vec!["ha_connections", "grace_period"]);
        assert_eq!(streams.current().ingress.rules().len(), 3);
        assert_eq!(metrics.config_restart_required.get(), 1);
        // Back to the running values: nothing needs a restart any more.
        files.write("", TWO_RULES);
        assert!(reloader.reload().unwrap().restart_only.is_empty());
        assert_eq!(metrics.config_restart_required.get(), 0);
        // A new token is named without its value.
        std::fs::write(
            files.dir.join("token"),
            TunnelToken::generate().unwrap().to_string(),
        )
        .unwrap();
        let applied = reloader.reload().unwrap();
        assert_eq!(applied.restart_only, vec!["the tunnel token (token_file)"]);
    }

    #[test]
    fn the_watcher_sees_content_changes_not_touches() {
        let files = Files::new("seen");
        files.write("", TWO_RULES);
        let path = files.config();
        let mut seen = Seen::now(&path);
        assert!(!seen.changed(&path), "nothing happened");
        // The same bytes, rewritten (a new inode and time): no change.
        files.write("", TWO_RULES);
        assert!(!seen.changed(&path));
        files.write("", THREE_RULES);
        assert!(seen.changed(&path));
        assert!(!seen.changed(&path), "seen once");
        std::fs::remove_file(&path).unwrap();
        assert!(seen.changed(&path), "a removed file is a change (refused)");
        files.write("", THREE_RULES);
        assert!(seen.changed(&path), "and its return too");
    }
}
