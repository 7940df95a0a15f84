//! The plan: deterministic and pure. From a checked spec, the inventory and
//! the minion ids each cohort's Salt target matched, it lays out stages (one
//! per cohort, in spec order), batches and hosts in sorted order. Hosts on
//! the target version are skipped; unreachable hosts make the plan not
//! executable. The plan records the inventory it saw, so `apply` can refuse
//! when the fleet drifted since.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::gate::Measurement;
use crate::inventory::Inventory;
use crate::spec::{Component, Condition, Part, Spec};

/// One batch: hosts updated together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// Position in its stage, from 0.
    pub index: usize,
    /// Minion ids, sorted.
    pub hosts: Vec<String>,
}

/// One stage: one cohort.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Cohort name.
    pub cohort: String,
    /// Salt target of the cohort.
    pub target: String,
    /// Batch size as written (`2`, `50%`).
    pub batch_size: String,
    /// Hosts per batch after applying the size to the eligible hosts.
    pub hosts_per_batch: usize,
    /// Bake time of each batch.
    #[serde(with = "daemon::duration::serde_text")]
    pub bake: Duration,
    /// Batches in order.
    pub batches: Vec<Batch>,
    /// Hosts of this cohort already on the target version.
    pub skipped: Vec<String>,
    /// Hosts of this cohort that did not answer Salt.
    pub unreachable: Vec<String>,
    /// Hosts the target matched that an earlier cohort already holds.
    pub claimed_earlier: Vec<String>,
    /// Upper bound of this stage's duration.
    #[serde(with = "daemon::duration::serde_text")]
    pub estimate: Duration,
    /// The component this stage updates; absent in plans made before
    /// several components (then it is the plan's `component`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
    /// The version this stage installs; absent in older plans (then it is
    /// the plan's `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Stage {
    /// Hosts this stage updates.
    pub fn host_count(&self) -> usize {
        self.batches.iter().map(|b| b.hosts.len()).sum()
    }
}

/// What the plan saw of a later component's hosts, in a rollout of several
/// components (the first component's is the plan's own `inventory`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanPart {
    /// Which program.
    pub component: Component,
    /// Its target version.
    pub version: String,
    /// Hosts of its inventory no cohort of it matched.
    pub not_covered: Vec<String>,
    /// The inventory of its hosts (versions of this component).
    pub inventory: Inventory,
    /// [`Inventory::fingerprint`] of that inventory.
    pub fingerprint: String,
}

/// The hosts one component's cohorts matched: its inventory (with the
/// version of this component on each host) and, per cohort name, the
/// minion ids its Salt target matched.
pub type Fleet = (Inventory, BTreeMap<String, Vec<String>>);

/// A gate evaluated once at plan time (filled in by the caller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateCheck {
    /// Gate name.
    pub name: String,
    /// The query that was run (for a Grafana gate: the panel's query).
    pub query: String,
    /// Its value now, if it returned one.
    pub value: Option<f64>,
    /// Whether the value holds the condition now; `None` without a value.
    pub would_pass: Option<bool>,
    /// Why it could not be evaluated.
    pub error: Option<String>,
}

impl GateCheck {
    /// The check of one plan-time measurement against the gate's condition.
    pub fn from_measurement(
        name: &str,
        query: &str,
        condition: &Condition,
        measurement: &Measurement,
    ) -> GateCheck {
        let (value, would_pass, error) = match measurement {
            Measurement::Value(v) => (Some(*v), Some(condition.holds(*v)), None),
            Measurement::NoData => (None, None, None),
            Measurement::QueryError(e) => (None, None, Some(e.clone())),
        };
        GateCheck {
            name: name.to_string(),
            query: query.to_string(),
            value,
            would_pass,
            error,
        }
    }
}

