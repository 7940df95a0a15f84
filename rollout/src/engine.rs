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

use crate::controller::Controller;
use crate::gate::{self, Analysis, Limits, Phase};
use crate::plan::Plan;
use crate::spec::{Component, GateLength, Spec};
use crate::store::{Event, Release, RolloutId, RolloutState, Step, Store, StoreError};

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
}

enum BatchEnd {
    Done,
    Fail(String),
    Pause(String),
}

/// Runs rollouts against the controller's outside systems and the store.
pub struct Engine<'a> {
    /// Salt and Prometheus.
    pub controller: &'a Controller,
    /// The store.
    pub store: &'a Store,
    /// Where progress lines go (a terminal, a log).
    pub progress: &'a (dyn Fn(&str) + Sync),
}

impl Engine<'_> {
    /// Checks the plan against the fleet as it is now and records the
    /// rollout (one active per component).
    pub async fn start(&self, spec: &Spec, plan: &Plan) -> Result<RolloutId, EngineError> {
        if !plan.executable() {
            return Err(EngineError::NotExecutable(plan.problems.join("; ")));
        }
        let (now, _) = self.controller.inventory(spec).await?;
        if !plan.matches_inventory(&now) {
            return Err(EngineError::Drift(drift(plan, &now)));
        }
        Ok(self.store.begin_rollout(spec, plan).await?)
    }

    /// Runs (or resumes) rollout `id` to its end.
    pub async fn run(&self, id: &RolloutId) -> Result<Outcome, EngineError> {
        let rec = self.store.get(id).await?;
        let (spec, plan) = (rec.spec, rec.plan);
        let component = spec.component;
        let release = Release {
            version: spec.version.clone(),
            source: spec.artifact.url.clone(),
            sha256: spec.artifact.sha256.clone(),
        };
        if rec.summary.state == RolloutState::RollingBack {
            let history = self.store.history(id).await?;
            let reason = history
                .iter()
                .rev()
                .find(|s| s.event.kind == "rollback_started")
                .and_then(|s| s.event.detail["reason"].as_str().map(str::to_string))
                .unwrap_or_else(|| "resumed rollback".into());
            return self.rollback(id, &spec, &touched(&history), reason).await;
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
        let done = self.store.batches_done(id).await?;
        let history = self.store.history(id).await?;
        let mut touched = touched(&history);
        for (si, stage) in plan.stages.iter().enumerate() {
            for batch in &stage.batches {
                if done.contains(&(si, batch.index)) {
                    continue;
                }
                if let Some(state) = self.interrupted(id).await? {
                    let reason = format!("{state} by a person");
                    self.say(&format!("stopping: rollout {id} was {reason}"));
                    return Ok(Outcome::Paused(reason));
                }
                self.say(&format!(
                    "stage {}/{} `{}`, batch {}/{}: {}",
                    si + 1,
                    plan.stages.len(),
                    stage.cohort,
                    batch.index + 1,
                    stage.batches.len(),
                    batch.hosts.join(", ")
                ));
                let at = json!({"stage": si, "batch": batch.index});
                for host in &batch.hosts {
                    if touched.iter().any(|(h, _)| h == host) {
                        continue;
                    }
                    let previous = self.store.assignments_for(host).await?.remove(&component);
                    self.journal(
                        id,
                        "assign",
                        json!({"at": at, "release": release, "previous": previous}),
                        Some(host),
                    )
                    .await?;
                    self.store.assign(host, component, &release).await?;
                    touched.push((host.clone(), previous));
                }
                let end = self
                    .batch(id, &spec, &history, si, &batch.hosts, &release)
                    .await?;
                match end {
                    BatchEnd::Done => {
                        self.store.finish_batch(id, si, batch.index).await?;
                        self.say(&format!(
                            "  batch {} of `{}` done",
                            batch.index + 1,
                            stage.cohort
                        ));
                    }
                    BatchEnd::Fail(reason) => {
                        return self.rollback(id, &spec, &touched, reason).await;
                    }
                    BatchEnd::Pause(reason) => {
                        self.journal(id, "paused", json!({"reason": reason}), None)
                            .await?;
                        self.store.set_state(id, RolloutState::Paused).await?;
                        self.say(&format!(
                            "PAUSED: {reason}; run `rollout resume {id}` or `rollout abort {id}`"
                        ));
                        return Ok(Outcome::Paused(reason));
                    }
                }
            }
        }
        self.store.set_state(id, RolloutState::Succeeded).await?;
        self.say(&format!(
            "rollout {id} succeeded: {component} {} everywhere planned",
            spec.version
        ));
        Ok(Outcome::Succeeded)
    }

    async fn batch(
        &self,
        id: &RolloutId,
        spec: &Spec,
        history: &[Step],
        stage: usize,
        hosts: &[String],
        release: &Release,
    ) -> Result<BatchEnd, EngineError> {
        let component = spec.component;
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
                            self.say(&format!(
                                "  salt: waiting for job {jid}, started before the restart"
                            ));
                        } else {
                            self.say(&format!("  salt: job {jid} never started; starting it"));
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
                        self.say(&format!(
                            "  salt: state.apply {component} on {} (job {jid})",
                            hosts.join(", ")
                        ));
                        salt.apply_async(hosts, component.as_str(), &jid).await?;
                        self.say(&format!("  salt: job {jid} running"));
                        jid
                    }
                };
                salt.wait_job(&jid, hosts, spec.timeouts.salt_job).await
            }
            .await;
            let report = match report {
                Ok(r) => r,
                Err(e) => return Ok(BatchEnd::Fail(format!("salt-api failed: {e}"))),
            };
            let detail =
                json!({"stage": stage, "hosts": hosts, "jid": report.jid, "returns": report.hosts});
            self.journal(id, "salt_result", detail, None).await?;
            let failures = report.failures();
            for (host, outcome) in &failures {
                self.say(&format!("  {host}: {}", outcome.describe()));
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
        if let Err(reason) = self
            .confirm(
                component,
                &release.version,
                hosts,
                spec.timeouts.version_confirm,
            )
            .await
        {
            return Ok(BatchEnd::Fail(reason));
        }
        self.journal(
            id,
            "confirmed",
            json!({"stage": stage, "hosts": hosts, "version": release.version}),
            None,
        )
        .await?;
        self.say(&format!(
            "  {} {} live on {}",
            component,
            release.version,
            hosts.join(", ")
        ));
        let bake = spec.cohorts.get(stage).map_or(Duration::ZERO, |c| c.bake);
        self.bake(id, spec, stage, bake).await
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
        bake: Duration,
    ) -> Result<BatchEnd, EngineError> {
        let started = Instant::now();
        let mut gates = Vec::new();
        for g in &spec.gates {
            match self.controller.resolve(g) {
                Ok((query, condition)) => {
                    gates.push((g, query, condition, Analysis::new(Limits::of(g)), started))
                }
                Err(e) => return Ok(BatchEnd::Fail(format!("gate {}: {e}", g.name))),
            }
        }
        self.say(&format!(
            "  baking {} with {} gate(s)",
            daemon::duration::format(bake),
            gates.len()
        ));
        loop {
            let now = Instant::now();
            for (g, query, condition, analysis, due) in gates.iter_mut() {
                let counted_out = g
                    .effective_count()
                    .is_some_and(|n| analysis.tally().count >= n);
                if now < *due || counted_out || analysis.phase().is_final() {
                    continue;
                }
                *due = now + g.interval;
                let m = self.controller.measure(query, condition).await;
                let outcome = gate::assess(condition, g.no_data, &m);
                let phase = analysis.record(outcome);
                let value = match &m {
                    gate::Measurement::Value(v) => json!(v),
                    gate::Measurement::NoData => json!("no data"),
                    gate::Measurement::QueryError(e) => json!(e),
                };
                self.journal(id, "gate", json!({"stage": stage, "gate": g.name, "value": value, "outcome": outcome, "phase": phase}), None)
                    .await?;
                self.say(&format!(
                    "  gate {}: {} ({outcome:?}, {condition})",
                    g.name, value
                ));
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
                return Ok(BatchEnd::Pause(format!(
                    "{state} by a person during the bake"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
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

    /// Puts every touched host back on what it had, newest first.
    async fn rollback(
        &self,
        id: &RolloutId,
        spec: &Spec,
        touched: &[(String, Option<Release>)],
        reason: String,
    ) -> Result<Outcome, EngineError> {
        let component = spec.component;
        self.say(&format!("ROLLING BACK: {reason}"));
        self.journal(id, "rollback_started", json!({"reason": reason}), None)
            .await?;
        self.store.set_state(id, RolloutState::RollingBack).await?;
        let mut failed = Vec::new();
        let mut expected: BTreeMap<String, String> = BTreeMap::new();
        for (host, previous) in touched.iter().rev() {
            match previous {
                Some(r) => {
                    self.store.assign(host, component, r).await?;
                    expected.insert(host.clone(), r.version.clone());
                }
                None => self.store.unassign(host, component).await?,
            }
            self.journal(
                id,
                "rollback_assign",
                json!({"previous": previous}),
                Some(host),
            )
            .await?;
            self.say(&format!(
                "  {host}: back to {}",
                previous
                    .as_ref()
                    .map_or("its unmanaged release", |r| r.version.as_str())
            ));
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
                    for (h, o) in report.failures() {
                        failed.push(format!("{h}: {}", o.describe()));
                    }
                }
                Err(e) => failed.push(format!("{host}: {e}")),
            }
        }
        for (host, version) in &expected {
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
        if failed.is_empty() {
            self.journal(
                id,
                "rolled_back",
                json!({"reason": reason, "hosts": expected}),
                None,
            )
            .await?;
            self.store.set_state(id, RolloutState::RolledBack).await?;
            self.say(&format!(
                "rolled back: every touched host is on its previous release ({reason})"
            ));
            Ok(Outcome::RolledBack(reason))
        } else {
            let why = format!("{reason}; the rollback failed on {}", failed.join("; "));
            self.journal(id, "rollback_failed", json!({"reason": why}), None)
                .await?;
            self.store.set_state(id, RolloutState::Failed).await?;
            Ok(Outcome::Failed(why))
        }
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
        let outcome = self
            .rollback(
                id,
                &rec.spec,
                &touched(&history),
                format!("aborted: {reason}"),
            )
            .await?;
        if let Outcome::RolledBack(why) = outcome {
            self.store.set_state(id, RolloutState::Aborted).await?;
            return Ok(Outcome::RolledBack(why));
        }
        Ok(outcome)
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

    fn say(&self, line: &str) {
        (self.progress)(line);
    }
}

/// Hosts the rollout assigned, in order, with what they had before.
fn touched(history: &[Step]) -> Vec<(String, Option<Release>)> {
    let mut seen = BTreeSet::new();
    history
        .iter()
        .filter(|s| s.event.kind == "assign")
        .filter_map(|s| {
            let host = s.event.host.clone()?;
            let previous = serde_json::from_value(s.event.detail["previous"].clone()).ok();
            seen.insert(host.clone()).then_some((host, previous))
        })
        .collect()
}

/// What changed between the plan's inventory and now, for the refusal.
fn drift(plan: &Plan, now: &crate::inventory::Inventory) -> String {
    let mut changes = Vec::new();
    for h in now.hosts() {
        match plan.inventory.get(&h.id) {
            None => changes.push(format!("{} is new", h.id)),
            Some(old) if old.version != h.version || old.reachable != h.reachable => {
                changes.push(format!(
                    "{}: {} -> {}",
                    h.id,
                    describe(old.version.as_deref(), old.reachable),
                    describe(h.version.as_deref(), h.reachable)
                ))
            }
            Some(_) => {}
        }
    }
    for h in plan.inventory.hosts() {
        if now.get(&h.id).is_none() {
            changes.push(format!("{} is gone", h.id));
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
