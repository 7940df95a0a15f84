//! Rollout marks on Grafana: each stage is a region (opened at its start,
//! closed with its end time), pauses and completion are points. The same
//! client fetches dashboards for panel gates when a Grafana is configured.
//!
//! Grafana is a window onto the rollout, never a gate on it: marks go through
//! a bounded queue to one background task, and a Grafana that is down or
//! refuses only costs a `warn!` line and a failure count.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// Attempts per request, the first included.
const ATTEMPTS: u32 = 3;
/// Wait before the second attempt; doubled before each later one.
const FIRST_RETRY_WAIT: Duration = Duration::from_millis(200);
/// Per attempt, connecting included: three of these plus the waits stay
/// well under the shortest stage, so a slow Grafana cannot pile marks up.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Marks waiting for the background task. Rollouts make a handful of marks
/// per stage; reaching this means Grafana has been stuck for minutes, and
/// dropping (and counting) beats growing without bound.
const QUEUE: usize = 1024;
/// How much of an error answer's body goes into the error.
const BODY_EXCERPT: usize = 200;

/// A Grafana service-account token. `Debug` never shows it.
#[derive(Clone)]
struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A client for Grafana's annotations API. `Debug` never shows the token.
#[derive(Clone)]
pub struct GrafanaClient {
    base: String,
    token: Option<Token>,
    http: reqwest::Client,
}

impl fmt::Debug for GrafanaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrafanaClient")
            .field("base", &self.base)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

/// One annotation as Grafana's `POST /api/annotations` takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    /// The dashboard to attach to; `None` makes it organization-wide, shown
    /// on every dashboard whose annotation query matches its tags.
    #[serde(rename = "dashboardUID", skip_serializing_if = "Option::is_none")]
    pub dashboard_uid: Option<String>,
    /// The panel of that dashboard; `None` for the whole dashboard.
    #[serde(rename = "panelId", skip_serializing_if = "Option::is_none")]
    pub panel_id: Option<i64>,
    /// Start, in milliseconds since the Unix epoch.
    #[serde(rename = "time")]
    pub time_ms: i64,
    /// End of a region, in milliseconds since the Unix epoch; `None` for a
    /// point, or for a region closed later with [`GrafanaClient::close_region`].
    #[serde(rename = "timeEnd", skip_serializing_if = "Option::is_none")]
    pub time_end_ms: Option<i64>,
    /// Tags, which dashboards filter on.
    pub tags: Vec<String>,
    /// The text shown on hover.
    pub text: String,
}

/// Why a Grafana request failed. Each names the request and the status or
/// cause, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnotationError {
    /// The configured Grafana URL is unusable.
    #[error("Grafana URL: {0}")]
    BadUrl(String),
    /// The token cannot be sent in an HTTP header.
    #[error("Grafana token: {0}")]
    BadToken(&'static str),
    /// The HTTP client could not be built.
    #[error("cannot build the Grafana HTTP client: {0}")]
    Client(String),
    /// Grafana could not be reached, or did not answer in time.
    #[error("{request}: cannot reach Grafana ({attempts} attempts): {reason}")]
    Unreachable {
        /// Method and URL.
        request: String,
        /// Attempts made.
        attempts: u32,
        /// The transport error.
        reason: String,
    },
    /// Grafana answered with an error status.
    #[error("{request}: Grafana answered {status} ({attempts} attempts): {body}")]
    Status {
        /// Method and URL.
        request: String,
        /// The HTTP status.
        status: u16,
        /// Attempts made (1 for a 4xx, which is never retried).
        attempts: u32,
        /// The start of the answer's body.
        body: String,
    },
    /// Grafana's answer was not what it documents.
    #[error("{request}: unexpected answer from Grafana: {reason}")]
    BadResponse {
        /// Method and URL.
        request: String,
        /// What was wrong.
        reason: String,
    },
}

