//! The real `rollout` binary chooses its progress view by where stdout
//! goes: under a pseudo-terminal (util-linux `script`) it draws the live
//! display, into a pipe it prints plain lines, and `--output json` prints
//! JSON lines. No fleet: the command is `rollout abort` of a paused
//! rollout that touched no host, whose rollback needs neither Salt nor
//! Prometheus (their URLs point at a closed loopback port).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rollout::inventory::Inventory;
use rollout::plan::Plan;
use rollout::spec::Spec;
use rollout::store::{RolloutState, Store};

const SPEC: &str = r#"
component: edge
version: v2
artifact:
  url: salt://releases/edge/v2/edge-v2.tar.gz
  sha256: 0000000000000000000000000000000000000000000000000000000000000000
cohorts:
  - name: canary
    target: G@cohort:canary and G@role:edge
    batch: 1
"#;

/// A SQLite store in a folder of its own, removed on drop.
struct Folder(PathBuf);

impl Drop for Folder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Folder {
    fn new(name: &str) -> Folder {
        let dir = std::env::temp_dir().join(format!("warren-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Folder(dir)
    }

    fn database(&self) -> String {
        format!("sqlite://{}", self.0.join("rollout.db").display())
    }
}

/// A paused rollout that touched no host, as `abort` finds it.
async fn paused_rollout(database: &str) -> String {
    let store = Store::connect(database).await.unwrap();
    let spec = Spec::from_yaml(SPEC).unwrap();
    let plan = Plan::build(&spec, &Inventory::default(), &BTreeMap::new());
    let id = store.begin_rollout(&spec, &plan).await.unwrap();
    store.set_state(&id, RolloutState::Paused).await.unwrap();
    store.close().await;
    id.to_string()
}

/// `rollout abort ID ARGS` with stdout to `how`: a pipe, or a pty.
fn abort(database: &str, id: &str, args: &[&str], pty: bool) -> Output {
    let bin = env!("CARGO_BIN_EXE_rollout");
    let mut cmd = if pty {
        let line = std::iter::once(bin)
            .chain(["abort", id])
            .chain(args.iter().copied())
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut c = Command::new("script");
        c.args(["-qfec", &line, "/dev/null"]);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(["abort", id]).args(args);
        c
    };
    cmd.env("ROLLOUT_DATABASE", database)
        .env("SALT_API_URL", "http://127.0.0.1:9")
        .env("SALT_API_USER", "rollout")
        .env("SALT_API_SECRET", "not-used")
        .env("PROMETHEUS_URL", "http://127.0.0.1:9")
        .env("TERM", "xterm")
        .env("COLUMNS", "80")
        .env_remove("ALERTMANAGER_URL")
        .env_remove("GRAFANA_URL")
        .env_remove("ROLLOUT_CONFIG")
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert!(
        out.status.code() == Some(2),
        "an abort exits 2 (rolled back): {out:?}"
    );
    out
}

#[tokio::test]
async fn a_terminal_gets_the_live_display() {
    let folder = Folder::new("tty-display");
    let id = paused_rollout(&folder.database()).await;
    let out = abort(&folder.database(), &id, &[], true);
    let text = String::from_utf8_lossy(&out.stdout);
    // The block is drawn, then drawn again in place: the cursor goes up.
    assert!(text.contains("\x1b[2K"), "{text:?}");
    assert!(text.contains("A\r\x1b[2K"), "{text:?}");
    assert!(text.contains("rollout · rolling back"), "{text:?}");
    assert!(text.contains("rollout · rolled back"), "{text:?}");
    assert!(
        text.contains("rolled back: every touched host is on its previous release"),
        "{text:?}"
    );
}

#[tokio::test]
async fn a_pipe_gets_plain_lines_and_json_lines_parse() {
    let folder = Folder::new("pipe-display");
    let id = paused_rollout(&folder.database()).await;
    let plain = abort(&folder.database(), &id, &[], false);
    let text = String::from_utf8(plain.stdout).unwrap();
    assert!(!text.contains('\x1b'), "{text:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text:?}");
    assert!(lines[0].starts_with('[') && lines[0].contains("] ROLLING BACK: aborted"));
    assert!(lines[1].contains("] rolled back: every touched host"));

    let id = paused_rollout(&folder.database()).await;
    let json = abort(&folder.database(), &id, &["--output", "json"], false);
    let events: Vec<serde_json::Value> = String::from_utf8(json.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["rolling_back", "rolled_back"]);
}
