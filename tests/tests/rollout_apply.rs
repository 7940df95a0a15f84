//! `rollout apply` on the real local fleet: cohort by cohort through Salt,
//! confirmed in Prometheus, gated, and rolled back by itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::bins::bin;
use tests::fleet::Fleet;
use tests::fleet::spec::EdgeSpec;
use tests::postgres::Postgres;

/// The edge version each host is assigned in the controller's store.
async fn assignments(fleet: &Fleet) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for id in fleet.ids(Some(tests::fleet::Role::Edge)) {
        let a = fleet.store.assignments_for(&id).await.unwrap();
        if let Some(r) = a.get(&rollout::spec::Component::Edge) {
            out.insert(id, r.version.clone());
        }
    }
    out
}

fn rollout(fleet: &Fleet, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("rollout"));
    cmd.args(args).envs(fleet.rollout_env());
    cmd
}

/// The share of 5xx answers from the edges running `version`, over 5 s.
/// A freshly restarted edge answers 502 for the moment until its connectors
/// register again, so a good release shows a few percent right after its
/// restart; `limit` leaves room for that.
fn error_ratio_gate(version: &str, limit: f64) -> String {
    format!(
        r#"  - name: error-ratio
    query: sum(rate(edge_requests_total{{status_class="5xx"}}[5s]) * on (instance) group_left (version) edge_build_info{{version="{version}"}}) / sum(rate(edge_requests_total[5s]) * on (instance) group_left (version) edge_build_info{{version="{version}"}})
    condition: "< {limit}"
    interval: 1s
    count: 4
    no_data: pass
"#
    )
}

/// The rollout id from `rollout history` (the newest is listed first).
fn newest_id(fleet: &Fleet) -> String {
    let out = rollout(fleet, &["history"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .next()
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no rollout in: {text}"))
        .to_string()
}

fn history(fleet: &Fleet, id: &str) -> String {
    String::from_utf8_lossy(&rollout(fleet, &["history", id]).output().unwrap().stdout).into_owned()
}

/// Waits until the apply log shows `needle`.
async fn wait_log(log: &Path, needle: &str) {
    tests::proc::eventually(
        &format!("`{needle}` in the apply log"),
        Duration::from_secs(180),
        || async {
            std::fs::read_to_string(log)
                .ok()
                .filter(|t| t.contains(needle))
                .map(|_| ())
        },
    )
    .await;
}

/// Starts a fleet whose controller store is SQLite, or a PostgreSQL the test
/// starts (returned, so it lives as long as the fleet).
async fn start_fleet(name: &str, postgres: bool) -> (Option<Postgres>, Fleet) {
    if postgres {
        let pg = Postgres::start();
        let fleet = Fleet::start_with_database(name, Some(pg.url.clone())).await;
        (Some(pg), fleet)
    } else {
        (None, Fleet::start(name).await)
    }
}

/// Every engine scenario runs twice: with the controller's store in SQLite
/// (the embedded default) and in a real PostgreSQL.
macro_rules! on_both_stores {
    ($(async fn $name:ident($fleet:ident) $body:block)*) => {
        mod sqlite {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[allow(unused_mut)]
                async fn $name() {
                    let (_pg, mut $fleet) = start_fleet(stringify!($name), false).await;
                    $body
                }
            )*
        }
        mod postgres {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                #[allow(unused_mut)]
                async fn $name() {
                    let (_pg, mut $fleet) = start_fleet(stringify!($name), true).await;
                    $body
                }
            )*
        }
    };
}

