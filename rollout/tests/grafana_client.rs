//! The Grafana annotations client against a local stand-in for Grafana that
//! records every request and answers from a per-test script of statuses.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Json;
use rollout::annotations::{Annotation, AnnotationError, Annotator, GrafanaClient};
use serde_json::{Value, json};

const TOKEN: &str = "glsa_test-token-5f0c1e9a";
/// Generous: only a hang would reach it.
const PATIENCE: Duration = Duration::from_secs(30);

/// One request as Grafana saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    /// The JSON body, or the raw text as a string when it is not JSON.
    body: Value,
    /// The id answered to a successful POST.
    answered_id: Option<i64>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Script {
    /// Statuses to answer, in order.
    statuses: Mutex<VecDeque<u16>>,
    /// The status once the script is used up.
    then: u16,
    seen: Mutex<Vec<Seen>>,
    next_id: AtomicI64,
}

/// A stand-in Grafana on a loopback port.
struct Grafana {
    url: String,
    script: Arc<Script>,
}

impl Grafana {
    async fn start(statuses: &[u16], then: u16) -> Grafana {
        let script = Arc::new(Script {
            statuses: Mutex::new(statuses.iter().copied().collect()),
            then,
            seen: Mutex::default(),
            next_id: AtomicI64::new(41),
        });
        let app = Router::new().fallback(answer).with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Grafana { url, script }
    }

    fn client(&self) -> GrafanaClient {
        GrafanaClient::new(&self.url, Some(TOKEN.into())).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.script.seen.lock().unwrap().clone()
    }
}

async fn answer(
    State(script): State<Arc<Script>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Json<Value>) {
    let status = script
        .statuses
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(script.then);
    let status = StatusCode::from_u16(status).unwrap();
    let is_post = method == Method::POST;
    let answered_id =
        (status.is_success() && is_post).then(|| script.next_id.fetch_add(1, Ordering::Relaxed));
    let reply = match (status.is_success(), answered_id) {
        (true, Some(id)) => json!({"message": "Annotation added", "id": id}),
        (true, None) => json!({"message": "Annotation patched"}),
        // Echoes the credentials back, as a careless proxy might: the
        // client must not pass them on into its errors.
        (false, _) => json!({"message": format!("refused {:?}", headers.get("authorization"))}),
    };
    let body = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    script.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_string(),
        headers,
        body,
        answered_id,
    });
    (status, Json(reply))
}

fn now_ms() -> i64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(since.as_millis()).unwrap()
}

fn tags() -> Vec<String> {
    ["rollout", "edge", "v2", "r-42"].map(String::from).to_vec()
}

fn stage_start(dashboard_uid: Option<&str>, panel_id: Option<i64>) -> Annotation {
    Annotation {
        dashboard_uid: dashboard_uid.map(String::from),
        panel_id,
        time_ms: now_ms(),
        time_end_ms: None,
        tags: tags(),
        text: "stage canary started".into(),
    }
}

/// The documented form of every request: the token and a JSON body.
fn assert_documented(seen: &Seen) {
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(seen.header("authorization"), Some(bearer.as_str()));
    assert_eq!(seen.header("content-type"), Some("application/json"));
}

/// `time` (and `timeEnd` when there) are integer epoch milliseconds of
/// about now.
fn assert_recent_ms(body: &Value, field: &str) -> i64 {
    let ms = body[field]
        .as_i64()
        .unwrap_or_else(|| panic!("`{field}` is not an integer: {body}"));
    assert!((now_ms() - ms).abs() < 60_000, "`{field}` {ms} is not now");
    ms
}

fn assert_hides_token(e: &AnnotationError) {
    assert!(!e.to_string().contains(TOKEN), "{e}");
    assert!(!format!("{e:?}").contains(TOKEN), "{e:?}");
}

#[tokio::test]
async fn create_sends_the_documented_request() {
    let grafana = Grafana::start(&[], 200).await;
    let client = grafana.client();

    let id = client
        .create(&stage_start(Some("warren-edge"), Some(7)))
        .await
        .unwrap();
    let org_wide = client.create(&stage_start(None, None)).await.unwrap();

    let seen = grafana.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(
            (&s.method, s.path.as_str()),
            (&Method::POST, "/api/annotations")
        );
        assert_documented(s);
        assert_recent_ms(&s.body, "time");
        assert_eq!(s.body["tags"], json!(["rollout", "edge", "v2", "r-42"]));
        assert_eq!(s.body["text"], "stage canary started");
        assert!(s.body.get("timeEnd").is_none(), "{}", s.body);
    }
    assert_eq!(seen[0].body["dashboardUID"], "warren-edge");
    assert_eq!(seen[0].body["panelId"], 7);
    for absent in ["dashboardUID", "panelId"] {
        assert!(seen[1].body.get(absent).is_none(), "{}", seen[1].body);
    }
    assert_eq!(Some(id), seen[0].answered_id);
    assert_eq!(Some(org_wide), seen[1].answered_id);
}

