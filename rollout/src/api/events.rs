//! Server-sent events of journal steps, read from the store, so every serve
//! process sharing the database streams the same events whichever one runs
//! the rollout.
//!
//! - `GET /v1/events[?since=MS]`: every rollout's steps appended at or
//!   after `since` (default: now), as `event: step`, and `event: rollout`
//!   with a rollout's summary when it first appears and whenever its state
//!   changes.
//! - `GET /v1/rollouts/{id}/events`: one rollout's steps from its first,
//!   then `event: end` once it is final.
//!
//! Both poll the store twice a second: a step reaches a browser within half
//! a second of being journaled, at the cost of one small query per stream.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::Deserialize;
use serde_json::json;

use super::{Api, Reader, store_error};
use crate::store::{RolloutId, RolloutState, RolloutSummary, Step};

/// How often a stream looks for new steps.
const POLL: Duration = Duration::from_millis(500);
/// Steps read per poll at most; a stream behind catches up over polls.
const BATCH: i64 = 500;

/// `?since=MS`.
#[derive(Debug, Deserialize)]
pub struct Since {
    since: Option<i64>,
}

fn step_event(rollout: &RolloutId, step: &Step) -> SseEvent {
    let data = json!({
        "rollout": rollout,
        "seq": step.seq,
        "at": step.at,
        "kind": step.event.kind,
        "host": step.event.host,
        "detail": step.event.detail,
    });
    SseEvent::default()
        .event("step")
        .id(format!("{rollout}/{}", step.seq))
        .data(data.to_string())
}

fn rollout_event(summary: &RolloutSummary) -> SseEvent {
    SseEvent::default()
        .event("rollout")
        .data(serde_json::to_string(summary).unwrap_or_default())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `GET /v1/events`.
pub async fn all(State(api): State<Api>, _: Reader, Query(q): Query<Since>) -> Response {
    let since = q.since.unwrap_or_else(now_ms);
    let stream = futures_util::stream::unfold(
        AllState {
            api,
            since,
            seen: HashMap::new(),
            states: HashMap::new(),
            queue: Vec::new(),
        },
        |mut st| async move {
            loop {
                if let Some(ev) = st.queue.pop() {
                    return Some((Ok::<_, Infallible>(ev), st));
                }
                st.poll().await;
                if st.queue.is_empty() {
                    tokio::time::sleep(POLL).await;
                }
            }
        },
    );
    sse(stream)
}

struct AllState {
    api: Api,
    /// Steps at or after this time are still to be read.
    since: i64,
    /// The last step sent, per rollout (steps of one millisecond may come
    /// in two polls).
    seen: HashMap<RolloutId, i64>,
    /// The last state sent, per rollout.
    states: HashMap<RolloutId, RolloutState>,
    /// Events to send, last first.
    queue: Vec<SseEvent>,
}

impl AllState {
    async fn poll(&mut self) {
        let mut out = Vec::new();
        match self.api.store.list().await {
            Ok(all) => {
                for r in all.iter().rev() {
                    if self.states.get(&r.id) != Some(&r.state) {
                        self.states.insert(r.id.clone(), r.state);
                        out.push(rollout_event(r));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "event stream: cannot list rollouts"),
        }
        match self.api.store.steps_since(self.since, BATCH).await {
            Ok(steps) => {
                for (id, step) in steps {
                    if self.seen.get(&id).is_some_and(|s| *s >= step.seq) {
                        continue;
                    }
                    self.seen.insert(id.clone(), step.seq);
                    // Re-read this millisecond next time: a step may still
                    // be committed with it.
                    self.since = self.since.max(step.at);
                    out.push(step_event(&id, &step));
                }
            }
            Err(e) => tracing::warn!(error = %e, "event stream: cannot read the journal"),
        }
        out.reverse();
        self.queue = out;
    }
}

/// `GET /v1/rollouts/{id}/events`.
pub async fn one(State(api): State<Api>, _: Reader, Path(id): Path<String>) -> Response {
    let id = RolloutId(id);
    // An unknown rollout is a 404, not an empty stream.
    if let Err(e) = api.store.get(&id).await {
        return store_error(e);
    }
    let stream = futures_util::stream::unfold(
        (
            api,
            id,
            0i64,
            None::<RolloutState>,
            Vec::<SseEvent>::new(),
            false,
            0u8,
        ),
        |(api, id, mut seen, mut state, mut queue, mut ended, mut finals)| async move {
            loop {
                if let Some(ev) = queue.pop() {
                    return Some((
                        Ok::<_, Infallible>(ev),
                        (api, id, seen, state, queue, ended, finals),
                    ));
                }
                if ended {
                    return None;
                }
                let mut out = Vec::new();
                // The state first, then the steps: every step journaled
                // before a final state is sent before `end`.
                let now = api.store.get(&id).await.ok().map(|rec| rec.summary);
                if let Ok(steps) = api.store.history(&id).await {
                    let from = seen;
                    for step in steps.iter().filter(|s| s.seq > from) {
                        out.push(step_event(&id, step));
                        seen = step.seq;
                    }
                }
                if let Some(summary) = now {
                    if state != Some(summary.state) {
                        state = Some(summary.state);
                        out.push(rollout_event(&summary));
                    }
                    // A final state is confirmed by a second poll: an abort
                    // ends `rolled_back`, then `aborted`.
                    if !summary.state.is_active() {
                        if finals > 0 {
                            out.push(
                                SseEvent::default()
                                    .event("end")
                                    .data(summary.state.as_str()),
                            );
                            ended = true;
                        }
                        finals += 1;
                    }
                }
                out.reverse();
                queue = out;
                if queue.is_empty() {
                    tokio::time::sleep(POLL).await;
                }
            }
        },
    );
    sse(stream)
}

fn sse(stream: impl Stream<Item = Result<SseEvent, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(
            KeepAlive::new()
                .interval(Duration::from_secs(15))
                .text("keepalive"),
        )
        .into_response()
}
