//! What the live display knows about a running rollout, built from its
//! progress events, and the block of lines it shows. No terminal here:
//! the time is passed in, so a test gives a sequence of events and reads
//! the block.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use crate::gate;
use crate::progress::Progress;

/// How many of the last events the block shows under the state.
const RECENT: usize = 5;
/// How many characters the batch bar is wide.
const BAR: usize = 20;

/// A rollout as the display shows it.
#[derive(Debug, Default)]
pub struct Board {
    /// `rollout r-1: edge v2`, once the rollout is known.
    title: Option<String>,
    /// What the rollout does now, or how it ended.
    doing: Doing,
    /// The batch being applied.
    batch: Option<Batch>,
    /// Cohorts whose stages started, of the component rolling out now.
    cohorts: Vec<String>,
    /// The bake of the current batch.
    bake: Option<Bake>,
    /// The last measurement of each gate, in the order they were first seen.
    gates: Vec<GateValue>,
    /// How many hosts the rollback has put back.
    back: usize,
    /// The last event lines, oldest first.
    recent: VecDeque<String>,
    /// The line of the event that ended the run.
    last: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq)]
enum Doing {
    #[default]
    Starting,
    Applying,
    Baking,
    RollingBack(String),
    /// The run ended; the word says how.
    Ended(&'static str),
}

#[derive(Debug)]
struct Batch {
    stage: usize,
    stages: usize,
    cohort: String,
    batch: usize,
    batches: usize,
    /// Batches of this stage done, this one included once it is.
    done: usize,
    hosts: Vec<String>,
}

#[derive(Debug)]
struct Bake {
    ends: Instant,
    length: Duration,
    gates: usize,
}

#[derive(Debug)]
struct GateValue {
    name: String,
    /// The number, or the problem (`no data`).
    value: String,
    condition: String,
    verdict: gate::Outcome,
}

impl Board {
    /// Takes one event, seen at `now`, that happened at `at` (wall clock).
    pub fn apply(&mut self, at: SystemTime, event: &Progress, now: Instant) {
        let line = super::line(at, event);
        if let Some(how) = ending(event) {
            self.doing = Doing::Ended(how);
            self.bake = None;
            self.last = Some(line);
            return;
        }
        match event {
            Progress::Started { rollout, what } => {
                self.title = Some(format!("rollout {rollout}: {what}"));
            }
            Progress::Resuming { rollout } => {
                self.title
                    .get_or_insert_with(|| format!("rollout {rollout}"));
            }
            Progress::BatchStarted {
                stage,
                stages,
                cohort,
                batch,
                batches,
                hosts,
            } => {
                if !self.cohorts.contains(cohort) {
                    self.cohorts.push(cohort.clone());
                }
                self.doing = Doing::Applying;
                self.bake = None;
                self.batch = Some(Batch {
                    stage: *stage,
                    stages: *stages,
                    cohort: cohort.clone(),
                    batch: *batch,
                    batches: *batches,
                    // Batches before this one are done, also those a
                    // resumed rollout finished before its restart.
                    done: batch.saturating_sub(1),
                    hosts: hosts.clone(),
                });
            }
            Progress::Baking { bake_ms, gates } => {
                let length = Duration::from_millis(*bake_ms);
                self.doing = Doing::Baking;
                self.bake = Some(Bake {
                    ends: now + length,
                    length,
                    gates: *gates,
                });
            }
            Progress::Gate {
                gate,
                value,
                problem,
                verdict,
                condition,
                ..
            } => {
                let value = match (problem, value) {
                    (Some(p), _) => p.clone(),
                    (None, Some(v)) => v.to_string(),
                    (None, None) => "none".to_string(),
                };
                let measured = GateValue {
                    name: gate.clone(),
                    value,
                    condition: condition.clone(),
                    verdict: *verdict,
                };
                match self.gates.iter_mut().find(|g| g.name == *gate) {
                    Some(g) => *g = measured,
                    None => self.gates.push(measured),
                }
            }
            Progress::BatchDone { batch, .. } => {
                self.bake = None;
                if let Some(b) = &mut self.batch {
                    b.done = *batch;
                }
            }
            Progress::ComponentDone { .. } => {
                // The next component's stages start from the first cohort.
                self.cohorts.clear();
                self.batch = None;
                self.gates.clear();
            }
            Progress::RollingBack { reason } => {
                self.bake = None;
                self.doing = Doing::RollingBack(reason.clone());
            }
            Progress::HostBack { .. } => self.back += 1,
            _ => {}
        }
        self.recent.push_back(line);
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
    }

