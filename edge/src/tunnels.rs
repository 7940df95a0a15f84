//! The tunnels file: which tunnels exist, their hostnames, and the hash of
//! each tunnel's secret. It never holds a secret.
//!
//! ```yaml
//! tunnels:
//!   - id: 9f1c2d3e-...
//!     hostnames: [app.example.com, "*.dev.example.com"]
//!     secret_sha256: 3a7bd3e2...
//!     tcp_hostnames: [ssh.example.com]   # optional: `connector access` may reach TCP here
//!     tcp_ports:                         # optional: public TCP ports of this tunnel
//!       - port: 2222
//!         hostname: ssh.example.com      # the stream's authority (picks the connector rule)
//! ```
//!
//! A hostname serves TCP when it is in `tcp_hostnames` or is the hostname of
//! one of `tcp_ports`; each must route to its own tunnel, and each port
//! belongs to exactly one tunnel.
//!
//! `edge tunnel create` writes it (atomically, under a lock file); a running
//! edge reloads it when it changes and keeps the last good table when a new
//! version is invalid.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tunnel::hostname::{self, HostPattern};
use tunnel::token::{SecretHash, TunnelId, TunnelToken};

/// One tunnel as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelRecord {
    /// The tunnel id (UUID form).
    pub id: String,
    /// Exact or `*.` wildcard hostnames routed to this tunnel.
    pub hostnames: Vec<String>,
    /// SHA-256 of the tunnel secret, hex.
    pub secret_sha256: String,
    /// Hostnames (of this tunnel) on which access WebSockets may open TCP
    /// streams: exact names, or one of the tunnel's own `*.` wildcards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_hostnames: Vec<String>,
    /// Public TCP ports the edge listens on for this tunnel.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp_ports: Vec<TcpPortRecord>,
}

/// A public TCP port of a tunnel, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpPortRecord {
    /// The port, bound on `--public-tcp-address`.
    pub port: u16,
    /// The authority of the streams it opens: an exact hostname of the
    /// tunnel, which picks the connector's ingress rule.
    pub hostname: String,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelsFile {
    /// Every tunnel.
    #[serde(default)]
    pub tunnels: Vec<TunnelRecord>,
}

/// A tunnel the edge can route to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    /// Its id.
    pub id: TunnelId,
    /// Hash of its secret.
    pub secret_hash: SecretHash,
    /// Its hostname patterns.
    pub hostnames: Vec<HostPattern>,
    /// Its id as text, the `tunnel` label of its metrics (formatted once,
    /// not on every request).
    pub label: String,
    /// The hostname patterns that serve TCP (from `tcp_hostnames` and the
    /// `tcp_ports` hostnames).
    pub tcp_hostnames: Vec<HostPattern>,
}

impl Tunnel {
    /// Whether an access WebSocket for normalised `host` may open a TCP
    /// stream on this tunnel.
    pub fn serves_tcp(&self, host: &str) -> bool {
        self.tcp_hostnames.iter().any(|p| p.matches(host))
    }
}

/// A public TCP port of the table: whose it is and the authority of its
/// streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPort {
    /// The tunnel that owns the port.
    pub tunnel: Arc<Tunnel>,
    /// The stream authority (an exact hostname).
    pub hostname: String,
}

/// What is wrong with a tunnels file.
#[derive(Debug, thiserror::Error)]
pub enum TunnelsError {
    /// Reading or writing failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML is not a tunnels file.
    #[error("{path} is not a valid tunnels file: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        reason: String,
    },
    /// A record is invalid.
    #[error("tunnels[{index}]: {reason}")]
    Record {
        /// Index of the record.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Another writer holds the lock.
    #[error(
        "{0} is locked by another `edge tunnel create`; if none is running, delete the lock file"
    )]
    Locked(PathBuf),
}

