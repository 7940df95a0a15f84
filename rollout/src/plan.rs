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
use crate::spec::{Component, Condition, Spec};

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
}

impl Stage {
    /// Hosts this stage updates.
    pub fn host_count(&self) -> usize {
        self.batches.iter().map(|b| b.hosts.len()).sum()
    }
}

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
}

impl Plan {
    /// Lays out the rollout. `matches` maps each cohort name to the minion ids
    /// its Salt target matched.
    pub fn build(
        spec: &Spec,
        inventory: &Inventory,
        matches: &BTreeMap<String, Vec<String>>,
    ) -> Plan {
        let mut problems = Vec::new();
        let mut claimed: BTreeSet<&str> = BTreeSet::new();
        let mut stages = Vec::with_capacity(spec.cohorts.len());
        let per_batch_overhead = spec.timeouts.salt_job + spec.timeouts.version_confirm;

        for cohort in &spec.cohorts {
            let mut ids: Vec<&str> = match matches.get(&cohort.name) {
                Some(ids) => ids.iter().map(String::as_str).collect(),
                None => {
                    problems.push(format!(
                        "cohort `{}`: no target match was given for it",
                        cohort.name
                    ));
                    Vec::new()
                }
            };
            ids.sort_unstable();
            ids.dedup();
            if matches.contains_key(&cohort.name) && ids.is_empty() {
                problems.push(format!(
                    "cohort `{}`: target `{}` matched no host",
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
                        "cohort `{}`: {e}; it is never targeted: rename the minion or leave it out of `{}`",
                        cohort.name, cohort.target
                    ));
                    continue;
                }
                let Some(host) = inventory.get(id) else {
                    problems.push(format!(
                        "cohort `{}`: minion `{id}` matched the target but is not in the inventory",
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
                        "cohort `{}`: host `{id}` is unreachable",
                        cohort.name
                    ));
                }
                if host.version.as_deref() == Some(spec.version.as_str()) {
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
            });
        }

        let not_covered = inventory
            .hosts()
            .iter()
            .filter(|h| !claimed.contains(h.id.as_str()))
            .map(|h| h.id.clone())
            .collect();
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
            inventory: inventory.clone(),
        }
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

    /// Whether the fleet still looks like it did when planned.
    pub fn matches_inventory(&self, now: &Inventory) -> bool {
        self.fingerprint == now.fingerprint()
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
            "Rollout of {} {}: {} host(s) in {} batch(es), {} stage(s), at most {}",
            self.component,
            self.version,
            self.host_count(),
            self.batch_count(),
            self.stages.len(),
            daemon::duration::format(self.estimate),
        );
        let _ = writeln!(out, "Inventory fingerprint {}", self.fingerprint);
        let _ = writeln!(out);
        let rows: Vec<[String; 7]> = self
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                [
                    (i + 1).to_string(),
                    s.cohort.clone(),
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

        for s in &self.stages {
            let _ = writeln!(
                out,
                "\n{} ({}, batch {}):",
                s.cohort, s.target, s.batch_size
            );
            for b in &s.batches {
                let _ = writeln!(out, "  batch {}: {}", b.index + 1, abbreviate(&b.hosts));
            }
            if !s.skipped.is_empty() {
                let _ = writeln!(
                    out,
                    "  skipped (already {}): {}",
                    self.version,
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
                "\nNot in any cohort: {}",
                abbreviate(&self.not_covered)
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
