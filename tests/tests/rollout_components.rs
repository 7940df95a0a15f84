//! One rollout of two components on the real local fleet (`components:`):
//! `rollout plan` shows the edge stages then the connector stages; `apply`
//! finishes the edge part before the first connector host is touched; a
//! connector gate failure rolls back the connectors, then the edges, newest
//! first, and the journal and `rollout history` show it. The successful
//! rollout runs under a steady load over all six edges and fails no request;
//! so does an edge release that exits at once, which is rolled back. The
//! load's counter-example: the same load through a plain stop-start of one
//! edge fails requests, so the check can fail. One fleet serves the five
//! scenarios, in order.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rollout::spec::Component;
use rollout::store::{RolloutId, Step};
use serde_json::Value;
use tests::bins::bin;
use tests::fleet::spec::{ComponentsSpec, EdgeSpec};
use tests::fleet::{Fleet, Role};
use tests::grafana::Grafana;
use tests::load::Load;

const GRAFANA_TOKEN: &str = "glsa_fleet-test-token";

/// A gate measured in every bake of both parts; it always holds.
const GREEN_GATE: &str = r#"  - name: edges-scraped
    query: count(edge_build_info)
    condition: "> 0"
    interval: 1s
    count: 2
    no_data: pass
"#;

/// Stands in for a connector release that breaks its gate (the connector
/// has no fault switch): it fails as soon as any connector runs v3, and has
/// no data (passes) while only edges change.
const CONNECTOR_V3_GATE: &str = r#"  - name: connector-v3-refused
    query: sum(connector_build_info{version="v3"})
    condition: "< 1"
    interval: 1s
    count: 2
    no_data: pass
"#;

fn rollout(fleet: &Fleet, grafana: &Grafana, args: &[&str]) -> Command {
    let token = fleet.work.join("grafana.token");
    std::fs::write(&token, GRAFANA_TOKEN).unwrap();
    let mut cmd = Command::new(bin("rollout"));
    cmd.args(args)
        .envs(fleet.rollout_env())
        .env("GRAFANA_URL", &grafana.url)
        .env("GRAFANA_TOKEN_FILE", &token);
    cmd
}

async fn newest(fleet: &Fleet) -> (RolloutId, Vec<Step>) {
    let id = fleet.store.list().await.unwrap()[0].id.clone();
    let steps = fleet.store.history(&id).await.unwrap();
    (id, steps)
}

fn component_of(step: &Step) -> Option<Component> {
    serde_json::from_value(step.event.detail["component"].clone()).ok()
}

/// `(host, component)` of every step of `kind`, in journal order.
fn hosts_of(steps: &[Step], kind: &str) -> Vec<(String, Component)> {
    steps
        .iter()
        .filter(|s| s.event.kind == kind)
        .map(|s| {
            (
                s.event.host.clone().expect("a host step"),
                component_of(s).expect("a component"),
            )
        })
        .collect()
}

