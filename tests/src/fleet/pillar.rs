//! The fleet's source of assigned versions is the rollout controller: its
//! store, served by `rollout serve` at `GET /pillar/<minion id>`, which the
//! master reads through the `cmd_json` ext_pillar. The harness seeds and
//! changes assignments through the same store.

use serde_json::{Value, json};

/// A release as the states take it from pillar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// `edge` or `connector`.
    pub component: String,
    /// Its version.
    pub version: String,
    /// `salt://releases/...` URL of the tarball.
    pub source: String,
    /// SHA-256 of the tarball.
    pub sha256: String,
}

impl Release {
    /// The pillar value.
    pub fn pillar(&self) -> Value {
        json!({"version": self.version, "source": self.source, "sha256": self.sha256})
    }

    /// As the store keeps it.
    pub fn stored(&self) -> rollout::store::Release {
        rollout::store::Release {
            version: self.version.clone(),
            source: self.source.clone(),
            sha256: self.sha256.clone(),
        }
    }

    /// Its component.
    pub fn component(&self) -> rollout::spec::Component {
        if self.component == "edge" {
            rollout::spec::Component::Edge
        } else {
            rollout::spec::Component::Connector
        }
    }
}