/// The routing table built from a tunnels file.
#[derive(Debug, Default, Clone)]
pub struct TunnelTable {
    by_id: HashMap<TunnelId, Arc<Tunnel>>,
    exact: HashMap<String, TunnelId>,
    wildcard: HashMap<String, TunnelId>,
    tcp_ports: BTreeMap<u16, TcpPort>,
}

impl TunnelTable {
    /// Checks every record and builds the lookup maps.
    pub fn build(file: &TunnelsFile) -> Result<Self, TunnelsError> {
        let mut table = Self::default();
        for (index, rec) in file.tunnels.iter().enumerate() {
            let err = |reason: String| TunnelsError::Record { index, reason };
            let id: TunnelId = rec
                .id
                .parse()
                .map_err(|e| err(format!("id `{}`: {e}", rec.id)))?;
            let secret_hash: SecretHash = rec
                .secret_sha256
                .parse()
                .map_err(|e| err(format!("secret_sha256: {e}")))?;
            if rec.hostnames.is_empty() {
                return Err(err("hostnames: at least one hostname is required".into()));
            }
            let mut hostnames = Vec::new();
            for h in &rec.hostnames {
                let pattern = HostPattern::parse(h).map_err(|e| err(format!("hostnames: {e}")))?;
                let (map, key) = match &pattern {
                    HostPattern::Exact(n) => (&mut table.exact, n.clone()),
                    HostPattern::Wildcard(n) => (&mut table.wildcard, n.clone()),
                };
                if let Some(other) = map.insert(key, id) {
                    return Err(err(format!(
                        "hostname `{pattern}` is already routed to tunnel {other}"
                    )));
                }
                hostnames.push(pattern);
            }
            let tcp_hostnames = tcp_patterns(rec, &hostnames).map_err(err)?;
            let tunnel = Arc::new(Tunnel {
                id,
                secret_hash,
                hostnames,
                label: id.to_string(),
                tcp_hostnames,
            });
            if table.by_id.insert(id, tunnel).is_some() {
                return Err(err(format!("tunnel id {id} appears twice")));
            }
        }
        // TCP hostnames must route to their own tunnel, which is known only
        // once every tunnel's hostnames are in (another tunnel's exact name
        // wins over this one's wildcard).
        for (index, rec) in file.tunnels.iter().enumerate() {
            let err = |reason: String| TunnelsError::Record { index, reason };
            let tunnel = rec
                .id
                .parse::<TunnelId>()
                .ok()
                .and_then(|id| table.by_id.get(&id).cloned())
                .ok_or_else(|| err("tunnel missing from the table".into()))?;
            for h in &rec.tcp_hostnames {
                if let Ok(HostPattern::Exact(name)) = HostPattern::parse(h) {
                    table
                        .check_routes_to(&name, &tunnel)
                        .map_err(|why| err(format!("tcp hostname `{name}`: {why}")))?;
                }
            }
            for tp in &rec.tcp_ports {
                let what = format!("tcp_ports: port {}", tp.port);
                if tp.port == 0 {
                    return Err(err(format!("{what}: must be 1 to 65535")));
                }
                let hostname = hostname::normalize(&tp.hostname)
                    .filter(|_| matches!(HostPattern::parse(&tp.hostname), Ok(HostPattern::Exact(_))))
                    .ok_or_else(|| {
                        err(format!(
                            "{what}: hostname `{}` must be an exact hostname (no wildcard, no port)",
                            tp.hostname
                        ))
                    })?;
                table
                    .check_routes_to(&hostname, &tunnel)
                    .map_err(|why| err(format!("{what}: hostname `{hostname}`: {why}")))?;
                let port = TcpPort {
                    tunnel: tunnel.clone(),
                    hostname,
                };
                if let Some(other) = table.tcp_ports.insert(tp.port, port) {
                    return Err(err(format!(
                        "{what} is already the port of tunnel {}; a port belongs to one tunnel",
                        other.tunnel.id
                    )));
                }
            }
        }
        Ok(table)
    }

