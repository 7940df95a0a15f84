//! HTTP clients for tests: no proxy from the environment, hostnames pinned
//! to the test's loopback addresses.

use std::net::SocketAddr;
use std::time::Duration;

/// reqwest needs a process-wide rustls provider, even for plain HTTP.
fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A client for admin endpoints.
pub fn plain_client() -> reqwest::Client {
    install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// A client that sends `host` to `edge` (as DNS would in production).
pub fn client_for(host: &str, edge: SocketAddr) -> reqwest::Client {
    install_provider();
    reqwest::Client::builder()
        .no_proxy()
        .resolve(host, edge)
        .build()
        .expect("client")
}

/// Whether `GET http://admin/ready` answers 200.
pub async fn ready(admin: SocketAddr) -> bool {
    plain_client()
        .get(format!("http://{admin}/ready"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}
