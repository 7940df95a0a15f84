//! The dashboards against the real local fleet: every panel's query runs
//! against the fleet's Prometheus and returns data, and a gate taken from a
//! panel lets a good release through and trips at the panel's red threshold.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::bins::{bin, workspace};
use tests::fleet::spec::EdgeSpec;
use tests::fleet::{Fleet, Role};
use tests::grafana::Grafana;

/// The edge dashboard's fleet-wide error-ratio panel (red at 0.05).
const PANEL_GATE: &str = "  - name: error-ratio-panel
    grafana:
      dashboard: warren-edge
      panel: Error ratio (5xx)
    interval: 2s
    no_data: pass
";

fn apply(fleet: &Fleet, grafana: &Grafana, spec: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(bin("rollout"))
        .args(["apply", "-f", spec.to_str().unwrap(), "--yes"])
        .envs(fleet.rollout_env())
        .env("GRAFANA_URL", &grafana.url)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    (out.status.code(), text)
}

/// Each panel query with the variables as Grafana's "All" expands them.
fn panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for file in ["edge.json", "connector.json", "rollout.json"] {
        let path = workspace().join("grafana/dashboards").join(file);
        let d: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for p in d["panels"].as_array().unwrap() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = tests::dashboards::with_all_selected(t["expr"].as_str().unwrap());
                out.push((format!("{file} `{}`", p["title"].as_str().unwrap()), expr));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panels_return_data_and_a_panel_gate_trips_at_its_red_threshold() {
    let fleet = Fleet::start("dash-fleet").await;
    let _traffic = fleet.start_traffic();
    // With a Grafana configured, the panel comes from it.
    let grafana = Grafana::start(fleet.net.addr(104, 3000)).await;

    // A good release passes the panel's gate.
    let v2 = fleet.release("edge", "v2", &[]);
    let spec = fleet.work.join("good.yaml");
    EdgeSpec::new(&v2, "6s").gates(PANEL_GATE).write(&spec);
    let (code, text) = apply(&fleet, &grafana, &spec);
    assert_eq!(code, Some(0), "the good release passes:\n{text}");
    assert!(text.contains("gate error-ratio-panel"), "{text}");
    assert!(
        grafana
            .requests()
            .iter()
            .any(|r| r.path == "/api/dashboards/uid/warren-edge"),
        "the panel was read from Grafana"
    );

    // Every panel's query runs and returns data (the rollout panels from
    // the controller's metrics, which Prometheus scrapes).
    for (panel, expr) in panel_queries() {
        tests::proc::eventually(
            &format!("data for panel {panel}: {expr}"),
            Duration::from_secs(60),
            || async {
                match fleet.prometheus.query(&expr).await {
                    Ok(samples) if !samples.is_empty() => Some(()),
                    Ok(_) => None,
                    Err(e) => panic!("panel {panel}: the query fails: {e}\n{expr}"),
                }
            },
        )
        .await;
    }

    // A release that answers 90% of the canary's requests with 500 takes the
    // fleet-wide ratio over the panel's red 0.05: the gate trips and the
    // rollout rolls back before the canary's bake ends.
    let v3 = fleet.release("edge", "v3", &["--fault-http-500-ratio", "0.9"]);
    let spec = fleet.work.join("bad.yaml");
    EdgeSpec::new(&v3, "3m").gates(PANEL_GATE).write(&spec);
    let (code, text) = apply(&fleet, &grafana, &spec);
    assert_eq!(code, Some(2), "the bad release is rolled back:\n{text}");
    let id = fleet.store.list().await.unwrap()[0].id.clone();
    let steps = fleet.store.history(&id).await.unwrap();
    let failed = steps
        .iter()
        .filter(|s| s.event.kind == "gate")
        .find(|s| s.event.detail["outcome"] == "failed")
        .unwrap_or_else(|| panic!("no failed gate measurement: {steps:#?}"));
    let value = failed.event.detail["value"].as_f64().unwrap();
    assert!(
        value >= 0.05,
        "tripped at {value}, the red threshold is 0.05"
    );
    let started = steps
        .iter()
        .find(|s| s.event.kind == "rollback_started")
        .unwrap();
    let reason = started.event.detail["reason"].as_str().unwrap();
    assert!(
        reason.contains("error-ratio-panel") && reason.contains("< 0.05"),
        "{reason}"
    );
    fleet
        .wait_versions("edge", "v2", &fleet.ids(Some(Role::Edge)))
        .await;
}