/// The plan, as written to `PLAN.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Which program.
    pub component: Component,
    /// Target version.
    pub version: String,
    /// Stages in spec order.
    pub stages: Vec<Stage>,
    /// Hosts of the inventory no cohort matched (they stay as they are).
    pub not_covered: Vec<String>,
    /// Reasons the plan cannot be applied; empty when it can.
    pub problems: Vec<String>,
    /// Gate evaluations at plan time.
    pub gates: Vec<GateCheck>,
    /// Upper bound of the whole rollout: per batch, Salt job + version
    /// confirmation + bake.
    #[serde(with = "daemon::duration::serde_text")]
    pub estimate: Duration,
    /// The inventory the plan was made from.
    pub inventory: Inventory,
    /// [`Inventory::fingerprint`] of that inventory.
    pub fingerprint: String,
    /// The later components of a rollout of several (their stages follow
    /// the first component's in `stages`); empty for one component.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub later: Vec<PlanPart>,
}

impl Plan {
    /// Lays out the rollout of a single-component spec (or of the first
    /// component of a spec with several). `matches` maps each cohort name to
    /// the minion ids its Salt target matched.
    pub fn build(
        spec: &Spec,
        inventory: &Inventory,
        matches: &BTreeMap<String, Vec<String>>,
    ) -> Plan {
        Plan::build_parts(spec, &[(inventory.clone(), matches.clone())])
    }

    /// Lays out the rollout of every component of the spec, in spec order:
    /// the stages of the first component, then those of the next. `fleets`
    /// holds one [`Fleet`] per component, in the same order.
    pub fn build_parts(spec: &Spec, fleets: &[Fleet]) -> Plan {
        let mut problems = Vec::new();
        let mut stages = Vec::new();
        let mut later = Vec::new();
        let mut first: Option<(Vec<String>, Inventory)> = None;
        let multi = spec.parts.len() > 1;
        let empty = (Inventory::default(), BTreeMap::new());
        for (i, part) in spec.parts.iter().enumerate() {
            let (inventory, matches) = match fleets.get(i) {
                Some(f) => f,
                None => {
                    problems.push(format!("{}: no inventory was given for it", part.component));
                    &empty
                }
            };
            let label = if multi {
                format!("{} cohort", part.component)
            } else {
                "cohort".to_string()
            };
            let not_covered = lay_out(
                spec,
                part,
                &label,
                inventory,
                matches,
                &mut stages,
                &mut problems,
            );
            if i == 0 {
                first = Some((not_covered, inventory.clone()));
            } else {
                later.push(PlanPart {
                    component: part.component,
                    version: part.version.clone(),
                    not_covered,
                    fingerprint: inventory.fingerprint(),
                    inventory: inventory.clone(),
                });
            }
        }
        let (not_covered, inventory) = first.unwrap_or_default();
        let estimate = stages.iter().map(|s| s.estimate).sum();
        Plan {
            component: spec.component,
            version: spec.version.clone(),
            stages,
            not_covered,
            problems,
            gates: Vec::new(),
            estimate,
            fingerprint: inventory.fingerprint(),
            inventory,
            later,
        }
    }

    /// The component stage `si` updates.
    pub fn stage_component(&self, si: usize) -> Component {
        self.stages
            .get(si)
            .and_then(|s| s.component)
            .unwrap_or(self.component)
    }

    /// The version stage `si` installs.
    pub fn stage_version(&self, si: usize) -> &str {
        self.stages
            .get(si)
            .and_then(|s| s.version.as_deref())
            .unwrap_or(&self.version)
    }

    /// The components in rollout order.
    pub fn components(&self) -> Vec<Component> {
        std::iter::once(self.component)
            .chain(self.later.iter().map(|p| p.component))
            .collect()
    }

    /// `edge v2` or `edge v2 then connector v2`.
    pub fn describe(&self) -> String {
        std::iter::once(format!("{} {}", self.component, self.version))
            .chain(
                self.later
                    .iter()
                    .map(|p| format!("{} {}", p.component, p.version)),
            )
            .collect::<Vec<_>>()
            .join(" then ")
    }

    /// Records a gate's plan-time evaluation. A gate that errors (a broken
    /// query) or fails now is a problem: it fails the plan, not the rollout.
    pub fn record_gate(&mut self, check: GateCheck) {
        if let Some(e) = &check.error {
            self.problems
                .push(format!("gate `{}`: query failed: {e}", check.name));
        } else if check.would_pass == Some(false) {
            let value = check.value.map_or("-".to_string(), |v| v.to_string());
            self.problems.push(format!(
                "gate `{}`: would fail now (value {value})",
                check.name
            ));
        }
        self.gates.push(check);
    }

