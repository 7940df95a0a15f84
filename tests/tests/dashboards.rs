//! The Grafana dashboards in grafana/: type-checked against Grafana's own
//! `Dashboard` type by scripts/check-dashboards, and the invariants the
//! rollout controller relies on when a gate names a panel (stable uids,
//! unique panel ids and titles, the fleet variables, a first target `expr`
//! free of Grafana-only macros, a red threshold step).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tests::bins::workspace;
use tests::workdir::Workdir;

/// File name and the uid the controller's gates refer to.
const DASHBOARDS: [(&str, &str); 3] = [
    ("edge.json", "warren-edge"),
    ("connector.json", "warren-connector"),
    ("rollout.json", "warren-rollout"),
];

/// Template variables a panel expr may use; the controller substitutes them.
/// `$__rate_interval` is Grafana's, but the controller knows it too.
const ALLOWED_MACROS: [&str; 5] = [
    "datacenter",
    "cohort",
    "version",
    "component",
    "__rate_interval",
];

fn dashboards_dir() -> PathBuf {
    workspace().join("grafana/dashboards")
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboards() -> Vec<(&'static str, &'static str, Value)> {
    DASHBOARDS
        .iter()
        .map(|&(file, uid)| (file, uid, load(&dashboards_dir().join(file))))
        .collect()
}

/// Runs scripts/check-dashboards, on `dir` or on its default folder.
fn check_dashboards(dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(workspace().join("scripts/check-dashboards"));
    if let Some(dir) = dir {
        cmd.arg(dir);
    }
    cmd.output().expect("run scripts/check-dashboards")
}

fn describe(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn panels(dashboard: &Value) -> &Vec<Value> {
    dashboard["panels"].as_array().expect("panels is an array")
}

fn title(panel: &Value) -> &str {
    panel["title"].as_str().expect("panel title is a string")
}

fn panel<'a>(dashboard: &'a Value, wanted: &str) -> &'a Value {
    panels(dashboard)
        .iter()
        .find(|p| title(p) == wanted)
        .unwrap_or_else(|| panic!("no panel titled {wanted:?}"))
}

/// The value of the panel's red threshold step: what a gate compares with.
fn red_threshold(panel: &Value) -> Option<f64> {
    panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()?
        .iter()
        .find(|s| s["color"] == "red")
        .and_then(|s| s["value"].as_f64())
}

/// The names after each `$` (or inside `${...}`) in a PromQL expr.
fn macros(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let braced = rest.starts_with('{');
        let body = if braced { &rest[1..] } else { rest };
        let name: String = body
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        names.push(if braced && !body[name.len()..].starts_with('}') {
            format!("{{{name}...")
        } else {
            name
        });
    }
    names
}

