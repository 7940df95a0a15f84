//! `rollout serve`'s API on a real process over a SQLite store, with no
//! fleet: the OpenAPI document is true (every operation it lists answers
//! with a status it documents, with the fields its schema requires), every
//! change needs the token (none, a wrong one or a prefix of it is 401 and
//! changes nothing, and the token is never echoed or logged), reads are
//! closed unless `--open-reads`, every error is JSON, pause works, and the
//! event stream carries a rollout's journal.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollout::store::RolloutId;
use serde_json::Value;
use tests::bins::bin;
use tests::http::plain_client;
use tests::net::random_u32;
use tests::proc::Proc;
use tests::workdir::Workdir;

fn spawn_serve(work: &Workdir, name: &str, database: &str, extra: &[&Path]) -> Proc {
    let mut cmd = Command::new(bin("rollout"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", database]);
    cmd.args(extra);
    for var in [
        "WARREN_WEBHOOK_TOKEN_FILE",
        "WARREN_API_TOKEN_FILE",
        "WARREN_OPEN_READS",
        "ROLLOUT_DATABASE",
        "ROLLOUT_CONFIG",
        "ROLLOUT_LOG",
        "SALT_API_URL",
        "ROLLOUT_SERVER",
    ] {
        cmd.env_remove(var);
    }
    Proc::spawn(name, cmd, &work.join(&format!("{name}.log")))
}

struct Answer {
    status: u16,
    content_type: String,
    challenge: String,
    body: String,
}

async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Answer {
    let mut req = plain_client().request(method.parse().unwrap(), format!("http://{addr}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, challenge) = (header("content-type"), header("www-authenticate"));
    let status = resp.status().as_u16();
    // An event stream never ends: its first bytes are enough.
    let body = if content_type.starts_with("text/event-stream") {
        first_events(resp, 1).await
    } else {
        resp.text().await.unwrap()
    };
    Answer {
        status,
        content_type,
        challenge,
        body,
    }
}

/// The stream's text up to its `count`-th `event:` line (or 10 s).
async fn first_events(mut resp: reqwest::Response, count: usize) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while text.matches("event:").count() < count {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            _ => break,
        }
    }
    text
}

/// The fields a JSON schema (followed through `$ref`s) requires.
fn required<'a>(doc: &'a Value, schema: &'a Value) -> (&'a Value, Vec<String>) {
    let mut schema = schema;
    while let Some(r) = schema["$ref"].as_str() {
        let path = r.trim_start_matches("#/");
        schema = path.split('/').fold(doc, |v, key| &v[key]);
    }
    let fields = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|f| f.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (schema, fields)
}

async fn state_and_steps(addr: SocketAddr, token: &str, id: &RolloutId) -> (String, usize) {
    let a = call(
        addr,
        "GET",
        &format!("/v1/rollouts/{id}"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let v: Value = serde_json::from_str(&a.body).unwrap();
    (
        v["rollout"]["state"].as_str().unwrap().to_string(),
        v["steps"].as_array().unwrap().len(),
    )
}

#[tokio::test]
async fn the_api_is_documented_authenticated_and_answers_json() {
    let work = Workdir::new("rollout-api");
    let database = format!("sqlite://{}?mode=rwc", work.join("r.db").display());
    let id = tests::rollouts::begin(&database, &tests::rollouts::edge_spec("v3", "")).await;
    let token = format!("api-{:08x}{:08x}", random_u32(), random_u32());
    let token_file = work.join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let flag = Path::new("--api-token-file");
    let mut serve = spawn_serve(&work, "serve", &database, &[flag, &token_file]);
    let addr = tests::rollouts::serve_address(&mut serve).await;

    // 1. Every operation the document lists answers with a status it
    // documents and, for JSON, the fields its schema requires.
    let doc = call(addr, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, 200);
    let doc: Value = serde_json::from_str(&doc.body).unwrap();
    let plan_file = r#"{"spec": {"component": "edge"}, "plan": {}}"#;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{id}", id.as_str())
            .replace("{minion}", "edge-ams-1");
        for (method, op) in ops.as_object().unwrap() {
            let body = (method == "post").then_some(match path.as_str() {
                "/v1/rollouts" => plan_file,
                "/v1/alerts/alertmanager" => "{}",
                _ => "",
            });
            let a = call(addr, &method.to_uppercase(), &concrete, Some(&token), body).await;
            let documented = &op["responses"][a.status.to_string()];
            assert!(
                documented.is_object(),
                "{method} {path} answered {} ({}), which the document does not list",
                a.status,
                a.body
            );
            if let Some(schema) = documented
                .get("content")
                .or_else(|| {
                    let r = documented["$ref"].as_str()?;
                    Some(&doc["components"]["responses"][r.rsplit('/').next()?]["content"])
                })
                .and_then(|c| c.get("application/json"))
                .map(|c| &c["schema"])
            {
                assert!(
                    a.content_type.starts_with("application/json"),
                    "{method} {path}: {}",
                    a.content_type
                );
                let v: Value = serde_json::from_str(&a.body)
                    .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", a.body));
                let (schema, fields) = required(&doc, schema);
                let items: Vec<&Value> = if schema["type"] == "array" {
                    let (_, item_fields) = required(&doc, &schema["items"]);
                    for item in v.as_array().unwrap() {
                        for f in &item_fields {
                            assert!(
                                item.get(f).is_some(),
                                "{method} {path}: item without `{f}`: {item}"
                            );
                        }
                    }
                    vec![]
                } else {
                    vec![&v]
                };
                for item in items {
                    for f in &fields {
                        assert!(item.get(f).is_some(), "{method} {path}: no `{f}` in {item}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 13, "only {checked} operations checked");

    // 2. Changes without the token, with a wrong one, or with a prefix of
    // it: 401 with a JSON reason and a Bearer challenge; nothing changes.
    let before = state_and_steps(addr, &token, &id).await;
    let wrong = format!("{token}x");
    let prefix = &token[..token.len() - 3];
    for (what, presented) in [
        ("none", None),
        ("wrong", Some(wrong.as_str())),
        ("prefix", Some(prefix)),
    ] {
        for (path, body) in [
            ("/v1/rollouts".to_string(), Some(plan_file)),
            (format!("/v1/rollouts/{id}/pause"), None),
            (format!("/v1/rollouts/{id}/resume"), None),
            (format!("/v1/rollouts/{id}/abort"), None),
        ] {
            let a = call(addr, "POST", &path, presented, body).await;
            assert_eq!(
                (a.status, a.challenge.as_str()),
                (401, "Bearer"),
                "{what} token, {path}: {}",
                a.body
            );
            let v: Value = serde_json::from_str(&a.body).unwrap();
            assert!(v["error"].is_string(), "{}", a.body);
            assert!(
                !a.body.contains(&token[4..]),
                "the token is echoed: {}",
                a.body
            );
        }
    }
    assert_eq!(state_and_steps(addr, &token, &id).await, before);
    // Reads are closed too while --open-reads is not given.
    for path in ["/v1/rollouts", "/v1/events", "/pillar/edge-ams-1"] {
        let a = call(addr, "GET", path, None, None).await;
        assert_eq!(a.status, 401, "{path}: {}", a.body);
    }

    // 3. Errors are JSON that names the problem.
    let a = call(addr, "GET", "/v1/nope", Some(&token), None).await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("no such route"), "{}", a.body);
    let a = call(addr, "DELETE", "/v1/rollouts", Some(&token), None).await;
    assert_eq!(a.status, 405);
    assert!(a.body.contains("\"error\""), "{}", a.body);
    let a = call(
        addr,
        "GET",
        "/v1/events?since=yesterday",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(a.status, 400);
    assert!(
        serde_json::from_str::<Value>(&a.body).unwrap()["error"].is_string(),
        "{}",
        a.body
    );
    let a = call(
        addr,
        "POST",
        "/v1/rollouts",
        Some(&token),
        Some("{\"spec\": 1"),
    )
    .await;
    assert!(a.status == 400 || a.status == 503, "{}", a.body);
    let a = call(addr, "GET", "/v1/rollouts/r-nope", Some(&token), None).await;
    assert_eq!(a.status, 404);
    assert!(a.body.contains("no rollout r-nope"), "{}", a.body);
    // Without Salt this serve runs nothing: submit and resume say so.
    let a = call(addr, "POST", "/v1/rollouts", Some(&token), Some(plan_file)).await;
    assert_eq!(a.status, 503);
    assert!(a.body.contains("--salt-api"), "{}", a.body);

    // 4. The pause of step 1 (with the token) took; pausing again is a
    // conflict that says why.
    assert_eq!(state_and_steps(addr, &token, &id).await.0, "paused");
    let a = call(
        addr,
        "POST",
        &format!("/v1/rollouts/{id}/pause"),
        Some(&token),
        None,
    )
    .await;
    assert_eq!(a.status, 409);
    assert!(
        a.body.contains("only a running rollout can be paused"),
        "{}",
        a.body
    );

    // 5. The rollout's event stream: its journal from the first step.
    let resp = plain_client()
        .get(format!("http://{addr}/v1/rollouts/{id}/events"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = first_events(resp, 4).await;
    let kinds: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["kind"].as_str().map(String::from))
        .collect();
    assert!(
        kinds.contains("begin") && kinds.contains("pause_requested"),
        "{text}"
    );

    // 6. The token is in no log line.
    serve.kill();
    assert!(!serve.log().contains(&token[4..]), "the token is logged");

    // 7. --open-reads: reads without the token, changes still need it.
    let open = Path::new("--open-reads");
    let mut serve = spawn_serve(&work, "serve-open", &database, &[flag, &token_file, open]);
    let addr = tests::rollouts::serve_address(&mut serve).await;
    let a = call(addr, "GET", "/v1/rollouts", None, None).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = call(
        addr,
        "POST",
        &format!("/v1/rollouts/{id}/abort"),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
}
