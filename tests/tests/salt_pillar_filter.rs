//! The Salt master takes nothing but releases from the rollout controller.
//!
//! `salt/master/release_pillar.py` (the master's `cmd_json` command in
//! `salt/master.example`) is run directly with crafted answers and minion
//! ids; then a real Salt master's pillar compiler (`salt-run
//! pillar.show_pillar`, the code path the master renders pillar with) runs
//! the command exactly as `salt/master.example` writes it, over HTTPS with
//! the token, against a stand-in controller that answers like an attacker
//! would: the static pillar stays as it was.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::Json;
use axum::routing::get;
use serde_json::{Value, json};
use tests::bins::workspace;
use tests::net::random_u32;
use tests::workdir::Workdir;

fn salt_venv(name: &str) -> PathBuf {
    let cache = std::env::var_os("WARREN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/warren"));
    let bin = cache.join("salt-venv/bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup to install Salt",
        bin.display()
    );
    bin
}

fn script() -> PathBuf {
    workspace().join("salt/master/release_pillar.py")
}

const SHA: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn good_answer() -> Value {
    json!({"warren": {
        "edge": {"release": {"version": "v2", "source": "salt://releases/edge/v2/edge-v2.tar.gz", "sha256": SHA}},
        "connector": {"release": {"version": "1.2.3+b1", "source": "https://files.example/c.tar.gz", "sha256": SHA}},
    }})
}

/// Answers an attacker standing in for the controller might give.
fn hostile_answers() -> Vec<(&'static str, String)> {
    let release = json!({"version": "v2", "source": "salt://r.tar.gz", "sha256": SHA});
    let with = |v: Value| v.to_string();
    vec![
        (
            "another top-level key",
            with(json!({"warren": {}, "schedule": {"x": {"function": "cmd.run"}}})),
        ),
        (
            "warren:root",
            with(json!({"warren": {"root": "/tmp/evil"}})),
        ),
        (
            "a component's config",
            with(
                json!({"warren": {"edge": {"release": release, "config": {"admin": "0.0.0.0:1"}}}}),
            ),
        ),
        (
            "another component",
            with(json!({"warren": {"salt": {"release": release}}})),
        ),
        (
            "an extra release key",
            with(
                json!({"warren": {"edge": {"release": {"version": "v2", "source": "salt://r", "sha256": SHA, "mode": "4777"}}}}),
            ),
        ),
        (
            "a version with a space",
            with(
                json!({"warren": {"edge": {"release": {"version": "v2 ; id", "source": "salt://r", "sha256": SHA}}}}),
            ),
        ),
        (
            "a short sha256",
            with(
                json!({"warren": {"edge": {"release": {"version": "v2", "source": "salt://r", "sha256": "abc"}}}}),
            ),
        ),
        (
            "a file:// source",
            with(
                json!({"warren": {"edge": {"release": {"version": "v2", "source": "file:///etc/shadow", "sha256": SHA}}}}),
            ),
        ),
        (
            "a source with a newline",
            with(
                json!({"warren": {"edge": {"release": {"version": "v2", "source": "salt://r\n- x", "sha256": SHA}}}}),
            ),
        ),
        (
            "a number for a version",
            with(
                json!({"warren": {"edge": {"release": {"version": 2, "source": "salt://r", "sha256": SHA}}}}),
            ),
        ),
        ("a list", "[1, 2]".to_string()),
        ("not JSON", "<html>hello</html>".to_string()),
        (
            "a huge answer",
            with(json!({"warren": {}, "pad": "x".repeat(70_000)})),
        ),
    ]
}

