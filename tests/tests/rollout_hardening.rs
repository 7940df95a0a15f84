//! `rollout serve` and the `rollout` CLI facing hostile or careless input, on
//! real processes: serve refuses an address off loopback without a token
//! (and without TLS) before it binds anything; with a token file the pillar
//! and status API need the token; TLS serves them; minion ids outside the
//! allowed alphabet are 400; a store failure is a generic 500 that leaks no
//! database text. Also: a new SQLite file named by `--database` is created,
//! and `rollout validate` names every problem of a spec at once.

use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tests::bins::bin;
use tests::http::plain_client;
use tests::net::random_u32;
use tests::proc::Proc;
use tests::workdir::Workdir;

/// `rollout`'s exit code for a bad setting (sysexits' EX_CONFIG).
const EX_CONFIG: i32 = 78;

/// Generous: only a hang would reach it.
const PATIENCE: Duration = Duration::from_secs(30);

fn rollout_cmd() -> Command {
    let mut cmd = Command::new(bin("rollout"));
    for var in [
        "WARREN_WEBHOOK_TOKEN_FILE",
        "WARREN_API_TOKEN_FILE",
        "WARREN_TLS_CERT",
        "WARREN_TLS_KEY",
        "ROLLOUT_DATABASE",
        "ROLLOUT_CONFIG",
        "ROLLOUT_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

fn write_token(work: &Workdir, name: &str) -> (std::path::PathBuf, String) {
    let token = format!(
        "{:08x}{:08x}{:08x}",
        random_u32(),
        random_u32(),
        random_u32()
    );
    let path = work.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    (path, token)
}

/// `rollout serve` on 127.0.0.1, a port of its own choosing, with `extra`.
fn spawn_serve(work: &Workdir, name: &str, database: &str, extra: &[&std::ffi::OsStr]) -> Proc {
    let mut cmd = rollout_cmd();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", database]);
    cmd.args(extra);
    Proc::spawn(name, cmd, &work.join(&format!("{name}.log")))
}

/// Runs `rollout ARGS` to its end (bounded) and returns (code, stderr).
fn run_to_end(work: &Workdir, name: &str, args: &[&std::ffi::OsStr]) -> (Option<i32>, String) {
    let mut cmd = rollout_cmd();
    cmd.args(args);
    let mut p = Proc::spawn(name, cmd, &work.join(&format!("{name}.log")));
    let status = p.wait_exit(PATIENCE);
    let log = p.log();
    if status.is_none() {
        p.kill();
        panic!("`rollout` {args:?} was still running after {PATIENCE:?}:\n{log}");
    }
    (status.and_then(|s| s.code()), log)
}

fn os(s: &str) -> &std::ffi::OsStr {
    s.as_ref()
}

#[test]
fn serve_refuses_an_address_off_loopback_without_a_token_or_tls() {
    let work = Workdir::new("serve-exposure");
    let db = work.join("never.db");
    let database = format!("sqlite://{}", db.display());
    let (token, _) = write_token(&work, "api.token");

    // 0.0.0.0 is every address, loopback or not: refused before anything is
    // bound or opened (the database file is never created).
    let (code, log) = run_to_end(
        &work,
        "no-token",
        &[
            os("serve"),
            os("--listen"),
            os("0.0.0.0:0"),
            os("--database"),
            os(&database),
        ],
    );
    assert_eq!(code, Some(EX_CONFIG), "{log}");
    assert!(
        log.contains("0.0.0.0:0") && log.contains("--api-token-file"),
        "{log}"
    );
    assert!(log.contains("WARREN_API_TOKEN_FILE"), "{log}");

    // A token alone is not enough: it would cross the network in clear.
    let (code, log) = run_to_end(
        &work,
        "no-tls",
        &[
            os("serve"),
            os("--listen"),
            os("0.0.0.0:0"),
            os("--database"),
            os(&database),
            os("--api-token-file"),
            token.as_os_str(),
        ],
    );
    assert_eq!(code, Some(EX_CONFIG), "{log}");
    assert!(
        log.contains("--tls-cert") && log.contains("--tls-key"),
        "{log}"
    );
    assert!(!db.exists(), "serve opened the store before refusing");
}

#[tokio::test]
async fn the_pillar_and_status_api_need_the_token_and_check_minion_ids() {
    let work = Workdir::new("serve-token");
    let database = format!("sqlite://{}", work.join("rollout.db").display());
    let store = rollout::store::Store::connect(&database).await.unwrap();
    let release = rollout::store::Release {
        version: "v2".into(),
        source: "salt://releases/edge/v2/edge-v2.tar.gz".into(),
        sha256: "b".repeat(64),
    };
    store
        .assign("edge-ams-1", rollout::spec::Component::Edge, &release)
        .await
        .unwrap();
    let (token_file, token) = write_token(&work, "api.token");
    let mut serve = spawn_serve(
        &work,
        "serve",
        &database,
        &[os("--api-token-file"), token_file.as_os_str()],
    );
    let addr = tests::rollouts::serve_address(&mut serve).await;
    let http = plain_client();
    let get = |path: &str, bearer: Option<&str>| {
        let mut req = http.get(format!("http://{addr}{path}"));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };

    for path in ["/pillar/edge-ams-1", "/v1/rollouts"] {
        for wrong in [None, Some("nope"), Some(&token[1..])] {
            let (status, body) = get(path, wrong).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {wrong:?}");
            assert!(
                body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("bearer token")),
                "{body}"
            );
        }
    }
    let (status, body) = get("/pillar/edge-ams-1", Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"warren": {"edge": {"release": {"version": "v2", "source": release.source, "sha256": release.sha256}}}})
    );
    assert_eq!(get("/v1/rollouts", Some(&token)).await.0, StatusCode::OK);
    let (status, body) = get("/v1/rollouts/r-none", Some(&token)).await;
    assert_eq!(
        (status, body),
        (StatusCode::NOT_FOUND, json!({"error": "no rollout r-none"}))
    );
    // Health stays open for probes.
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    // Minion ids outside [A-Za-z0-9._-] (or `.`/`..`) are refused by name.
    for bad in [
        "edge-ams-1%2Cedge-fra-1",
        "edge%20ams",
        "%24(id)",
        "a%27b",
        "a%0Ab",
    ] {
        let (status, body) = get(&format!("/pillar/{bad}"), Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.contains("minion id")),
            "{bad}: {body}"
        );
    }

    // A store failure is logged, and answered without the database's words.
    store.close().await;
    std::fs::write(work.join("rollout.db"), b"not a database, ".repeat(512)).unwrap();
    let (status, body) = get("/pillar/edge-ams-1", Some(&token)).await;
    assert_eq!(
        (status, &body),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({"error": "internal error (see the controller's log)"})
        )
    );
    let log = serve.log();
    assert!(log.contains("store failed"), "{log}");
    assert!(!log.contains(&token), "the token was logged:\n{log}");
    serve.kill();
}