    /// `Ok` when `host` routes to `tunnel`, else why not.
    fn check_routes_to(&self, host: &str, tunnel: &Tunnel) -> Result<(), String> {
        match self.route(host) {
            Some(t) if t.id == tunnel.id => Ok(()),
            Some(t) => Err(format!(
                "routes to tunnel {}, not to this one; TCP is served only on the tunnel's own hostnames",
                t.id
            )),
            None => {
                Err("is not routed to this tunnel: add it to the tunnel's hostnames".to_string())
            }
        }
    }

    /// The public TCP ports, by port.
    pub fn tcp_ports(&self) -> &BTreeMap<u16, TcpPort> {
        &self.tcp_ports
    }

    /// The owner of public TCP port `port`.
    pub fn tcp_port(&self, port: u16) -> Option<&TcpPort> {
        self.tcp_ports.get(&port)
    }

    /// Whether an access WebSocket for `authority` (a Host value) may open a
    /// TCP stream on `tunnel`.
    pub fn serves_tcp(&self, tunnel: &Tunnel, authority: &str) -> bool {
        hostname::normalize(authority).is_some_and(|h| tunnel.serves_tcp(&h))
    }

    /// The tunnel for a Host header value: exact names first, then the most
    /// specific wildcard.
    pub fn route(&self, authority: &str) -> Option<Arc<Tunnel>> {
        let host = hostname::normalize(authority)?;
        let id = self.exact.get(&host).or_else(|| {
            hostname::wildcard_suffixes(&host).find_map(|suffix| self.wildcard.get(suffix))
        })?;
        self.by_id.get(id).cloned()
    }

    /// A tunnel by id.
    pub fn get(&self, id: &TunnelId) -> Option<Arc<Tunnel>> {
        self.by_id.get(id).cloned()
    }

    /// Every tunnel, in no particular order.
    pub fn tunnels(&self) -> impl Iterator<Item = &Arc<Tunnel>> {
        self.by_id.values()
    }

    /// How many tunnels.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// The patterns that serve TCP on a record: its `tcp_hostnames` (exact, or
/// one of its own wildcards) and its ports' hostnames.
fn tcp_patterns(rec: &TunnelRecord, own: &[HostPattern]) -> Result<Vec<HostPattern>, String> {
    let mut out: Vec<HostPattern> = Vec::new();
    for h in &rec.tcp_hostnames {
        let p = HostPattern::parse(h).map_err(|e| format!("tcp_hostnames: {e}"))?;
        if matches!(p, HostPattern::Wildcard(_)) && !own.contains(&p) {
            return Err(format!(
                "tcp_hostnames: wildcard `{p}` is not one of the tunnel's hostnames; \
                 use one of them or exact names"
            ));
        }
        if !out.contains(&p) {
            out.push(p);
        }
    }
    for tp in &rec.tcp_ports {
        if let Ok(p @ HostPattern::Exact(_)) = HostPattern::parse(&tp.hostname)
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    Ok(out)
}

/// Reads and parses a tunnels file. A missing file is an empty one, so an
/// edge can start before the first tunnel is created.
pub fn load(path: &Path) -> Result<TunnelsFile, TunnelsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TunnelsFile::default()),
        Err(source) => {
            return Err(TunnelsError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(TunnelsFile::default());
    }
    serde_yaml::from_str(&text).map_err(|e| TunnelsError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// What `edge tunnel create` writes for a new tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewTunnel {
    /// `--hostname`: routed to the tunnel.
    pub hostnames: Vec<String>,
    /// `--tcp-hostname`: access WebSockets may open TCP streams here.
    pub tcp_hostnames: Vec<String>,
    /// `--tcp-port PORT[=HOST]`: public TCP ports.
    pub tcp_ports: Vec<TcpPortArg>,
}

/// `--tcp-port PORT[=HOST]`; without HOST, the first `--hostname`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpPortArg {
    /// The port.
    pub port: u16,
    /// The hostname, if given.
    pub hostname: Option<String>,
}

impl std::str::FromStr for TcpPortArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (port, hostname) = match s.split_once('=') {
            Some((p, h)) => (p, Some(h.trim().to_string())),
            None => (s, None),
        };
        let port = port
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("`{s}`: expected PORT or PORT=HOST, PORT from 1 to 65535"))?;
        Ok(Self { port, hostname })
    }
}