    /// The line of the event that ended the run, once it did.
    pub fn ended(&self) -> Option<&str> {
        self.last.as_deref()
    }

    /// Whether the block changes with time alone (the bake counts down).
    pub fn counting(&self) -> bool {
        self.bake.is_some() && self.last.is_none()
    }

    /// The block at `now`, one string per line, not yet cut to a width.
    pub fn render(&self, now: Instant) -> Vec<String> {
        let mut lines = Vec::new();
        let title = self.title.as_deref().unwrap_or("rollout");
        lines.push(format!("{title} · {}", self.doing.word()));
        if let Some(b) = &self.batch {
            lines.push(format!(
                "stage {}/{} `{}`  batch {}/{} {} {}/{} done",
                b.stage,
                b.stages,
                b.cohort,
                b.batch,
                b.batches,
                bar(b.done, b.batches),
                b.done,
                b.batches
            ));
            lines.push(format!("  stages  {}", self.stages(b)));
            lines.push(format!("  hosts   {}", b.hosts.join(", ")));
        }
        if let Some(bake) = &self.bake {
            lines.push(format!(
                "  bake    {} left of {}, {} gate(s)",
                rounded(bake.ends.saturating_duration_since(now)),
                rounded(bake.length),
                bake.gates
            ));
        }
        for g in &self.gates {
            lines.push(format!(
                "  gate    {} {} {} {}",
                g.name,
                g.value,
                g.condition,
                mark(g.verdict)
            ));
        }
        if let Doing::RollingBack(reason) = &self.doing {
            lines.push(format!("  ROLLING BACK: {reason}"));
            lines.push(format!("  hosts back: {}", self.back));
        }
        lines.extend(self.recent.iter().cloned());
        lines
    }

    /// `canary ✓  ams-fra ▸  +1`: the cohorts done, the one running, and
    /// how many stages are still to come.
    fn stages(&self, now: &Batch) -> String {
        let mut parts: Vec<String> = self
            .cohorts
            .iter()
            .map(|c| {
                let sign = if *c == now.cohort { "▸" } else { "✓" };
                format!("{c} {sign}")
            })
            .collect();
        let to_come = now.stages.saturating_sub(now.stage);
        if to_come > 0 {
            parts.push(format!("+{to_come}"));
        }
        parts.join("  ")
    }
}

impl Doing {
    fn word(&self) -> &'static str {
        match self {
            Doing::Starting => "starting",
            Doing::Applying => "applying",
            Doing::Baking => "baking",
            Doing::RollingBack(_) => "rolling back",
            Doing::Ended(how) => how,
        }
    }
}

/// How the run ended, when the event ends it. Its line goes under the
/// block, which then stays as it is.
fn ending(event: &Progress) -> Option<&'static str> {
    match event {
        Progress::Succeeded { .. } => Some("succeeded"),
        Progress::RolledBack { .. } => Some("rolled back"),
        Progress::RollbackFailed { .. } => Some("rollback failed"),
        Progress::Paused { .. } => Some("paused"),
        Progress::Stopping { .. } => Some("stopped"),
        _ => None,
    }
}

/// `[#####...............]`: `done` of `total` as a bar.
fn bar(done: usize, total: usize) -> String {
    let filled = (done * BAR).checked_div(total).unwrap_or(0).min(BAR);
    format!("[{}{}]", "#".repeat(filled), ".".repeat(BAR - filled))
}

/// `12s`, `2m 5s`: to the nearest second, as people read a countdown.
fn rounded(d: Duration) -> String {
    let secs = (d.as_millis() + 500) / 1000;
    humantime::format_duration(Duration::from_secs(secs as u64)).to_string()
}

/// How a gate's value stands against its condition, at a glance.
fn mark(verdict: gate::Outcome) -> &'static str {
    match verdict {
        gate::Outcome::Successful => "✓",
        gate::Outcome::Failed => "✗",
        gate::Outcome::Inconclusive => "?",
        gate::Outcome::Error => "!",
    }
}
