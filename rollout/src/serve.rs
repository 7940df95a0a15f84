//! `rollout serve`: the controller's HTTP API.
//!
//! - `GET /pillar/{minion}`: the releases assigned to a host, as Salt pillar
//!   (`{"warren": {"edge": {"release": {...}}}}`), read by the master's
//!   `cmd_json` ext_pillar (through `salt/master/release_pillar.py`, which
//!   keeps nothing but the releases), so a highstate converges to what the
//!   store says. A minion id outside `[A-Za-z0-9._-]` is 400.
//! - `GET /v1/rollouts`, `GET /v1/rollouts/{id}`: status and journal.
//!
//! The pillar and the status API need `Authorization: Bearer <token>` with
//! the token of `--api-token-file` whenever one is given (401 otherwise);
//! serve refuses to listen on an address that is not loopback without that
//! token and without TLS (`--tls-cert`, `--tls-key`). Errors are JSON
//! `{"error": "..."}`; a store failure is logged and answered with a generic
//! 500, never with the database's words.
//! - `POST /v1/alerts/alertmanager`: Alertmanager's webhook (payload version
//!   4). Needs `Authorization: Bearer <token>` with the token of
//!   `--webhook-token-file`, checked before the body is read: 401 when it is
//!   missing or wrong. A body over 1 MiB is 413; one that is not a webhook
//!   payload is 400, and nothing is recorded. Otherwise every firing alert
//!   that a running or paused rollout's `rollback.alerts` selects is recorded
//!   against it, once per fingerprint, and the answer is 200
//!   `{"alerts": <count>, "matched": [<rollout ids newly matched>]}`; the
//!   engine running that rollout then rolls it back. The handler only touches
//!   the store, so it answers quickly; a store failure is 503, and
//!   Alertmanager retries. Without `--webhook-token-file` the route answers
//!   503 saying so: the endpoint exists but is off, and Alertmanager keeps
//!   retrying (it drops a delivery answered with 4xx) until serve is
//!   restarted with a token.
//! - `GET /metrics`: `rollout_build_info{version}` (the version of
//!   `release.json` beside the binary, as the edge and the connector report
//!   theirs, so the Salt state can confirm which release runs),
//!   `rollout_state` and `rollout_state_duration_seconds`.
//! - `GET /healthz`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, FromRef, FromRequestParts, Path, State};
use axum::http::{StatusCode, header, request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::alerts::{self, Source};
use crate::auth::{BearerToken, refusal};
use crate::store::{RolloutId, Store, StoreError};

/// Where Alertmanager delivers alerts.
pub const WEBHOOK_PATH: &str = "/v1/alerts/alertmanager";

/// The largest webhook body read. Alertmanager's payloads are a few KiB per
/// alert, and a group is capped by `max_alerts` in practice.
const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// What the API serves from.
#[derive(Debug, Clone)]
pub struct Api {
    /// The store.
    pub store: Store,
    /// The webhook's token; without one the webhook refuses every delivery.
    pub webhook_token: Option<BearerToken>,
    /// The token the pillar and the status API require; without one they
    /// are open (serve then listens on loopback only).
    pub api_token: Option<BearerToken>,
}

impl FromRef<Api> for Store {
    fn from_ref(api: &Api) -> Store {
        api.store.clone()
    }
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
        .route("/pillar/{minion}", get(pillar))
        .route("/v1/rollouts", get(list))
        .route("/v1/rollouts/{id}", get(one))
        .route(
            WEBHOOK_PATH,
            post(alertmanager_webhook).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(api)
}

/// `{"error": why}` with `status`.
fn json_error(status: StatusCode, why: &str) -> Response {
    (status, axum::Json(json!({"error": why}))).into_response()
}

/// A request that carried the webhook's token. As an extractor it runs
/// before the body is read, so an unauthenticated sender cannot make the
/// controller buffer or parse anything.
struct Authorized;

impl FromRequestParts<Api> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut request::Parts, api: &Api) -> Result<Self, Response> {
        let Some(token) = &api.webhook_token else {
            return Err((
                StatusCode::SERVICE_UNAVAILABLE,
                "the Alertmanager webhook is off: start `rollout serve` with \
                 --webhook-token-file FILE (or WARREN_WEBHOOK_TOKEN_FILE)\n",
            )
                .into_response());
        };
        let Some(why) = refusal(&parts.headers, token) else {
            return Ok(Authorized);
        };
        // Alertmanager does not retry a 4xx, so from now on only the poll can
        // bring this alert: say so where an operator looks.
        tracing::warn!(reason = why, "Alertmanager webhook refused");
        Err((
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{why}\n"),
        )
            .into_response())
    }
}

/// A request that may read the pillar and the status API: it carried the
/// API token, or serve has none (and so listens on loopback only).
struct Reader;

