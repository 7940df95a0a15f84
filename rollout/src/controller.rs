//! The controller's view of the fleet: the inventory from Salt (minions and
//! grains) and Prometheus (`*_build_info`), and plans made from it with every
//! gate evaluated once, so a broken query fails the plan, not the rollout.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use crate::gate::Measurement;
use crate::grafana;
use crate::inventory::{Host, Inventory};
use crate::plan::{Fleet, GateCheck, Plan};
use crate::prometheus::Prometheus;
use crate::salt::SaltApi;
use crate::spec::{Component, Condition, Gate, GateSource, Part, Spec};

/// How long a minion has to answer `test.ping` when the inventory is taken.
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Why the fleet could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// Salt failed.
    #[error(transparent)]
    Salt(#[from] crate::salt::SaltError),
    /// Prometheus failed.
    #[error("reading versions from Prometheus: {0}")]
    Prometheus(#[from] crate::prometheus::PromError),
    /// The inventory is inconsistent.
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
}

/// The outside systems the controller talks to.
pub struct Controller {
    /// salt-api.
    pub salt: SaltApi,
    /// Prometheus.
    pub prometheus: Prometheus,
    /// Where dashboards for panel gates are read.
    pub dashboards: PathBuf,
    /// Alertmanager, polled for firing alerts while a rollout runs.
    pub alertmanager: Option<crate::alerts::Alertmanager>,
    /// Grafana, for annotations.
    pub grafana: Option<crate::annotations::GrafanaClient>,
}

impl Controller {
    /// The hosts every cohort targets (from the master's grains cache, so a
    /// stopped minion is still listed), whether each answers, and the
    /// version each runs according to Prometheus.
    pub async fn inventory(
        &self,
        spec: &Spec,
    ) -> Result<(Inventory, BTreeMap<String, Vec<String>>), ControllerError> {
        self.part_inventory(&spec.parts[0]).await
    }

    /// [`Controller::inventory`] of every component of the spec, in order:
    /// each with the hosts its cohorts target and the version of that
    /// component on each.
    pub async fn fleets(&self, spec: &Spec) -> Result<Vec<Fleet>, ControllerError> {
        let mut fleets = Vec::with_capacity(spec.parts.len());
        for part in &spec.parts {
            fleets.push(self.part_inventory(part).await?);
        }
        Ok(fleets)
    }

    /// The inventory of one component's cohorts.
    async fn part_inventory(&self, part: &Part) -> Result<Fleet, ControllerError> {
        let mut matches = BTreeMap::new();
        let mut grains = BTreeMap::new();
        for cohort in &part.cohorts {
            let found = self.salt.grains(&cohort.target).await?;
            matches.insert(
                cohort.name.clone(),
                found.keys().cloned().collect::<Vec<_>>(),
            );
            grains.extend(found);
        }
        // A minion whose id the controller would not target stays out of
        // the inventory; the plan names it under its cohort (still in
        // `matches`), and the plan cannot be applied until it is renamed or
        // left out of the target.
        grains.retain(|id, _| crate::minion::is_valid(id));
        let ids: Vec<String> = grains.keys().cloned().collect();
        let answered: BTreeSet<String> = if ids.is_empty() {
            BTreeSet::new()
        } else {
            self.salt
                .ping_list(&ids, PING_TIMEOUT)
                .await?
                .into_iter()
                .filter(|(_, up)| *up)
                .map(|(id, _)| id)
                .collect()
        };
        let versions = self.prometheus.versions(part.component.as_str()).await?;
        let hosts = grains
            .into_iter()
            .map(|(id, g)| Host {
                version: versions.get(&id).cloned(),
                reachable: answered.contains(&id),
                datacenter: g.datacenter,
                cohort: g.cohort,
                role: g.role,
                id,
            })
            .collect();
        Ok((Inventory::new(hosts)?, matches))
    }

    /// The plan for `spec` on the fleet as it is now, gates evaluated once.
    pub async fn plan(&self, spec: &Spec) -> Result<Plan, ControllerError> {
        let fleets = self.fleets(spec).await?;
        let mut plan = Plan::build_parts(spec, &fleets);
        // Every gate once; a panel gate whose query names `$component` or
        // `$version` once per component whose query differs.
        let mut seen = BTreeSet::new();
        for part in &spec.parts {
            for gate in &spec.gates {
                let resolved = self.resolve_for(gate, part.component, &part.version).await;
                let key = (
                    gate.name.clone(),
                    resolved.as_ref().map(|(q, c)| format!("{q} {c}")).ok(),
                );
                if !seen.insert(key) {
                    continue;
                }
                let name = if part.component == spec.component {
                    gate.name.clone()
                } else {
                    format!("{} ({})", gate.name, part.component)
                };
                let check = match resolved {
                    Ok((query, condition)) => {
                        let m = self.measure(&query, &condition).await;
                        GateCheck::from_measurement(&name, &query, &condition, &m)
                    }
                    Err(e) => GateCheck {
                        name,
                        query: String::new(),
                        value: None,
                        would_pass: None,
                        error: Some(e),
                    },
                };
                plan.record_gate(check);
            }
        }
        Ok(plan)
    }

    /// A gate's query and condition (a panel gate's from its dashboard, with
    /// `$version` and `$component` set to the spec's). The dashboard comes
    /// from the Grafana server when one is configured (what people watch
    /// there is what gates), else from the dashboards folder.
    pub async fn resolve(&self, gate: &Gate, spec: &Spec) -> Result<(String, Condition), String> {
        self.resolve_for(gate, spec.component, &spec.version).await
    }

    /// [`Controller::resolve`] for one component of a rollout of several:
    /// `$component` and `$version` are that component's.
    pub async fn resolve_for(
        &self,
        gate: &Gate,
        component: Component,
        version: &str,
    ) -> Result<(String, Condition), String> {
        match &gate.source {
            GateSource::Query { query, condition } => Ok((query.clone(), *condition)),
            GateSource::Grafana {
                dashboard,
                panel,
                condition,
            } => {
                let vars = grafana::Variables::from([
                    ("version", version.to_string()),
                    ("component", component.as_str().to_string()),
                ]);
                let p = match &self.grafana {
                    Some(server) => {
                        let model = server
                            .dashboard(dashboard)
                            .await
                            .map_err(|e| format!("dashboard `{dashboard}`: {e}"))?;
                        grafana::from_dashboard(&model, dashboard, panel, &vars)
                    }
                    None => grafana::panel_gate(&self.dashboards, dashboard, panel, &vars),
                }
                .map_err(|e| e.to_string())?;
                Ok((p.query, condition.unwrap_or(p.condition)))
            }
        }
    }

    /// One measurement: the sample that breaks the condition if any does,
    /// else the first; NaN (0/0, no traffic) and an empty result are no data.
    pub async fn measure(&self, query: &str, condition: &Condition) -> Measurement {
        match self.prometheus.query(query).await {
            Err(e) => Measurement::QueryError(e.to_string()),
            Ok(samples) => {
                let values: Vec<f64> = samples
                    .iter()
                    .map(|s| s.value)
                    .filter(|v| !v.is_nan())
                    .collect();
                match values
                    .iter()
                    .find(|v| !condition.holds(**v))
                    .or(values.first())
                {
                    Some(v) => Measurement::Value(*v),
                    None => Measurement::NoData,
                }
            }
        }
    }
}
