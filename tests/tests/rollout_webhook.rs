//! `rollout serve`'s Alertmanager webhook, on a real process over a SQLite
//! store that holds one running rollout: the token is required and never
//! logged, a bad body changes nothing, the same alert delivered three times
//! is recorded (and so rolls back) once, and serve refuses to start with a
//! token file it cannot read.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollout::store::RolloutId;
use serde_json::{Value, json};
use tests::bins::bin;
use tests::http::plain_client;
use tests::net::random_u32;
use tests::proc::Proc;
use tests::workdir::Workdir;

const SELECTOR: &str = r#"{alertname="EdgeReleaseErrorRatioHigh", component="edge"}"#;
const STARTS_AT: &str = "2026-11-27T04:50:01.123456789Z";
const STARTS_AT_MS: i64 = 1_795_755_001_123;

/// A running rollout of edge v3 that rolls back on [`SELECTOR`], begun
/// directly in the store, as `rollout apply` would.
async fn running_rollout(database: &str) -> RolloutId {
    let rollback = format!("rollback:\n  alerts:\n    - '{SELECTOR}'\n");
    tests::rollouts::begin(database, &tests::rollouts::edge_spec("v3", &rollback)).await
}

/// `rollout serve` on a port of its own choosing, with `extra` flags.
fn spawn_serve(work: &Workdir, name: &str, database: &str, extra: &[&Path]) -> Proc {
    let mut cmd = Command::new(bin("rollout"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", database]);
    for flag in extra {
        cmd.arg(flag);
    }
    for var in [
        "WARREN_WEBHOOK_TOKEN_FILE",
        "ROLLOUT_DATABASE",
        "ROLLOUT_CONFIG",
        "ROLLOUT_LOG",
    ] {
        cmd.env_remove(var);
    }
    Proc::spawn(name, cmd, &work.join(&format!("{name}.log")))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A version 4 webhook payload, with every field Alertmanager sends.
fn payload(alerts: Vec<Value>) -> Value {
    json!({
        "version": "4",
        "groupKey": "{}/{severity=\"page\"}:{alertname=\"EdgeReleaseErrorRatioHigh\"}",
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "controller",
        "groupLabels": {"alertname": "EdgeReleaseErrorRatioHigh"},
        "commonLabels": {"alertname": "EdgeReleaseErrorRatioHigh", "severity": "page"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    })
}

fn alert(alertname: &str, status: &str, fingerprint: &str) -> Value {
    json!({
        "status": status,
        "labels": labels(alertname),
        "annotations": {"summary": "edge v3 answers 30% 5xx"},
        "startsAt": STARTS_AT,
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus:9090/graph?g0.expr=x",
        "fingerprint": fingerprint,
    })
}

fn labels(alertname: &str) -> Value {
    json!({
        "alertname": alertname,
        "component": "edge",
        "severity": "page",
        "version": "v3",
    })
}

struct Webhook {
    client: reqwest::Client,
    url: String,
}

impl Webhook {
    fn new(addr: SocketAddr) -> Webhook {
        Webhook {
            client: plain_client(),
            url: format!("http://{addr}/v1/alerts/alertmanager"),
        }
    }

    /// Posts `body` with `token` (none: no Authorization header); status,
    /// `WWW-Authenticate` and body.
    async fn post(&self, token: Option<&str>, body: impl Into<String>) -> (u16, String, String) {
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body.into());
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (status, challenge, resp.text().await.unwrap())
    }
}

/// The rollout's journal, read through the API.
async fn steps(addr: SocketAddr, id: &RolloutId) -> Vec<Value> {
    let resp = plain_client()
        .get(format!("http://{addr}/v1/rollouts/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    v["steps"].as_array().unwrap().clone()
}

fn kinds(steps: &[Value]) -> Vec<&str> {
    steps.iter().map(|s| s["kind"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn the_webhook_records_each_matching_alert_once_and_only_with_the_token() {
    let work = Workdir::new("rollout-webhook");
    let database = format!("sqlite://{}?mode=rwc", work.join("r.db").display());
    let id = running_rollout(&database).await;
    let token = format!("wh-{:08x}{:08x}", random_u32(), random_u32());
    let token_file = work.join("webhook.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let flag = Path::new("--webhook-token-file");
    let mut serve = spawn_serve(&work, "serve", &database, &[flag, &token_file]);
    let addr = tests::rollouts::serve_address(&mut serve).await;
    let hook = Webhook::new(addr);
    let matching = payload(vec![alert("EdgeReleaseErrorRatioHigh", "firing", "fp-1")]).to_string();

    // Without the token, or with a wrong one: 401, nothing recorded, even
    // for a payload that would match.
    let (status, challenge, body) = hook.post(None, matching.clone()).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"), "{body}");
    assert!(body.contains("missing"), "{body}");
    let wrong = format!("{token}x");
    let (status, challenge, body) = hook.post(Some(&wrong), matching.clone()).await;
    assert_eq!((status, challenge.as_str()), (401, "Bearer"), "{body}");
    assert!(body.contains("invalid"), "{body}");
    assert!(!body.contains(&token), "the token is echoed: {body}");
    let (status, _, body) = hook.post(Some(&token[..token.len() - 1]), "{").await;
    assert_eq!(
        status, 401,
        "a prefix of the token is not the token: {body}"
    );

    // With the token, bodies that are not webhook payloads: 400, nothing
    // recorded, not even the valid alert beside a broken one.
    let mut broken = alert("EdgeReleaseErrorRatioHigh", "firing", "fp-2");
    broken.as_object_mut().unwrap().remove("fingerprint");
    let half = payload(vec![
        alert("EdgeReleaseErrorRatioHigh", "firing", "fp-1"),
        broken,
    ]);
    for (what, body) in [
        ("malformed JSON", "{\"alerts\": [".to_string()),
        (
            "no alerts",
            json!({"version": "4", "status": "firing"}).to_string(),
        ),
        ("an alert without fingerprint", half.to_string()),
    ] {
        let (status, _, answer) = hook.post(Some(&token), body).await;
        assert_eq!(status, 400, "{what}: {answer}");
    }
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, _, _) = hook.post(Some(&token), big).await;
    assert_eq!(status, 413, "a body over 1 MiB");
    assert_eq!(kinds(&steps(addr, &id).await), ["begin"]);

    // The same alert three times (the last two at once): one record.
    let before = now_ms();
    let (status, _, first) = hook.post(Some(&token), matching.clone()).await;
    assert_eq!(status, 200, "{first}");
    let first: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(first, json!({"alerts": 1, "matched": [id.as_str()]}));
    let (second, third) = tokio::join!(
        hook.post(Some(&token), matching.clone()),
        hook.post(Some(&token), matching.clone())
    );
    for (status, _, body) in [second, third] {
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v, json!({"alerts": 1, "matched": []}));
    }
    let after = now_ms();
    let journal = steps(addr, &id).await;
    assert_eq!(kinds(&journal), ["begin", "alert"]);
    let detail = &journal[1]["detail"];
    assert_eq!(detail["fingerprint"], "fp-1");
    assert_eq!(detail["labels"], labels("EdgeReleaseErrorRatioHigh"));
    assert_eq!(detail["starts_at"], STARTS_AT);
    assert_eq!(detail["starts_at_ms"], STARTS_AT_MS);
    assert_eq!(detail["source"], "webhook");
    assert_eq!(detail["selector"], SELECTOR);
    let received = detail["received_at_ms"].as_i64().unwrap();
    assert!(
        (before..=after).contains(&received),
        "{before} <= {received} <= {after}"
    );

    // An alert the rollout does not select, and a resolved one it does:
    // accepted, nothing recorded.
    let other = payload(vec![
        alert("EdgeLatencyHigh", "firing", "fp-3"),
        alert("EdgeReleaseErrorRatioHigh", "resolved", "fp-4"),
    ]);
    let (status, _, body) = hook.post(Some(&token), other.to_string()).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v, json!({"alerts": 2, "matched": []}));
    assert_eq!(kinds(&steps(addr, &id).await), ["begin", "alert"]);

    // The match is logged; the token never is.
    let log = serve.log();
    assert!(
        log.contains("EdgeReleaseErrorRatioHigh") && log.contains(id.as_str()),
        "{log}"
    );
    assert!(!log.contains(&token), "the token is in serve's output");
    serve.kill();
}

#[tokio::test]
async fn serve_without_a_usable_token_file_refuses_the_webhook() {
    let work = Workdir::new("rollout-webhook-off");
    let database = format!("sqlite://{}?mode=rwc", work.join("r.db").display());

    // No flag: serve runs, the webhook answers 503 and says how to turn it on.
    let mut serve = spawn_serve(&work, "serve", &database, &[]);
    let addr = tests::rollouts::serve_address(&mut serve).await;
    let body = payload(vec![alert("EdgeReleaseErrorRatioHigh", "firing", "fp-1")]).to_string();
    let (status, _, answer) = Webhook::new(addr).post(Some("anything"), body).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("--webhook-token-file"), "{answer}");
    serve.kill();

    // A token file that does not exist, or is empty: serve exits with a
    // configuration error naming the file.
    let empty = work.join("empty.token");
    std::fs::write(&empty, " \n").unwrap();
    for (name, file) in [("missing", work.join("missing.token")), ("empty", empty)] {
        let flag = Path::new("--webhook-token-file");
        let mut serve = spawn_serve(&work, name, &database, &[flag, &file]);
        let status = serve
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("serve with a {name} token file kept running"));
        // EX_CONFIG, as for every bad setting.
        assert_eq!(status.code(), Some(78), "{name}: {}", serve.log());
        assert!(
            serve.log().contains(&file.display().to_string()),
            "{name}: {}",
            serve.log()
        );
    }
}
