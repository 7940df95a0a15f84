//! TLS on the public side: certificates by SNI from a directory that is
//! re-read when it changes.
//!
//! The directory holds pairs `NAME.pem` (the chain, leaf first) and
//! `NAME-key.pem`. The hostnames a certificate serves are its DNS subject
//! alternative names, `*.example.com` wildcards included (one label, as TLS
//! clients check them); an exact name beats a wildcard. A pair that cannot
//! be used is logged with its file name, counted, and skipped: the others
//! keep serving. A ClientHello for a name no certificate covers (or without
//! SNI) fails with a TLS alert: the edge never shows one tenant's
//! certificate for another's name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, StoresServerSessions};
use rustls::sign::CertifiedKey;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;

/// Suffix of a private key file; the chain is the same name without it.
const KEY_SUFFIX: &str = "-key.pem";
/// ALPN protocols offered, preferred first.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate pair in the directory is not served.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// A chain without its key, or a key without its chain.
    #[error("{0}: no matching {1} in the directory")]
    Unpaired(String, String),
    /// The chain file is not PEM certificates, or holds none.
    #[error("{0}: cannot read the certificate chain: {1}")]
    Chain(String, String),
    /// The key file is not a PEM private key.
    #[error("{0}: cannot read the private key: {1}")]
    Key(String, String),
    /// The key does not belong to the certificate, or is of a kind rustls
    /// cannot sign with.
    #[error("{0}: key and certificate do not go together: {1}")]
    Mismatch(String, String),
    /// The leaf certificate does not parse, or names no DNS host.
    #[error("{0}: {1}")]
    Names(String, String),
}

/// The certificates of one directory scan, by the hostname they serve.
#[derive(Debug, Default)]
pub struct CertMap {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    pairs: usize,
}

impl CertMap {
    /// The certificate for an SNI name: exact first, then a wildcard one
    /// label up. Names are compared without case.
    pub fn lookup(&self, sni: &str) -> Option<&Arc<CertifiedKey>> {
        let name = sni.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c);
        }
        let (first, rest) = name.split_once('.')?;
        if first.is_empty() || rest.is_empty() {
            return None;
        }
        self.wildcard.get(rest)
    }

    /// Certificate pairs loaded.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// No certificate at all.
    pub fn is_empty(&self) -> bool {
        self.pairs == 0
    }
}

/// Reads every pair in `dir`. `Err` only if the directory itself cannot be
/// read; a bad pair is returned beside the good ones.
pub fn load_dir(
    dir: &Path,
    provider: &CryptoProvider,
) -> std::io::Result<(CertMap, Vec<PairError>)> {
    let mut chains = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(stem) = name.strip_suffix(KEY_SUFFIX) {
            keys.insert(stem.to_owned(), entry.path());
        } else if let Some(stem) = name.strip_suffix(".pem") {
            chains.insert(stem.to_owned(), entry.path());
        }
    }
    let mut map = CertMap::default();
    let mut errors = Vec::new();
    for stem in keys.keys().filter(|k| !chains.contains_key(*k)) {
        errors.push(PairError::Unpaired(
            format!("{stem}{KEY_SUFFIX}"),
            format!("{stem}.pem"),
        ));
    }
    for (stem, chain_path) in &chains {
        let chain_name = format!("{stem}.pem");
        let Some(key_path) = keys.get(stem) else {
            errors.push(PairError::Unpaired(
                chain_name,
                format!("{stem}{KEY_SUFFIX}"),
            ));
            continue;
        };
        match load_pair(&chain_name, chain_path, key_path, provider) {
            Ok((names, key)) => {
                let key = Arc::new(key);
                for name in names {
                    let (table, host) = match name.strip_prefix("*.") {
                        Some(rest) => (&mut map.wildcard, rest.to_owned()),
                        None => (&mut map.exact, name),
                    };
                    // Files are read in name order, so which certificate
                    // serves a name claimed twice does not change between
                    // scans.
                    table.entry(host).or_insert_with(|| key.clone());
                }
                map.pairs += 1;
            }
            Err(e) => errors.push(e),
        }
    }
    Ok((map, errors))
}