#[tokio::test]
async fn close_region_patches_the_end_time() {
    let grafana = Grafana::start(&[], 200).await;
    let client = grafana.client();
    let start = stage_start(None, None);
    let id = client.create(&start).await.unwrap();

    client
        .close_region(id, now_ms(), Some("stage canary passed"))
        .await
        .unwrap();
    client.close_region(id, now_ms(), None).await.unwrap();

    let seen = grafana.seen();
    assert_eq!(seen.len(), 3);
    for patch in &seen[1..] {
        assert_eq!(patch.method, Method::PATCH);
        assert_eq!(patch.path, format!("/api/annotations/{id}"));
        assert_documented(patch);
        assert!(assert_recent_ms(&patch.body, "timeEnd") >= start.time_ms);
    }
    assert_eq!(seen[1].body["text"], "stage canary passed");
    assert!(seen[2].body.get("text").is_none(), "{}", seen[2].body);
}

#[tokio::test]
async fn server_errors_are_retried_until_one_succeeds() {
    let grafana = Grafana::start(&[500, 502], 200).await;

    let id = grafana
        .client()
        .create(&stage_start(None, None))
        .await
        .unwrap();

    let seen = grafana.seen();
    assert_eq!(seen.len(), 3);
    assert_eq!(Some(id), seen[2].answered_id);
    assert!(seen.iter().all(|s| s.body == seen[0].body));
}

#[tokio::test]
async fn server_errors_give_up_after_three_attempts() {
    let grafana = Grafana::start(&[], 503).await;
    let client = grafana.client();

    let create = client.create(&stage_start(None, None)).await.unwrap_err();
    let close = client.close_region(7, now_ms(), None).await.unwrap_err();

    for e in [&create, &close] {
        assert!(
            matches!(
                e,
                AnnotationError::Status {
                    status: 503,
                    attempts: 3,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("503"), "{e}");
        assert_hides_token(e);
    }
    assert!(create.to_string().contains("POST"), "{create}");
    assert!(close.to_string().contains("PATCH"), "{close}");
    assert_eq!(grafana.seen().len(), 6);
}

#[tokio::test]
async fn client_errors_are_never_retried() {
    for status in [400, 401, 403, 404] {
        let grafana = Grafana::start(&[], status).await;

        let e = grafana
            .client()
            .create(&stage_start(None, None))
            .await
            .unwrap_err();

        assert!(
            matches!(e, AnnotationError::Status { status: s, attempts: 1, .. } if s == status),
            "{e:?}"
        );
        assert!(e.to_string().contains(&status.to_string()), "{e}");
        assert_hides_token(&e);
        assert_eq!(grafana.seen().len(), 1, "{status} was retried");
    }
}

#[tokio::test]
async fn a_closed_port_is_an_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client =
        GrafanaClient::new(&format!("http://127.0.0.1:{port}"), Some(TOKEN.into())).unwrap();

    let result = tokio::time::timeout(PATIENCE, client.create(&stage_start(None, None)))
        .await
        .expect("a refused connection does not hang");

    let e = result.unwrap_err();
    assert!(
        matches!(e, AnnotationError::Unreachable { attempts: 3, .. }),
        "{e:?}"
    );
    assert_hides_token(&e);
}

#[test]
fn urls_and_tokens_are_checked() {
    let cases: &[(&str, Option<&str>, bool)] = &[
        // Token files end with a newline; trailing slashes are common.
        ("http://127.0.0.1:3000/", Some("glsa_x\n"), true),
        ("https://grafana.example/sub/", None, true),
        ("ftp://grafana.example", None, false),
        ("grafana.example:3000", None, false),
        ("http://admin:hunter2@grafana.example", None, false),
        ("http://grafana.example", Some("  "), false),
        ("http://grafana.example", Some("a\u{7f}b"), false),
    ];
    for (base, token, ok) in cases {
        let result = GrafanaClient::new(base, token.map(String::from));
        assert_eq!(result.is_ok(), *ok, "{base} {token:?}: {result:?}");
        if let Err(e) = result {
            assert!(!e.to_string().contains("hunter2"), "{e}");
        }
    }
}

#[tokio::test]
async fn the_token_is_never_shown() {
    let client = GrafanaClient::new("http://127.0.0.1:3000", Some(TOKEN.into())).unwrap();
    assert!(!format!("{client:?}").contains(TOKEN), "{client:?}");
    assert!(format!("{client:?}").contains("127.0.0.1:3000"));

    let e = GrafanaClient::new("http://127.0.0.1:3000", Some(format!("{TOKEN}\u{1}"))).unwrap_err();
    assert_hides_token(&e);
    let e = GrafanaClient::new(&format!("http://admin:{TOKEN}@grafana"), None).unwrap_err();
    assert_hides_token(&e);
}

#[tokio::test]
async fn the_annotator_marks_regions_and_points() {
    let grafana = Grafana::start(&[], 200).await;
    let annotator = Annotator::spawn(Some(grafana.client()), tags());

    annotator.open("stage canary", "stage canary started");
    annotator.close("stage canary", "stage canary passed");
    annotator.point("completed");

    assert_eq!(annotator.flush(PATIENCE).await, (3, 0));
    assert_eq!(annotator.failures(), 0);
    let seen = grafana.seen();
    assert_eq!(seen.len(), 3);
    seen.iter().for_each(assert_documented);
    let (open, close, done) = (&seen[0], &seen[1], &seen[2]);

    assert_eq!(
        (&open.method, open.path.as_str()),
        (&Method::POST, "/api/annotations")
    );
    let start = assert_recent_ms(&open.body, "time");
    assert!(open.body.get("timeEnd").is_none(), "{}", open.body);
    assert_eq!(open.body["text"], "stage canary started");
    assert_eq!(open.body["tags"], json!(tags()));

    let id = open.answered_id.unwrap();
    assert_eq!(close.method, Method::PATCH);
    assert_eq!(close.path, format!("/api/annotations/{id}"));
    assert!(assert_recent_ms(&close.body, "timeEnd") >= start);
    assert_eq!(close.body["text"], "stage canary passed");

    assert_eq!(
        (&done.method, done.path.as_str()),
        (&Method::POST, "/api/annotations")
    );
    assert!(assert_recent_ms(&done.body, "time") >= start);
    assert!(done.body.get("timeEnd").is_none(), "{}", done.body);
    assert_eq!(done.body["text"], "completed");
    assert_eq!(done.body["tags"], json!(tags()));
}

#[tokio::test]
async fn closing_an_unknown_region_marks_a_point() {
    let grafana = Grafana::start(&[], 200).await;
    let annotator = Annotator::spawn(Some(grafana.client()), tags());

    annotator.close("stage eu", "stage eu rolled back");

    assert_eq!(annotator.flush(PATIENCE).await, (1, 0));
    let seen = grafana.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, Method::POST);
    assert!(seen[0].body.get("timeEnd").is_none(), "{}", seen[0].body);
    assert_eq!(seen[0].body["text"], "stage eu rolled back");
}

