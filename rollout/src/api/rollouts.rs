//! `/v1/rollouts`: submit a plan for the service to run, list, one
//! rollout's status with its journal, and a person's pause, resume and
//! abort. A change is one store transaction (checked, journaled, applied),
//! so a refused one changes nothing; the worker of the serve process that
//! holds the lease acts on it.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Api, Reader, Writer, json_error, store_error};
use crate::engine::{Engine, EngineError};
use crate::store::{Request, RolloutId, Runner, StoreError};

/// The largest plan file taken: plans of thousands of hosts are a few MiB.
pub const PLAN_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The body limit of `POST /v1/rollouts`, for the router.
pub fn plan_body_limit() -> DefaultBodyLimit {
    DefaultBodyLimit::max(PLAN_BODY_LIMIT)
}

/// `GET /v1/rollouts`: every rollout, newest first.
pub async fn list(State(api): State<Api>, _: Reader) -> Response {
    match api.store.list().await {
        Ok(all) => axum::Json(all).into_response(),
        Err(e) => store_error(e),
    }
}

/// `GET /v1/rollouts/{id}`: the summary, spec, plan, journal and alerts.
pub async fn one(State(api): State<Api>, _: Reader, Path(id): Path<String>) -> Response {
    let id = RolloutId(id);
    let rec = match api.store.get(&id).await {
        Ok(r) => r,
        Err(e) => return store_error(e),
    };
    let steps = match api.store.history(&id).await {
        Ok(s) => s,
        Err(e) => return store_error(e),
    };
    let alerts = match api.store.rollout_alerts(&id).await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let spec: serde_json::Value = serde_json::from_str(&rec.spec.to_json()).unwrap_or_default();
    axum::Json(json!({
        "rollout": rec.summary,
        "spec": spec,
        "plan": rec.plan,
        "steps": steps,
        "alerts": alerts,
    }))
    .into_response()
}

/// `POST /v1/rollouts`: a plan file, checked against the fleet as it is now
/// (as `rollout apply` checks it) and started for the service to run.
pub async fn submit(State(api): State<Api>, _: Writer, body: Bytes) -> Response {
    let Some(controller) = &api.controller else {
        return no_runner();
    };
    let (spec, plan) = match crate::planfile::parse(&body) {
        Ok(sp) => sp,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e),
    };
    let say = |p: &crate::progress::Progress| tracing::info!("submitted plan: {p}");
    let engine = Engine {
        controller,
        store: &api.store,
        progress: &say,
    };
    match engine.start_as(&spec, &plan, Runner::Serve).await {
        Ok(id) => {
            tracing::info!(rollout = %id, what = %spec.describe(), "rollout submitted");
            match api.store.get(&id).await {
                Ok(rec) => (
                    StatusCode::CREATED,
                    axum::Json(json!({"id": id, "rollout": rec.summary})),
                )
                    .into_response(),
                Err(e) => store_error(e),
            }
        }
        Err(EngineError::Store(e)) => store_error(e),
        Err(
            e @ (EngineError::Drift(_)
            | EngineError::NotExecutable(_)
            | EngineError::AlertFiring(_)),
        ) => json_error(StatusCode::CONFLICT, &e.to_string()),
        Err(e @ EngineError::Controller(_)) => {
            tracing::warn!(error = %e, "cannot check a submitted plan against the fleet");
            json_error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot check the plan against the fleet: {e}"),
            )
        }
    }
}

/// `POST /v1/rollouts/{id}/pause`.
pub async fn pause(State(api): State<Api>, _: Writer, Path(id): Path<String>) -> Response {
    request(&api, id, Request::Pause).await
}

/// `POST /v1/rollouts/{id}/resume`: the service runs it from now on.
pub async fn resume(State(api): State<Api>, _: Writer, Path(id): Path<String>) -> Response {
    if api.controller.is_none() {
        return no_runner();
    }
    request(&api, id, Request::Resume).await
}

/// `POST /v1/rollouts/{id}/abort`: the service rolls it back.
pub async fn abort(State(api): State<Api>, _: Writer, Path(id): Path<String>) -> Response {
    if api.controller.is_none() {
        return no_runner();
    }
    request(&api, id, Request::Abort).await
}

async fn request(api: &Api, id: String, request: Request) -> Response {
    let id = RolloutId(id);
    match api.store.request(&id, request, "api").await {
        Ok(summary) => {
            tracing::info!(rollout = %id, ?request, "request applied");
            axum::Json(json!({"rollout": summary})).into_response()
        }
        Err(e @ StoreError::Refused(_)) => json_error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => store_error(e),
    }
}

/// 503: this serve process has no Salt to run rollouts with.
fn no_runner() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "this controller does not run rollouts: start `rollout serve` with --salt-api, \
         --salt-api-user, the salt-api secret and --prometheus (or their environment \
         variables, or --config)",
    )
}