impl GrafanaClient {
    /// A client for Grafana at `base`, like `http://127.0.0.1:3000` (a
    /// trailing slash is fine). Without a token no `Authorization` header is
    /// sent.
    pub fn new(base: &str, token: Option<String>) -> Result<GrafanaClient, AnnotationError> {
        // The URL is not echoed back: it may carry a password.
        let url = reqwest::Url::parse(base).map_err(|e| AnnotationError::BadUrl(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AnnotationError::BadUrl(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(AnnotationError::BadUrl(
                "credentials in the URL are not supported: use a service-account token".into(),
            ));
        }
        // Token files usually end with a newline, which no token contains.
        let token = token.map(|t| Token(t.trim().to_string()));
        if let Some(Token(t)) = &token {
            if t.is_empty() {
                return Err(AnnotationError::BadToken("empty"));
            }
            if reqwest::header::HeaderValue::from_str(&format!("Bearer {t}")).is_err() {
                return Err(AnnotationError::BadToken(
                    "has characters an HTTP header cannot carry",
                ));
            }
        }
        crate::tls::ensure_provider();
        let http = reqwest::Client::builder()
            .no_proxy()
            // A redirected POST becomes a GET; a redirect is a misconfigured
            // URL, reported as such rather than followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(REQUEST_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| AnnotationError::Client(e.to_string()))?;
        Ok(GrafanaClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        })
    }

    /// `POST /api/annotations`; returns the new annotation's id.
    ///
    /// Transport errors and 5xx answers are retried (3 attempts in all,
    /// 200 ms then 400 ms apart, 2 s each at most); any other error answer
    /// is final.
    pub async fn create(&self, a: &Annotation) -> Result<i64, AnnotationError> {
        let url = format!("{}/api/annotations", self.base);
        let request = format!("POST {url}");
        let answer = self.send(&request, || self.http.post(&url).json(a)).await?;
        let body = json_of(&request, answer).await?;
        body["id"]
            .as_i64()
            .ok_or_else(|| AnnotationError::BadResponse {
                request,
                reason: "no integer `id` in the answer".into(),
            })
    }

    /// `PATCH /api/annotations/{id}` with `timeEnd` (and `text` when given):
    /// closes a region. Retried as [`create`](Self::create) is.
    pub async fn close_region(
        &self,
        id: i64,
        time_end_ms: i64,
        text: Option<&str>,
    ) -> Result<(), AnnotationError> {
        let url = format!("{}/api/annotations/{id}", self.base);
        let request = format!("PATCH {url}");
        let mut patch = json!({ "timeEnd": time_end_ms });
        if let Some(text) = text {
            patch["text"] = text.into();
        }
        self.send(&request, || self.http.patch(&url).json(&patch))
            .await
            .map(drop)
    }

    /// `GET /api/dashboards/uid/{uid}`: the dashboard model, for gates that
    /// name one of its panels. Retried as [`create`](Self::create) is.
    pub async fn dashboard(&self, uid: &str) -> Result<Value, AnnotationError> {
        let url = format!("{}/api/dashboards/uid/{uid}", self.base);
        let request = format!("GET {url}");
        let answer = self.send(&request, || self.http.get(&url)).await?;
        let mut body = json_of(&request, answer).await?;
        match body.get_mut("dashboard").map(Value::take) {
            Some(d) if d.is_object() => Ok(d),
            _ => Err(AnnotationError::BadResponse {
                request,
                reason: "no `dashboard` object in the answer".into(),
            }),
        }
    }

    /// Sends with the token, retrying transport errors and 5xx; any other
    /// non-2xx answer is final, since sending it again changes nothing.
    async fn send(
        &self,
        request: &str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, AnnotationError> {
        let mut wait = FIRST_RETRY_WAIT;
        let mut attempts = 1;
        loop {
            let mut builder = build();
            if let Some(Token(t)) = &self.token {
                builder = builder.bearer_auth(t);
            }
            let error = match builder.send().await {
                Ok(answer) if answer.status().is_success() => return Ok(answer),
                Ok(answer) => {
                    let status = answer.status();
                    let body = answer.text().await.unwrap_or_default();
                    let error = AnnotationError::Status {
                        request: request.into(),
                        status: status.as_u16(),
                        attempts,
                        body: self.excerpt(&body),
                    };
                    if !status.is_server_error() {
                        return Err(error);
                    }
                    error
                }
                Err(e) => AnnotationError::Unreachable {
                    request: request.into(),
                    attempts,
                    reason: cause(e),
                },
            };
            if attempts == ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(%error, "retrying the Grafana request in {wait:?}");
            tokio::time::sleep(wait).await;
            wait *= 2;
            attempts += 1;
        }
    }

    /// The start of an error body, without the token: a proxy in front of
    /// Grafana may echo the request's headers back.
    fn excerpt(&self, body: &str) -> String {
        let mut text: String = body.trim().chars().take(BODY_EXCERPT).collect();
        if let Some(Token(t)) = &self.token {
            text = text.replace(t.as_str(), "***");
        }
        text
    }
}

/// The JSON body of a successful answer.
async fn json_of(request: &str, answer: reqwest::Response) -> Result<Value, AnnotationError> {
    answer
        .json()
        .await
        .map_err(|e| AnnotationError::BadResponse {
            request: request.into(),
            reason: cause(e),
        })
}

/// The error and its sources on one line: reqwest's own message alone
/// ("error sending request") does not say whether the port was closed or
/// the name did not resolve.
fn cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// What the rollout asked to mark, stamped when it was asked.
enum Mark {
    Open {
        key: String,
        text: String,
        at_ms: i64,
    },
    Close {
        key: String,
        text: String,
        at_ms: i64,
    },
    Point {
        text: String,
        at_ms: i64,
    },
}

/// Counters shared by the annotator's handles and its task.
#[derive(Default)]
struct Counts {
    /// Marks put on the queue.
    queued: AtomicU64,
    /// Marks Grafana recorded.
    sent: AtomicU64,
    /// Marks that did not reach Grafana (after retries, or queue full).
    failed: AtomicU64,
}

/// The rollout's marks on Grafana. Marking never waits: marks go through a
/// queue to a background task that talks to Grafana.
#[derive(Clone)]
pub struct Annotator {
    /// `None` when no Grafana is configured.
    queue: Option<mpsc::Sender<Mark>>,
    counts: Arc<Counts>,
    /// How many queued marks the task has finished with, for `flush`.
    done: watch::Receiver<u64>,
}

impl fmt::Debug for Annotator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Annotator")
            .field("enabled", &self.queue.is_some())
            .field("failures", &self.failures())
            .finish()
    }
}

