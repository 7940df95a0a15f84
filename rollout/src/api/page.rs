//! `GET /`: the live page (placeholder until the page lands).

use axum::Router;
use axum::routing::get;

/// The page's routes, for any router state.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route(
        "/",
        get(|| async { axum::response::Html("<!doctype html><title>rollout</title>") }),
    )
}
