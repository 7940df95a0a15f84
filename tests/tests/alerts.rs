//! The alerting assets in `alerts/`: the rules load, their unit tests pass,
//! every alert has a unit test that makes it fire and one where it stays
//! quiet, every alert carries the labels the routing and the rollout
//! controller rely on, and the Alertmanager example is valid and routes pages
//! to the controller.
//!
//! Needs `promtool` and `amtool` on PATH (Debian's `prometheus` and
//! `prometheus-alertmanager`); a missing tool fails the test rather than
//! skipping it, so a green run means the checks ran.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;
use tests::bins::workspace;

fn alerts_dir() -> PathBuf {
    workspace().join("alerts")
}

/// The `.yml`/`.yaml` files directly in `alerts/<sub>`, sorted; fails when
/// there are none, so a walk that finds nothing cannot pass vacuously.
fn yaml_files(sub: &str) -> Vec<PathBuf> {
    let dir = alerts_dir().join(sub);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no YAML files in {}", dir.display());
    files
}

/// The full path of `name` found on PATH.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is not on PATH: install prometheus and prometheus-alertmanager")
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

fn seq<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_sequence)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn string<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// One alerting rule as written in alerts/rules.
struct Alert {
    file: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    let Some(m) = v.and_then(Value::as_mapping) else {
        return BTreeMap::new();
    };
    m.iter()
        .filter_map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            Some((k.as_str()?.to_owned(), v))
        })
        .collect()
}

/// Every alert in alerts/rules by name; fails on a name defined twice.
fn alerts() -> BTreeMap<String, Alert> {
    let mut out = BTreeMap::new();
    for path in yaml_files("rules") {
        let doc = load(&path);
        for group in seq(&doc, "groups") {
            for rule in seq(group, "rules") {
                let Some(alert) = string(rule, "alert") else {
                    continue;
                };
                let a = Alert {
                    file: name(&path),
                    labels: string_map(rule.get("labels")),
                    annotations: string_map(rule.get("annotations")),
                };
                if let Some(first) = out.insert(alert.to_owned(), a) {
                    panic!("alert {alert} is defined twice (also in {})", first.file);
                }
            }
        }
    }
    assert!(!out.is_empty(), "alerts/rules defines no alert");
    out
}

/// Alert names that some unit test expects to fire, and names that some unit
/// test expects to stay quiet (`exp_alerts: []` or no `exp_alerts`).
fn expectations() -> (BTreeSet<String>, BTreeSet<String>) {
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for path in yaml_files("tests") {
        let doc = load(&path);
        for test in seq(&doc, "tests") {
            for t in seq(test, "alert_rule_test") {
                let alert = string(t, "alertname")
                    .unwrap_or_else(|| panic!("{}: alert_rule_test without alertname", name(&path)))
                    .to_owned();
                let exp = seq(t, "exp_alerts");
                if exp.is_empty() {
                    quiet.insert(alert);
                } else {
                    // Every expected alert names at least its own labels.
                    for e in exp {
                        assert!(
                            e.get("exp_labels").is_some_and(Value::is_mapping),
                            "{}: an exp_alerts entry of {alert} has no exp_labels",
                            name(&path)
                        );
                    }
                    firing.insert(alert);
                }
            }
        }
    }
    (firing, quiet)
}

#[test]
fn promtool_check_rules_accepts_every_rules_file() {
    let promtool = tool("promtool");
    let files = yaml_files("rules");
    for path in &files {
        let out = run(Command::new(&promtool).args(["check", "rules"]).arg(path));
        assert!(out.status.success(), "{}: {}", name(path), show(&out));
    }
}

#[test]
fn promtool_unit_tests_pass() {
    let promtool = tool("promtool");
    for path in yaml_files("tests") {
        // rule_files are relative to the test file; run from its folder too.
        let out = run(Command::new(&promtool)
            .args(["test", "rules"])
            .arg(&path)
            .current_dir(path.parent().unwrap()));
        assert!(out.status.success(), "{}: {}", name(&path), show(&out));
    }
}

