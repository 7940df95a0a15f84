//! `rollout plan` against the real local fleet: Salt's grains and pings,
//! Prometheus' versions, gates evaluated once.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use tests::bins::bin;
use tests::fleet::Fleet;

fn spec(fleet: &Fleet, path: &Path) {
    let v2 = &fleet.initial["edge"];
    let text = format!(
        r#"component: edge
version: v2
artifact:
  url: {url}
  sha256: {sha}
cohorts:
  - name: canary
    target: G@cohort:canary and G@role:edge
    batch: 1
    bake: 10s
  - name: ams-fra
    target: G@role:edge and ( G@datacenter:ams or G@datacenter:fra )
    batch: 50%
    bake: 10s
  - name: rest
    target: G@role:edge
    batch: 2
    bake: 10s
gates:
  - name: error-ratio
    query: sum(rate(edge_requests_total{{status_class="5xx"}}[1m])) / sum(rate(edge_requests_total[1m]))
    condition: "< 0.05"
    interval: 2s
    count: 3
    no_data: pass
  - name: panel-error-ratio
    grafana:
      dashboard: warren-edge
      panel: Error ratio (5xx)
    interval: 2s
    count: 3
    no_data: pass
"#,
        url = v2.source.replace("v1", "v2"),
        sha = "a".repeat(64),
    );
    std::fs::write(path, text).unwrap();
}

fn plan(fleet: &Fleet, spec: &Path, extra: &[&str]) -> Output {
    Command::new(bin("rollout"))
        .args(["plan", "-f"])
        .arg(spec)
        .args(extra)
        .env("SALT_API_URL", &fleet.salt_url)
        .env("SALT_API_USER", &fleet.salt_auth.0)
        .env("SALT_API_SECRET", &fleet.salt_auth.1)
        .env("PROMETHEUS_URL", fleet.prometheus.url())
        .env(
            "WARREN_DASHBOARDS",
            tests::bins::workspace().join("grafana/dashboards"),
        )
        .output()
        .unwrap()
}

fn batches(stage: &Value) -> Vec<Vec<String>> {
    stage["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            b["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plan_lists_cohorts_in_order_skips_hosts_on_target_and_flags_a_stopped_minion() {
    let mut fleet = Fleet::start("rollout-plan").await;
    // One host already runs the target version: the plan must skip it.
    let v2 = fleet.release("edge", "v2", &[]);
    fleet.assign("edge-fra-2", &v2).await;
    let report = fleet.apply(&["edge-fra-2".to_string()]).await;
    assert!(report.failures().is_empty(), "{report:#?}");
    fleet
        .wait_versions("edge", "v2", &["edge-fra-2".to_string()])
        .await;

    let spec_path = fleet.work.join("spec.yaml");
    spec(&fleet, &spec_path);
    let plan_path = fleet.work.join("plan.json");
    let out = plan(
        &fleet,
        &spec_path,
        &["--output", "json", "-o", plan_path.to_str().unwrap()],
    );
    assert!(out.status.success(), "{out:?}");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    let stages = p["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 3);
    assert_eq!(stages[0]["cohort"], "canary");
    assert_eq!(batches(&stages[0]), vec![vec!["edge-ams-1"]]);
    assert_eq!(
        batches(&stages[1]),
        vec![vec!["edge-ams-2"], vec!["edge-fra-1"]]
    );
    assert_eq!(stages[1]["skipped"], serde_json::json!(["edge-fra-2"]));
    assert_eq!(batches(&stages[2]), vec![vec!["edge-sin-1", "edge-sin-2"]]);
    assert!(p["problems"].as_array().unwrap().is_empty(), "{p:#}");
    // Both gates were evaluated once, the panel gate from the dashboard.
    let gates = p["gates"].as_array().unwrap();
    assert_eq!(gates.len(), 2);
    assert!(gates.iter().all(|g| g["error"].is_null()), "{gates:#?}");
    assert!(
        gates[1]["query"]
            .as_str()
            .unwrap()
            .contains("edge_requests_total")
    );
    // The file holds the same plan, with the inventory it saw, and the spec
    // (so `apply PLAN.json` needs nothing else).
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&plan_path).unwrap()).unwrap();
    assert_eq!(file["plan"], p);
    assert_eq!(file["plan"]["inventory"].as_array().map(Vec::len), Some(6));
    assert_eq!(file["spec"]["version"], "v2");

    // Stable: the same fleet gives the same plan.
    let again: Value =
        serde_json::from_slice(&plan(&fleet, &spec_path, &["--output", "json"]).stdout).unwrap();
    assert_eq!(again["stages"], p["stages"]);

    // The table names every host.
    let table = String::from_utf8(plan(&fleet, &spec_path, &[]).stdout).unwrap();
    for h in [
        "edge-ams-1",
        "edge-ams-2",
        "edge-fra-1",
        "edge-sin-1",
        "edge-sin-2",
    ] {
        assert!(table.contains(h), "{table}");
    }

    // The fleet changes after the plan: applying the plan is refused, and
    // the message names what changed.
    let v3 = fleet.release("edge", "v3", &[]);
    fleet.assign("edge-sin-1", &v3).await;
    let report = fleet.apply(&["edge-sin-1".to_string()]).await;
    assert!(report.failures().is_empty(), "{report:#?}");
    fleet
        .wait_versions("edge", "v3", &["edge-sin-1".to_string()])
        .await;
    let out = Command::new(bin("rollout"))
        .args(["apply", plan_path.to_str().unwrap(), "--yes"])
        .envs(fleet.rollout_env())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("changed since the plan"), "{err}");
    assert!(err.contains("edge-sin-1: v1 -> v3"), "{err}");

    // A stopped minion is flagged, and the plan exits non-zero.
    fleet.stop_minion("edge-sin-2");
    let out = plan(&fleet, &spec_path, &["--output", "json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        p["stages"][2]["unreachable"],
        serde_json::json!(["edge-sin-2"])
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("edge-sin-2"), "{err}");
}

#[test]
fn validate_reports_every_problem_with_its_path() {
    let work = tests::workdir::Workdir::new("rollout-validate");
    let path = work.join("bad.yaml");
    std::fs::write(
        &path,
        "component: edgy\nversion: v2\nartifact: {url: 'salt://x', sha256: nope}\ncohorts:\n  - {name: c, target: '*', batch: 0%, bake: 5x}\n",
    )
    .unwrap();
    let out = Command::new(bin("rollout"))
        .args(["validate", "-f"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "component",
        "artifact.sha256",
        "cohorts[0].batch",
        "cohorts[0].bake",
    ] {
        assert!(err.contains(field), "{field} missing from: {err}");
    }
    let ok = Command::new(bin("rollout"))
        .args(["validate", "-f"])
        .arg(tests::bins::workspace().join("examples/rollout.yaml"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{ok:?}");
}
