//! `rollout serve`'s HTTP API: the controller as a service.
//!
//! - `/v1/rollouts...`: submit a plan, list, status with the journal,
//!   pause, resume, abort, and server-sent events of journal steps
//!   ([`rollouts`], [`events`]); described by `/v1/openapi.json`
//!   ([`openapi`]).
//! - `GET /`: the live page ([`page`]).
//! - `GET /pillar/{minion}`: the releases assigned to a host ([`pillar`]).
//! - `POST /v1/alerts/alertmanager`: Alertmanager's webhook ([`webhook`]).
//! - `GET /metrics` ([`metrics`]) and `GET /healthz`.
//!
//! Authentication: `Authorization: Bearer <token>` with the token of
//! `--api-token-file` (compared in constant time, never logged). Mutating
//! calls always need it, and are refused (401) without one configured;
//! reads need it too unless serve runs with `--open-reads`, or has no token
//! at all (it then listens on loopback only). The webhook has its own token.
//! Every error is JSON `{"error": "..."}` naming the problem; a store
//! failure is logged and answered with a generic 500, never with the
//! database's words.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, FromRequestParts};
use axum::http::{StatusCode, header, request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;

use crate::auth::{BearerToken, refusal};
use crate::controller::Controller;
use crate::store::{Store, StoreError};

pub mod events;
pub mod metrics;
pub mod openapi;
pub mod page;
pub mod pillar;
pub mod rollouts;
pub mod webhook;

pub use webhook::WEBHOOK_PATH;

/// What the API serves from.
#[derive(Clone)]
pub struct Api {
    /// The store.
    pub store: Store,
    /// The webhook's token; without one the webhook refuses every delivery.
    pub webhook_token: Option<BearerToken>,
    /// The token reads and changes require; without one changes are
    /// refused and reads are open (serve then listens on loopback only).
    pub api_token: Option<BearerToken>,
    /// Reads without the token even when one is set (`--open-reads`).
    pub open_reads: bool,
    /// Salt and Prometheus, to check a submitted plan against the fleet;
    /// `None` when serve was started without them (it then runs nothing).
    pub controller: Option<Arc<Controller>>,
    /// This process's name in the runner lease, when its worker runs.
    pub holder: Option<String>,
}

/// Why `rollout serve` will not listen where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExposureError {
    /// Off loopback without a token: anyone who reaches the port could read
    /// pillar and rollouts.
    #[error(
        "refusing to listen on {0} without an API token: an address that is not loopback \
         needs --api-token-file FILE (or WARREN_API_TOKEN_FILE), or listen on 127.0.0.1"
    )]
    NoToken(SocketAddr),
    /// Off loopback in plain HTTP: the token and the pillar would cross the
    /// network readable and changeable.
    #[error(
        "refusing to listen on {0} without TLS: an address that is not loopback \
         needs --tls-cert FILE and --tls-key FILE (or WARREN_TLS_CERT, WARREN_TLS_KEY)"
    )]
    NoTls(SocketAddr),
}

/// Whether serve may listen on `listen` with what it was given. Checked
/// before anything is bound or opened.
pub fn check_exposure(listen: SocketAddr, token: bool, tls: bool) -> Result<(), ExposureError> {
    if listen.ip().is_loopback() {
        return Ok(());
    }
    if !token {
        return Err(ExposureError::NoToken(listen));
    }
    if !tls {
        return Err(ExposureError::NoTls(listen));
    }
    Ok(())
}

/// The routes. The webhook route exists even without a token, to say why it
/// refuses.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/pillar/{minion}", get(pillar::pillar))
        .route(
            "/v1/rollouts",
            get(rollouts::list)
                .post(rollouts::submit)
                .layer(rollouts::plan_body_limit()),
        )
        .route("/v1/rollouts/{id}", get(rollouts::one))
        .route("/v1/rollouts/{id}/pause", post(rollouts::pause))
        .route("/v1/rollouts/{id}/resume", post(rollouts::resume))
        .route("/v1/rollouts/{id}/abort", post(rollouts::abort))
        .route("/v1/rollouts/{id}/events", get(events::one))
        .route("/v1/events", get(events::all))
        .route("/v1/openapi.json", get(openapi::document))
        .route(
            WEBHOOK_PATH,
            post(webhook::alertmanager).layer(DefaultBodyLimit::max(webhook::WEBHOOK_BODY_LIMIT)),
        )
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(page::routes())
        .fallback(|| async {
            json_error(StatusCode::NOT_FOUND, "no such route; see /v1/openapi.json")
        })
        .method_not_allowed_fallback(|| async {
            json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route; see /v1/openapi.json",
            )
        })
        .layer(axum::middleware::map_response(errors_as_json))
        .with_state(api)
}