    /// Whether the plan can be applied (no problems).
    pub fn executable(&self) -> bool {
        self.problems.is_empty()
    }

    /// Hosts the rollout updates.
    pub fn host_count(&self) -> usize {
        self.stages.iter().map(Stage::host_count).sum()
    }

    /// Batches in the whole rollout.
    pub fn batch_count(&self) -> usize {
        self.stages.iter().map(|s| s.batches.len()).sum()
    }

    /// Whether the fleet still looks like it did when planned (for one
    /// component; see [`Plan::matches_fleets`] for several).
    pub fn matches_inventory(&self, now: &Inventory) -> bool {
        self.fingerprint == now.fingerprint()
    }

    /// Whether every component's hosts still look like they did when
    /// planned: `now` holds one inventory per component, in plan order.
    pub fn matches_fleets(&self, now: &[Inventory]) -> bool {
        now.len() == 1 + self.later.len()
            && self.matches_inventory(&now[0])
            && self
                .later
                .iter()
                .zip(&now[1..])
                .all(|(p, inv)| p.fingerprint == inv.fingerprint())
    }

    /// `PLAN.json`.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a plan always serializes")
    }

    /// Reads `PLAN.json`.
    pub fn from_json(text: &str) -> Result<Plan, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The plan as a text table for people.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Rollout of {}: {} host(s) in {} batch(es), {} stage(s), at most {}",
            self.describe(),
            self.host_count(),
            self.batch_count(),
            self.stages.len(),
            daemon::duration::format(self.estimate),
        );
        let multi = !self.later.is_empty();
        if multi {
            let _ = writeln!(
                out,
                "Every {} stage finishes (gates green, versions confirmed) before the first {} host is touched.",
                self.component,
                self.later
                    .iter()
                    .map(|p| p.component.as_str())
                    .collect::<Vec<_>>()
                    .join(", then ")
            );
            let _ = writeln!(
                out,
                "Inventory fingerprint {} ({})",
                self.fingerprint, self.component
            );
            for p in &self.later {
                let _ = writeln!(
                    out,
                    "Inventory fingerprint {} ({})",
                    p.fingerprint, p.component
                );
            }
        } else {
            let _ = writeln!(out, "Inventory fingerprint {}", self.fingerprint);
        }
        let _ = writeln!(out);
        let name = |si: usize, s: &Stage| {
            if multi {
                format!("{} {}", self.stage_component(si), s.cohort)
            } else {
                s.cohort.clone()
            }
        };
        let rows: Vec<[String; 7]> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                [
                    (i + 1).to_string(),
                    name(i, s),
                    s.host_count().to_string(),
                    format!("{} x {}", s.batches.len(), s.hosts_per_batch),
                    s.skipped.len().to_string(),
                    s.unreachable.len().to_string(),
                    format!(
                        "{} (bake {})",
                        daemon::duration::format(s.estimate),
                        daemon::duration::format(s.bake)
                    ),
                ]
            })
            .collect();
        let header = [
            "STAGE",
            "COHORT",
            "HOSTS",
            "BATCHES",
            "SKIPPED",
            "UNREACHABLE",
            "AT MOST",
        ]
        .map(String::from);
        table(&mut out, &header, &rows);

        for (si, s) in self.stages.iter().enumerate() {
            let _ = writeln!(
                out,
                "\n{} ({}, batch {}):",
                name(si, s),
                s.target,
                s.batch_size
            );
            for b in &s.batches {
                let _ = writeln!(out, "  batch {}: {}", b.index + 1, abbreviate(&b.hosts));
            }
            if !s.skipped.is_empty() {
                let _ = writeln!(
                    out,
                    "  skipped (already {}): {}",
                    self.stage_version(si),
                    abbreviate(&s.skipped)
                );
            }
            if !s.unreachable.is_empty() {
                let _ = writeln!(out, "  UNREACHABLE: {}", abbreviate(&s.unreachable));
            }
            if !s.claimed_earlier.is_empty() {
                let _ = writeln!(
                    out,
                    "  in an earlier cohort: {}",
                    abbreviate(&s.claimed_earlier)
                );
            }
        }
        if !self.not_covered.is_empty() {
            let _ = writeln!(
                out,
                "\nNot in any {}cohort: {}",
                if multi {
                    format!("{} ", self.component)
                } else {
                    String::new()
                },
                abbreviate(&self.not_covered)
            );
        }
        for p in self.later.iter().filter(|p| !p.not_covered.is_empty()) {
            let _ = writeln!(
                out,
                "\nNot in any {} cohort: {}",
                p.component,
                abbreviate(&p.not_covered)
            );
        }
        if !self.gates.is_empty() {
            let _ = writeln!(out);
            let header = ["GATE", "VALUE", "NOW"].map(String::from);
            let rows: Vec<[String; 3]> = self
                .gates
                .iter()
                .map(|g| {
                    [
                        g.name.clone(),
                        g.value.map_or("-".into(), |v| format!("{v}")),
                        match (&g.error, g.would_pass) {
                            (Some(e), _) => format!("error: {e}"),
                            (None, Some(true)) => "pass".into(),
                            (None, Some(false)) => "FAIL".into(),
                            (None, None) => "no data".into(),
                        },
                    ]
                })
                .collect();
            table(&mut out, &header, &rows);
        }
        let _ = writeln!(out);
        if self.problems.is_empty() {
            let _ = writeln!(out, "Plan is executable.");
        } else {
            let _ = writeln!(
                out,
                "Plan is NOT executable ({} problem(s)):",
                self.problems.len()
            );
            for p in &self.problems {
                let _ = writeln!(out, "  - {p}");
            }
        }
        out
    }
}

