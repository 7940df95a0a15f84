//! `rollout serve`: the controller's HTTP API.
//!
//! - `GET /pillar/{minion}`: the releases assigned to a host, as Salt pillar
//!   (`{"warren": {"edge": {"release": {...}}}}`), read by the master's
//!   `cmd_json` ext_pillar, so a highstate converges to what the store says.
//! - `GET /v1/rollouts`, `GET /v1/rollouts/{id}`: status and journal.
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
//! - `GET /metrics`: `rollout_state` and `rollout_state_duration_seconds`.
//! - `GET /healthz`.

use std::collections::BTreeSet;
use std::path::{Path as FilePath, PathBuf};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequestParts, Path, State};
use axum::http::{HeaderMap, StatusCode, header, request};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::alerts::{self, Source};
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
    pub webhook_token: Option<WebhookToken>,
}

impl FromRef<Api> for Store {
    fn from_ref(api: &Api) -> Store {
        api.store.clone()
    }
}

/// The bearer token Alertmanager must send. Only its SHA-256 digest is kept
/// after startup, and comparing two digests in constant time says nothing
/// about the token's length or about how much of a guess was right.
#[derive(Clone)]
pub struct WebhookToken([u8; 32]);

impl std::fmt::Debug for WebhookToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookToken(***)")
    }
}

/// Why the token file cannot be used; names the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file cannot be read (missing, unreadable, not UTF-8).
    #[error("cannot read the webhook token file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds only whitespace.
    #[error("the webhook token file {0} is empty")]
    Empty(PathBuf),
}

impl WebhookToken {
    /// The token in `path`, surrounding whitespace (the final newline) trimmed.
    pub fn read(path: &FilePath) -> Result<WebhookToken, TokenFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
            path: path.to_path_buf(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(TokenFileError::Empty(path.to_path_buf()));
        }
        Ok(WebhookToken(digest(token)))
    }

    /// Whether `presented` is the token, in time that does not depend on
    /// where they differ.
    fn accepts(&self, presented: &str) -> bool {
        let other = digest(presented);
        self.0
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

fn digest(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    d.as_ref().try_into().expect("SHA-256 is 32 bytes")
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
        let why = match bearer(&parts.headers) {
            Some(presented) if token.accepts(presented) => return Ok(Authorized),
            Some(_) => "invalid bearer token",
            None => "missing bearer token: send Authorization: Bearer <token>",
        };
        // Alertmanager does not retry a 4xx, so from now on only the poll can
        // bring this alert: say so where an operator looks.
        tracing::warn!(reason = why, "Alertmanager webhook refused");
        Err(unauthorized(why))
    }
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(why: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        format!("{why}\n"),
    )
        .into_response()
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

fn error(e: StoreError) -> Response {
    let status = match e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, format!("{e}\n")).into_response()
}

async fn pillar(State(store): State<Store>, Path(minion): Path<String>) -> Response {
    match pillar_json(&store, &minion).await {
        Ok(v) => axum::Json(v).into_response(),
        // Salt then merges nothing, and the states keep what runs.
        Err(e) => error(e),
    }
}

async fn list(State(store): State<Store>) -> Response {
    match store.list().await {
        Ok(all) => axum::Json(all).into_response(),
        Err(e) => error(e),
    }
}

async fn one(State(store): State<Store>, Path(id): Path<String>) -> Response {
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

async fn metrics(State(store): State<Store>) -> Response {
    let all = match store.list().await {
        Ok(a) => a,
        Err(e) => return error(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    let mut out = String::from(
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

/// Serves until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    api: Api,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(api))
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
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

    fn token_file(text: &str) -> (PathBuf, Result<WebhookToken, TokenFileError>) {
        let path = std::env::temp_dir().join(format!(
            "warren-token-{}-{}",
            std::process::id(),
            crate::inventory::hex(&digest(text)[..4])
        ));
        std::fs::write(&path, text).unwrap();
        let token = WebhookToken::read(&path);
        let _ = std::fs::remove_file(&path);
        (path, token)
    }

    #[test]
    fn the_token_is_read_trimmed_and_compared_whole() {
        let (_, token) = token_file("  s3cret-token\n");
        let token = token.unwrap();
        assert!(token.accepts("s3cret-token"));
        for wrong in [
            "",
            "s3cret",
            "s3cret-token2",
            "S3CRET-TOKEN",
            " s3cret-token",
        ] {
            assert!(!token.accepts(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{token:?}"), "WebhookToken(***)");
    }

    #[test]
    fn an_empty_or_missing_token_file_is_refused_by_name() {
        let (path, token) = token_file(" \n\t");
        let e = token.unwrap_err().to_string();
        assert!(
            e.contains(&path.display().to_string()) && e.contains("empty"),
            "{e}"
        );
        let missing = std::path::Path::new("/nonexistent/warren/webhook.token");
        let e = WebhookToken::read(missing).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/warren/webhook.token"), "{e}");
    }

    #[test]
    fn bearer_tokens_are_taken_from_the_authorization_header() {
        let with = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value.parse().unwrap());
            h
        };
        assert_eq!(bearer(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(&with("Basic YWJjOmRlZg==")), None);
        assert_eq!(bearer(&with("Bearer ")), None);
        assert_eq!(bearer(&with("Bearer")), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
