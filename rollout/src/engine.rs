//! Applying a plan: batch by batch, every transition journaled before it is
//! acted on. Per batch: assign the release to exactly the batch's hosts, run
//! the component's Salt state on exactly those hosts, classify each return,
//! confirm the new version is live in Prometheus, bake while the gates
//! measure, then record the batch as done. A failed host or gate rolls back
//! every host this rollout touched, newest first; an inconclusive gate
//! pauses for a person.
//!
//! A controller killed at any point resumes from the journal: finished
//! batches are skipped, and a batch whose Salt job already returned is not
//! applied again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::alerts::{self, Source};
use crate::annotations::Annotator;
use crate::controller::Controller;
use crate::gate::{self, Analysis, Limits, Phase};
use crate::inventory::Inventory;
use crate::plan::Plan;
use crate::progress::{Progress, describe_labels};
use crate::spec::{Component, GateLength, Spec};
use crate::store::{
    AlertRecord, Event, Release, RolloutId, RolloutState, Runner, Step, Store, StoreError,
};

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every batch is on the new version.
    Succeeded,
    /// A host or gate failed; every touched host is back. The reason names it.
    RolledBack(String),
    /// A gate was inconclusive; waiting for `rollout resume` or `abort`.
    Paused(String),
    /// The rollback itself failed: hosts need a person.
    Failed(String),
}

impl Outcome {
    /// The process exit code for this outcome.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Succeeded => 0,
            Self::RolledBack(_) => 2,
            Self::Paused(_) => 3,
            Self::Failed(_) => 4,
        }
    }
}

/// Why a run could not go on at all.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the fleet failed.
    #[error(transparent)]
    Controller(#[from] crate::controller::ControllerError),
    /// The fleet changed since the plan was made.
    #[error("the fleet changed since the plan was made ({0}); make a new plan")]
    Drift(String),
    /// The plan has problems.
    #[error("the plan cannot be executed: {0}")]
    NotExecutable(String),
    /// An alert the spec rolls back on is firing already.
    #[error(
        "alert {0} is firing and matches the spec's rollback.alerts: the rollout would roll back at once; start it when the alert has resolved"
    )]
    AlertFiring(String),
}

enum BatchEnd {
    Done,
    Fail(String),
    Pause(String),
    /// A person paused the rollout from another process.
    Interrupted(String),
    /// An alert matched: roll back now.
    Alarm,
}

enum StagesEnd {
    Succeeded,
    Fail(String),
    Pause(String),
    Interrupted(String),
    Alarm,
}

/// How often the journal is checked for alerts the webhook recorded.
const ALERT_CHECK: Duration = Duration::from_millis(250);
/// How often Alertmanager is asked for firing alerts (the pull path).
const ALERT_POLL: Duration = Duration::from_secs(1);
/// How long a finished run waits for Grafana before exiting.
const ANNOTATION_FLUSH: Duration = Duration::from_secs(5);

/// Runs `work` unless the alarm goes off first (`None`).
async fn unless_alarm<T>(alarm: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        biased;
        () = alarm.cancelled() => None,
        v = work => Some(v),
    }
}

/// Runs rollouts against the controller's outside systems and the store.
pub struct Engine<'a> {
    /// Salt and Prometheus.
    pub controller: &'a Controller,
    /// The store.
    pub store: &'a Store,
    /// Where progress events go (a view: plain lines, JSON lines, ...).
    pub progress: &'a (dyn Fn(&Progress) + Sync),
}

