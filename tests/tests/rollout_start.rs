//! `rollout apply` will not start while an alert its spec rolls back on is
//! firing in a real Alertmanager: the rollout would only roll back at once.
//! An alert the spec does not select does not hold it back. What `apply`
//! says on the way is printed as plain lines or JSON lines.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use rollout::inventory::{Host, Inventory};
use rollout::plan::Plan;
use rollout::spec::Spec;
use serde_json::json;
use tests::bins::bin;
use tests::http::plain_client;
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::workdir::Workdir;

/// A plan file of edge v3 over one canary host, rolled back on `selector`.
fn plan_file(work: &Workdir, selector: &str) -> std::path::PathBuf {
    let rollback = format!("rollback:\n  alerts:\n    - '{selector}'\n");
    let spec = Spec::from_yaml(&tests::rollouts::edge_spec("v3", &rollback)).unwrap();
    let host = Host {
        id: "edge-ams-1".into(),
        datacenter: "ams".into(),
        cohort: "canary".into(),
        role: "edge".into(),
        version: Some("v2".into()),
        reachable: true,
    };
    let inventory = Inventory::new(vec![host]).unwrap();
    let matches = BTreeMap::from([("all".to_string(), vec!["edge-ams-1".to_string()])]);
    let plan = Plan::build(&spec, &inventory, &matches);
    assert!(plan.executable(), "{:?}", plan.problems);
    let file = json!({
        "spec": serde_json::from_str::<serde_json::Value>(&spec.to_json()).unwrap(),
        "plan": serde_json::from_str::<serde_json::Value>(&plan.to_json()).unwrap(),
    });
    let path = work.join(&format!("plan-{}.json", file.to_string().len()));
    std::fs::write(&path, file.to_string()).unwrap();
    path
}

fn apply(work: &Workdir, plan: &std::path::Path, alertmanager: &str, extra: &[&str]) -> Output {
    Command::new(bin("rollout"))
        .arg("apply")
        .arg(plan)
        .arg("--yes")
        .args(extra)
        .env("ALERTMANAGER_URL", alertmanager)
        // Nothing listens here: a start that gets past the alert check
        // fails reading the fleet from Salt.
        .env("SALT_API_URL", "http://127.0.0.1:9")
        .env("SALT_API_USER", "warren")
        .env("SALT_API_SECRET", "unused")
        .env("PROMETHEUS_URL", "http://127.0.0.1:9")
        .env(
            "ROLLOUT_DATABASE",
            format!("sqlite://{}?mode=rwc", work.join("rollout.db").display()),
        )
        .env_remove("ROLLOUT_CONFIG")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_refuses_to_start_while_a_selected_alert_fires() {
    let work = Workdir::new("rollout-start");
    let net = TestNet::new();
    let addr = net.addr(1, 9093);
    let am_dir = work.join("alertmanager");
    std::fs::create_dir_all(&am_dir).unwrap();
    std::fs::write(
        am_dir.join("alertmanager.yml"),
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .unwrap();
    let mut cmd = Command::new("prometheus-alertmanager");
    cmd.arg(format!(
        "--config.file={}/alertmanager.yml",
        am_dir.display()
    ))
    .arg(format!("--storage.path={}/data", am_dir.display()))
    .arg(format!("--web.listen-address={addr}"))
    .arg("--cluster.listen-address=");
    let _am = Proc::spawn("alertmanager", cmd, &work.join("alertmanager.log"));
    let url = format!("http://{addr}");

    // The release guard of v3 fires, as Prometheus would send it.
    let starts_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let alert = json!([{
        "labels": {"alertname": "EdgeReleaseErrorRatioHigh", "component": "edge", "version": "v3", "severity": "page"},
        "annotations": {"summary": "edge v3 answers 5xx"},
        "startsAt": starts_at,
    }]);
    eventually(
        "Alertmanager takes the alert",
        Duration::from_secs(30),
        || async {
            let resp = plain_client()
                .post(format!("{url}/api/v2/alerts"))
                .json(&alert)
                .send()
                .await
                .ok()?;
            resp.status().is_success().then_some(())
        },
    )
    .await;

    let selected = plan_file(
        &work,
        r#"{alertname="EdgeReleaseErrorRatioHigh", version="v3"}"#,
    );
    let out = apply(&work, &selected, &url, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("EdgeReleaseErrorRatioHigh") && stderr.contains("rollback.alerts"),
        "the refusal names the alert and why: {stderr}"
    );
    // Nothing was started.
    let store = rollout::store::Store::connect(&format!(
        "sqlite://{}?mode=rwc",
        work.join("rollout.db").display()
    ))
    .await
    .unwrap();
    assert!(store.list().await.unwrap().is_empty());

    // A spec that does not select it gets past the check (and then fails on
    // Salt, which does not run here).
    let other = plan_file(&work, r#"{alertname="EdgeDown"}"#);
    let out = apply(&work, &other, &url, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("is firing"), "{stderr}");
    assert!(stderr.contains("salt"), "{stderr}");
}

/// Whether `line` starts with `[HH:MM:SS.d] `: a time of day, not epoch
/// seconds.
fn starts_with_time_of_day(line: &str) -> bool {
    let b = line.as_bytes();
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    b.len() > 13
        && b[0] == b'['
        && [1, 2, 4, 5, 7, 8, 10].into_iter().all(digit)
        && (b[3], b[6], b[9], b[11], b[12]) == (b':', b':', b'.', b']', b' ')
}

/// An unreachable Alertmanager is said before the start goes on (and then
/// fails on Salt, which does not run here): a line of progress with no
/// fleet at all, in each output.
#[test]
fn progress_is_printed_as_timed_lines_or_json_lines() {
    let work = Workdir::new("rollout-start-output");
    let plan = plan_file(&work, r#"{alertname="EdgeDown"}"#);
    let nobody = "http://127.0.0.1:9";

    let out = apply(&work, &plan, nobody, &["--output", "json"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(stderr.contains("not started"), "{stderr}");
    // The plan table a person checks is on stderr; stdout is only events.
    assert!(stderr.contains("edge-ams-1"), "{stderr}");
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?} in {stdout}")))
        .collect();
    let skipped = events
        .iter()
        .find(|e| e["event"] == "alert_check_skipped")
        .unwrap_or_else(|| panic!("no alert_check_skipped event: {stdout}"));
    let at = skipped["at"].as_str().expect("`at` is a string");
    let at = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    let age = SystemTime::now().duration_since(at).unwrap_or_default();
    assert!(age < Duration::from_secs(120), "{at:?} is not now");
    assert!(
        skipped["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{skipped}"
    );

    let out = apply(&work, &plan, nobody, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("cannot check for firing alerts before starting"))
        .unwrap_or_else(|| panic!("no alertmanager line: {stdout}"));
    assert!(starts_with_time_of_day(line), "{line}");
    assert!(line[13..].starts_with("alertmanager: "), "{line}");
}