/// One pair: its DNS names (lower case) and the key ready to sign.
fn load_pair(
    chain_name: &str,
    chain_path: &Path,
    key_path: &Path,
    provider: &CryptoProvider,
) -> Result<(Vec<String>, CertifiedKey), PairError> {
    let chain = CertificateDer::pem_file_iter(chain_path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| PairError::Chain(chain_name.to_owned(), e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(PairError::Chain(
            chain_name.to_owned(),
            "no certificate in the file".into(),
        ));
    };
    let key_name = key_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The key's own error text never includes key material.
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| PairError::Key(key_name.clone(), e.to_string()))?;
    let names: Vec<String> = {
        let cert = webpki::EndEntityCert::try_from(leaf).map_err(|e| {
            PairError::Names(chain_name.to_owned(), format!("bad certificate: {e}"))
        })?;
        cert.valid_dns_names()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .collect()
    };
    if names.is_empty() {
        return Err(PairError::Names(
            chain_name.to_owned(),
            "the certificate has no DNS subject alternative name, so it serves no hostname".into(),
        ));
    }
    let certified = CertifiedKey::from_der(chain, key, provider)
        .map_err(|e| PairError::Mismatch(format!("{chain_name} + {key_name}"), e.to_string()))?;
    Ok((names, certified))
}

/// A rustls config per certificate would repeat the settings; instead one
/// config whose resolver looks the name up in the current map. Resolution
/// that finds nothing is remembered by the caller through
/// [`PublicTls::accept`], which does the lookup itself first.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[derive(Debug)]
struct Nothing;

impl ResolvesServerCert for Nothing {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

/// Why a TLS handshake on the public listener failed, as
/// `edge_tls_handshake_failures_total{reason}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// No certificate for the SNI name, or no SNI.
    NoCertificate,
    /// The client did not finish within the handshake timeout.
    Timeout,
    /// Anything else: not TLS, no common version or cipher, a reset.
    Other,
}

impl HandshakeFailure {
    /// Every reason, for the metric's labels.
    pub const ALL: [Self; 3] = [Self::NoCertificate, Self::Timeout, Self::Other];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }
}

/// The public TLS side: the current certificates and the settings every
/// handshake shares.
#[derive(Debug, Clone)]
pub struct PublicTls {
    dir: PathBuf,
    current: Arc<RwLock<Arc<Configs>>>,
    provider: Arc<CryptoProvider>,
    sessions: Arc<dyn StoresServerSessions>,
    handshake_timeout: Duration,
}

/// One rustls config per certificate (they differ only in the resolver),
/// by hostname, and one that refuses every name.
#[derive(Debug)]
struct Configs {
    map: CertMap,
    by_key: HashMap<usize, Arc<rustls::ServerConfig>>,
    refuse: Arc<rustls::ServerConfig>,
}

impl PublicTls {
    /// Loads `dir`. An unreadable directory is an error naming it; bad
    /// pairs are logged and counted, and an empty directory is allowed (a
    /// certificate can be dropped in later).
    pub fn load(
        dir: &Path,
        handshake_timeout: Duration,
        metrics: &Metrics,
    ) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let sessions: Arc<dyn StoresServerSessions> =
            rustls::server::ServerSessionMemoryCache::new(4096);
        let this = Self {
            dir: dir.to_path_buf(),
            current: Arc::new(RwLock::new(Arc::new(Configs {
                map: CertMap::default(),
                by_key: HashMap::new(),
                refuse: Arc::new(server_config(&provider, &sessions, Arc::new(Nothing))?),
            }))),
            provider,
            sessions,
            handshake_timeout,
        };
        let (map, errors) = load_dir(dir, &this.provider).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the public certificate directory {} (--public-cert-dir): {e}",
                dir.display()
            )
        })?;
        this.install(map, errors, metrics)?;
        Ok(this)
    }

    fn install(
        &self,
        map: CertMap,
        errors: Vec<PairError>,
        metrics: &Metrics,
    ) -> anyhow::Result<()> {
        for e in &errors {
            tracing::error!(dir = %self.dir.display(), error = %e,
                "public certificate pair skipped; the others keep serving");
            metrics.cert_reload_errors.inc();
        }
        let mut by_key = HashMap::new();
        for key in map.exact.values().chain(map.wildcard.values()) {
            let id = Arc::as_ptr(key) as usize;
            if let std::collections::hash_map::Entry::Vacant(v) = by_key.entry(id) {
                v.insert(Arc::new(server_config(
                    &self.provider,
                    &self.sessions,
                    Arc::new(Fixed(key.clone())),
                )?));
            }
        }
        metrics.certificates_loaded.set(map.len() as i64);
        tracing::info!(dir = %self.dir.display(), certificates = map.len(),
            hostnames = map.exact.len() + map.wildcard.len(), "public certificates loaded");
        let refuse = self.configs().refuse.clone();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Configs {
            map,
            by_key,
            refuse,
        });
        Ok(())
    }

    fn configs(&self) -> Arc<Configs> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The TLS handshake, within the handshake timeout. The ClientHello is
    /// read first and its SNI looked up here, so a name without a
    /// certificate is known as such (and answered with an alert by a config
    /// that has no certificate at all).
    pub async fn accept<S>(&self, io: S) -> Result<TlsStream<S>, HandshakeFailure>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let handshake = async {
            let acceptor =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
            let start = acceptor.await.map_err(|e| {
                tracing::debug!(error = %e, "TLS ClientHello unreadable");
                HandshakeFailure::Other
            })?;
            let configs = self.configs();
            let found = start
                .client_hello()
                .server_name()
                .and_then(|sni| configs.map.lookup(sni))
                .and_then(|key| configs.by_key.get(&(Arc::as_ptr(key) as usize)));
            match found {
                Some(config) => start.into_stream(config.clone()).await.map_err(|e| {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    HandshakeFailure::Other
                }),
                None => {
                    tracing::debug!(sni = ?start.client_hello().server_name(),
                        "TLS handshake refused: no certificate for this name");
                    // Sends the alert; the error is expected.
                    let _ = start.into_stream(configs.refuse.clone()).await;
                    Err(HandshakeFailure::NoCertificate)
                }
            }
        };
        match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(r) => r,
            Err(_) => Err(HandshakeFailure::Timeout),
        }
    }

    /// Polls the directory every `every` and reloads it when a file's name,
    /// modification time or size changed. A directory that becomes
    /// unreadable keeps the last certificates.
    pub async fn watch(self, every: Duration, metrics: Metrics, cancel: CancellationToken) {
        let mut last = dir_stamp(&self.dir);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = cancel.cancelled() => return,
            }
            let now = dir_stamp(&self.dir);
            if now == last {
                continue;
            }
            last = now;
            let loaded = load_dir(&self.dir, &self.provider);
            match loaded {
                Ok((map, errors)) => {
                    if let Err(e) = self.install(map, errors, &metrics) {
                        metrics.cert_reload_errors.inc();
                        tracing::error!(error = %e, "cannot apply the public certificates; keeping the previous ones");
                    }
                }
                Err(e) => {
                    metrics.cert_reload_errors.inc();
                    tracing::error!(dir = %self.dir.display(), error = %e,
                        "cannot read the public certificate directory; keeping the previous certificates");
                }
            }
        }
    }
}

