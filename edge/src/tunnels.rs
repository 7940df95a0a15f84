//! The tunnels file: which tunnels exist, their hostnames, and the hash of
//! each tunnel's secret. It never holds a secret.
//!
//! ```yaml
//! tunnels:
//!   - id: 9f1c2d3e-...
//!     hostnames: [app.example.com, "*.dev.example.com"]
//!     secret_sha256: 3a7bd3e2...
//! ```
//!
//! `edge tunnel create` writes it (atomically, under a lock file); a running
//! edge reloads it when it changes and keeps the last good table when a new
//! version is invalid.

use std::collections::HashMap;
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
            let tunnel = Arc::new(Tunnel {
                id,
                secret_hash,
                hostnames,
                label: id.to_string(),
            });
            if table.by_id.insert(id, tunnel).is_some() {
                return Err(err(format!("tunnel id {id} appears twice")));
            }
        }
        Ok(table)
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

    /// How many tunnels.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
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

/// Adds a tunnel for `hostnames` to the file and returns its token. The file
/// is checked as a whole before it is replaced, and replaced atomically.
pub fn create(path: &Path, hostnames: &[String]) -> Result<TunnelToken, TunnelsError> {
    let _lock = LockFile::acquire(path)?;
    let mut file = load(path)?;
    let token = TunnelToken::generate().map_err(|e| TunnelsError::Record {
        index: file.tunnels.len(),
        reason: e.to_string(),
    })?;
    let mut names = Vec::new();
    for h in hostnames {
        let p = HostPattern::parse(h).map_err(|e| TunnelsError::Record {
            index: file.tunnels.len(),
            reason: format!("hostnames: {e}"),
        })?;
        names.push(p.to_string());
    }
    file.tunnels.push(TunnelRecord {
        id: token.tunnel_id.to_string(),
        hostnames: names,
        secret_sha256: token.secret.hash().to_string(),
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

    #[test]
    fn create_then_route_and_verify() {
        let path = temp("create");
        let a = create(&path, &["App.Example.com".into()]).unwrap();
        let b = create(&path, &["*.dev.example.com".into()]).unwrap();
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
        create(&path, &["app.example.com".into()]).unwrap();
        let before = std::fs::read_to_string(&path).unwrap();
        let err = create(&path, &["app.example.com".into()]).unwrap_err();
        assert!(err.to_string().contains("already routed"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
        assert!(create(&path, &["bad host".into()]).is_err());
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
