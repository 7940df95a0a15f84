//! The admin listener: `/metrics` in the Prometheus text format, `/ready`
//! (200 only when the process can serve) and `/healthz` (200 while the
//! process runs).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// Whether the process can serve, and if not, why.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    ready: ReadinessCheck,
}

/// The admin routes over `registry` and the readiness check.
pub fn router(registry: Registry, ready: ReadinessCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/ready", get(ready_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(AdminState { registry, ready })
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    match encoder.encode(&state.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, encoder.format_type().to_string())],
            buf,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response(),
    }
}

async fn ready_handler(State(state): State<AdminState>) -> impl IntoResponse {
    match (state.ready)() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// Binds the admin listener; fails with the address in the message.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the admin listener on {addr}: {e}"))
}

/// Serves `router` until `cancel` fires. The admin listener stays up while
/// the process drains, so `/metrics` can be scraped to the end.
pub async fn serve(listener: tokio::net::TcpListener, router: Router, cancel: CancellationToken) {
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin listener failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    async fn get_path(router: &Router, path: &str) -> (StatusCode, String) {
        let resp = router
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn routes() {
        let registry = Registry::new();
        let g = prometheus::IntGauge::new("demo_up", "demo").unwrap();
        registry.register(Box::new(g.clone())).unwrap();
        g.set(1);
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let router = router(
            registry,
            Arc::new(move || {
                if flag.load(Ordering::SeqCst) {
                    Ok(())
                } else {
                    Err("listeners not up".into())
                }
            }),
        );
        let (s, body) = get_path(&router, "/metrics").await;
        assert_eq!(s, StatusCode::OK);
        assert!(body.contains("demo_up 1"), "{body}");
        let (s, body) = get_path(&router, "/ready").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("listeners not up"));
        ready.store(true, Ordering::SeqCst);
        assert_eq!(get_path(&router, "/ready").await.0, StatusCode::OK);
        assert_eq!(get_path(&router, "/healthz").await.0, StatusCode::OK);
        assert_eq!(get_path(&router, "/nope").await.0, StatusCode::NOT_FOUND);
    }
}
