//! `POST /v1/alerts/alertmanager`: Alertmanager's webhook (payload version
//! 4). Needs `Authorization: Bearer <token>` with the token of
//! `--webhook-token-file`, checked before the body is read: 401 when it is
//! missing or wrong. A body over 1 MiB is 413; one that is not a webhook
//! payload is 400, and nothing is recorded. Otherwise every firing alert
//! that a running or paused rollout's `rollback.alerts` selects is recorded
//! against it, once per fingerprint, and the answer is 200
//! `{"alerts": <count>, "matched": [<rollout ids newly matched>]}`; the
//! engine running that rollout then rolls it back. The handler only touches
//! the store, so it answers quickly; a store failure is 503, and
//! Alertmanager retries. Without `--webhook-token-file` the route answers
//! 503 saying so: the endpoint exists but is off, and Alertmanager keeps
//! retrying (it drops a delivery answered with 4xx) until serve is
//! restarted with a token.

use std::collections::BTreeSet;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, State};
use axum::http::{StatusCode, header, request};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Api, json_error};
use crate::alerts::{self, Source};
use crate::auth::refusal;
use crate::store::RolloutId;

/// Where Alertmanager delivers alerts.
pub const WEBHOOK_PATH: &str = "/v1/alerts/alertmanager";

/// The largest webhook body read. Alertmanager's payloads are a few KiB per
/// alert, and a group is capped by `max_alerts` in practice.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

/// A request that carried the webhook's token. As an extractor it runs
/// before the body is read, so an unauthenticated sender cannot make the
/// controller buffer or parse anything.
pub struct Authorized;

impl FromRequestParts<Api> for Authorized {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut request::Parts, api: &Api) -> Result<Self, Response> {
        let Some(token) = &api.webhook_token else {
            return Err(json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the Alertmanager webhook is off: start `rollout serve` with \
                 --webhook-token-file FILE (or WARREN_WEBHOOK_TOKEN_FILE)",
            ));
        };
        let Some(why) = refusal(&parts.headers, token) else {
            return Ok(Authorized);
        };
        // Alertmanager does not retry a 4xx, so from now on only the poll can
        // bring this alert: say so where an operator looks.
        tracing::warn!(reason = why, "Alertmanager webhook refused");
        let mut resp = json_error(StatusCode::UNAUTHORIZED, why);
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Bearer"),
        );
        Err(resp)
    }
}

/// Records the firing alerts that select a rollout.
pub async fn alertmanager(State(api): State<Api>, _: Authorized, body: Bytes) -> Response {
    let alerts = match alerts::parse_webhook(&body) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "Alertmanager webhook refused");
            return json_error(StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let matched = match alerts::route(&api.store, &alerts, Source::Webhook).await {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "webhook alerts not recorded; Alertmanager retries");
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the store is unavailable; retry later",
            );
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