fn versions_are(v: &BTreeMap<String, String>, ids: &[String], version: &str) -> bool {
    ids.iter().all(|id| v.get(id).is_some_and(|x| x == version))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_then_connector_in_one_rollout_and_a_connector_failure_rolls_back_both() {
    let fleet = Fleet::start("rollout-components").await;
    let grafana = Grafana::start(fleet.net.addr(104, 3000)).await;
    let edges = fleet.ids(Some(Role::Edge));
    let connectors = fleet.ids(Some(Role::Connector));
    let edge_v2 = fleet.release("edge", "v2", &[]);
    let connector_v2 = fleet.release("connector", "v2", &[]);
    let spec = fleet.work.join("spec.yaml");
    ComponentsSpec::new(&edge_v2, &connector_v2, "3s")
        .gates(GREEN_GATE)
        .write(&spec);

    // 1. The plan: edge stages, then connector stages.
    let out = rollout(&fleet, &grafana, &["plan", "-f", spec.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(
            "Rollout of edge v2 then connector v2: 8 host(s) in 6 batch(es), 5 stage(s)"
        ),
        "{text}"
    );
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no `{needle}` in the plan:\n{text}"))
    };
    let order = [
        "\nedge canary (",
        "\nedge ams-fra (",
        "\nedge rest (",
        "\nconnector canary (",
        "\nconnector rest (",
    ];
    for pair in order.windows(2) {
        assert!(at(pair[0]) < at(pair[1]), "{pair:?} out of order:\n{text}");
    }
    assert!(text.contains("  batch 1: conn-ams-1"), "{text}");

    // 2. Apply: no connector host changes version before every edge runs v2,
    // and under a steady 200 requests/s over all six edges nothing fails:
    // every edge is upgraded in place, every connector drains into its
    // replica. Six event streams open at the start stay open across the
    // edge upgrades (75 s of events, shorter than the connectors' grace).
    let load = Load::start(fleet.rollout_load(Duration::from_secs(420)));
    let log = fleet.work.join("apply.log");
    let mut child = rollout(
        &fleet,
        &grafana,
        &["apply", "-f", spec.to_str().unwrap(), "--yes"],
    )
    .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let mut connector_moved_seen = 0;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(360), "apply hangs");
        if let (Ok(e), Ok(c)) = (
            fleet.prometheus.versions("edge").await,
            fleet.prometheus.versions("connector").await,
        ) && connectors
            .iter()
            .any(|id| c.get(id).is_some_and(|v| v == "v2"))
        {
            connector_moved_seen += 1;
            assert!(
                versions_are(&e, &edges, "v2"),
                "a connector runs v2 before every edge does: edges {e:?}, connectors {c:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status:?}\n{out}");
    assert!(connector_moved_seen > 0, "never sampled a connector on v2");
    assert!(
        out.contains(
            "edge done on every planned host (gates green, versions confirmed); connector v2 next"
        ),
        "{out}"
    );
    fleet.wait_versions("edge", "v2", &edges).await;
    fleet.wait_versions("connector", "v2", &connectors).await;
    let report = load.stop().await;
    eprintln!("edge v2 then connector v2 under load: {report}");
    report.assert_no_failures();
    assert_eq!(report.sse_finished(), 6, "{report}");
    // WebSockets and TCP sessions were open through every upgrade and drain
    // (20 s each, six of each kind at all times).
    for (kind, s) in [("websocket", &report.websockets), ("tcp", &report.tcp)] {
        assert!(
            s.opened >= 6 * 4 && s.finished == s.opened && s.messages > 50 * s.opened,
            "{kind}: {s:?}\n{report}"
        );
    }

    // The journal: the last edge confirmation comes before the first
    // connector assignment, with the part boundary between them.
    let (id, steps) = newest(&fleet).await;
    let seq = |pred: &dyn Fn(&Step) -> bool| -> Vec<i64> {
        steps.iter().filter(|s| pred(s)).map(|s| s.seq).collect()
    };
    let edge_confirmed =
        seq(&|s| s.event.kind == "confirmed" && s.event.detail["stage"].as_u64() < Some(3));
    let connector_assigned =
        seq(&|s| s.event.kind == "assign" && component_of(s) == Some(Component::Connector));
    let boundary = seq(&|s| s.event.kind == "component_done");
    assert_eq!(edge_confirmed.len(), 4, "{steps:#?}");
    assert_eq!(connector_assigned.len(), 2, "{steps:#?}");
    assert_eq!(boundary.len(), 1, "{steps:#?}");
    assert!(
        edge_confirmed.last() < boundary.first() && boundary.first() < connector_assigned.first(),
        "edge confirmed {edge_confirmed:?}, boundary {boundary:?}, connector assigned {connector_assigned:?}"
    );
    // Gates measured in the connector part too.
    assert!(
        steps
            .iter()
            .any(|s| s.event.kind == "gate" && s.event.detail["stage"].as_u64() >= Some(3)),
        "{steps:#?}"
    );
    let status = rollout(
        &fleet,
        &grafana,
        &["status", id.as_str(), "--output", "json"],
    )
    .output()
    .unwrap();
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(v["rollout"]["state"], "succeeded");
    assert_eq!(v["batches_done"], 6);
    assert_eq!(v["components"][1]["component"], "connector");

    // Grafana: a region per stage of each component, and the boundary.
    let requests = grafana.requests();
    let posted = |needle: &str| {
        requests.iter().find(|r| {
            r.method == "POST" && r.body["text"].as_str().is_some_and(|t| t.contains(needle))
        })
    };
    for needle in [
        "edge v2: edge stage 1 `canary` started",
        "connector v2: connector stage 4 `canary` started",
        "edge done; connector v2 starts",
    ] {
        let r = posted(needle).unwrap_or_else(|| panic!("no annotation `{needle}`: {requests:#?}"));
        let tags: Vec<&str> = r.body["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        for tag in ["rollout", "edge", "connector", id.as_str()] {
            assert!(tags.contains(&tag), "{needle}: tags {tags:?}");
        }
    }

    // 3. Edge v3 then connector v3, whose gate fails on the connector
    // canary: the connector goes back, then every edge, newest first.
    let edge_v3 = fleet.release("edge", "v3", &[]);
    let connector_v3 = fleet.release("connector", "v3", &[]);
    ComponentsSpec::new(&edge_v3, &connector_v3, "3s")
        .gates(CONNECTOR_V3_GATE)
        .write(&spec);
    let out = rollout(
        &fleet,
        &grafana,
        &["apply", "-f", spec.to_str().unwrap(), "--yes"],
    )
    .output()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("gate connector-v3-refused"), "{stderr}");

    let (id, steps) = newest(&fleet).await;
    let assigned = hosts_of(&steps, "assign");
    let rolled_back = hosts_of(&steps, "rollback_assign");
    // Every edge, then the connector canary only.
    let expected: Vec<(String, Component)> = [
        "edge-ams-1",
        "edge-ams-2",
        "edge-fra-1",
        "edge-fra-2",
        "edge-sin-1",
        "edge-sin-2",
    ]
    .iter()
    .map(|h| (h.to_string(), Component::Edge))
    .chain([("conn-ams-1".to_string(), Component::Connector)])
    .collect();
    assert_eq!(assigned, expected, "{steps:#?}");
    let mut newest_first = assigned.clone();
    newest_first.reverse();
    assert_eq!(rolled_back, newest_first, "{steps:#?}");
    // `rolled_back` after the last host went back (set_state journals a
    // `state` step after it).
    let kinds: Vec<&str> = steps.iter().map(|s| s.event.kind.as_str()).collect();
    let done = kinds.iter().position(|k| *k == "rolled_back");
    let last_back = kinds.iter().rposition(|k| *k == "rollback_assign");
    assert!(
        done.is_some() && done > last_back,
        "rolled_back {done:?} after the last rollback_assign {last_back:?}: {kinds:?}"
    );
    fleet.wait_versions("edge", "v2", &edges).await;
    fleet.wait_versions("connector", "v2", &connectors).await;

    // `rollout history` shows the same order to a person.
    let out = rollout(&fleet, &grafana, &["history", id.as_str()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("rollback_assign"))
        .collect();
    assert_eq!(lines.len(), 7, "{text}");
    assert!(lines[0].contains("conn-ams-1"), "{text}");
    assert!(lines[6].contains("edge-ams-1"), "{text}");
    assert!(text.contains("rolled_back"), "{text}");
    // And the list names both components of each rollout.
    let out = rollout(&fleet, &grafana, &["history"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout).into_owned();
    let top = list.lines().next().unwrap_or_default();
    assert!(
        top.starts_with(id.as_str())
            && top.contains("edge v3 then connector v3")
            && top.ends_with("rolled_back"),
        "{list}"
    );
    assert!(
        list.contains("edge v2 then connector v2  succeeded"),
        "{list}"
    );

    // 4. An edge release that exits at once: the canary's upgrade fails, its
    // old worker serves on (no request fails, on any edge), the Salt state
    // says why, and the rollout rolls back.
    let edge_v4 = fleet.release("edge", "v4", &["--fault-exit-at-start"]);
    EdgeSpec::new(&edge_v4, "3s").write(&spec);
    let load = Load::start(fleet.load_spec(200, Duration::from_secs(300)));
    let out = rollout(
        &fleet,
        &grafana,
        &["apply", "-f", spec.to_str().unwrap(), "--yes"],
    )
    .output()
    .unwrap();
    let report = load.stop().await;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    // The canary's state fails at the upgrade, and says it went back.
    assert!(
        stderr.contains("host edge-ams-1: failed state")
            && stderr.contains("edge upgrade")
            && stderr.contains("ROLLED BACK")
            && stderr.contains("keeps serving v2"),
        "{stderr}"
    );
    let (_, steps) = newest(&fleet).await;
    assert!(
        steps.iter().any(|s| s.event.kind == "rolled_back"),
        "{steps:#?}"
    );
    fleet.wait_versions("edge", "v2", &edges).await;
    eprintln!("a release that exits at once, under load: {report}");
    report.assert_no_failures();
    // 5. The counter-example: the same kind of load through a plain
    // stop-start of one edge (`supervisorctl restart`, no upgrade in place)
    // fails requests, refused while its ports are closed, and only there.
    let mut spec = fleet.rollout_load(Duration::from_secs(12));
    spec.mix.sse_events = 40;
    let load = Load::start(spec);
    tokio::time::sleep(Duration::from_secs(2)).await;
    fleet.restart_plainly("edge-fra-1").await;
    let report = load.finish().await;
    eprintln!("a plain stop-start of edge-fra-1 under load: {report}");
    assert!(
        !report.is_clean() && report.count("refused") > 0,
        "{report}"
    );
    assert!(
        report.failures.iter().all(|f| f.target == "edge-fra-1"),
        "{report}"
    );
}
