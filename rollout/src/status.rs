//! `rollout status`: one line per rollout state, once or as it changes
//! (`--watch`), with the journal's new steps in between, from the store
//! (whichever controller runs the rollout) or from a controller's API.

use std::time::Duration;

use serde_json::json;

use crate::client::Client;
use crate::store::{RolloutId, RolloutRecord, RolloutState, Step, Store};

/// How a rollout is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line a person reads.
    Table,
    /// One JSON object per line.
    Json,
}

/// Where a rollout is read: the store, or a controller's API.
pub enum Source<'a> {
    /// The store directly.
    Store(&'a Store),
    /// `rollout serve` (`--server`).
    Api(&'a Client),
}

/// A rollout as read at one moment.
struct Snapshot {
    record: RolloutRecord,
    batches_done: usize,
    steps: Vec<Step>,
}

impl Source<'_> {
    async fn snapshot(&self, id: &RolloutId) -> Result<Snapshot, String> {
        match self {
            Source::Store(store) => {
                let record = store.get(id).await.map_err(|e| e.to_string())?;
                let batches_done = store
                    .batches_done(id)
                    .await
                    .map_err(|e| e.to_string())?
                    .len();
                let steps = store.history(id).await.map_err(|e| e.to_string())?;
                Ok(Snapshot {
                    record,
                    batches_done,
                    steps,
                })
            }
            Source::Api(client) => {
                let remote = client.get(id.as_str()).await.map_err(|e| e.to_string())?;
                let batches_done = remote
                    .steps
                    .iter()
                    .filter(|s| s.event.kind == "batch_done")
                    .count();
                Ok(Snapshot {
                    record: remote.record,
                    batches_done,
                    steps: remote.steps,
                })
            }
        }
    }
}

/// The status line of a rollout now, and its state.
pub async fn line(
    source: &Source<'_>,
    id: &RolloutId,
    format: Format,
) -> Result<(String, RolloutState), String> {
    let snap = source.snapshot(id).await?;
    Ok((render(&snap, format), snap.record.summary.state))
}

fn render(snap: &Snapshot, format: Format) -> String {
    let rec = &snap.record;
    let done = snap.batches_done;
    let total = rec.plan.batch_count();
    let s = &rec.summary;
    match format {
        Format::Json => {
            let components: Vec<_> = rec
                .spec
                .parts
                .iter()
                .map(|p| json!({"component": p.component, "version": p.version}))
                .collect();
            json!({"rollout": s, "components": components, "batches_done": done, "batches": total})
                .to_string()
        }
        // `edge v2`, or `edge v2 then connector v2` for several components.
        Format::Table => format!(
            "{}  {}  {}  {done}/{total} batches done",
            s.id,
            rec.spec.describe(),
            s.state
        ),
    }
}

/// Prints the status line whenever it changes and every new journal step,
/// until the rollout reaches a final state, which it returns. A paused
/// rollout is watched on: a person may resume it.
pub async fn watch(
    source: &Source<'_>,
    id: &RolloutId,
    format: Format,
    every: Duration,
    out: &mut dyn FnMut(&str),
) -> Result<RolloutState, String> {
    let mut last_line = String::new();
    let mut seen = 0;
    loop {
        let snap = source.snapshot(id).await?;
        for step in snap.steps.iter().skip(seen) {
            out(&describe(step, format));
        }
        seen = snap.steps.len().max(seen);
        let text = render(&snap, format);
        if text != last_line {
            out(&text);
            last_line = text;
        }
        let state = snap.record.summary.state;
        if !state.is_active() {
            return Ok(state);
        }
        tokio::time::sleep(every).await;
    }
}

/// The exit code `status --watch` ends with: as `apply`'s for the same end.
pub fn exit_code(state: RolloutState) -> u8 {
    match state {
        RolloutState::Succeeded => 0,
        RolloutState::RolledBack | RolloutState::Aborted => 2,
        RolloutState::Failed => 4,
        RolloutState::Running | RolloutState::Paused | RolloutState::RollingBack => 3,
    }
}

fn describe(step: &Step, format: Format) -> String {
    match format {
        Format::Json => json!({"step": step}).to_string(),
        Format::Table => {
            let e = &step.event;
            let what = match e.kind.as_str() {
                "alert" => format!(
                    "{} (by {})",
                    e.detail["labels"]["alertname"].as_str().unwrap_or("alert"),
                    e.detail["source"].as_str().unwrap_or("?")
                ),
                "rollback_started" | "paused" | "rolled_back" | "rollback_failed" => {
                    e.detail["reason"].as_str().unwrap_or_default().to_string()
                }
                "gate" => format!(
                    "{} = {} ({})",
                    e.detail["gate"].as_str().unwrap_or("?"),
                    e.detail["value"],
                    e.detail["outcome"].as_str().unwrap_or("?")
                ),
                // Which component a host step concerns (absent in journals
                // from before several components).
                "assign" | "rollback_assign" => e.detail["component"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                "component_done" => format!(
                    "{} done; {} next",
                    e.detail["component"].as_str().unwrap_or("?"),
                    e.detail["next"].as_str().unwrap_or("?")
                ),
                _ => String::new(),
            };
            format!(
                "  {:>4}  {:<16} {:<12} {what}",
                step.seq,
                e.kind,
                e.host.as_deref().unwrap_or("")
            )
        }
    }
}