impl Annotator {
    /// An annotator tagging every annotation with `tags` (e.g. `rollout`,
    /// the component, the version and the rollout id). Without a client (no
    /// Grafana configured) every mark is dropped silently.
    ///
    /// With a client this spawns the sending task, so it must be called
    /// inside a Tokio runtime. The task ends once every handle is dropped
    /// and the queue is drained.
    pub fn spawn(client: Option<GrafanaClient>, tags: Vec<String>) -> Annotator {
        let counts = Arc::new(Counts::default());
        let (done_tx, done) = watch::channel(0);
        let queue = client.map(|client| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let sender = Sender {
                client,
                tags,
                open: HashMap::new(),
                counts: counts.clone(),
            };
            tokio::spawn(sender.run(rx, done_tx));
            tx
        });
        Annotator {
            queue,
            counts,
            done,
        }
    }

    /// Opens a region named by `key` (e.g. `stage canary`) now, with `text`.
    pub fn open(&self, key: &str, text: &str) {
        self.enqueue(Mark::Open {
            key: key.into(),
            text: text.into(),
            at_ms: now_ms(),
        });
    }

    /// Closes the region `key` now; a key that was never opened gives a
    /// point instead.
    ///
    /// A non-empty `text` replaces the region's text (say, with the stage's
    /// outcome); an empty one keeps the text it was opened with.
    pub fn close(&self, key: &str, text: &str) {
        self.enqueue(Mark::Close {
            key: key.into(),
            text: text.into(),
            at_ms: now_ms(),
        });
    }

    /// A point annotation now (a pause, the completion).
    pub fn point(&self, text: &str) {
        self.enqueue(Mark::Point {
            text: text.into(),
            at_ms: now_ms(),
        });
    }

    /// Marks that did not reach Grafana so far (after retries, or dropped on
    /// a full queue), for a metric or a log line.
    pub fn failures(&self) -> u64 {
        self.counts.failed.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for the queued marks to be sent (say, before
    /// the process exits); returns `(sent, failed)`.
    ///
    /// Both counts are totals since `spawn`; marks queued after the call
    /// are not waited for.
    pub async fn flush(&self, timeout: Duration) -> (u64, u64) {
        let target = self.counts.queued.load(Ordering::Acquire);
        let mut done = self.done.clone();
        // An error means the task is gone: nothing more will be sent.
        let _ = tokio::time::timeout(timeout, done.wait_for(|n| *n >= target)).await;
        (
            self.counts.sent.load(Ordering::Relaxed),
            self.counts.failed.load(Ordering::Relaxed),
        )
    }

    fn enqueue(&self, mark: Mark) {
        let Some(queue) = &self.queue else { return };
        match queue.try_send(mark) {
            // The task may finish the mark before this count: `done` then
            // runs ahead of `queued` for a moment, which `flush` tolerates.
            Ok(()) => {
                self.counts.queued.fetch_add(1, Ordering::Release);
            }
            Err(e) => {
                self.counts.failed.fetch_add(1, Ordering::Relaxed);
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "the queue is full",
                    mpsc::error::TrySendError::Closed(_) => "the sending task is gone",
                };
                tracing::warn!("Grafana annotation dropped: {why}");
            }
        }
    }
}

