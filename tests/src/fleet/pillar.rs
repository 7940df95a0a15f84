//! The interim source of assigned versions: an HTTP endpoint that Salt's
//! `cmd_json` ext_pillar reads with curl (`GET /pillar/<minion id>`), fed by the
//! harness. The rollout controller serves the same path from its store.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

/// A release as the states take it from pillar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `edge` or `connector`.
    pub component: String,
    /// Its version.
    pub version: String,
    /// `salt://releases/...` URL of the tarball.
    pub source: String,
    /// SHA-256 of the tarball.
    pub sha256: String,
}

impl Release {
    /// The pillar value.
    pub fn pillar(&self) -> Value {
        json!({"version": self.version, "source": self.source, "sha256": self.sha256})
    }
}

#[derive(Default)]
struct Assignments {
    by_host: Mutex<BTreeMap<String, BTreeMap<String, Release>>>,
    down: AtomicBool,
}

/// Handle on the running pillar server.
#[derive(Clone, Default)]
pub struct PillarServer {
    state: Arc<Assignments>,
}

impl PillarServer {
    /// Serves on `addr` until the runtime ends.
    pub async fn start(addr: SocketAddr) -> Self {
        let server = Self::default();
        let app = Router::new()
            .route("/pillar/{id}", get(pillar))
            .with_state(server.state.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind pillar server {addr}: {e}"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        server
    }

    /// Assigns `release` to `host`.
    pub fn assign(&self, host: &str, release: &Release) {
        self.state
            .by_host
            .lock()
            .unwrap()
            .entry(host.to_string())
            .or_default()
            .insert(release.component.clone(), release.clone());
    }

    /// The release assigned to `host` for `component`.
    pub fn assigned(&self, host: &str, component: &str) -> Option<Release> {
        self.state
            .by_host
            .lock()
            .unwrap()
            .get(host)
            .and_then(|m| m.get(component))
            .cloned()
    }

    /// Makes the endpoint answer 503, as an unreachable controller would
    /// leave Salt without assignments.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

async fn pillar(State(s): State<Arc<Assignments>>, Path(id): Path<String>) -> Response {
    if s.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "controller down\n").into_response();
    }
    let map = s.by_host.lock().unwrap();
    let mut warren = serde_json::Map::new();
    if let Some(releases) = map.get(&id) {
        for (component, r) in releases {
            warren.insert(component.clone(), json!({"release": r.pillar()}));
        }
    }
    axum::Json(json!({"warren": warren})).into_response()
}