on_both_stores! {
    async fn a_good_release_moves_the_fleet_cohort_by_cohort(fleet) {
    let _traffic = fleet.start_traffic();
    let v2 = fleet.release("edge", "v2", &[]);
    let spec = fleet.work.join("spec.yaml");
    EdgeSpec::new(&v2, "8s").gates(&error_ratio_gate("v2", 0.25)).write(&spec);

    let log = fleet.work.join("apply.log");
    let mut child = rollout(&fleet, &["apply", "-f", spec.to_str().unwrap(), "--yes"])
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();

    // The order the plan updates hosts in: canary, then ams-2 + fra-1, then
    // fra-2, then the rest.
    let order = [
        vec!["edge-ams-1"],
        vec!["edge-ams-2", "edge-fra-1"],
        vec!["edge-fra-2"],
        vec!["edge-sin-1", "edge-sin-2"],
    ];
    let mut samples: Vec<BTreeMap<String, String>> = Vec::new();
    let started = Instant::now();
    let mut highstate_checked = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        // In the middle of the rollout (the canary done, the rest not), a
        // highstate of every host changes no host's version.
        let log_text = std::fs::read_to_string(&log).unwrap_or_default();
        if !highstate_checked && log_text.contains("batch 1 of `canary` done") {
            highstate_checked = true;
            let before = fleet.prometheus.versions("edge").await.unwrap();
            let assigned_before = assignments(&fleet).await;
            let report = fleet.apply(&fleet.ids(None)).await;
            assert!(report.failures().is_empty(), "{report:#?}");
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = fleet.prometheus.versions("edge").await.unwrap();
            let assigned_after = assignments(&fleet).await;
            // No host leaves what the controller assigned it: hosts still
            // assigned v1 stay on v1, the canary stays on v2 (a host the
            // engine has just assigned may converge a moment early).
            for (host, version) in &before {
                let assigned = assigned_after.get(host);
                assert!(
                    &after[host] == version || assigned == Some(&after[host]),
                    "highstate moved {host} from {version} to {} (assigned {assigned:?}, before {:?})",
                    after[host],
                    assigned_before.get(host)
                );
                if assigned.map(String::as_str) == Some("v1") {
                    assert_eq!(after[host], "v1", "highstate upgraded unassigned {host}");
                }
            }
            assert_eq!(after["edge-ams-1"], "v2");
        }
        assert!(started.elapsed() < Duration::from_secs(300), "apply hangs");
        if let Ok(v) = fleet.prometheus.versions("edge").await
            && v.len() == 6
        {
            samples.push(v);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(
        highstate_checked,
        "the rollout ended before the mid-rollout highstate"
    );

    // Sampled during the run: hosts outside finished batches still ran v1,
    // and the batches went over in order.
    let mut seen_partial = 0;
    for s in &samples {
        let batch_done: Vec<bool> = order
            .iter()
            .map(|b| b.iter().all(|h| s[*h] == "v2"))
            .collect();
        let batch_touched: Vec<bool> = order
            .iter()
            .map(|b| b.iter().any(|h| s[*h] == "v2"))
            .collect();
        for i in 1..order.len() {
            if batch_touched[i] {
                assert!(batch_done[..i].iter().all(|d| *d), "out of order: {s:?}");
            }
        }
        if batch_done[0] && !batch_touched[3] {
            seen_partial += 1;
        }
    }
    assert!(
        seen_partial > 0,
        "never saw the canary alone on v2: {samples:?}"
    );
    let end = fleet.prometheus.versions("edge").await.unwrap();
    assert!(end.values().all(|v| v == "v2"), "{end:?}");

    // history shows each step.
    let list = rollout(&fleet, &["history"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    let id = text
        .split_whitespace()
        .next()
        .expect("a rollout")
        .to_string();
    assert!(text.contains("succeeded"), "{text}");
    let steps =
        String::from_utf8_lossy(&rollout(&fleet, &["history", &id]).output().unwrap().stdout)
            .into_owned();
    for kind in ["assign", "salt_apply", "salt_result", "confirmed", "gate"] {
        assert!(steps.contains(kind), "no {kind} step in:\n{steps}");
    }
    assert_eq!(steps.matches("confirmed").count(), 4, "{steps}");
    let status = rollout(&fleet, &["status", "--output", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["rollout"]["state"], "succeeded");
    assert_eq!(v["batches_done"], 4);

    // A highstate of every host afterwards changes no host's version.
    let report = fleet.apply(&fleet.ids(None)).await;
    assert!(report.failures().is_empty(), "{report:#?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = fleet.prometheus.versions("edge").await.unwrap();
    assert!(after.values().all(|v| v == "v2"), "{after:?}");
    }

    async fn a_release_failing_a_gate_in_the_canary_is_rolled_back(fleet) {
    let _traffic = fleet.start_traffic();
    let bad = fleet.release("edge", "v3", &["--fault-http-500-ratio", "0.5"]);
    let spec = fleet.work.join("spec.yaml");
    EdgeSpec::new(&bad, "20s").gates(&error_ratio_gate("v3", 0.25)).write(&spec);

    let out = rollout(&fleet, &["apply", "-f", spec.to_str().unwrap(), "--yes"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    // The message names the gate, the value and the condition.
    assert!(stderr.contains("gate error-ratio"), "{stderr}");
    assert!(stderr.contains("< 0.25"), "{stderr}");
    assert!(stderr.contains("value 0."), "{stderr}");

    // Every host ends on v1, and only the canary was ever touched.
    let v = fleet.prometheus.versions("edge").await.unwrap();
    assert!(v.values().all(|x| x == "v1"), "{v:?}");
    let list = rollout(&fleet, &["history"]).output().unwrap();
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("rolled_back"), "{text}");
    let id = text.split_whitespace().next().unwrap().to_string();
    let steps =
        String::from_utf8_lossy(&rollout(&fleet, &["history", &id]).output().unwrap().stdout)
            .into_owned();
    let assigned: Vec<&str> = steps
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("assign"))
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(assigned, vec!["edge-ams-1"], "{steps}");
    assert!(steps.contains("rolled_back"), "{steps}");
    }

    async fn a_failed_salt_state_stops_the_rollout_before_the_bake_and_rolls_back(fleet) {
    let mut v2 = fleet.release("edge", "v2", &[]);
    v2.sha256 = "0".repeat(64);
    let spec = fleet.work.join("spec.yaml");
    EdgeSpec::new(&v2, "5s").gates(&error_ratio_gate("v2", 0.25)).write(&spec);
    let out = rollout(&fleet, &["apply", "-f", spec.to_str().unwrap(), "--yes"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("host edge-ams-1: failed state"), "{stderr}");
    assert!(stderr.contains("checksum"), "{stderr}");
    let steps = history(&fleet, &newest_id(&fleet));
    assert!(
        !steps.contains(" gate "),
        "no bake after a failed state:\n{steps}"
    );
    assert!(steps.contains("rolled_back"), "{steps}");
    let v = fleet.prometheus.versions("edge").await.unwrap();
    assert!(v.values().all(|x| x == "v1"), "{v:?}");
    }

    async fn prometheus_unreachable_during_a_bake_pauses_and_resume_finishes(fleet) {
    let _traffic = fleet.start_traffic();
    let v2 = fleet.release("edge", "v2", &[]);
    let spec = fleet.work.join("spec.yaml");
    let gate = r#"  - name: error-ratio
    query: sum(rate(edge_requests_total{status_class="5xx"}[1m])) / sum(rate(edge_requests_total[1m]))
    condition: "< 0.25"
    interval: 1s
    count: 8
    consecutive_error_limit: 2
    no_data: pass
"#;
    EdgeSpec::new(&v2, "10s").gates(gate).write(&spec);
    let log = fleet.work.join("apply.log");
    let mut child = rollout(&fleet, &["apply", "-f", spec.to_str().unwrap(), "--yes"])
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_log(&log, "baking").await;
    fleet.stop_prometheus();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    // The gate errored up to its limit and the rollout paused: it did not go on.
    assert_eq!(status.code(), Some(3), "{text}");
    assert!(text.contains("PAUSED"), "{text}");
    assert!(!text.contains("stage 2/3"), "went on without data:\n{text}");
    let id = newest_id(&fleet);
    let s: Value = serde_json::from_slice(
        &rollout(&fleet, &["status", &id, "--output", "json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(s["rollout"]["state"], "paused");

    fleet.start_prometheus().await;
    let out = rollout(&fleet, &["resume", &id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = fleet.prometheus.versions("edge").await.unwrap();
    assert!(v.values().all(|x| x == "v2"), "{v:?}");
    }

    async fn sigkill_during_a_salt_job_and_during_a_bake_then_resume_applies_nothing_twice(fleet) {
    let v2 = fleet.release("edge", "v2", &[]);
    let spec = fleet.work.join("spec.yaml");
    EdgeSpec::new(&v2, "6s").gates(&error_ratio_gate("v2", 0.25)).write(&spec);
    let log = fleet.work.join("apply.log");
    let spawn = |args: &[&str], log: &Path| {
        rollout(&fleet, args)
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let mut child = spawn(&["apply", "-f", spec.to_str().unwrap(), "--yes"], &log);
    // Killed in the middle of a batch: stage 2's Salt job is running.
    wait_log(&log, "stage 2/3").await;
    tests::proc::eventually("stage 2's Salt job", Duration::from_secs(60), || async {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        (text.matches("salt: job").count() >= 2).then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let id = newest_id(&fleet);

    // Resumed, then killed again during a bake (stage 3's).
    let log2 = fleet.work.join("resume.log");
    let mut child = spawn(&["resume", &id], &log2);
    wait_log(&log2, "waiting for job").await;
    wait_log(&log2, "stage 3/3").await;
    tests::proc::eventually("stage 3's bake", Duration::from_secs(120), || async {
        let text = std::fs::read_to_string(&log2).unwrap_or_default();
        let stage3 = text.split("stage 3/3").nth(1).unwrap_or_default();
        stage3.contains("baking").then_some(())
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();

    let out = rollout(&fleet, &["resume", &id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v = fleet.prometheus.versions("edge").await.unwrap();
    assert!(v.values().all(|x| x == "v2"), "{v:?}");

    // Counted from Salt's own job records: every edge got exactly one
    // `state.apply edge` for this rollout.
    let applied = fleet.salt_applies("edge").await;
    assert_eq!(applied.len(), 6, "{applied:?}");
    assert!(applied.values().all(|n| *n == 1), "{applied:?}");
    }
}