#[test]
fn unit_tests_load_the_real_rules_files() {
    let rules_dir = alerts_dir().join("rules").canonicalize().unwrap();
    let mut covered = BTreeSet::new();
    for path in yaml_files("tests") {
        let doc = load(&path);
        let files = seq(&doc, "rule_files");
        assert!(!files.is_empty(), "{}: no rule_files", name(&path));
        for f in files {
            let f = f.as_str().expect("rule_files holds paths");
            let p = path.parent().unwrap().join(f);
            let p = p
                .canonicalize()
                .unwrap_or_else(|e| panic!("{}: rule file {f}: {e}", name(&path)));
            assert_eq!(
                p.parent(),
                Some(rules_dir.as_path()),
                "{}: {f} is not in alerts/rules",
                name(&path)
            );
            covered.insert(p);
        }
    }
    for path in yaml_files("rules") {
        assert!(
            covered.contains(&path.canonicalize().unwrap()),
            "no unit test loads rules/{}",
            name(&path)
        );
    }
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_unit_test() {
    let alerts = alerts();
    let (firing, quiet) = expectations();
    let no_firing: Vec<&String> = alerts.keys().filter(|a| !firing.contains(*a)).collect();
    let no_quiet: Vec<&String> = alerts.keys().filter(|a| !quiet.contains(*a)).collect();
    assert!(
        no_firing.is_empty(),
        "alerts without a unit test that expects them to fire: {no_firing:?}"
    );
    assert!(
        no_quiet.is_empty(),
        "alerts without a unit test that expects them to stay quiet: {no_quiet:?}"
    );
    // A test of an alert that does not exist is a typo that tests nothing.
    let unknown: Vec<&String> = firing
        .iter()
        .chain(&quiet)
        .filter(|a| !alerts.contains_key(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "unit tests of unknown alerts: {unknown:?}"
    );
}

#[test]
fn every_alert_carries_component_datacenter_severity_and_a_summary() {
    let mut problems = Vec::new();
    for (alert, a) in alerts() {
        let label = |k: &str| a.labels.get(k).map(String::as_str).unwrap_or("");
        if !["edge", "connector", "rollout"].contains(&label("component")) {
            problems.push(format!(
                "{} {alert}: component {:?} is not edge|connector|rollout",
                a.file,
                label("component")
            ));
        }
        let dc = label("datacenter");
        if dc != "all" && !dc.contains("$labels.datacenter") {
            problems.push(format!(
                "{} {alert}: datacenter {dc:?} is neither \"all\" nor the series' datacenter",
                a.file
            ));
        }
        if !["page", "ticket"].contains(&label("severity")) {
            problems.push(format!(
                "{} {alert}: severity {:?} is not page|ticket",
                a.file,
                label("severity")
            ));
        }
        for k in ["summary", "description"] {
            if a.annotations.get(k).is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{} {alert}: no {k} annotation", a.file));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn release_guards_page_per_version() {
    let alerts = alerts();
    for alert in [
        "EdgeReleaseErrorRatioHigh",
        "ConnectorReleaseErrorRatioHigh",
    ] {
        let a = alerts
            .get(alert)
            .unwrap_or_else(|| panic!("{alert} is missing"));
        assert_eq!(a.labels.get("severity").map(String::as_str), Some("page"));
        assert!(
            a.labels
                .get("version")
                .is_some_and(|v| v.contains("$labels.version")),
            "{alert} must carry the version label"
        );
    }
}

#[test]
fn amtool_accepts_the_alertmanager_example() {
    let amtool = tool("amtool");
    let config = alerts_dir().join("alertmanager.yml");
    let out = run(Command::new(&amtool).arg("check-config").arg(&config));
    assert!(out.status.success(), "{}", show(&out));
}

#[test]
fn pages_go_to_the_rollout_controller_and_nothing_else_does() {
    let amtool = tool("amtool");
    let config = alerts_dir().join("alertmanager.yml");
    let receiver = |labels: &[&str]| {
        let out = run(Command::new(&amtool)
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", config.display()))
            .args(labels));
        assert!(out.status.success(), "{labels:?}: {}", show(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let page = receiver(&[
        "alertname=EdgeReleaseErrorRatioHigh",
        "component=edge",
        "datacenter=all",
        "severity=page",
    ]);
    let ticket = receiver(&[
        "alertname=ConnectorFewerThanTwoEdges",
        "component=connector",
        "datacenter=ams",
        "severity=ticket",
    ]);
    assert_ne!(page, ticket, "pages and tickets reach the same receiver");

    // The page receiver is the controller's authenticated webhook.
    let doc = load(&config);
    let rx = seq(&doc, "receivers")
        .iter()
        .find(|r| string(r, "name") == Some(page.as_str()))
        .unwrap_or_else(|| panic!("receiver {page} is not defined"));
    let hooks = seq(rx, "webhook_configs");
    assert_eq!(hooks.len(), 1, "{page}: {hooks:?}");
    let hook = &hooks[0];
    // `rollout serve`'s default listen address and its webhook path.
    assert_eq!(
        string(hook, "url"),
        Some(&format!("http://127.0.0.1:9099{}", rollout::api::WEBHOOK_PATH)[..])
    );
    let auth = hook
        .get("http_config")
        .and_then(|h| h.get("authorization"))
        .expect("the webhook authenticates");
    assert_eq!(string(auth, "type"), Some("Bearer"));
    assert_eq!(
        string(auth, "credentials_file"),
        Some("/etc/warren/webhook.token")
    );

    // Anything that is not a page reaches a receiver that sends nowhere.
    let rx = seq(&doc, "receivers")
        .iter()
        .find(|r| string(r, "name") == Some(ticket.as_str()))
        .unwrap_or_else(|| panic!("receiver {ticket} is not defined"));
    let configs: Vec<&Value> = rx
        .as_mapping()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != Some("name"))
        .map(|(_, v)| v)
        .collect();
    assert!(configs.is_empty(), "{ticket} sends somewhere: {configs:?}");

    // Grouping as the controller expects: one notification per alert,
    // component and datacenter.
    let group_by: Vec<&str> = seq(doc.get("route").unwrap(), "group_by")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(group_by, ["alertname", "component", "datacenter"]);
}
