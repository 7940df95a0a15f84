//! `rollout serve`: the controller's HTTP API.
//!
//! - `GET /pillar/{minion}`: the releases assigned to a host, as Salt pillar
//!   (`{"warren": {"edge": {"release": {...}}}}`), read by the master's
//!   `cmd_json` ext_pillar, so a highstate converges to what the store says.
//! - `GET /v1/rollouts`, `GET /v1/rollouts/{id}`: status and journal.
//! - `GET /metrics`: `rollout_state` and `rollout_state_duration_seconds`.
//! - `GET /healthz`.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::store::{RolloutId, Store, StoreError};

/// The routes over a store.
pub fn router(store: Store) -> Router {
    Router::new()
        .route("/pillar/{minion}", get(pillar))
        .route("/v1/rollouts", get(list))
        .route("/v1/rollouts/{id}", get(one))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(store)
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
    store: Store,
    cancel: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(store))
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