/// Lays out one component's stages (one per cohort) after `stages`, and
/// returns the hosts of its inventory no cohort matched. `label` starts
/// each problem (`cohort`, or `connector cohort` in a rollout of several).
fn lay_out(
    spec: &Spec,
    part: &Part,
    label: &str,
    inventory: &Inventory,
    matches: &BTreeMap<String, Vec<String>>,
    stages: &mut Vec<Stage>,
    problems: &mut Vec<String>,
) -> Vec<String> {
    let mut claimed: BTreeSet<&str> = BTreeSet::new();
    let per_batch_overhead = spec.timeouts.salt_job + spec.timeouts.version_confirm;
    for cohort in &part.cohorts {
        let mut ids: Vec<&str> = match matches.get(&cohort.name) {
            Some(ids) => ids.iter().map(String::as_str).collect(),
            None => {
                problems.push(format!(
                    "{label} `{}`: no target match was given for it",
                    cohort.name
                ));
                Vec::new()
            }
        };
        ids.sort_unstable();
        ids.dedup();
        if matches.contains_key(&cohort.name) && ids.is_empty() {
            problems.push(format!(
                "{label} `{}`: target `{}` matched no host",
                cohort.name, cohort.target
            ));
        }

        let mut eligible = Vec::new();
        let mut skipped = Vec::new();
        let mut unreachable = Vec::new();
        let mut claimed_earlier = Vec::new();
        for id in ids {
            if let Err(e) = crate::minion::check(id) {
                problems.push(format!(
                    "{label} `{}`: {e}; it is never targeted: rename the minion or leave it out of `{}`",
                    cohort.name, cohort.target
                ));
                continue;
            }
            let Some(host) = inventory.get(id) else {
                problems.push(format!(
                    "{label} `{}`: minion `{id}` matched the target but is not in the inventory",
                    cohort.name
                ));
                continue;
            };
            if !claimed.insert(id) {
                claimed_earlier.push(id.to_string());
                continue;
            }
            if !host.reachable {
                unreachable.push(id.to_string());
                problems.push(format!(
                    "{label} `{}`: host `{id}` is unreachable",
                    cohort.name
                ));
            }
            if host.version.as_deref() == Some(part.version.as_str()) {
                skipped.push(id.to_string());
            } else {
                eligible.push(id.to_string());
            }
        }

        let hosts_per_batch = cohort.batch.hosts_per_batch(eligible.len());
        let batches: Vec<Batch> = eligible
            .chunks(hosts_per_batch)
            .enumerate()
            .map(|(index, hosts)| Batch {
                index,
                hosts: hosts.to_vec(),
            })
            .collect();
        let estimate = (per_batch_overhead + cohort.bake) * batches.len() as u32;
        stages.push(Stage {
            cohort: cohort.name.clone(),
            target: cohort.target.clone(),
            batch_size: cohort.batch.to_string(),
            hosts_per_batch,
            bake: cohort.bake,
            batches,
            skipped,
            unreachable,
            claimed_earlier,
            estimate,
            component: Some(part.component),
            version: Some(part.version.clone()),
        });
    }
    inventory
        .hosts()
        .iter()
        .filter(|h| !claimed.contains(h.id.as_str()))
        .map(|h| h.id.clone())
        .collect()
}