#[test]
fn dashboards_type_check_against_grafanas_schema() {
    let out = check_dashboards(None);
    assert!(out.status.success(), "{}", describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for (file, _, _) in dashboards() {
        assert!(
            stdout
                .lines()
                .any(|l| l.trim_start().starts_with("ok") && l.ends_with(file)),
            "{file} not reported as checked\n{}",
            describe(&out)
        );
    }
    assert!(stdout.contains("@grafana/schema"), "{}", describe(&out));
}

#[test]
fn dashboards_have_stable_uids_unique_panels_variables_and_red_thresholds() {
    let dir_files: BTreeSet<String> = std::fs::read_dir(dashboards_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    let expected: BTreeSet<String> = DASHBOARDS.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(dir_files, expected, "dashboards in grafana/dashboards");

    let mut uids = BTreeSet::new();
    for (file, uid, d) in dashboards() {
        assert_eq!(d["uid"], uid, "{file}: uid");
        assert!(uids.insert(uid), "{file}: duplicate uid");
        assert!(
            d["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: title"
        );

        // Variables: a Prometheus data source picker defaulting to the
        // provisioned uid, and the fleet filters from *_build_info.
        let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: templating.list"))
            .iter()
            .map(|v| (v["name"].as_str().expect("variable name"), v))
            .collect();
        let ds = vars
            .get("datasource")
            .unwrap_or_else(|| panic!("{file}: no datasource variable"));
        assert_eq!(ds["type"], "datasource", "{file}: datasource variable");
        assert_eq!(ds["query"], "prometheus", "{file}: datasource variable");
        assert_eq!(
            ds["current"]["value"], "prometheus",
            "{file}: datasource default"
        );
        for name in ["datacenter", "cohort", "version"] {
            let v = vars
                .get(name)
                .unwrap_or_else(|| panic!("{file}: no {name} variable"));
            let query = v["query"].as_str().unwrap_or_default();
            assert_eq!(v["type"], "query", "{file}: {name}");
            assert_eq!(v["multi"], true, "{file}: {name} multi-select");
            assert_eq!(v["includeAll"], true, "{file}: {name} All");
            assert_eq!(v["datasource"]["uid"], "${datasource}", "{file}: {name}");
            assert!(
                query.starts_with("label_values(")
                    && query.contains("_build_info")
                    && query.ends_with(&format!(", {name})")),
                "{file}: {name} query {query:?}"
            );
        }
        if uid == "warren-rollout" {
            let c = vars.get("component").expect("rollout: component variable");
            let query = c["query"].as_str().unwrap_or_default();
            let values: BTreeSet<&str> = query.split(',').map(str::trim).collect();
            assert_eq!(values, BTreeSet::from(["edge", "connector"]), "component");
        }

        // Panels: unique numeric ids and titles, a unit, absolute
        // thresholds starting at a null base, exprs the controller can run.
        let mut ids = BTreeSet::new();
        let mut titles = BTreeSet::new();
        let mut reds = 0;
        for p in panels(&d) {
            let t = title(p);
            let id = p["id"]
                .as_u64()
                .unwrap_or_else(|| panic!("{file}: {t:?} id is not a number"));
            assert!(ids.insert(id), "{file}: duplicate panel id {id}");
            assert!(
                !t.is_empty() && titles.insert(t),
                "{file}: empty or duplicate title {t:?}"
            );
            assert!(
                ["timeseries", "stat"].contains(&p["type"].as_str().unwrap_or_default()),
                "{file}: {t:?} type"
            );
            let defaults = &p["fieldConfig"]["defaults"];
            assert!(
                defaults["unit"].as_str().is_some_and(|u| !u.is_empty()),
                "{file}: {t:?} unit"
            );
            let th = &defaults["thresholds"];
            assert_eq!(th["mode"], "absolute", "{file}: {t:?} thresholds mode");
            let steps = th["steps"].as_array().expect("thresholds.steps");
            assert!(
                steps.first().is_some_and(|s| s["value"].is_null()),
                "{file}: {t:?} first step must be the null base"
            );
            let values: Vec<f64> = steps[1..]
                .iter()
                .map(|s| s["value"].as_f64().expect("step value"))
                .collect();
            assert!(
                values.windows(2).all(|w| w[0] < w[1]),
                "{file}: {t:?} steps not ascending"
            );
            if red_threshold(p).is_some() {
                reds += 1;
            }

            let targets = p["targets"].as_array().expect("targets");
            assert!(!targets.is_empty(), "{file}: {t:?} has no target");
            for target in targets {
                let expr = target["expr"].as_str().unwrap_or_default();
                assert!(!expr.trim().is_empty(), "{file}: {t:?} empty expr");
                for m in macros(expr) {
                    assert!(
                        ALLOWED_MACROS.contains(&m.as_str()),
                        "{file}: {t:?} uses ${m}, which the controller cannot substitute: {expr}"
                    );
                }
                if expr.contains("edge_") || expr.contains("connector_") {
                    assert!(
                        expr.contains("datacenter=~\"$datacenter\"")
                            && expr.contains("cohort=~\"$cohort\""),
                        "{file}: {t:?} ignores the datacenter/cohort filters: {expr}"
                    );
                }
            }
        }
        assert!(reds > 0, "{file}: no panel has a red threshold");
    }
}

#[test]
fn gate_panels_have_the_agreed_queries_and_thresholds() {
    let all = dashboards();
    let by_uid = |uid: &str| &all.iter().find(|(_, u, _)| *u == uid).unwrap().2;
    let first_expr = |p: &Value| p["targets"][0]["expr"].as_str().unwrap().to_string();

    for (uid, component) in [("warren-edge", "edge"), ("warren-connector", "connector")] {
        let d = by_uid(uid);
        let errors = panel(d, "Error ratio (5xx)");
        assert_eq!(red_threshold(errors), Some(0.05), "{uid}: error ratio red");
        let m = r#"datacenter=~"$datacenter",cohort=~"$cohort""#;
        assert_eq!(
            first_expr(errors),
            format!(
                r#"(sum(rate({component}_requests_total{{status_class="5xx",{m}}}[1m])) or sum(rate({component}_requests_total{{{m}}}[1m])) * 0) / sum(rate({component}_requests_total{{{m}}}[1m]))"#
            )
        );
        let p99 = panel(d, "p99 latency");
        assert_eq!(red_threshold(p99), Some(0.5), "{uid}: p99 red");
        assert_eq!(
            first_expr(p99),
            format!(
                "histogram_quantile(0.99, sum by (le) (rate({component}_request_duration_seconds_bucket{{{m}}}[1m])))"
            )
        );
        assert!(
            first_expr(panel(d, "Versions running per data center")).starts_with(&format!(
                "count by (datacenter, version) ({component}_build_info{{"
            ))
        );
    }
    let rollout = by_uid("warren-rollout");
    assert_eq!(
        first_expr(panel(rollout, "Rollout state")),
        r#"rollout_state{component=~"$component"} == 1"#
    );
    assert!(first_expr(panel(rollout, "Time in state")).contains("rollout_state_duration_seconds"));
    assert_eq!(
        first_expr(panel(rollout, "Edge error ratio (5xx)")),
        first_expr(panel(by_uid("warren-edge"), "Error ratio (5xx)")),
        "the rollout dashboard shows the edge gate's own query"
    );
}

#[test]
fn every_panel_query_parses_as_promql() {
    // promtool (from scripts/setup) parses each expr as a recording rule,
    // with the variables replaced the way an "All" selection expands.
    let work = Workdir::new("dashboards-promql");
    let mut rules = Vec::new();
    for (file, _, d) in dashboards() {
        for p in panels(&d) {
            for (i, target) in p["targets"].as_array().unwrap().iter().enumerate() {
                let expr = tests::dashboards::with_all_selected(target["expr"].as_str().unwrap());
                let record = format!("check:{}:{}:{i}", file.trim_end_matches(".json"), p["id"]);
                rules.push(serde_json::json!({ "record": record, "expr": expr }));
            }
        }
    }
    let count = rules.len();
    let doc = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    let path = work.join("rules.yml");
    std::fs::write(&path, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .expect("promtool (installed by scripts/setup)");
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("{count} rules found")),
        "{}",
        describe(&out)
    );
}

#[test]
fn provisioning_points_at_the_dashboards_and_the_prometheus_uid() {
    let yaml = |rel: &str| -> serde_yaml::Value {
        let path = workspace().join("grafana/provisioning").join(rel);
        serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    };
    let ds = yaml("datasources/prometheus.yaml");
    let prom = &ds["datasources"][0];
    assert_eq!(prom["uid"].as_str(), Some("prometheus"));
    assert_eq!(prom["type"].as_str(), Some("prometheus"));

    let dash = yaml("dashboards/warren.yaml");
    let provider = &dash["providers"][0];
    assert_eq!(provider["type"].as_str(), Some("file"));
    assert!(
        provider["options"]["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("dashboards"))
    );
}

/// Breaks a dashboard's type in one place.
type Breakage = fn(&mut Value);

#[test]
fn the_checker_rejects_a_dashboard_of_the_wrong_type() {
    let edge = load(&dashboards_dir().join("edge.json"));
    let connector = std::fs::read_to_string(dashboards_dir().join("connector.json")).unwrap();

    // Each case: a folder with the intact connector dashboard and an edge
    // dashboard broken one way.
    let cases: [(&str, Breakage); 4] = [
        ("panel id is a string", |d| {
            d["panels"][0]["id"] = "x".into()
        }),
        ("panels is a number", |d| d["panels"] = 3.into()),
        ("unknown threshold mode", |d| {
            d["panels"][0]["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut".into()
        }),
        ("misspelt fieldConfig", |d| {
            let p = d["panels"][0].as_object_mut().unwrap();
            let fc = p.remove("fieldConfig").unwrap();
            p.insert("fieldconfig".into(), fc);
        }),
    ];
    let work = Workdir::new("dashboards-broken");
    for (i, (what, breaks)) in cases.into_iter().enumerate() {
        let dir = work.join(&format!("case{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut broken = edge.clone();
        breaks(&mut broken);
        std::fs::write(
            dir.join("edge.json"),
            serde_json::to_string_pretty(&broken).unwrap(),
        )
        .unwrap();
        std::fs::write(dir.join("connector.json"), &connector).unwrap();

        let out = check_dashboards(Some(&dir));
        let text = describe(&out);
        assert_eq!(out.status.code(), Some(1), "{what}: {text}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("FAIL") && l.ends_with("edge.json")),
            "{what}: edge.json not named as failing\n{text}"
        );
        assert!(
            stdout
                .lines()
                .any(|l| l.contains("ok") && l.ends_with("connector.json")),
            "{what}: the intact dashboard should still pass\n{text}"
        );
        assert!(
            stderr.contains("edge.json:") && stderr.contains("error TS"),
            "{what}: no tsc error pointing into edge.json\n{text}"
        );
    }
}
