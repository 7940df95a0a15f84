//! What the engine reports while it runs, as typed events: one variant per
//! kind of line. The engine only emits them; views (plain lines, JSON
//! lines, later the API's stream and the page) decide how they look, so no
//! view knows about another. `Display` is the plain text people and the
//! fleet tests read, unchanged from when the engine printed it itself.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::gate::{self, Measurement, Phase};
use crate::salt::HostOutcome;
use crate::spec::Component;
use crate::store::RolloutId;

/// One thing that happened in a rollout. Stage and batch numbers count from
/// 1, as people read them; durations are milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Progress {
    /// The rollout was recorded and runs now.
    Started {
        /// The rollout.
        rollout: RolloutId,
        /// `edge v2` or `edge v2 then connector v2`.
        what: String,
    },
    /// A paused or interrupted rollout goes on here.
    Resuming {
        /// The rollout.
        rollout: RolloutId,
    },
    /// Alertmanager did not answer the check before starting; the start
    /// goes on.
    AlertCheckSkipped {
        /// Why it did not answer.
        error: String,
    },
    /// A batch starts.
    BatchStarted {
        /// The stage, from 1.
        stage: usize,
        /// How many stages the plan has.
        stages: usize,
        /// The stage's cohort.
        cohort: String,
        /// The batch, from 1.
        batch: usize,
        /// How many batches the stage has.
        batches: usize,
        /// The batch's hosts.
        hosts: Vec<String>,
    },
    /// A Salt job left over from a killed controller is still known to Salt.
    SaltJobWaiting {
        /// The job id.
        jid: String,
    },
    /// A job id was journaled but the job never reached Salt.
    SaltJobNeverStarted {
        /// The job id.
        jid: String,
    },
    /// A state run is sent to Salt.
    SaltJobSent {
        /// The component whose state runs.
        component: Component,
        /// The hosts it runs on.
        hosts: Vec<String>,
        /// The job id.
        jid: String,
    },
    /// Salt accepted the job.
    SaltJobRunning {
        /// The job id.
        jid: String,
    },
    /// A host's state run did not succeed.
    HostFailed {
        /// The host.
        host: String,
        /// What its run returned.
        result: HostOutcome,
    },
    /// Prometheus shows the version on every host of the batch.
    VersionLive {
        /// The component.
        component: Component,
        /// The version.
        version: String,
        /// The hosts.
        hosts: Vec<String>,
    },
    /// The bake starts.
    Baking {
        /// How long it lasts.
        bake_ms: u64,
        /// How many gates measure it.
        gates: usize,
    },
    /// One measurement of a gate.
    Gate {
        /// The gate's name.
        gate: String,
        /// The number measured; null when there was none.
        value: Option<f64>,
        /// Why there is no number: `no data`, or the query's error.
        problem: Option<String>,
        /// The value against the condition.
        verdict: gate::Outcome,
        /// Where the gate's analysis stands after it.
        phase: Phase,
        /// The condition, such as `> 0`.
        condition: String,
    },
    /// Every host of a batch is on the version and its gates held.
    BatchDone {
        /// The stage, from 1.
        stage: usize,
        /// The batch, from 1.
        batch: usize,
        /// The stage's cohort.
        cohort: String,
    },
    /// Every stage of one component is done; the next component starts.
    ComponentDone {
        /// The component done.
        component: Component,
        /// The next component.
        next: Component,
        /// The next component's version.
        version: String,
    },
    /// Every planned batch is done.
    Succeeded {
        /// The rollout.
        rollout: RolloutId,
        /// `edge v2` or `edge v2 then connector v2`.
        what: String,
    },
    /// A gate was inconclusive: the rollout waits for a person.
    Paused {
        /// The rollout.
        rollout: RolloutId,
        /// Why.
        reason: String,
    },
    /// A person paused the rollout from another process.
    Stopping {
        /// The rollout.
        rollout: RolloutId,
        /// What happened to it, such as `paused by a person`.
        reason: String,
    },
    /// Grafana did not take every annotation before the run ended.
    AnnotationsLost {
        /// Annotations not written.
        failed: u64,
        /// Annotations written.
        sent: u64,
    },
    /// An alert the spec rolls back on was recorded against the rollout.
    AlertReceived {
        /// The alert's labels.
        labels: BTreeMap<String, String>,
        /// `webhook` or `poll`.
        source: String,
    },
    /// Polling Alertmanager fails (said once per distinct error).
    AlertmanagerUnreachable {
        /// Why.
        error: String,
    },
    /// Polling Alertmanager works again.
    AlertmanagerReachable,
    /// The rollback starts.
    RollingBack {
        /// Why.
        reason: String,
    },
    /// A host is assigned what it had before.
    HostBack {
        /// The host.
        host: String,
        /// The component.
        component: Component,
        /// The version it goes back to; null for its unmanaged release.
        version: Option<String>,
    },
    /// Every touched host of one component is confirmed back.
    ComponentBack {
        /// The component.
        component: Component,
    },
    /// Every touched host is on its previous release.
    RolledBack {
        /// Why the rollout rolled back.
        reason: String,
    },
    /// The rollback could not put every touched host back: a person must.
    RollbackFailed {
        /// Why the rollout rolled back, and on which hosts it failed.
        reason: String,
    },
    /// The timeline of an alert rollback follows.
    Timeline,
    /// One moment of that timeline.
    TimelineEntry {
        /// Milliseconds after the alert started firing.
        offset_ms: i64,
        /// What happened.
        what: String,
    },
}