fn table<const N: usize>(out: &mut String, header: &[String; N], rows: &[[String; N]]) {
    let mut widths = [0usize; N];
    for (w, h) in widths.iter_mut().zip(header) {
        *w = h.chars().count();
    }
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    for r in std::iter::once(header).chain(rows) {
        let line: Vec<String> = r
            .iter()
            .zip(widths.iter())
            .map(|(c, w)| format!("{c:<w$}", w = *w))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
}

/// At most eight ids, then a count of the rest.
fn abbreviate(ids: &[String]) -> String {
    const SHOW: usize = 8;
    if ids.len() <= SHOW {
        ids.join(", ")
    } else {
        format!(
            "{}, ... and {} more",
            ids[..SHOW].join(", "),
            ids.len() - SHOW
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Host;
    use crate::inventory::tests::host;

    fn spec(batches: [&str; 2]) -> Spec {
        Spec::from_yaml(&format!(
            r#"
component: edge
version: v2
artifact:
  url: salt://releases/edge/v2/edge-v2.tar.gz
  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
cohorts:
  - name: canary
    target: G@cohort:canary
    batch: {}
    bake: 10m
  - name: rest
    target: G@role:edge
    batch: {}
    bake: 5m
timeouts: {{salt_job: 1m, version_confirm: 1m}}
"#,
            batches[0], batches[1]
        ))
        .unwrap()
    }

    fn fleet(hosts: Vec<Host>) -> Inventory {
        Inventory::new(hosts).unwrap()
    }

    fn matches(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        pairs
            .iter()
            .map(|(c, ids)| (c.to_string(), ids.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn batch_hosts(s: &Stage) -> Vec<Vec<&str>> {
        s.batches
            .iter()
            .map(|b| b.hosts.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn stable_order_and_first_cohort_wins() {
        let inv = fleet(
            ["e5", "e1", "e3", "e2", "e4"]
                .iter()
                .map(|id| host(id, "ams", Some("v1"), true))
                .collect(),
        );
        let m = matches(&[
            ("canary", &["e3"]),
            ("rest", &["e5", "e3", "e1", "e4", "e2", "e1"]),
        ]);
        let plan = Plan::build(&spec(["1", "2"]), &inv, &m);
        assert!(plan.executable(), "{:?}", plan.problems);
        assert_eq!(batch_hosts(&plan.stages[0]), [vec!["e3"]]);
        assert_eq!(
            batch_hosts(&plan.stages[1]),
            [vec!["e1", "e2"], vec!["e4", "e5"]]
        );
        assert_eq!(plan.stages[1].claimed_earlier, ["e3"]);
        // Shuffled input, same plan.
        let m2 = matches(&[
            ("canary", &["e3"]),
            ("rest", &["e2", "e4", "e1", "e3", "e5"]),
        ]);
        assert_eq!(Plan::build(&spec(["1", "2"]), &inv, &m2), plan);
        // (1m + 1m + 10m) + 2 x (1m + 1m + 5m)
        assert_eq!(plan.estimate, Duration::from_secs(26 * 60));
        assert_eq!(plan.fingerprint, inv.fingerprint());
    }

    #[test]
    fn hosts_on_target_version_are_skipped() {
        let inv = fleet(vec![
            host("a", "ams", Some("v2"), true),
            host("b", "ams", Some("v1"), true),
            host("c", "ams", None, true),
            host("d", "ams", Some("v2"), true),
        ]);
        let m = matches(&[("canary", &["a", "b"]), ("rest", &["c", "d"])]);
        let plan = Plan::build(&spec(["1", "100%"]), &inv, &m);
        assert!(plan.executable(), "{:?}", plan.problems);
        assert_eq!(plan.stages[0].skipped, ["a"]);
        assert_eq!(batch_hosts(&plan.stages[0]), [vec!["b"]]);
        assert_eq!(plan.stages[1].skipped, ["d"]);
        assert_eq!(batch_hosts(&plan.stages[1]), [vec!["c"]]);
        assert_eq!(plan.host_count(), 2);
        // A cohort entirely on the target version has no batch and takes no time.
        let m = matches(&[("canary", &["a"]), ("rest", &["b", "c", "d"])]);
        let plan = Plan::build(&spec(["1", "100%"]), &inv, &m);
        assert!(plan.stages[0].batches.is_empty());
        assert_eq!(plan.stages[0].estimate, Duration::ZERO);
    }

    #[test]
    fn percent_batches_round_up() {
        let ids: Vec<String> = (0..10).map(|i| format!("h{i:02}")).collect();
        let inv = fleet(
            ids.iter()
                .map(|id| host(id, "ams", Some("v1"), true))
                .collect(),
        );
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let cases: &[(&str, usize, &[usize])] = &[
            ("30%", 3, &[3, 3, 3, 1]),
            ("25%", 3, &[3, 3, 3, 1]),
            ("50%", 5, &[5, 5]),
            ("1%", 1, &[1; 10]),
            ("100%", 10, &[10]),
            ("4", 4, &[4, 4, 2]),
        ];
        for (size, per, sizes) in cases {
            let m = matches(&[("canary", &[]), ("rest", &refs)]);
            let plan = Plan::build(&spec(["1", size]), &inv, &m);
            let s = &plan.stages[1];
            assert_eq!(s.hosts_per_batch, *per, "{size}");
            let got: Vec<usize> = s.batches.iter().map(|b| b.hosts.len()).collect();
            assert_eq!(got, *sizes, "{size}");
            let idx: Vec<usize> = s.batches.iter().map(|b| b.index).collect();
            assert_eq!(idx, (0..sizes.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn unreachable_hosts_make_the_plan_not_executable() {
        let inv = fleet(vec![
            host("a", "ams", Some("v1"), true),
            host("b", "ams", Some("v1"), false),
        ]);
        let m = matches(&[("canary", &["a"]), ("rest", &["a", "b"])]);
        let plan = Plan::build(&spec(["1", "1"]), &inv, &m);
        assert!(!plan.executable());
        assert_eq!(plan.stages[1].unreachable, ["b"]);
        assert_eq!(plan.problems, ["cohort `rest`: host `b` is unreachable"]);
        assert!(plan.render_table().contains("UNREACHABLE: b"));
        assert!(plan.render_table().contains("NOT executable"));
    }

    #[test]
    fn a_minion_with_an_invalid_id_is_flagged_and_never_batched() {
        let inv = fleet(vec![host("a", "ams", Some("v1"), true)]);
        let m = matches(&[("canary", &["a"]), ("rest", &["a", "b,c", "$(reboot)"])]);
        let plan = Plan::build(&spec(["1", "1"]), &inv, &m);
        assert!(!plan.executable());
        assert_eq!(plan.problems.len(), 2, "{:?}", plan.problems);
        assert!(
            plan.problems[0].contains("cohort `rest`: minion id \"$(reboot)\" is not accepted")
        );
        assert!(plan.problems[1].contains("\"b,c\""), "{}", plan.problems[1]);
        assert!(plan.problems[1].contains("rename the minion or leave it out of `G@role:edge`"));
        let batched: Vec<&String> = plan
            .stages
            .iter()
            .flat_map(|s| s.batches.iter().flat_map(|b| &b.hosts))
            .collect();
        assert_eq!(batched, ["a"]);
    }

    #[test]
    fn other_problems_and_not_covered() {
        let inv = fleet(vec![
            host("a", "ams", Some("v1"), true),
            host("z", "ams", Some("v1"), true),
        ]);
        let m = matches(&[("rest", &["a", "ghost"])]);
        let plan = Plan::build(&spec(["1", "1"]), &inv, &m);
        assert_eq!(
            plan.problems,
            [
                "cohort `canary`: no target match was given for it",
                "cohort `rest`: minion `ghost` matched the target but is not in the inventory",
            ]
        );
        assert_eq!(plan.not_covered, ["z"]);
        let m = matches(&[("canary", &[]), ("rest", &["a"])]);
        let plan = Plan::build(&spec(["1", "1"]), &inv, &m);
        assert_eq!(
            plan.problems,
            ["cohort `canary`: target `G@cohort:canary` matched no host"]
        );
    }

    fn two_components() -> Spec {
        Spec::from_yaml(
            r#"
components:
  - component: edge
    version: v2
    artifact:
      url: salt://releases/edge/v2/edge-v2.tar.gz
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    cohorts:
      - {name: canary, target: G@cohort:canary and G@role:edge, batch: 1, bake: 2m}
      - {name: rest, target: G@role:edge, batch: 2, bake: 1m}
  - component: connector
    version: v3
    artifact:
      url: salt://releases/connector/v3/connector-v3.tar.gz
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    cohorts:
      - {name: replicas, target: G@role:connector, batch: 1, bake: 30s}
timeouts: {salt_job: 1m, version_confirm: 1m}
"#,
        )
        .unwrap()
    }

    fn two_fleets() -> Vec<Fleet> {
        let edges = fleet(
            ["e1", "e2", "e3"]
                .iter()
                .map(|id| host(id, "ams", Some("v1"), true))
                .collect(),
        );
        let connectors = fleet(vec![
            host("c2", "fra", Some("v2"), true),
            host("c1", "ams", Some("v3"), true),
            host("c3", "ams", Some("v2"), true),
        ]);
        vec![
            (
                edges,
                matches(&[("canary", &["e2"]), ("rest", &["e1", "e2", "e3"])]),
            ),
            (connectors, matches(&[("replicas", &["c3", "c1", "c2"])])),
        ]
    }

    #[test]
    fn several_components_plan_edge_stages_then_connector_stages() {
        let spec = two_components();
        let fleets = two_fleets();
        let plan = Plan::build_parts(&spec, &fleets);
        assert!(plan.executable(), "{:?}", plan.problems);
        let order: Vec<(Component, &str, &str)> = plan
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    plan.stage_component(i),
                    plan.stage_version(i),
                    s.cohort.as_str(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [
                (Component::Edge, "v2", "canary"),
                (Component::Edge, "v2", "rest"),
                (Component::Connector, "v3", "replicas"),
            ]
        );
        assert_eq!(batch_hosts(&plan.stages[0]), [vec!["e2"]]);
        assert_eq!(batch_hosts(&plan.stages[1]), [vec!["e1", "e3"]]);
        // c1 already runs connector v3; the rest one at a time, sorted.
        assert_eq!(batch_hosts(&plan.stages[2]), [vec!["c2"], vec!["c3"]]);
        assert_eq!(plan.stages[2].skipped, ["c1"]);
        assert_eq!(plan.components(), [Component::Edge, Component::Connector]);
        assert_eq!(plan.describe(), "edge v2 then connector v3");
        assert_eq!(plan.later.len(), 1);
        assert_eq!(plan.later[0].fingerprint, fleets[1].0.fingerprint());
        // (2m + 2m) + (2m + 1m) + 2 x (2m + 30s)
        assert_eq!(plan.estimate, Duration::from_secs(12 * 60));

        let text = plan.render_table();
        assert!(
            text.starts_with("Rollout of edge v2 then connector v3: 5 host(s)"),
            "{text}"
        );
        assert!(
            text.contains("Every edge stage finishes (gates green, versions confirmed) before the first connector host is touched."),
            "{text}"
        );
        let at = |needle: &str| {
            text.find(needle)
                .unwrap_or_else(|| panic!("{needle}: {text}"))
        };
        assert!(
            at("edge canary (") < at("edge rest (")
                && at("edge rest (") < at("connector replicas (")
        );
        assert!(text.contains("skipped (already v3): c1"), "{text}");

        // The plan file round-trips; drift in either component is seen.
        let back = Plan::from_json(&plan.to_json()).unwrap();
        assert_eq!(back, plan);
        let now: Vec<Inventory> = fleets.iter().map(|(i, _)| i.clone()).collect();
        assert!(back.matches_fleets(&now));
        assert!(!back.matches_fleets(&now[..1]));
        let drifted = fleet(vec![
            host("c1", "ams", Some("v3"), true),
            host("c2", "fra", Some("v3"), true),
            host("c3", "ams", Some("v2"), true),
        ]);
        assert!(!back.matches_fleets(&[now[0].clone(), drifted]));
    }

    #[test]
    fn several_components_problems_name_the_component() {
        let spec = two_components();
        let mut fleets = two_fleets();
        fleets[1].1 = matches(&[("replicas", &[])]);
        let plan = Plan::build_parts(&spec, &fleets);
        assert_eq!(
            plan.problems,
            ["connector cohort `replicas`: target `G@role:connector` matched no host"]
        );
        let plan = Plan::build_parts(&spec, &fleets[..1]);
        assert!(
            plan.problems
                .contains(&"connector: no inventory was given for it".to_string()),
            "{:?}",
            plan.problems
        );
    }

    #[test]
    fn a_plan_file_from_before_several_components_still_loads() {
        let inv = fleet(vec![host("a", "ams", Some("v1"), true)]);
        let m = matches(&[("canary", &["a"]), ("rest", &["a"])]);
        let plan = Plan::build(&spec(["1", "1"]), &inv, &m);
        let mut value: serde_json::Value = serde_json::from_str(&plan.to_json()).unwrap();
        for stage in value["stages"].as_array_mut().unwrap() {
            let stage = stage.as_object_mut().unwrap();
            assert!(stage.remove("component").is_some());
            assert!(stage.remove("version").is_some());
        }
        assert!(value.get("later").is_none());
        let old = Plan::from_json(&value.to_string()).unwrap();
        assert_eq!(old.stage_component(0), Component::Edge);
        assert_eq!(old.stage_version(1), "v2");
        assert!(old.matches_fleets(std::slice::from_ref(&inv)));
        assert_eq!(old.describe(), "edge v2");
    }

    #[test]
    fn gate_checks_and_json_round_trip() {
        let inv = fleet(vec![host("a", "ams", Some("v1"), true)]);
        let m = matches(&[("canary", &["a"]), ("rest", &["a"])]);
        let mut plan = Plan::build(&spec(["1", "1"]), &inv, &m);
        plan.record_gate(GateCheck {
            name: "errors".into(),
            query: "up".into(),
            value: Some(0.001),
            would_pass: Some(true),
            error: None,
        });
        assert!(plan.executable());
        plan.record_gate(GateCheck {
            name: "latency".into(),
            query: "bad(".into(),
            value: None,
            would_pass: None,
            error: Some("parse error".into()),
        });
        plan.record_gate(GateCheck {
            name: "saturation".into(),
            query: "x".into(),
            value: Some(0.9),
            would_pass: Some(false),
            error: None,
        });
        assert_eq!(plan.problems.len(), 2, "{:?}", plan.problems);
        // No data now is not a problem (a new version has no series yet).
        let lt = Condition::parse("< 0.01").unwrap();
        plan.record_gate(GateCheck::from_measurement(
            "fresh",
            "rate(x[1m])",
            &lt,
            &Measurement::NoData,
        ));
        assert_eq!(plan.problems.len(), 2, "{:?}", plan.problems);
        let checks = [
            (Measurement::Value(0.001), Some(0.001), Some(true), None),
            (Measurement::Value(0.5), Some(0.5), Some(false), None),
            (Measurement::NoData, None, None, None),
            (
                Measurement::QueryError("bad".into()),
                None,
                None,
                Some("bad"),
            ),
        ];
        for (m, value, would_pass, error) in checks {
            let c = GateCheck::from_measurement("g", "q", &lt, &m);
            assert_eq!(
                (c.value, c.would_pass, c.error.as_deref()),
                (value, would_pass, error),
                "{m:?}"
            );
        }
        let text = plan.render_table();
        assert!(text.contains("error: parse error"), "{text}");
        let back = Plan::from_json(&plan.to_json()).unwrap();
        assert_eq!(back, plan);
        assert!(back.matches_inventory(&inv));
        let drifted = fleet(vec![host("a", "ams", Some("v2"), true)]);
        assert!(!back.matches_inventory(&drifted));
    }
}
