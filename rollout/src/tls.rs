//! reqwest's rustls needs a process-wide crypto provider; this installs
//! ring's once, for every HTTP client the controller builds.

/// Installs ring as the default rustls provider (once; later calls do nothing).
pub fn ensure_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