/// Turns the errors axum's extractors answer in plain text (a body over the
/// limit, a bad query string) into the API's JSON errors.
async fn errors_as_json(resp: Response) -> Response {
    let status = resp.status();
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || json {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    let why = if text.is_empty() {
        status.canonical_reason().unwrap_or("error")
    } else {
        text
    };
    json_error(status, why)
}

/// `{"error": why}` with `status`.
pub fn json_error(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({"error": why}))).into_response()
}

/// 401 with the reason and `WWW-Authenticate: Bearer`.
fn unauthorized(why: &str) -> Response {
    let mut resp = json_error(StatusCode::UNAUTHORIZED, why);
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    resp
}

/// The answer to a store error: 404 for an unknown rollout, 409 for a
/// refused change or a component already held, else a generic 500 (the
/// database's words go to the log, not to the client).
pub fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(id) => json_error(StatusCode::NOT_FOUND, &format!("no rollout {id}")),
        e @ (StoreError::Refused(_) | StoreError::AlreadyActive { .. }) => {
            json_error(StatusCode::CONFLICT, &e.to_string())
        }
        e => {
            tracing::error!(error = %e, "store failed while answering a request");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error (see the controller's log)",
            )
        }
    }
}

/// A request that may read: it carried the API token, or reads are open.
pub struct Reader;

impl FromRequestParts<Api> for Reader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut request::Parts, api: &Api) -> Result<Self, Response> {
        let Some(token) = &api.api_token else {
            return Ok(Reader);
        };
        if api.open_reads {
            return Ok(Reader);
        }
        let Some(why) = refusal(&parts.headers, token) else {
            return Ok(Reader);
        };
        tracing::warn!(reason = why, path = %parts.uri.path(), "API read refused");
        Err(unauthorized(why))
    }
}

/// A request that may change something: it carried the API token. As an
/// extractor it runs before the body is read.
pub struct Writer;

impl FromRequestParts<Api> for Writer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut request::Parts, api: &Api) -> Result<Self, Response> {
        let Some(token) = &api.api_token else {
            return Err(unauthorized(
                "changes through the API need a token: start `rollout serve` with \
                 --api-token-file FILE (or WARREN_API_TOKEN_FILE) and send it as a bearer token",
            ));
        };
        let Some(why) = refusal(&parts.headers, token) else {
            return Ok(Writer);
        };
        tracing::warn!(reason = why, path = %parts.uri.path(), "API change refused");
        Err(unauthorized(why))
    }
}

/// Serves until `cancel` fires, over TLS when `tls` is given. Fails at
/// once when the release manifest beside the binary cannot be read: a
/// release that cannot say what it is must not look healthy.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    api: Api,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    let release = daemon::release::current("rollout", env!("CARGO_PKG_VERSION"))
        .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let app = router(api).layer(Extension(metrics::BuildVersion(release.version.into())));
    let shutdown = async move { cancel.cancelled().await };
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(crate::https::TlsListener::new(listener, config)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_loopback_needs_a_token_and_tls() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        for loopback in ["127.0.0.1:9099", "127.0.0.2:0", "[::1]:9099"] {
            assert_eq!(
                check_exposure(at(loopback), false, false),
                Ok(()),
                "{loopback}"
            );
        }
        for open in [
            "0.0.0.0:9099",
            "10.0.0.5:9099",
            "[::]:9099",
            "[::ffff:127.0.0.1]:1",
        ] {
            let e = check_exposure(at(open), false, true).unwrap_err();
            assert!(e.to_string().contains("--api-token-file"), "{e}");
            let e = check_exposure(at(open), true, false).unwrap_err();
            assert!(e.to_string().contains("--tls-cert"), "{e}");
            assert_eq!(check_exposure(at(open), true, true), Ok(()), "{open}");
        }
    }
}
