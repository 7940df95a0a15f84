//! Gates from Grafana dashboard panels: what people watch is what gates.
//! A panel gate takes the panel's first query and its red threshold from
//! the dashboard JSON in the `grafana/` folder, or from the Grafana server
//! when one is configured (see `Controller::resolve`).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::spec::{CompareOp, Condition};

/// A panel resolved into a gate query and condition.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelGate {
    /// The panel's first query, with dashboard variables matching everything.
    pub query: String,
    /// `< red` from the panel's thresholds (the value must stay below red).
    pub condition: Condition,
}

/// Why a panel could not be used as a gate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PanelError {
    /// No dashboard with that uid in the folder.
    #[error("no dashboard with uid `{uid}` in {dir}")]
    NoDashboard {
        /// The uid.
        uid: String,
        /// The folder searched.
        dir: String,
    },
    /// No panel with that title.
    #[error("dashboard `{uid}` has no panel titled `{title}`")]
    NoPanel {
        /// Dashboard uid.
        uid: String,
        /// Panel title.
        title: String,
    },
    /// The panel has no query or no red threshold.
    #[error("panel `{title}` of `{uid}` {what}")]
    Unusable {
        /// Dashboard uid.
        uid: String,
        /// Panel title.
        title: String,
        /// What is missing.
        what: &'static str,
    },
}

/// The dashboards folder of the repository (or `WARREN_DASHBOARDS`).
pub fn default_dir() -> PathBuf {
    std::env::var_os("WARREN_DASHBOARDS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("grafana/dashboards"))
}

/// Dashboard variables with a value for a gate: the rollout's `version`
/// and `component`. Every other variable matches everything.
pub type Variables = std::collections::BTreeMap<&'static str, String>;

/// Finds dashboard `uid` in `dir` and turns panel `title` into a gate.
pub fn panel_gate(
    dir: &Path,
    uid: &str,
    title: &str,
    vars: &Variables,
) -> Result<PanelGate, PanelError> {
    let dashboard = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| {
            serde_json::from_str::<Value>(&std::fs::read_to_string(e.path()).ok()?).ok()
        })
        .find(|d| d["uid"] == uid)
        .ok_or_else(|| PanelError::NoDashboard {
            uid: uid.into(),
            dir: dir.display().to_string(),
        })?;
    from_dashboard(&dashboard, uid, title, vars)
}

/// Turns panel `title` of a dashboard model into a gate.
pub fn from_dashboard(
    dashboard: &Value,
    uid: &str,
    title: &str,
    vars: &Variables,
) -> Result<PanelGate, PanelError> {
    let unusable = |what| PanelError::Unusable {
        uid: uid.into(),
        title: title.into(),
        what,
    };
    let panel = dashboard["panels"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten()))
        .find(|p| p["title"] == title)
        .ok_or_else(|| PanelError::NoPanel {
            uid: uid.into(),
            title: title.into(),
        })?;
    let expr = panel["targets"][0]["expr"]
        .as_str()
        .ok_or_else(|| unusable("has no Prometheus query"))?;
    let red = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["color"] == "red")
        .and_then(|s| s["value"].as_f64())
        .ok_or_else(|| unusable("has no red threshold step"))?;
    Ok(PanelGate {
        query: expand_variables(expr, vars),
        condition: Condition {
            op: CompareOp::Lt,
            threshold: red,
        },
    })
}

/// Replaces `$name` and `${name}` dashboard variables: those in `vars` with
/// their value, regex-escaped, the rest with `.*`, so a panel filtered by
/// `$version` measures the release being rolled out across the whole fleet
/// (every variable is used inside `=~` matchers).
fn expand_variables(expr: &str, vars: &Variables) -> String {
    let mut out = String::with_capacity(expr.len());
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let mut name = String::new();
        if chars.peek() == Some(&'{') {
            chars.next();
            for c in chars.by_ref() {
                if c == '}' {
                    break;
                }
                name.push(c);
            }
        } else {
            while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                name.push(c);
            }
        }
        match vars.get(name.as_str()) {
            Some(v) => out.push_str(&regex::escape(v)),
            None => out.push_str(".*"),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn takes_the_first_query_and_the_red_step() {
        let d = json!({"uid": "d", "panels": [{"title": "Error ratio", "targets": [{"expr": "sum(rate(x{dc=~\"$datacenter\",c=~\"${cohort}\"}[1m]))"}],
            "fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [{"color": "green", "value": null}, {"color": "red", "value": 0.05}]}}}}]});
        let none = Variables::new();
        let g = from_dashboard(&d, "d", "Error ratio", &none).unwrap();
        assert_eq!(g.query, "sum(rate(x{dc=~\".*\",c=~\".*\"}[1m]))");
        assert!(g.condition.holds(0.01) && !g.condition.holds(0.05));
        let pinned = Variables::from([("cohort", "v1.2".to_string())]);
        let g = from_dashboard(&d, "d", "Error ratio", &pinned).unwrap();
        assert_eq!(g.query, "sum(rate(x{dc=~\".*\",c=~\"v1\\.2\"}[1m]))");
        assert!(matches!(
            from_dashboard(&d, "d", "Nope", &none),
            Err(PanelError::NoPanel { .. })
        ));
    }

    #[test]
    fn the_repository_dashboards_give_gates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../grafana/dashboards");
        let none = Variables::new();
        let g = panel_gate(&dir, "warren-edge", "Error ratio (5xx)", &none).unwrap();
        assert!(g.query.contains("edge_requests_total"), "{}", g.query);
        assert_eq!(g.condition.threshold, 0.05);
        assert!(matches!(
            panel_gate(&dir, "nope", "x", &none),
            Err(PanelError::NoDashboard { .. })
        ));
    }
}