impl Engine<'_> {
    /// Checks the plan against the fleet as it is now and records the
    /// rollout (one active per component).
    pub async fn start(&self, spec: &Spec, plan: &Plan) -> Result<RolloutId, EngineError> {
        self.start_as(spec, plan, Runner::Cli).await
    }

    /// [`Engine::start`] for a rollout that `runner` runs: the CLI that
    /// starts it, or `rollout serve`'s worker.
    pub async fn start_as(
        &self,
        spec: &Spec,
        plan: &Plan,
        runner: Runner,
    ) -> Result<RolloutId, EngineError> {
        if !plan.executable() {
            return Err(EngineError::NotExecutable(plan.problems.join("; ")));
        }
        self.no_rollback_alert_firing(spec).await?;
        let now: Vec<Inventory> = self
            .controller
            .fleets(spec)
            .await?
            .into_iter()
            .map(|(inventory, _)| inventory)
            .collect();
        if !plan.matches_fleets(&now) {
            return Err(EngineError::Drift(drift(plan, &now)));
        }
        Ok(self.store.begin_rollout_as(spec, plan, runner).await?)
    }

    /// Refuses to start while an alert the spec rolls back on fires: the
    /// fleet already shows the harm the rollout is meant to stop at. An
    /// unreachable Alertmanager is said and does not block (the webhook
    /// still reaches a running rollout).
    async fn no_rollback_alert_firing(&self, spec: &Spec) -> Result<(), EngineError> {
        let Some(am) = &self.controller.alertmanager else {
            return Ok(());
        };
        if spec.rollback_alerts.is_empty() {
            return Ok(());
        }
        match am.firing().await {
            Ok(alerts) => match alerts
                .iter()
                .find(|a| a.firing && spec.rollback_alert_matching(&a.labels).is_some())
            {
                Some(a) => Err(EngineError::AlertFiring(a.describe())),
                None => Ok(()),
            },
            Err(e) => {
                self.say(Progress::AlertCheckSkipped {
                    error: e.to_string(),
                });
                Ok(())
            }
        }
    }

    /// Runs (or resumes) rollout `id` to its end.
    pub async fn run(&self, id: &RolloutId) -> Result<Outcome, EngineError> {
        let rec = self.store.get(id).await?;
        let (spec, plan) = (rec.spec, rec.plan);
        let marks = self.annotator(id, &spec);
        if rec.summary.state == RolloutState::RollingBack {
            let history = self.store.history(id).await?;
            let started = history
                .iter()
                .rev()
                .find(|s| s.event.kind == "rollback_started");
            let reason = started
                .and_then(|s| s.event.detail["reason"].as_str().map(str::to_string))
                .unwrap_or_else(|| "resumed rollback".into());
            let cause = started.map_or(json!(null), |s| s.event.detail["cause"].clone());
            let outcome = self
                .rollback(
                    id,
                    &spec,
                    &touched(&history, spec.component),
                    reason,
                    cause,
                    &marks,
                )
                .await;
            marks.flush(ANNOTATION_FLUSH).await;
            return outcome;
        }
        match rec.summary.state {
            RolloutState::Running => {}
            RolloutState::Paused => {
                self.journal(id, "resumed", json!({}), None).await?;
                self.store.set_state(id, RolloutState::Running).await?;
            }
            done => {
                return Err(EngineError::NotExecutable(format!(
                    "rollout {id} is {done}; there is nothing to resume"
                )));
            }
        }
        // Alerts are watched beside the work: the watcher raises the alarm,
        // and the work stops at its next wait (a Salt job, a version check,
        // a bake tick), not at the end of the bake.
        let alarm = CancellationToken::new();
        // Both futures are dropped at the end of this block: a watcher left
        // suspended in the middle of a store query would keep its pooled
        // connection (SQLite's only one) from everything that follows.
        let end = {
            let work = self.stages(id, &spec, &plan, &alarm, &marks);
            let watch = self.watch_alerts(id, &alarm);
            tokio::pin!(work, watch);
            tokio::select! {
                end = &mut work => end,
                found = &mut watch => match found {
                    Ok(()) => work.await,
                    Err(e) => Err(e),
                },
            }
        };
        let outcome = match end {
            Ok(StagesEnd::Succeeded) => {
                self.store.set_state(id, RolloutState::Succeeded).await?;
                marks.point(&format!("{} rollout succeeded", spec.describe()));
                self.say(Progress::Succeeded {
                    rollout: id.clone(),
                    what: spec.describe(),
                });
                Ok(Outcome::Succeeded)
            }
            Ok(StagesEnd::Fail(reason)) => {
                let touched = touched(&self.store.history(id).await?, spec.component);
                self.rollback(id, &spec, &touched, reason, json!(null), &marks)
                    .await
            }
            Ok(StagesEnd::Alarm) => {
                let alert = self.store.rollout_alerts(id).await?.into_iter().next();
                let (reason, cause) = match &alert {
                    Some(a) => (
                        format!(
                            "alert {} firing (received by {}, matches `{}`)",
                            describe_labels(&a.labels),
                            a.source,
                            a.selector
                        ),
                        json!({"alert": a}),
                    ),
                    None => ("an alert fired".to_string(), json!(null)),
                };
                let touched = touched(&self.store.history(id).await?, spec.component);
                let outcome = self
                    .rollback(id, &spec, &touched, reason, cause, &marks)
                    .await;
                if let (Some(a), Ok(_)) = (&alert, &outcome) {
                    self.print_timeline(id, a).await;
                }
                outcome
            }
            Ok(StagesEnd::Pause(reason)) => {
                self.journal(id, "paused", json!({"reason": reason}), None)
                    .await?;
                self.store.set_state(id, RolloutState::Paused).await?;
                marks.point(&format!("paused: {reason}"));
                self.say(Progress::Paused {
                    rollout: id.clone(),
                    reason: reason.clone(),
                });
                Ok(Outcome::Paused(reason))
            }
            Ok(StagesEnd::Interrupted(reason)) => {
                self.say(Progress::Stopping {
                    rollout: id.clone(),
                    reason: reason.clone(),
                });
                Ok(Outcome::Paused(reason))
            }
            Err(e) => Err(e),
        };
        let (sent, failed) = marks.flush(ANNOTATION_FLUSH).await;
        if failed > 0 {
            self.say(Progress::AnnotationsLost { failed, sent });
        }
        outcome
    }

    /// Every batch not done yet, in order, until one fails, pauses, or the
    /// alarm goes off.
    async fn stages(
        &self,
        id: &RolloutId,
        spec: &Spec,
        plan: &Plan,
        alarm: &CancellationToken,
        marks: &Annotator,
    ) -> Result<StagesEnd, EngineError> {
        let done = self.store.batches_done(id).await?;
        let history = self.store.history(id).await?;
        let mut touched = touched(&history, spec.component);
        let multi = spec.parts.len() > 1;
        for (si, stage) in plan.stages.iter().enumerate() {
            let component = plan.stage_component(si);
            let Some(part) = spec.part(component) else {
                return Ok(StagesEnd::Fail(format!(
                    "stage {} updates {component}, which the spec does not roll out",
                    si + 1
                )));
            };
            let release = &Release {
                version: part.version.clone(),
                source: part.artifact.url.clone(),
                sha256: part.artifact.sha256.clone(),
            };
            // The first stage of a later component: every stage of the
            // earlier ones is done (journaled once, so a resumed rollout
            // does not say it twice).
            if si > 0 && plan.stage_component(si - 1) != component {
                let previous = plan.stage_component(si - 1);
                let already = history.iter().any(|s| {
                    s.event.kind == "component_done" && s.event.detail["stage"] == json!(si - 1)
                });
                if !already {
                    self.journal(
                        id,
                        "component_done",
                        json!({"component": previous, "stage": si - 1, "next": component}),
                        None,
                    )
                    .await?;
                    self.say(Progress::ComponentDone {
                        component: previous,
                        next: component,
                        version: part.version.clone(),
                    });
                    marks.point(&format!(
                        "{previous} done; {component} {} starts",
                        part.version
                    ));
                }
            }
            let stage_mark = if multi {
                format!("{component} stage {} `{}`", si + 1, stage.cohort)
            } else {
                format!("stage {} `{}`", si + 1, stage.cohort)
            };
            let mut opened = false;
            for batch in &stage.batches {
                if done.contains(&(si, batch.index)) {
                    continue;
                }
                if alarm.is_cancelled() {
                    return Ok(StagesEnd::Alarm);
                }
                if let Some(state) = self.interrupted(id).await? {
                    return Ok(StagesEnd::Interrupted(format!("{state} by a person")));
                }
                if !opened {
                    marks.open(
                        &stage_mark,
                        &format!("{component} {}: {stage_mark} started", release.version),
                    );
                    opened = true;
                }
                self.say(Progress::BatchStarted {
                    stage: si + 1,
                    stages: plan.stages.len(),
                    cohort: stage.cohort.clone(),
                    batch: batch.index + 1,
                    batches: stage.batches.len(),
                    hosts: batch.hosts.clone(),
                });
                let at = json!({"stage": si, "batch": batch.index});
                for host in &batch.hosts {
                    if touched.iter().any(|(h, c, _)| h == host && *c == component) {
                        continue;
                    }
                    let previous = self.store.assignments_for(host).await?.remove(&component);
                    self.journal(
                        id,
                        "assign",
                        json!({"at": at, "component": component, "release": release, "previous": previous}),
                        Some(host),
                    )
                    .await?;
                    self.store.assign(host, component, release).await?;
                    touched.push((host.clone(), component, previous));
                }
                let end = self
                    .batch(
                        id,
                        spec,
                        &history,
                        (si, &batch.hosts, stage.bake),
                        (component, release),
                        alarm,
                    )
                    .await?;
                match end {
                    BatchEnd::Done => {
                        self.store.finish_batch(id, si, batch.index).await?;
                        self.say(Progress::BatchDone {
                            stage: si + 1,
                            batch: batch.index + 1,
                            cohort: stage.cohort.clone(),
                        });
                    }
                    BatchEnd::Fail(reason) => {
                        marks.close(&stage_mark, &format!("{stage_mark} failed: {reason}"));
                        return Ok(StagesEnd::Fail(reason));
                    }
                    BatchEnd::Pause(reason) => {
                        marks.close(&stage_mark, &format!("{stage_mark} paused"));
                        return Ok(StagesEnd::Pause(reason));
                    }
                    BatchEnd::Interrupted(reason) => {
                        marks.close(&stage_mark, &format!("{stage_mark} paused"));
                        return Ok(StagesEnd::Interrupted(reason));
                    }
                    BatchEnd::Alarm => {
                        marks.close(&stage_mark, &format!("{stage_mark} stopped by an alert"));
                        return Ok(StagesEnd::Alarm);
                    }
                }
            }
            if opened {
                marks.close(&stage_mark, &format!("{stage_mark} done"));
            }
        }
        Ok(StagesEnd::Succeeded)
    }

    /// Returns once an alert is recorded against the rollout (by the webhook
    /// of `rollout serve`, or by this poll of Alertmanager) and raises the
    /// alarm. Alertmanager being unreachable never stops the rollout: the
    /// webhook still works, and the change is said once.
    async fn watch_alerts(
        &self,
        id: &RolloutId,
        alarm: &CancellationToken,
    ) -> Result<(), EngineError> {
        let mut next_poll = Instant::now();
        let mut poll_error: Option<String> = None;
        loop {
            if let Some(a) = self.store.rollout_alerts(id).await?.first() {
                self.say(Progress::AlertReceived {
                    labels: a.labels.clone(),
                    source: a.source.clone(),
                });
                alarm.cancel();
                return Ok(());
            }
            if let Some(am) = &self.controller.alertmanager
                && Instant::now() >= next_poll
            {
                next_poll = Instant::now() + ALERT_POLL;
                match am.firing().await {
                    Ok(firing) => {
                        if poll_error.take().is_some() {
                            self.say(Progress::AlertmanagerReachable);
                        }
                        alerts::route(self.store, &firing, Source::Poll).await?;
                        continue;
                    }
                    Err(e) => {
                        let e = e.to_string();
                        if poll_error.as_ref() != Some(&e) {
                            self.say(Progress::AlertmanagerUnreachable { error: e.clone() });
                            tracing::warn!(error = %e, "polling Alertmanager failed");
                        }
                        poll_error = Some(e);
                    }
                }
            }
            tokio::time::sleep(ALERT_CHECK).await;
        }
    }

    /// Prints when the alert started, when it was received, and when the
    /// rollback started and ended, from the journal.
    async fn print_timeline(&self, id: &RolloutId, alert: &AlertRecord) {
        let Ok(history) = self.store.history(id).await else {
            return;
        };
        let at = |kind: &str| {
            history
                .iter()
                .rev()
                .find(|s| s.event.kind == kind)
                .map(|s| s.at)
        };
        let start = alert.starts_at_ms.unwrap_or(alert.received_at_ms);
        let mut lines = vec![("alert firing (startsAt)".to_string(), start)];
        lines.push((
            format!("alert received by {}", alert.source),
            alert.received_at_ms,
        ));
        if let Some(t) = at("rollback_started") {
            lines.push(("rollback started".into(), t));
        }
        if let Some(t) = at("rolled_back") {
            lines.push(("rollback done: every touched host back".into(), t));
        }
        self.say(Progress::Timeline);
        for (what, t) in lines {
            self.say(Progress::TimelineEntry {
                offset_ms: t - start,
                what,
            });
        }
    }

    async fn batch(
        &self,
        id: &RolloutId,
        spec: &Spec,
        history: &[Step],
        (stage, hosts, bake): (usize, &[String], Duration),
        (component, release): (Component, &Release),
        alarm: &CancellationToken,
    ) -> Result<BatchEnd, EngineError> {
        let same_batch = |s: &Step, kind: &str| {
            s.event.kind == kind
                && s.event.detail["stage"] == stage
                && s.event.detail["hosts"] == json!(hosts)
        };
        let returned = history.iter().any(|s| same_batch(s, "salt_result"));
        if !returned {
            // The job id is chosen and journaled before the job starts, so
            // a controller killed at any moment finds the job it started and
            // waits for it rather than starting a second one.
            let recorded = history
                .iter()
                .rev()
                .find(|s| same_batch(s, "salt_apply"))
                .and_then(|s| s.event.detail["jid"].as_str().map(str::to_string));
            let salt = &self.controller.salt;
            let report = async {
                let jid = match recorded {
                    Some(jid) => {
                        if salt.job_known(&jid).await? {
                            self.say(Progress::SaltJobWaiting { jid: jid.clone() });
                        } else {
                            self.say(Progress::SaltJobNeverStarted { jid: jid.clone() });
                            salt.apply_async(hosts, component.as_str(), &jid).await?;
                        }
                        jid
                    }
                    None => {
                        let jid = crate::salt::new_jid();
                        let detail = json!({"stage": stage, "hosts": hosts, "jid": jid});
                        self.journal(id, "salt_apply", detail, None)
                            .await
                            .map_err(|e| crate::salt::SaltError::BadResponse(e.to_string()))?;
                        self.say(Progress::SaltJobSent {
                            component,
                            hosts: hosts.to_vec(),
                            jid: jid.clone(),
                        });
                        salt.apply_async(hosts, component.as_str(), &jid).await?;
                        self.say(Progress::SaltJobRunning { jid: jid.clone() });
                        jid
                    }
                };
                salt.wait_job(&jid, hosts, spec.timeouts.salt_job).await
            };
            // The job goes on in Salt when the alarm stops the wait; the
            // rollback's own state runs queue behind it.
            let report = match unless_alarm(alarm, report).await {
                None => return Ok(BatchEnd::Alarm),
                Some(Ok(r)) => r,
                Some(Err(e)) => return Ok(BatchEnd::Fail(format!("salt-api failed: {e}"))),
            };
            let detail =
                json!({"stage": stage, "hosts": hosts, "jid": report.jid, "returns": report.hosts});
            self.journal(id, "salt_result", detail, None).await?;
            let failures = report.failures();
            for (host, outcome) in &failures {
                self.say(Progress::HostFailed {
                    host: host.to_string(),
                    result: (*outcome).clone(),
                });
            }
            if !failures.is_empty()
                && (failures.len() > spec.limits.max_failed_hosts as usize
                    || failures.len() == hosts.len())
            {
                let (host, outcome) = failures[0];
                return Ok(BatchEnd::Fail(format!(
                    "host {host}: {}",
                    outcome.describe()
                )));
            }
        }
        let confirmed = self.confirm(
            component,
            &release.version,
            hosts,
            spec.timeouts.version_confirm,
        );
        match unless_alarm(alarm, confirmed).await {
            None => return Ok(BatchEnd::Alarm),
            Some(Err(reason)) => return Ok(BatchEnd::Fail(reason)),
            Some(Ok(())) => {}
        }
        self.journal(
            id,
            "confirmed",
            json!({"stage": stage, "hosts": hosts, "version": release.version}),
            None,
        )
        .await?;
        self.say(Progress::VersionLive {
            component,
            version: release.version.clone(),
            hosts: hosts.to_vec(),
        });
        self.bake(id, spec, stage, (component, &release.version), bake, alarm)
            .await
    }

    /// Waits until Prometheus shows `version` on every host.
    async fn confirm(
        &self,
        component: Component,
        version: &str,
        hosts: &[String],
        timeout: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let live = self
                .controller
                .prometheus
                .versions(component.as_str())
                .await;
            let lagging: Vec<String> = match &live {
                Ok(live) => hosts
                    .iter()
                    .filter(|h| live.get(*h).map(String::as_str) != Some(version))
                    .map(|h| {
                        format!(
                            "{h} ({})",
                            live.get(h).map_or("not scraped", String::as_str)
                        )
                    })
                    .collect(),
                Err(e) => vec![format!("Prometheus: {e}")],
            };
            if lagging.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{version} not live after {}: {}",
                    daemon::duration::format(timeout),
                    lagging.join(", ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Measures every gate at its interval for the bake time.
    async fn bake(
        &self,
        id: &RolloutId,
        spec: &Spec,
        stage: usize,
        (component, version): (Component, &str),
        bake: Duration,
        alarm: &CancellationToken,
    ) -> Result<BatchEnd, EngineError> {
        let started = Instant::now();
        let mut gates = Vec::new();
        for g in &spec.gates {
            match self.controller.resolve_for(g, component, version).await {
                Ok((query, condition)) => {
                    gates.push((g, query, condition, Analysis::new(Limits::of(g)), started))
                }
                Err(e) => return Ok(BatchEnd::Fail(format!("gate {}: {e}", g.name))),
            }
        }
        self.say(Progress::Baking {
            bake_ms: u64::try_from(bake.as_millis()).unwrap_or(u64::MAX),
            gates: gates.len(),
        });
        loop {
            if alarm.is_cancelled() {
                return Ok(BatchEnd::Alarm);
            }
            let now = Instant::now();
            for (g, query, condition, analysis, due) in gates.iter_mut() {
                let counted_out = g
                    .effective_count()
                    .is_some_and(|n| analysis.tally().count >= n);
                if now < *due || counted_out || analysis.phase().is_final() {
                    continue;
                }
                *due = now + g.interval;
                let Some(m) = unless_alarm(alarm, self.controller.measure(query, condition)).await
                else {
                    return Ok(BatchEnd::Alarm);
                };
                let outcome = gate::assess(condition, g.no_data, &m);
                let phase = analysis.record(outcome);
                let value = match &m {
                    gate::Measurement::Value(v) => json!(v),
                    gate::Measurement::NoData => json!("no data"),
                    gate::Measurement::QueryError(e) => json!(e),
                };
                self.journal(id, "gate", json!({"stage": stage, "gate": g.name, "value": value, "outcome": outcome, "phase": phase, "condition": condition.to_string()}), None)
                    .await?;
                self.say(Progress::gate(&g.name, &m, outcome, phase, &condition));
                match phase {
                    Phase::Failed => {
                        return Ok(BatchEnd::Fail(format!(
                            "gate {}: value {} does not hold `{condition}` (query: {query})",
                            g.name, value
                        )));
                    }
                    p if p.pauses() => {
                        return Ok(BatchEnd::Pause(format!(
                            "gate {} is {p:?}: last measurement {value} against `{condition}`",
                            g.name
                        )));
                    }
                    _ => {}
                }
            }
            if started.elapsed() >= bake {
                break;
            }
            if let Some(state) = self.interrupted(id).await? {
                return Ok(BatchEnd::Interrupted(format!(
                    "{state} by a person during the bake"
                )));
            }
            if unless_alarm(alarm, tokio::time::sleep(Duration::from_millis(250)))
                .await
                .is_none()
            {
                return Ok(BatchEnd::Alarm);
            }
        }
        for (g, _, _, analysis, _) in gates.iter_mut() {
            if matches!(g.length, GateLength::UntilBakeEnds) || !analysis.phase().is_final() {
                let phase = analysis.finish();
                if phase == Phase::Failed {
                    return Ok(BatchEnd::Fail(format!("gate {} failed", g.name)));
                }
            }
        }
        Ok(BatchEnd::Done)
    }

    /// Puts every touched host back on what it had, newest first: in a
    /// rollout of several components the later component's hosts (the
    /// connectors) go back and are confirmed before the earlier one's (the
    /// edges). Each host's step is journaled before it is acted on, and a
    /// host whose rollback Salt job already returned (`rollback_applied`) is
    /// not applied again when a killed controller resumes the rollback.
    async fn rollback(
        &self,
        id: &RolloutId,
        spec: &Spec,
        touched: &[(String, Component, Option<Release>)],
        reason: String,
        cause: serde_json::Value,
        marks: &Annotator,
    ) -> Result<Outcome, EngineError> {
        self.say(Progress::RollingBack {
            reason: reason.clone(),
        });
        let applied: BTreeSet<(String, Component)> = self
            .store
            .history(id)
            .await?
            .iter()
            .filter(|s| s.event.kind == "rollback_applied")
            .filter_map(|s| {
                let host = s.event.host.clone()?;
                let component = serde_json::from_value(s.event.detail["component"].clone()).ok()?;
                Some((host, component))
            })
            .collect();
        self.journal(
            id,
            "rollback_started",
            json!({"reason": reason, "cause": cause}),
            None,
        )
        .await?;
        marks.open("rollback", &format!("rollback: {reason}"));
        self.store.set_state(id, RolloutState::RollingBack).await?;
        let mut failed = Vec::new();
        // (component, host) -> the version it goes back to.
        let mut expected: BTreeMap<(Component, String), String> = BTreeMap::new();
        let mut pending: BTreeMap<String, String> = BTreeMap::new();
        let mut current: Option<Component> = None;
        for (host, component, previous) in touched.iter().rev() {
            let component = *component;
            if current.is_some_and(|c| c != component) {
                // Every host of the later component is back before the
                // first host of the earlier one is touched.
                let done = current.expect("checked above");
                failed.extend(
                    self.confirm_back(done, &std::mem::take(&mut pending), spec)
                        .await,
                );
                self.say(Progress::ComponentBack { component: done });
            }
            current = Some(component);
            if let Some(r) = previous {
                expected.insert((component, host.clone()), r.version.clone());
                pending.insert(host.clone(), r.version.clone());
            }
            if applied.contains(&(host.clone(), component)) {
                continue;
            }
            self.journal(
                id,
                "rollback_assign",
                json!({"component": component, "previous": previous}),
                Some(host),
            )
            .await?;
            match previous {
                Some(r) => self.store.assign(host, component, r).await?,
                None => self.store.unassign(host, component).await?,
            }
            self.say(Progress::HostBack {
                host: host.clone(),
                component,
                version: previous.as_ref().map(|r| r.version.clone()),
            });
            match self
                .controller
                .salt
                .apply(
                    std::slice::from_ref(host),
                    Some(component.as_str()),
                    spec.timeouts.salt_job,
                )
                .await
            {
                Ok(report) => {
                    let failures = report.failures();
                    for (h, o) in &failures {
                        failed.push(format!("{h}: {}", o.describe()));
                    }
                    if failures.is_empty() {
                        self.journal(
                            id,
                            "rollback_applied",
                            json!({"component": component, "jid": report.jid}),
                            Some(host),
                        )
                        .await?;
                    }
                }
                Err(e) => failed.push(format!("{host}: {e}")),
            }
        }
        if let Some(last) = current {
            failed.extend(self.confirm_back(last, &pending, spec).await);
        }
        let expected: BTreeMap<String, BTreeMap<String, String>> =
            expected
                .into_iter()
                .fold(BTreeMap::new(), |mut m, ((c, h), v)| {
                    m.entry(c.to_string()).or_default().insert(h, v);
                    m
                });
        let expected = if spec.parts.len() > 1 {
            json!(expected)
        } else {
            // One component: `hosts` maps host to version, as before.
            json!(expected.into_values().next().unwrap_or_default())
        };
        if failed.is_empty() {
            self.journal(
                id,
                "rolled_back",
                json!({"reason": reason, "hosts": expected}),
                None,
            )
            .await?;
            self.store.set_state(id, RolloutState::RolledBack).await?;
            marks.close(
                "rollback",
                "rolled back: every touched host is on its previous release",
            );
            self.say(Progress::RolledBack {
                reason: reason.clone(),
            });
            Ok(Outcome::RolledBack(reason))
        } else {
            let why = format!("{reason}; the rollback failed on {}", failed.join("; "));
            self.journal(id, "rollback_failed", json!({"reason": why}), None)
                .await?;
            self.store.set_state(id, RolloutState::Failed).await?;
            marks.close("rollback", &format!("rollback failed: {why}"));
            Ok(Outcome::Failed(why))
        }
    }

    /// Waits until each host shows its previous version of `component`;
    /// returns what is still wrong.
    async fn confirm_back(
        &self,
        component: Component,
        expected: &BTreeMap<String, String>,
        spec: &Spec,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        for (host, version) in expected {
            if let Err(e) = self
                .confirm(
                    component,
                    version,
                    std::slice::from_ref(host),
                    spec.timeouts.version_confirm,
                )
                .await
            {
                failed.push(e);
            }
        }
        failed
    }

    /// Whether a person paused the rollout from another process
    /// (`rollout pause`): checked between steps and during bakes.
    async fn interrupted(&self, id: &RolloutId) -> Result<Option<RolloutState>, EngineError> {
        let state = self.store.get(id).await?.summary.state;
        Ok((state == RolloutState::Paused).then_some(state))
    }

    /// Stops a paused rollout for good: every touched host goes back, and
    /// the rollout ends `aborted`.
    pub async fn abort(&self, id: &RolloutId, reason: &str) -> Result<Outcome, EngineError> {
        let rec = self.store.get(id).await?;
        if rec.summary.state != RolloutState::Paused {
            return Err(EngineError::NotExecutable(format!(
                "rollout {id} is {}; only a paused rollout can be aborted (`rollout pause {id}` first)",
                rec.summary.state
            )));
        }
        let history = self.store.history(id).await?;
        let marks = self.annotator(id, &rec.spec);
        let outcome = self
            .rollback(
                id,
                &rec.spec,
                &touched(&history, rec.spec.component),
                format!("aborted: {reason}"),
                json!({"aborted_by": reason}),
                &marks,
            )
            .await;
        marks.flush(ANNOTATION_FLUSH).await;
        let outcome = outcome?;
        if let Outcome::RolledBack(why) = outcome {
            self.store.set_state(id, RolloutState::Aborted).await?;
            return Ok(Outcome::RolledBack(why));
        }
        Ok(outcome)
    }

    /// Grafana annotations for this rollout, tagged so the dashboards'
    /// `rollout` annotation query shows them; a no-op without Grafana.
    fn annotator(&self, id: &RolloutId, spec: &Spec) -> Annotator {
        let mut tags = vec!["rollout".to_string()];
        for part in &spec.parts {
            tags.push(part.component.as_str().to_string());
            if !tags.contains(&part.version) {
                tags.push(part.version.clone());
            }
        }
        tags.push(id.to_string());
        Annotator::spawn(self.controller.grafana.clone(), tags)
    }

    async fn journal(
        &self,
        id: &RolloutId,
        kind: &str,
        detail: serde_json::Value,
        host: Option<&str>,
    ) -> Result<(), EngineError> {
        let mut event = Event::new(kind, detail);
        if let Some(h) = host {
            event = event.on_host(h);
        }
        self.store.journal(id, &event).await?;
        Ok(())
    }

    fn say(&self, event: Progress) {
        (self.progress)(&event);
    }
}

/// Hosts the rollout assigned, in order, with the component and what they
/// had before. An `assign` journaled before several components existed has
/// no `component`: it is the spec's (first) component.
fn touched(history: &[Step], default: Component) -> Vec<(String, Component, Option<Release>)> {
    let mut seen = BTreeSet::new();
    history
        .iter()
        .filter(|s| s.event.kind == "assign")
        .filter_map(|s| {
            let host = s.event.host.clone()?;
            let component =
                serde_json::from_value(s.event.detail["component"].clone()).unwrap_or(default);
            let previous = serde_json::from_value(s.event.detail["previous"].clone()).ok();
            seen.insert((host.clone(), component))
                .then_some((host, component, previous))
        })
        .collect()
}

/// What changed between the plan's inventories and now, for the refusal.
fn drift(plan: &Plan, now: &[Inventory]) -> String {
    let planned: Vec<(Component, &Inventory)> = std::iter::once((plan.component, &plan.inventory))
        .chain(plan.later.iter().map(|p| (p.component, &p.inventory)))
        .collect();
    let multi = planned.len() > 1;
    let mut changes = Vec::new();
    if planned.len() != now.len() {
        changes.push(format!(
            "the plan has {} component(s), the spec {}",
            planned.len(),
            now.len()
        ));
    }
    for ((component, then), now) in planned.iter().zip(now) {
        let on = |id: &str| {
            if multi {
                format!("{id} ({component})")
            } else {
                id.to_string()
            }
        };
        for h in now.hosts() {
            match then.get(&h.id) {
                None => changes.push(format!("{} is new", on(&h.id))),
                Some(old) if old.version != h.version || old.reachable != h.reachable => changes
                    .push(format!(
                        "{}: {} -> {}",
                        on(&h.id),
                        describe(old.version.as_deref(), old.reachable),
                        describe(h.version.as_deref(), h.reachable)
                    )),
                Some(_) => {}
            }
        }
        for h in then.hosts() {
            if now.get(&h.id).is_none() {
                changes.push(format!("{} is gone", on(&h.id)));
            }
        }
    }
    if changes.is_empty() {
        "the inventory differs".into()
    } else {
        changes.join(", ")
    }
}

fn describe(version: Option<&str>, reachable: bool) -> String {
    format!(
        "{}{}",
        version.unwrap_or("no version"),
        if reachable { "" } else { " (unreachable)" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(seq: i64, kind: &str, host: &str, detail: serde_json::Value) -> Step {
        Step {
            seq,
            at: seq,
            event: Event::new(kind, detail).on_host(host),
        }
    }

    #[test]
    fn touched_hosts_keep_their_component_and_order() {
        let v1 = json!({"version": "v1", "source": "salt://v1", "sha256": "0"});
        let history = [
            // Journaled before several components existed: no `component`.
            step(1, "assign", "e1", json!({"previous": v1})),
            step(
                2,
                "assign",
                "e2",
                json!({"component": "edge", "previous": null}),
            ),
            step(
                3,
                "assign",
                "c1",
                json!({"component": "connector", "previous": v1}),
            ),
            // A host assigned again (a resumed batch) counts once.
            step(
                4,
                "assign",
                "e1",
                json!({"component": "edge", "previous": null}),
            ),
            // The same host running both components counts once per component.
            step(
                5,
                "assign",
                "e2",
                json!({"component": "connector", "previous": null}),
            ),
            step(6, "confirmed", "e9", json!({})),
        ];
        let got: Vec<(String, Component, Option<String>)> = touched(&history, Component::Edge)
            .into_iter()
            .map(|(h, c, p)| (h, c, p.map(|r| r.version)))
            .collect();
        assert_eq!(
            got,
            [
                ("e1".into(), Component::Edge, Some("v1".into())),
                ("e2".into(), Component::Edge, None),
                ("c1".into(), Component::Connector, Some("v1".into())),
                ("e2".into(), Component::Connector, None),
            ]
        );
        // The rollback walks this newest first: connectors, then edges.
        let order: Vec<Component> = got.iter().rev().map(|(_, c, _)| *c).collect();
        assert_eq!(
            order,
            [
                Component::Connector,
                Component::Connector,
                Component::Edge,
                Component::Edge
            ]
        );
    }

    #[test]
    fn drift_names_the_component_that_changed() {
        use crate::inventory::tests::host;
        let spec = Spec::from_yaml(
            r#"
components:
  - component: edge
    version: v2
    artifact: {url: salt://e.tar.gz, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
    cohorts: [{name: all, target: G@role:edge}]
  - component: connector
    version: v2
    artifact: {url: salt://c.tar.gz, sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08}
    cohorts: [{name: all, target: G@role:connector}]
"#,
        )
        .unwrap();
        let inv = |id: &str, v: &str| Inventory::new(vec![host(id, "ams", Some(v), true)]).unwrap();
        let m = |id: &str| BTreeMap::from([("all".to_string(), vec![id.to_string()])]);
        let plan = Plan::build_parts(
            &spec,
            &[(inv("e1", "v1"), m("e1")), (inv("c1", "v1"), m("c1"))],
        );
        assert!(plan.matches_fleets(&[inv("e1", "v1"), inv("c1", "v1")]));
        let now = [inv("e1", "v1"), inv("c1", "v2")];
        assert!(!plan.matches_fleets(&now));
        assert_eq!(drift(&plan, &now), "c1 (connector): v1 -> v2");
    }
}