/// Adds a tunnel to the file and returns its token. The file is checked as
/// a whole (hostnames, TCP hostnames, port conflicts) before it is
/// replaced, and replaced atomically: a refused tunnel leaves it unchanged.
pub fn create(path: &Path, new: &NewTunnel) -> Result<TunnelToken, TunnelsError> {
    let _lock = LockFile::acquire(path)?;
    let mut file = load(path)?;
    let index = file.tunnels.len();
    let err = |reason: String| TunnelsError::Record { index, reason };
    let token = TunnelToken::generate().map_err(|e| err(e.to_string()))?;
    let mut names = Vec::new();
    for h in &new.hostnames {
        let p = HostPattern::parse(h).map_err(|e| err(format!("hostnames: {e}")))?;
        names.push(p.to_string());
    }
    let mut tcp_hostnames = Vec::new();
    for h in &new.tcp_hostnames {
        let p = HostPattern::parse(h).map_err(|e| err(format!("tcp_hostnames: {e}")))?;
        tcp_hostnames.push(p.to_string());
    }
    let mut tcp_ports = Vec::new();
    for tp in &new.tcp_ports {
        let hostname = match &tp.hostname {
            Some(h) => h.clone(),
            None => match names.first() {
                Some(h) if !h.starts_with("*.") => h.clone(),
                _ => {
                    return Err(err(format!(
                        "--tcp-port {0}: the first --hostname is a wildcard, so name the \
                         hostname: --tcp-port {0}=HOST",
                        tp.port
                    )));
                }
            },
        };
        let hostname = match HostPattern::parse(&hostname) {
            Ok(p) => p.to_string(),
            Err(e) => return Err(err(format!("tcp_ports: port {}: {e}", tp.port))),
        };
        tcp_ports.push(TcpPortRecord {
            port: tp.port,
            hostname,
        });
    }
    file.tunnels.push(TunnelRecord {
        id: token.tunnel_id.to_string(),
        hostnames: names,
        secret_sha256: token.secret.hash().to_string(),
        tcp_hostnames,
        tcp_ports,
    });
    TunnelTable::build(&file)?;
    write_atomically(path, &file)?;
    Ok(token)
}

fn write_atomically(path: &Path, file: &TunnelsFile) -> Result<(), TunnelsError> {
    let io = |source| TunnelsError::Io {
        path: path.to_path_buf(),
        source,
    };
    let yaml = serde_yaml::to_string(file).map_err(|e| TunnelsError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let body = format!(
        "# Written by `edge tunnel create`. Holds SHA-256 hashes of tunnel secrets, never a secret.\n{yaml}"
    );
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = sibling(path, ".tmp");
    std::fs::write(&tmp, body).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// An exclusive lock held as `FILE.lock` while the tunnels file is rewritten.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path) -> Result<Self, TunnelsError> {
        let lock = sibling(path, ".lock");
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| TunnelsError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        for _ in 0..100 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => return Ok(Self(lock)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(source) => return Err(TunnelsError::Io { path: lock, source }),
            }
        }
        Err(TunnelsError::Locked(lock))
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The live table, shared by the listeners and swapped on reload.
#[derive(Debug, Clone, Default)]
pub struct SharedTable(Arc<RwLock<Arc<TunnelTable>>>);

impl SharedTable {
    /// A shared handle on `table`.
    pub fn new(table: TunnelTable) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(table))))
    }

    /// The current table.
    pub fn current(&self) -> Arc<TunnelTable> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, table: TunnelTable) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
    }
}

