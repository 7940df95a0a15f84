//! A stand-in for Grafana's HTTP API, for the fleet tests (no Grafana server
//! runs here): it answers `POST /api/annotations`, `PATCH
//! /api/annotations/{id}` and `GET /api/dashboards/uid/{uid}` (from the
//! repository's `grafana/dashboards`) as Grafana documents them, and records
//! every request so a test can check what the controller sent. The client
//! itself is checked request by request in `rollout/tests/grafana_client.rs`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use crate::bins::workspace;

/// One request as received.
#[derive(Debug, Clone)]
pub struct Request {
    /// `POST`, `PATCH`, `GET`.
    pub method: Method,
    /// The path.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The JSON body (`null` when none).
    pub body: Value,
}

#[derive(Clone, Default)]
struct Shared {
    requests: Arc<Mutex<Vec<Request>>>,
    /// Answer every request with 503, as a Grafana that is down behind a proxy.
    down: bool,
}

/// The stand-in; stops when dropped.
pub struct Grafana {
    /// Its base URL.
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Grafana {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Grafana {
    /// Listens on `addr` (a loopback address of the test's own).
    pub async fn start(addr: SocketAddr) -> Grafana {
        Self::start_with(addr, false).await
    }

    /// A Grafana that answers 503 to everything.
    pub async fn start_down(addr: SocketAddr) -> Grafana {
        Self::start_with(addr, true).await
    }

    async fn start_with(addr: SocketAddr, down: bool) -> Grafana {
        let shared = Shared {
            down,
            ..Default::default()
        };
        let app = Router::new()
            .route("/api/annotations", post(create))
            .route("/api/annotations/{id}", patch(update))
            .route("/api/dashboards/uid/{uid}", get(dashboard))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the Grafana stand-in");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Grafana { url, shared, task }
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }
}

fn record(s: &Shared, method: Method, path: String, headers: &HeaderMap, body: Value) -> usize {
    let mut all = s.requests.lock().unwrap();
    all.push(Request {
        method,
        path,
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
    });
    all.len()
}

async fn create(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let n = record(&s, Method::POST, "/api/annotations".into(), &headers, body);
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    axum::Json(json!({"message": "Annotation added", "id": n})).into_response()
}

async fn update(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let body: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    record(
        &s,
        Method::PATCH,
        format!("/api/annotations/{id}"),
        &headers,
        body,
    );
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    axum::Json(json!({"message": "Annotation patched"})).into_response()
}

async fn dashboard(
    State(s): State<Shared>,
    Path(uid): Path<String>,
    headers: HeaderMap,
) -> Response {
    record(
        &s,
        Method::GET,
        format!("/api/dashboards/uid/{uid}"),
        &headers,
        Value::Null,
    );
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
    }
    let dir = workspace().join("grafana/dashboards");
    let found = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            serde_json::from_str::<Value>(&std::fs::read_to_string(e.path()).ok()?).ok()
        })
        .find(|d| d["uid"] == uid.as_str());
    match found {
        Some(d) => axum::Json(json!({"dashboard": d, "meta": {"slug": uid}})).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"message": "Dashboard not found"})),
        )
            .into_response(),
    }
}