impl FromRequestParts<Api> for Reader {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut request::Parts, api: &Api) -> Result<Self, Response> {
        let Some(token) = &api.api_token else {
            return Ok(Reader);
        };
        let Some(why) = refusal(&parts.headers, token) else {
            return Ok(Reader);
        };
        tracing::warn!(reason = why, path = %parts.uri.path(), "API request refused");
        let mut resp = json_error(StatusCode::UNAUTHORIZED, why);
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(resp)
    }
}

async fn alertmanager_webhook(State(api): State<Api>, _: Authorized, body: Bytes) -> Response {
    let alerts = match alerts::parse_webhook(&body) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "Alertmanager webhook refused");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    let matched = match alerts::route(&api.store, &alerts, Source::Webhook).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "webhook alerts not recorded; Alertmanager retries");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; retry later\n",
            )
                .into_response();
        }
    };
    for m in &matched {
        tracing::info!(
            alert = %m.alert.describe(),
            rollout = %m.rollout,
            selector = %m.selector,
            "firing alert matches the rollout's rollback selector"
        );
    }
    let rollouts: BTreeSet<&RolloutId> = matched.iter().map(|m| &m.rollout).collect();
    axum::Json(json!({"alerts": alerts.len(), "matched": rollouts})).into_response()
}

/// The answer to a store error: 404 for an unknown rollout, else a
/// generic 500 (the database's words go to the log, not to the client).
fn error(e: StoreError) -> Response {
    match e {
        StoreError::NotFound(_) => json_error(StatusCode::NOT_FOUND, "no such rollout"),
        e => {
            tracing::error!(error = %e, "store failed while answering a request");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

async fn pillar(State(store): State<Store>, _: Reader, Path(minion): Path<String>) -> Response {
    if let Err(e) = crate::minion::check(&minion) {
        return json_error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    match pillar_json(&store, &minion).await {
        Ok(v) => axum::Json(v).into_response(),
        // Salt then merges nothing, and the states keep what runs.
        Err(e) => error(e),
    }
}

async fn list(State(store): State<Store>, _: Reader) -> Response {
    match store.list().await {
        Ok(all) => axum::Json(all).into_response(),
        Err(e) => error(e),
    }
}

async fn one(State(store): State<Store>, _: Reader, Path(id): Path<String>) -> Response {
    let id = RolloutId(id);
    let rec = match store.get(&id).await {
        Ok(r) => r,
        Err(e) => return error(e),
    };
    match store.history(&id).await {
        Ok(steps) => axum::Json(json!({"rollout": rec.summary, "steps": steps})).into_response(),
        Err(e) => error(e),
    }
}

/// The version `rollout_build_info` reports: the release manifest's, which
/// [`serve`] reads at start.
#[derive(Debug, Clone)]
struct BuildVersion(Arc<str>);

/// `value` as the inside of a quoted Prometheus label value.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

async fn metrics(State(store): State<Store>, version: Option<Extension<BuildVersion>>) -> Response {
    let all = match store.list().await {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    // A router served without [`serve`] is a development build: the crate's
    // version, as a binary without a manifest reports.
    let version = version.map_or_else(
        || env!("CARGO_PKG_VERSION").to_string(),
        |Extension(v)| v.0.to_string(),
    );
    let mut out = format!(
        "# HELP rollout_build_info The release this controller runs.\n# TYPE rollout_build_info gauge\n\
         rollout_build_info{{version=\"{}\"}} 1\n",
        label_value(&version)
    );
    out.push_str(
        "# HELP rollout_state 1 for the current state of each rollout.\n# TYPE rollout_state gauge\n",
    );
    let mut durations = String::from(
        "# HELP rollout_state_duration_seconds Seconds the rollout has been in its current state.\n# TYPE rollout_state_duration_seconds gauge\n",
    );
    for r in &all {
        let labels = format!(
            "component=\"{}\",rollout_id=\"{}\",state=\"{}\"",
            r.component, r.id, r.state
        );
        out.push_str(&format!("rollout_state{{{labels}}} 1\n"));
        let secs = (now - r.updated_at).max(0) as f64 / 1000.0;
        durations.push_str(&format!(
            "rollout_state_duration_seconds{{{labels}}} {secs}\n"
        ));
    }
    out.push_str(&durations);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
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
    let app = router(api).layer(Extension(BuildVersion(release.version.into())));
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

/// The pillar of one minion: its assigned releases.
pub async fn pillar_json(store: &Store, minion: &str) -> Result<Value, StoreError> {
    let mut warren = serde_json::Map::new();
    for (component, release) in store.assignments_for(minion).await? {
        warren.insert(component.as_str().to_string(), json!({"release": release}));
    }
    Ok(json!({"warren": warren}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("v1.2+b3"), "v1.2+b3");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

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