#[tokio::test]
async fn a_region_whose_opening_failed_is_sent_whole_at_its_close() {
    let grafana = Grafana::start(&[500, 500, 500], 200).await;
    let annotator = Annotator::spawn(Some(grafana.client()), tags());

    annotator.open("stage canary", "stage canary started");
    annotator.close("stage canary", "stage canary rolled back");

    assert_eq!(annotator.flush(PATIENCE).await, (1, 1));
    assert_eq!(annotator.failures(), 1);
    let seen = grafana.seen();
    assert_eq!(seen.len(), 4);
    let region = &seen[3];
    assert_eq!(
        (&region.method, region.path.as_str()),
        (&Method::POST, "/api/annotations")
    );
    assert_eq!(region.body["time"], seen[0].body["time"]);
    let start = assert_recent_ms(&region.body, "time");
    assert!(assert_recent_ms(&region.body, "timeEnd") >= start);
    assert_eq!(region.body["text"], "stage canary rolled back");
}

#[tokio::test]
async fn a_failing_grafana_never_holds_the_rollout() {
    let grafana = Grafana::start(&[], 500).await;
    let annotator = Annotator::spawn(Some(grafana.client()), tags());

    let marking = Instant::now();
    annotator.open("stage canary", "stage canary started");
    annotator.close("stage canary", "stage canary passed");
    annotator.point("completed");
    assert!(
        marking.elapsed() < Duration::from_secs(1),
        "marking waited for Grafana"
    );

    // Each failing mark sleeps 600 ms between its attempts, so a short
    // flush returns on its timeout with marks still pending.
    let (sent, failed) = annotator.flush(Duration::from_millis(50)).await;
    assert!(sent + failed < 3, "flush waited past its timeout");

    let flushing = Instant::now();
    assert_eq!(annotator.flush(PATIENCE).await, (0, 3));
    assert!(flushing.elapsed() < PATIENCE);
    assert_eq!(annotator.failures(), 3);
    let seen = grafana.seen();
    assert_eq!(seen.len(), 9, "three attempts per mark");
    assert!(seen.iter().all(|s| s.method == Method::POST));
}

#[test]
fn without_grafana_marks_are_dropped() {
    // No runtime needed to mark: the engine may run without Grafana anywhere.
    let annotator = Annotator::spawn(None, tags());
    annotator.open("stage canary", "stage canary started");
    annotator.close("stage canary", "stage canary passed");
    annotator.point("completed");
    assert_eq!(annotator.failures(), 0);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(runtime.block_on(annotator.flush(PATIENCE)), (0, 0));
}