/// A region opened on Grafana (or that failed to open).
struct Region {
    at_ms: i64,
    text: String,
    /// Grafana's id; `None` when the opening POST failed.
    id: Option<i64>,
}

/// The background task's side: one mark at a time, so a region's PATCH
/// always follows its POST.
struct Sender {
    client: GrafanaClient,
    tags: Vec<String>,
    open: HashMap<String, Region>,
    counts: Arc<Counts>,
}

impl Sender {
    async fn run(mut self, mut marks: mpsc::Receiver<Mark>, done: watch::Sender<u64>) {
        while let Some(mark) = marks.recv().await {
            match self.send(mark).await {
                Ok(()) => self.counts.sent.fetch_add(1, Ordering::Relaxed),
                Err(error) => {
                    tracing::warn!(%error, "Grafana annotation not recorded");
                    self.counts.failed.fetch_add(1, Ordering::Relaxed)
                }
            };
            done.send_modify(|n| *n += 1);
        }
    }

    async fn send(&mut self, mark: Mark) -> Result<(), AnnotationError> {
        match mark {
            Mark::Open { key, text, at_ms } => {
                let result = self
                    .client
                    .create(&self.annotation(at_ms, None, &text))
                    .await;
                let id = result.as_ref().ok().copied();
                self.open.insert(key, Region { at_ms, text, id });
                result.map(drop)
            }
            Mark::Close { key, text, at_ms } => {
                let Some(region) = self.open.remove(&key) else {
                    return self.point(at_ms, &text).await;
                };
                // Wall clocks can step back; Grafana wants timeEnd >= time.
                let end_ms = at_ms.max(region.at_ms);
                let text = (!text.is_empty()).then_some(text);
                match region.id {
                    Some(id) => self.client.close_region(id, end_ms, text.as_deref()).await,
                    // The opening POST failed (its failure is already
                    // counted). Both ends are known now, so the whole region
                    // goes in one POST: a brief Grafana outage at a stage's
                    // start still leaves the stage on the dashboard.
                    None => {
                        let text = text.unwrap_or(region.text);
                        let region = self.annotation(region.at_ms, Some(end_ms), &text);
                        self.client.create(&region).await.map(drop)
                    }
                }
            }
            Mark::Point { text, at_ms } => self.point(at_ms, &text).await,
        }
    }

    async fn point(&self, at_ms: i64, text: &str) -> Result<(), AnnotationError> {
        self.client
            .create(&self.annotation(at_ms, None, text))
            .await
            .map(drop)
    }

    /// Organization-wide (no dashboard or panel), so every dashboard that
    /// filters annotations on the rollout's tags shows it.
    fn annotation(&self, time_ms: i64, time_end_ms: Option<i64>, text: &str) -> Annotation {
        Annotation {
            dashboard_uid: None,
            panel_id: None,
            time_ms,
            time_end_ms,
            tags: self.tags.clone(),
            text: text.into(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