impl Progress {
    /// A gate's measurement, as the engine took it.
    pub fn gate(
        name: &str,
        m: &Measurement,
        verdict: gate::Outcome,
        phase: Phase,
        condition: impl fmt::Display,
    ) -> Progress {
        let (value, problem) = match m {
            Measurement::Value(v) => (Some(*v), None),
            Measurement::NoData => (None, Some("no data".to_string())),
            Measurement::QueryError(e) => (None, Some(e.clone())),
        };
        Progress::Gate {
            gate: name.to_string(),
            value,
            problem,
            verdict,
            phase,
            condition: condition.to_string(),
        }
    }
}

/// `Name{label="value", ...}` of an alert's labels.
pub fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    let name = labels.get("alertname").map_or("alert", String::as_str);
    let rest: Vec<String> = labels
        .iter()
        .filter(|(k, _)| k.as_str() != "alertname")
        .map(|(k, v)| format!("{k}=\"{v}\""))
        .collect();
    format!("{name}{{{}}}", rest.join(","))
}

/// A gate's value as the journal writes it: a number, or the problem quoted.
fn gate_value(value: Option<f64>, problem: Option<&str>) -> serde_json::Value {
    match problem {
        Some(p) => serde_json::json!(p),
        None => serde_json::json!(value),
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Started { rollout, what } => write!(f, "rollout {rollout} started: {what}"),
            Self::Resuming { rollout } => write!(f, "resuming {rollout}"),
            Self::AlertCheckSkipped { error } => write!(
                f,
                "alertmanager: {error}; cannot check for firing alerts before starting"
            ),
            Self::BatchStarted {
                stage,
                stages,
                cohort,
                batch,
                batches,
                hosts,
            } => write!(
                f,
                "stage {stage}/{stages} `{cohort}`, batch {batch}/{batches}: {}",
                hosts.join(", ")
            ),
            Self::SaltJobWaiting { jid } => write!(
                f,
                "  salt: waiting for job {jid}, started before the restart"
            ),
            Self::SaltJobNeverStarted { jid } => {
                write!(f, "  salt: job {jid} never started; starting it")
            }
            Self::SaltJobSent {
                component,
                hosts,
                jid,
            } => write!(
                f,
                "  salt: state.apply {component} on {} (job {jid})",
                hosts.join(", ")
            ),
            Self::SaltJobRunning { jid } => write!(f, "  salt: job {jid} running"),
            Self::HostFailed { host, result } => write!(f, "  {host}: {}", result.describe()),
            Self::VersionLive {
                component,
                version,
                hosts,
            } => write!(f, "  {component} {version} live on {}", hosts.join(", ")),
            Self::Baking { bake_ms, gates } => write!(
                f,
                "  baking {} with {gates} gate(s)",
                daemon::duration::format(Duration::from_millis(*bake_ms))
            ),
            Self::Gate {
                gate,
                value,
                problem,
                verdict,
                condition,
                ..
            } => write!(
                f,
                "  gate {gate}: {} ({verdict:?}, {condition})",
                gate_value(*value, problem.as_deref())
            ),
            Self::BatchDone { batch, cohort, .. } => {
                write!(f, "  batch {batch} of `{cohort}` done")
            }
            Self::ComponentDone {
                component,
                next,
                version,
            } => write!(
                f,
                "{component} done on every planned host (gates green, versions confirmed); {next} {version} next"
            ),
            Self::Succeeded { rollout, what } => {
                write!(f, "rollout {rollout} succeeded: {what} everywhere planned")
            }
            Self::Paused { rollout, reason } => write!(
                f,
                "PAUSED: {reason}; run `rollout resume {rollout}` or `rollout abort {rollout}`"
            ),
            Self::Stopping { rollout, reason } => {
                write!(f, "stopping: rollout {rollout} was {reason}")
            }
            Self::AnnotationsLost { failed, sent } => write!(
                f,
                "grafana: {failed} annotation(s) could not be written ({sent} written); the rollout did not wait for them"
            ),
            Self::AlertReceived { labels, source } => write!(
                f,
                "ALERT {} received by {source}: stopping the rollout",
                describe_labels(labels)
            ),
            Self::AlertmanagerUnreachable { error } => {
                write!(f, "  alertmanager: {error}; alerts still arrive by webhook")
            }
            Self::AlertmanagerReachable => write!(f, "  alertmanager: reachable again"),
            Self::RollingBack { reason } => write!(f, "ROLLING BACK: {reason}"),
            Self::HostBack {
                host,
                component,
                version,
            } => write!(
                f,
                "  {host}: {component} back to {}",
                version.as_deref().unwrap_or("its unmanaged release")
            ),
            Self::ComponentBack { component } => {
                write!(f, "  {component}: every touched host is back")
            }
            Self::RolledBack { reason } => write!(
                f,
                "rolled back: every touched host is on its previous release ({reason})"
            ),
            Self::RollbackFailed { reason } => write!(f, "ROLLBACK FAILED: {reason}"),
            Self::Timeline => write!(f, "timeline:"),
            Self::TimelineEntry { offset_ms, what } => {
                write!(f, "  {:>+7.1} s  {what}", *offset_ms as f64 / 1000.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> RolloutId {
        RolloutId("r-1".into())
    }

    #[test]
    fn lines_read_as_the_engine_printed_them() {
        let cases = [
            (
                Progress::ComponentDone {
                    component: Component::Edge,
                    next: Component::Connector,
                    version: "v2".into(),
                },
                "edge done on every planned host (gates green, versions confirmed); connector v2 next",
            ),
            (
                Progress::RollingBack {
                    reason: "gate errors: value 3.0 does not hold `< 1`".into(),
                },
                "ROLLING BACK: gate errors: value 3.0 does not hold `< 1`",
            ),
            (
                Progress::SaltJobRunning { jid: "2026".into() },
                "  salt: job 2026 running",
            ),
            (
                Progress::BatchDone {
                    stage: 2,
                    batch: 2,
                    cohort: "ams-fra".into(),
                },
                "  batch 2 of `ams-fra` done",
            ),
            (
                Progress::BatchStarted {
                    stage: 1,
                    stages: 3,
                    cohort: "canary".into(),
                    batch: 1,
                    batches: 2,
                    hosts: vec!["edge-ams-1".into(), "edge-fra-1".into()],
                },
                "stage 1/3 `canary`, batch 1/2: edge-ams-1, edge-fra-1",
            ),
            (
                Progress::Baking {
                    bake_ms: 3000,
                    gates: 2,
                },
                "  baking 3s with 2 gate(s)",
            ),
            (
                Progress::HostBack {
                    host: "edge-ams-1".into(),
                    component: Component::Edge,
                    version: None,
                },
                "  edge-ams-1: edge back to its unmanaged release",
            ),
            (
                Progress::Paused {
                    rollout: id(),
                    reason: "gate x is Inconclusive".into(),
                },
                "PAUSED: gate x is Inconclusive; run `rollout resume r-1` or `rollout abort r-1`",
            ),
            (
                Progress::TimelineEntry {
                    offset_ms: 2345,
                    what: "rollback started".into(),
                },
                "     +2.3 s  rollback started",
            ),
            (
                Progress::AlertReceived {
                    labels: BTreeMap::from([
                        ("alertname".to_string(), "EdgeDown".to_string()),
                        ("version".to_string(), "v3".to_string()),
                    ]),
                    source: "webhook".into(),
                },
                "ALERT EdgeDown{version=\"v3\"} received by webhook: stopping the rollout",
            ),
        ];
        for (event, line) in cases {
            assert_eq!(event.to_string(), line, "{event:?}");
        }
    }

    #[test]
    fn a_gate_line_shows_the_value_or_the_quoted_problem() {
        let condition = "> 0";
        let value = Progress::gate(
            "requests",
            &Measurement::Value(6.0),
            gate::Outcome::Successful,
            Phase::Running,
            condition,
        );
        assert_eq!(value.to_string(), "  gate requests: 6.0 (Successful, > 0)");
        let none = Progress::gate(
            "requests",
            &Measurement::NoData,
            gate::Outcome::Inconclusive,
            Phase::Inconclusive,
            condition,
        );
        assert_eq!(
            none.to_string(),
            "  gate requests: \"no data\" (Inconclusive, > 0)"
        );
    }

    #[test]
    fn json_names_the_event_and_keeps_fields_typed() {
        let gate = Progress::gate(
            "errors",
            &Measurement::Value(0.25),
            gate::Outcome::Failed,
            Phase::Failed,
            "< 0.1",
        );
        assert_eq!(
            serde_json::to_value(&gate).unwrap(),
            json!({"event": "gate", "gate": "errors", "value": 0.25, "problem": null,
                   "verdict": "failed", "phase": "failed", "condition": "< 0.1"})
        );
        let no_data = Progress::gate(
            "errors",
            &Measurement::NoData,
            gate::Outcome::Inconclusive,
            Phase::Inconclusive,
            "< 0.1",
        );
        assert_eq!(
            serde_json::to_value(&no_data).unwrap()["value"],
            json!(null)
        );
        let live = Progress::VersionLive {
            component: Component::Connector,
            version: "v2".into(),
            hosts: vec!["conn-ams-1".into()],
        };
        assert_eq!(
            serde_json::to_value(&live).unwrap(),
            json!({"event": "version_live", "component": "connector", "version": "v2", "hosts": ["conn-ams-1"]})
        );
        let host = Progress::HostFailed {
            host: "edge-ams-1".into(),
            result: HostOutcome::NoReturn,
        };
        assert_eq!(
            serde_json::to_value(&host).unwrap(),
            json!({"event": "host_failed", "host": "edge-ams-1", "result": {"outcome": "no_return"}})
        );
        assert_eq!(
            serde_json::to_value(Progress::AlertmanagerReachable).unwrap(),
            json!({"event": "alertmanager_reachable"})
        );
    }
}