/// Identifies a version of the file cheaply: modification time and length.
fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls the file and swaps the table when it changes. A broken file is
/// logged and counted, and the last good table stays in force.
pub async fn watch(
    path: PathBuf,
    table: SharedTable,
    every: Duration,
    on_reload: impl Fn(Result<&TunnelTable, &TunnelsError>) + Send + 'static,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut last = stamp(&path);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = cancel.cancelled() => return,
        }
        let now = stamp(&path);
        if now == last {
            continue;
        }
        last = now;
        match load(&path).and_then(|f| TunnelTable::build(&f)) {
            Ok(t) => {
                tracing::info!(tunnels = t.len(), file = %path.display(), "tunnels file reloaded");
                on_reload(Ok(&t));
                table.replace(t);
            }
            Err(e) => {
                tracing::error!(error = %e, "tunnels file changed but is invalid; keeping the previous tunnels");
                on_reload(Err(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("edge-tunnels-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("tunnels.yaml")
    }

    fn hosts(names: &[&str]) -> NewTunnel {
        NewTunnel {
            hostnames: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with_tcp(names: &[&str], tcp: &[&str], ports: &[&str]) -> NewTunnel {
        NewTunnel {
            tcp_hostnames: tcp.iter().map(|s| s.to_string()).collect(),
            tcp_ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
            ..hosts(names)
        }
    }

    #[test]
    fn tcp_fields_are_written_and_looked_up() {
        let path = temp("tcp");
        let a = create(
            &path,
            &with_tcp(
                &["app.example.com", "ssh.example.com", "*.box.example.com"],
                &["ssh.example.com", "*.box.example.com"],
                &["2222", "2223=ssh.example.com"],
            ),
        )
        .unwrap();
        let plain = create(&path, &hosts(&["web.example.com"])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("tcp_ports"), "{text}");
        let table = TunnelTable::build(&load(&path).unwrap()).unwrap();
        let ports: Vec<(u16, &str)> = table
            .tcp_ports()
            .iter()
            .map(|(p, t)| (*p, t.hostname.as_str()))
            .collect();
        assert_eq!(
            ports,
            [(2222, "app.example.com"), (2223, "ssh.example.com")]
        );
        assert_eq!(table.tcp_port(2222).unwrap().tunnel.id, a.tunnel_id);
        let t = table.route("ssh.example.com").unwrap();
        for (host, want) in [
            ("ssh.example.com", true),
            ("SSH.example.com:443", true),
            ("app.example.com", true),
            ("x.box.example.com", true),
            ("box.example.com", false),
            ("other.example.com", false),
        ] {
            assert_eq!(table.serves_tcp(&t, host), want, "{host}");
        }
        let w = table.route("web.example.com").unwrap();
        assert_eq!(w.id, plain.tunnel_id);
        assert!(!table.serves_tcp(&w, "web.example.com"));
        // A file without the TCP fields still has none written.
        assert_eq!(text.matches("tcp_hostnames").count(), 1, "{text}");
    }

    #[test]
    fn tcp_conflicts_are_refused_and_the_file_is_unchanged() {
        let path = temp("tcp-conflicts");
        create(
            &path,
            &with_tcp(&["ssh.example.com", "*.dev.example.com"], &[], &["2222"]),
        )
        .unwrap();
        create(&path, &hosts(&["db.dev.example.com"])).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let cases: [(NewTunnel, &str); 7] = [
            (
                with_tcp(&["other.example.com"], &[], &["2222"]),
                "port 2222 is already the port of tunnel",
            ),
            (
                with_tcp(&["other.example.com"], &[], &["2300=ssh.example.com"]),
                "routes to tunnel",
            ),
            (
                with_tcp(&["other.example.com"], &["nope.example.com"], &[]),
                "is not routed to this tunnel",
            ),
            (
                with_tcp(&["*.x.example.com"], &[], &["2400"]),
                "first --hostname is a wildcard",
            ),
            (
                with_tcp(
                    &["a.example.com", "*.y.example.com"],
                    &["*.z.example.com"],
                    &[],
                ),
                "is not one of the tunnel's hostnames",
            ),
            (
                with_tcp(
                    &["a.example.com", "*.y.example.com"],
                    &[],
                    &["2500=*.y.example.com"],
                ),
                "must be an exact hostname",
            ),
            (
                with_tcp(&["a.example.com"], &[], &["2600=bad host"]),
                "tcp_ports: port 2600",
            ),
        ];
        for (new, want) in cases {
            let err = create(&path, &new).unwrap_err().to_string();
            assert!(err.contains(want), "{want:?} not in {err}");
            assert_eq!(std::fs::read_to_string(&path).unwrap(), before, "{want}");
        }
        // The first tunnel's wildcard does not cover a name another tunnel
        // routes exactly: port 2222's tunnel cannot serve TCP there.
        let file: TunnelsFile = serde_yaml::from_str(&before).unwrap();
        let mut bad = file.clone();
        bad.tunnels[0].tcp_hostnames = vec!["db.dev.example.com".into()];
        let err = TunnelTable::build(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("tunnels[0]: tcp hostname `db.dev.example.com`: routes to tunnel"),
            "{err}"
        );
        let mut bad = file;
        bad.tunnels[1].tcp_ports = vec![TcpPortRecord {
            port: 0,
            hostname: "db.dev.example.com".into(),
        }];
        let err = TunnelTable::build(&bad).unwrap_err().to_string();
        assert!(err.contains("must be 1 to 65535"), "{err}");
    }

    #[test]
    fn tcp_port_flags_parse() {
        let p: TcpPortArg = "2222".parse().unwrap();
        assert_eq!((p.port, p.hostname), (2222, None));
        let p: TcpPortArg = "22=ssh.example.com".parse().unwrap();
        assert_eq!(
            (p.port, p.hostname.as_deref()),
            (22, Some("ssh.example.com"))
        );
        for bad in ["0", "70000", "x", "=a.com", ""] {
            assert!(bad.parse::<TcpPortArg>().is_err(), "{bad}");
        }
    }

    #[test]
    fn create_then_route_and_verify() {
        let path = temp("create");
        let a = create(&path, &hosts(&["App.Example.com"])).unwrap();
        let b = create(&path, &hosts(&["*.dev.example.com"])).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&a.to_string()[5..]), "file holds a secret");
        let table = TunnelTable::build(&load(&path).unwrap()).unwrap();
        assert_eq!(table.len(), 2);
        let routes = [
            ("app.example.com", Some(a.tunnel_id)),
            ("APP.EXAMPLE.COM:8080", Some(a.tunnel_id)),
            ("x.dev.example.com", Some(b.tunnel_id)),
            ("y.x.dev.example.com", Some(b.tunnel_id)),
            ("dev.example.com", None),
            ("other.com", None),
        ];
        for (host, want) in routes {
            assert_eq!(table.route(host).map(|t| t.id), want, "{host}");
        }
        let t = table.route("app.example.com").unwrap();
        assert!(t.secret_hash.verify(&a.secret));
        assert!(!t.secret_hash.verify(&b.secret));
    }

    #[test]
    fn duplicate_hostnames_are_refused_and_the_file_is_unchanged() {
        let path = temp("dup");
        create(&path, &hosts(&["app.example.com"])).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let err = create(&path, &hosts(&["app.example.com"])).unwrap_err();
        assert!(err.to_string().contains("already routed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert!(create(&path, &hosts(&["bad host"])).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    }

    #[test]
    fn invalid_records_name_the_index() {
        let file: TunnelsFile = serde_yaml::from_str(
            "tunnels:\n  - id: nope\n    hostnames: [a.com]\n    secret_sha256: '00'\n",
        )
        .unwrap();
        let err = TunnelTable::build(&file).unwrap_err().to_string();
        assert!(err.starts_with("tunnels[0]: id"), "{err}");
    }
}