#[tokio::test]
async fn tls_serves_the_api_and_plain_http_gets_no_answer() {
    let work = Workdir::new("serve-tls");
    let pki = tests::tunnel_setup::Pki::new(&work).dir;
    let database = format!("sqlite://{}", work.join("rollout.db").display());
    let (token_file, token) = write_token(&work, "api.token");
    let mut serve = spawn_serve(
        &work,
        "serve",
        &database,
        &[
            os("--api-token-file"),
            token_file.as_os_str(),
            os("--tls-cert"),
            pki.join("edge.pem").as_os_str(),
            os("--tls-key"),
            pki.join("edge-key.pem").as_os_str(),
        ],
    );
    let addr = tests::rollouts::serve_address(&mut serve).await;
    assert!(serve.log().contains("scheme=\"https\""), "{}", serve.log());
    let ca = reqwest::Certificate::from_pem(&std::fs::read(pki.join("ca.pem")).unwrap()).unwrap();
    rollout::tls::ensure_provider();
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/pillar/edge-ams-1", addr.port());
    let resp = https.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"warren": {}}));
    let resp = https.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Plain HTTP to the TLS port is not served.
    let plain = plain_client()
        .get(format!("http://{addr}/pillar/edge-ams-1"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    serve.kill();

    // A key that is not there is refused by name, before serving.
    let (code, log) = run_to_end(
        &work,
        "bad-key",
        &[
            os("serve"),
            os("--listen"),
            os("127.0.0.1:0"),
            os("--database"),
            os(&database),
            os("--tls-cert"),
            pki.join("edge.pem").as_os_str(),
            os("--tls-key"),
            work.join("missing-key.pem").as_os_str(),
        ],
    );
    assert_eq!(code, Some(EX_CONFIG), "{log}");
    assert!(
        log.contains("--tls-key") && log.contains("missing-key.pem"),
        "{log}"
    );
}

#[test]
fn a_new_sqlite_file_named_by_database_is_created_and_errors_name_it() {
    let work = Workdir::new("sqlite-create");
    let db = work.join("state/new.db");
    let database = format!("sqlite://{}", db.display());
    let (code, log) = run_to_end(
        &work,
        "history",
        &[os("--database"), os(&database), os("history")],
    );
    assert_eq!(code, Some(0), "{log}");
    assert!(db.is_file(), "{} was not created:\n{log}", db.display());

    // A folder where the file should be: the error names the path.
    let dir = work.join("a-folder");
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", dir.display());
    let (code, log) = run_to_end(
        &work,
        "folder",
        &[os("--database"), os(&database), os("history")],
    );
    assert_ne!(code, Some(0), "{log}");
    assert!(log.contains(&dir.display().to_string()), "{log}");
}

#[test]
fn validate_names_every_problem_of_a_spec_at_once() {
    let work = Workdir::new("validate-all");
    let spec = work.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "component: edge\nversion: v2\nartifact:\n  url: salt://releases/edge/v2/edge.tar.gz\n  sha256: {}\n\
             cohorts:\n  - name: canary\n    target: G@cohort:canary\n    batch: 0%\n    bak: 1m\n\
             gates:\n  - name: errors\n    query: up\n    condition: '<< 1'\n    intervall: 30s\n",
            "a".repeat(64)
        ),
    )
    .unwrap();
    let (code, log) = run_to_end(
        &work,
        "validate",
        &[os("validate"), os("-f"), spec.as_os_str()],
    );
    assert_eq!(code, Some(65), "{log}");
    for (path, hint) in [
        ("cohorts[0].bak", "did you mean bake?"),
        ("gates[0].intervall", "did you mean interval?"),
        ("cohorts[0].batch", ""),
        ("gates[0].condition", ""),
    ] {
        let line = log
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{path}:")))
            .unwrap_or_else(|| panic!("no problem at {path}:\n{log}"));
        assert!(line.contains(hint), "{line}");
    }
    assert!(log.contains("4 problem(s)"), "{log}");
}
