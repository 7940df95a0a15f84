//! Rollout specs for the fleet: its three cohorts (the canary edge, then
//! ams and fra, then the rest), written the way an operator would.

use super::Release;

/// An edge rollout over the fleet's three cohorts.
#[derive(Debug, Clone)]
pub struct EdgeSpec {
    release: Release,
    bakes: [String; 3],
    middle_batch: String,
    gates: String,
    rollback_alerts: Vec<String>,
}

impl EdgeSpec {
    /// `release` over the three cohorts, each baking `bake`, no gates.
    pub fn new(release: &Release, bake: &str) -> EdgeSpec {
        EdgeSpec {
            release: release.clone(),
            bakes: [bake.into(), bake.into(), bake.into()],
            middle_batch: "2".into(),
            gates: String::new(),
            rollback_alerts: Vec::new(),
        }
    }

    /// A bake per cohort, in order.
    pub fn bakes(mut self, canary: &str, middle: &str, rest: &str) -> EdgeSpec {
        self.bakes = [canary.into(), middle.into(), rest.into()];
        self
    }

    /// The batch size of the ams-fra cohort (`2`, `50%`).
    pub fn middle_batch(mut self, batch: &str) -> EdgeSpec {
        self.middle_batch = batch.into();
        self
    }

    /// Gate list items, as YAML indented by two spaces (`  - name: ...`).
    pub fn gates(mut self, yaml: &str) -> EdgeSpec {
        self.gates = yaml.into();
        self
    }

    /// An alert selector that rolls back at once.
    pub fn rollback_alert(mut self, selector: &str) -> EdgeSpec {
        self.rollback_alerts.push(selector.into());
        self
    }

    /// The spec's YAML text.
    pub fn yaml(&self) -> String {
        let r = &self.release;
        let [canary, middle, rest] = &self.bakes;
        let mut text = format!(
            "component: edge\nversion: {}\nartifact:\n  url: {}\n  sha256: {}\n\
             cohorts:\n\
             \x20 - name: canary\n    target: G@cohort:canary and G@role:edge\n    batch: 1\n    bake: {canary}\n\
             \x20 - name: ams-fra\n    target: G@role:edge and ( G@datacenter:ams or G@datacenter:fra )\n    batch: {}\n    bake: {middle}\n\
             \x20 - name: rest\n    target: G@role:edge\n    batch: 100%\n    bake: {rest}\n",
            r.version, r.source, r.sha256, self.middle_batch
        );
        if !self.gates.is_empty() {
            text.push_str("gates:\n");
            text.push_str(&self.gates);
            if !self.gates.ends_with('\n') {
                text.push('\n');
            }
        }
        if !self.rollback_alerts.is_empty() {
            text.push_str("rollback:\n  alerts:\n");
            for a in &self.rollback_alerts {
                text.push_str(&format!("    - '{a}'\n"));
            }
        }
        text.push_str("timeouts:\n  salt_job: 2m\n  version_confirm: 1m\n");
        text
    }

    /// Writes the spec to `path`.
    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.yaml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// One rollout of edge then connector (`components:`): the edge over the
/// fleet's three cohorts as in [`EdgeSpec`], then the connector's canary
/// replica, then the other one.
#[derive(Debug, Clone)]
pub struct ComponentsSpec {
    edge: Release,
    connector: Release,
    bake: String,
    gates: String,
}

impl ComponentsSpec {
    /// `edge` then `connector`, every cohort baking `bake`, no gates.
    pub fn new(edge: &Release, connector: &Release, bake: &str) -> ComponentsSpec {
        ComponentsSpec {
            edge: edge.clone(),
            connector: connector.clone(),
            bake: bake.into(),
            gates: String::new(),
        }
    }

    /// Gate list items, as YAML indented by two spaces (`  - name: ...`).
    pub fn gates(mut self, yaml: &str) -> ComponentsSpec {
        self.gates = yaml.into();
        self
    }

    /// The spec's YAML text.
    pub fn yaml(&self) -> String {
        let (e, c, bake) = (&self.edge, &self.connector, &self.bake);
        let mut text = format!(
            "components:\n\
             \x20 - component: edge\n    version: {}\n    artifact:\n      url: {}\n      sha256: {}\n    cohorts:\n\
             \x20     - name: canary\n        target: G@cohort:canary and G@role:edge\n        batch: 1\n        bake: {bake}\n\
             \x20     - name: ams-fra\n        target: G@role:edge and ( G@datacenter:ams or G@datacenter:fra )\n        batch: 2\n        bake: {bake}\n\
             \x20     - name: rest\n        target: G@role:edge\n        batch: 100%\n        bake: {bake}\n\
             \x20 - component: connector\n    version: {}\n    artifact:\n      url: {}\n      sha256: {}\n    cohorts:\n\
             \x20     - name: canary\n        target: G@cohort:canary and G@role:connector\n        batch: 1\n        bake: {bake}\n\
             \x20     - name: rest\n        target: G@role:connector\n        batch: 1\n        bake: {bake}\n",
            e.version, e.source, e.sha256, c.version, c.source, c.sha256
        );
        if !self.gates.is_empty() {
            text.push_str("gates:\n");
            text.push_str(&self.gates);
            if !self.gates.ends_with('\n') {
                text.push('\n');
            }
        }
        text.push_str("timeouts:\n  salt_job: 2m\n  version_confirm: 1m\n");
        text
    }

    /// Writes the spec to `path`.
    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, self.yaml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}
