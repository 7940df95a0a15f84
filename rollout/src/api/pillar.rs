//! `GET /pillar/{minion}`: the releases assigned to a host, as Salt pillar
//! (`{"warren": {"edge": {"release": {...}}}}`), read by the master's
//! `cmd_json` ext_pillar (through `salt/master/release_pillar.py`, which
//! keeps nothing but the releases), so a highstate converges to what the
//! store says. A minion id outside `[A-Za-z0-9._-]` is 400.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Api, Reader, json_error, store_error};
use crate::store::{Store, StoreError};

/// The pillar of `minion`.
pub async fn pillar(State(api): State<Api>, _: Reader, Path(minion): Path<String>) -> Response {
    if let Err(e) = crate::minion::check(&minion) {
        return json_error(StatusCode::BAD_REQUEST, &e.to_string());
    }
    match pillar_json(&api.store, &minion).await {
        Ok(v) => axum::Json(v).into_response(),
        // Salt then merges nothing, and the states keep what runs.
        Err(e) => store_error(e),
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