/// Names, modification times and sizes of the directory's `.pem` files.
type DirStamp = Option<Vec<(std::ffi::OsString, Option<SystemTime>, u64)>>;

fn dir_stamp(dir: &Path) -> DirStamp {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with(".pem") {
            continue;
        }
        // metadata() follows symlinks, so a renewal that swaps a link
        // target is seen too.
        let meta = std::fs::metadata(entry.path()).ok();
        out.push((
            name,
            meta.as_ref().and_then(|m| m.modified().ok()),
            meta.map_or(0, |m| m.len()),
        ));
    }
    out.sort();
    Some(out)
}

fn server_config(
    provider: &Arc<CryptoProvider>,
    sessions: &Arc<dyn StoresServerSessions>,
    resolver: Arc<dyn ResolvesServerCert>,
) -> anyhow::Result<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    config.session_storage = sessions.clone();
    Ok(config)
}

/// The negotiated ALPN protocol is h2.
pub fn is_h2(stream: &TlsStream<TcpStream>) -> bool {
    stream.get_ref().1.alpn_protocol() == Some(b"h2")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, stem: &str, names: &[&str]) {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let params = rcgen::CertificateParams::new(names).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{stem}-key.pem")), key.serialize_pem()).unwrap();
    }

    #[test]
    fn exact_beats_wildcard_and_wildcards_cover_one_label() {
        let dir = std::env::temp_dir().join(format!("edge-certs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        pair(&dir, "wild", &["*.example.com"]);
        pair(&dir, "app", &["app.example.com"]);
        std::fs::write(dir.join("broken.pem"), "not pem").unwrap();
        std::fs::write(dir.join("broken-key.pem"), "not pem").unwrap();
        std::fs::write(dir.join("lonely.pem"), "x").unwrap();
        let provider = rustls::crypto::ring::default_provider();
        let (map, errors) = load_dir(&dir, &provider).unwrap();
        assert_eq!(map.len(), 2);
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{shown:?}");
        assert!(shown.iter().any(|e| e.starts_with("broken")), "{shown:?}");
        assert!(
            shown.iter().any(|e| e.contains("lonely-key.pem")),
            "{shown:?}"
        );
        let app = map.lookup("App.Example.com").unwrap();
        let wild = map.lookup("other.example.com").unwrap();
        assert!(!Arc::ptr_eq(app, wild));
        assert!(map.lookup("a.b.example.com").is_none());
        assert!(map.lookup("example.com").is_none());
        assert!(map.lookup("other.test").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