/// A stand-in for curl that records its arguments and standard input and
/// prints `answer`.
fn fake_curl(dir: &Path, answer: &str, exit: i32) -> PathBuf {
    std::fs::write(dir.join("answer"), answer).unwrap();
    let path = dir.join("fake-curl");
    let d = dir.display();
    std::fs::write(
        &path,
        format!("#!/bin/sh\nprintf '%s\\n' \"$@\" > {d}/args\ncat > {d}/stdin\ncat {d}/answer\nexit {exit}\n"),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    path
}

fn run_script(args: &[&str]) -> Output {
    Command::new(salt_venv("python3"))
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn the_pillar_command_passes_only_checked_releases() {
    let work = Workdir::new("pillar-filter");
    let dir = work.path();
    let token = format!("{:08x}{:08x}", random_u32(), random_u32());
    let token_file = work.join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let tf = token_file.to_str().unwrap();

    // A good answer: printed as is, asked for with the token on stdin only.
    let curl = fake_curl(dir, &good_answer().to_string(), 0);
    let c = curl.to_str().unwrap();
    let out = run_script(&[
        "--token-file",
        tf,
        "--",
        c,
        "--silent",
        "http://ctl/pillar/",
        "edge-ams-1",
    ]);
    assert!(out.status.success(), "{out:?}");
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed, good_answer());
    let args = std::fs::read_to_string(dir.join("args")).unwrap();
    assert_eq!(args, "--silent\n-H\n@-\nhttp://ctl/pillar/edge-ams-1\n");
    let stdin = std::fs::read_to_string(dir.join("stdin")).unwrap();
    assert_eq!(stdin, format!("Authorization: Bearer {token}\n"));

    // Anything else: no JSON at all, so Salt merges nothing.
    for (what, answer) in hostile_answers() {
        let curl = fake_curl(dir, &answer, 0);
        let out = run_script(&[
            "--token-file",
            tf,
            "--",
            curl.to_str().unwrap(),
            "http://ctl/pillar/",
            "web1",
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}: {out:?}");
        assert!(
            out.stdout.is_empty(),
            "{what}: printed {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    let curl = fake_curl(dir, "", 22);
    let out = run_script(&["--", curl.to_str().unwrap(), "http://ctl/pillar/", "web1"]);
    assert_eq!(out.status.code(), Some(1), "curl failed: {out:?}");
    assert!(out.stdout.is_empty());

    // Minion ids as cmd_json hands them over (split like a shell would):
    // anything but one plain name is refused before curl runs.
    let curl = fake_curl(dir, &good_answer().to_string(), 0);
    let c = curl.to_str().unwrap();
    let split_ids: &[&[&str]] = &[
        &["http://ctl/pillar/", "web1", "-o/etc/cron.d/x"],
        &["http://ctl/pillar/", "-o/etc/cron.d/x", "web1"],
        &["http://ctl/pillar/", ".."],
        &["http://ctl/pillar/", "a,b"],
        &["http://ctl/pillar/", "$(id)"],
        &["http://ctl/pillar/", ""],
    ];
    for tail in split_ids {
        let _ = std::fs::remove_file(dir.join("args"));
        let mut args = vec!["--", c];
        args.extend_from_slice(tail);
        let out = run_script(&args);
        assert_eq!(out.status.code(), Some(1), "{tail:?}: {out:?}");
        assert!(!dir.join("args").exists(), "{tail:?}: curl ran");
    }
}

/// What the stand-in controller answers, and the Authorization headers it saw.
#[derive(Default)]
struct StandIn {
    answer: Mutex<Value>,
    seen: Mutex<Vec<(String, Option<String>)>>,
}

async fn pillar(
    State(s): State<Arc<StandIn>>,
    UrlPath(minion): UrlPath<String>,
    headers: HeaderMap,
) -> Json<Value> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.seen.lock().unwrap().push((minion, auth));
    Json(s.answer.lock().unwrap().clone())
}

/// `salt-run pillar.show_pillar MINION` with the master config in `conf`.
fn show_pillar(conf: &Path, minion: &str) -> Value {
    let out = Command::new(salt_venv("salt-run"))
        .arg("-c")
        .arg(conf)
        .args(["pillar.show_pillar", minion, "--out=json", "-l", "quiet"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// The master.example's `cmd_json` line with its paths moved to this test.
fn example_command(python: &Path, token: &Path, ca: &Path, controller: &str) -> String {
    let text = std::fs::read_to_string(workspace().join("salt/master.example")).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let command = yaml["ext_pillar"][0]["cmd_json"]
        .as_str()
        .expect("master.example has a cmd_json ext_pillar")
        .to_string();
    let salt_dir = format!("{}/", workspace().join("salt").display());
    let mut command = command;
    for (from, to) in [
        ("/usr/bin/python3", python.display().to_string()),
        ("/srv/warren/salt/", salt_dir),
        (
            "/etc/warren/controller-api.token",
            token.display().to_string(),
        ),
        ("/etc/warren/controller-ca.pem", ca.display().to_string()),
        ("https://CONTROLLER:9099/", format!("https://{controller}/")),
    ] {
        assert!(
            command.contains(from),
            "master.example's cmd_json has no {from}: {command}"
        );
        command = command.replace(from, &to);
    }
    assert!(command.contains("--proto =https"), "{command}");
    command
}

#[tokio::test]
async fn a_real_master_merges_only_the_releases_a_hostile_controller_sends() {
    let work = Workdir::short("pillar-master");
    let w = work.path();
    let pki = tests::tunnel_setup::Pki::new(&work).dir;

    // The stand-in controller, over HTTPS with the dev CA's certificate.
    let stand_in = Arc::new(StandIn::default());
    let tls =
        rollout::https::server_config(&pki.join("edge.pem"), &pki.join("edge-key.pem")).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let app = Router::new()
        .route("/pillar/{minion}", get(pillar))
        .with_state(stand_in.clone());
    let listener = rollout::https::TlsListener::new(tcp, tls).unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // A master whose static pillar gives web1 its root and config.
    let token = format!("{:08x}{:08x}", random_u32(), random_u32());
    let token_file = w.join("api.token");
    std::fs::write(&token_file, &token).unwrap();
    let root = w.join("root");
    std::fs::create_dir_all(root.join("cache/proc")).unwrap();
    std::fs::create_dir_all(w.join("pillar")).unwrap();
    std::fs::write(w.join("pillar/top.sls"), "base:\n  'web1':\n    - host\n").unwrap();
    let static_pillar =
        json!({"warren": {"root": "/opt/warren", "edge": {"config": {"admin": "127.0.0.1:9080"}}}});
    std::fs::write(
        w.join("pillar/host.sls"),
        format!("#!json\n{static_pillar}"),
    )
    .unwrap();
    let command = example_command(
        &salt_venv("python3"),
        &token_file,
        &pki.join("ca.pem"),
        &format!("localhost:{port}"),
    );
    let r = root.display();
    let master = json!({
        "root_dir": r.to_string(),
        "pki_dir": format!("{r}/pki"),
        "cachedir": format!("{r}/cache"),
        "sock_dir": format!("{r}/sock"),
        "log_file": format!("{r}/master.log"),
        "pillar_roots": {"base": [w.join("pillar").display().to_string()]},
        "pillar_source_merging_strategy": "recurse",
        "ext_pillar": [{"cmd_json": command}],
    });
    let conf = w.join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("master"), master.to_string()).unwrap();

    // Hostile: other keys, and another formula's key. Nothing changes.
    *stand_in.answer.lock().unwrap() = json!({
        "warren": {"root": "/tmp/evil", "edge": {"config": {"admin": "0.0.0.0:1"},
            "release": {"version": "v9", "source": "salt://x", "sha256": SHA}}},
        "schedule": {"evil": {"function": "cmd.run", "args": ["id"], "seconds": 1}},
    });
    let seen = tokio::task::spawn_blocking({
        let conf = conf.clone();
        move || show_pillar(&conf, "web1")
    })
    .await
    .unwrap();
    assert_eq!(seen, static_pillar, "a hostile answer changed the pillar");

    // The controller's own kind of answer: the release is merged.
    *stand_in.answer.lock().unwrap() = json!({"warren": {"edge": {"release": {"version": "v2", "source": "salt://r.tar.gz", "sha256": SHA}}}});
    let seen = tokio::task::spawn_blocking(move || show_pillar(&conf, "web1"))
        .await
        .unwrap();
    let mut want = static_pillar.clone();
    want["warren"]["edge"]["release"] =
        json!({"version": "v2", "source": "salt://r.tar.gz", "sha256": SHA});
    assert_eq!(seen, want);

    // Both asks carried the token, over HTTPS (the stand-in speaks nothing else).
    let asks = stand_in.seen.lock().unwrap().clone();
    assert_eq!(asks.len(), 2, "{asks:?}");
    for (minion, auth) in asks {
        assert_eq!(minion, "web1");
        assert_eq!(auth, Some(format!("Bearer {token}")));
    }
    server.abort();
}
