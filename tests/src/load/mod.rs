//! A bounded load generator for the end-to-end tests: a fixed number of
//! requests at a fixed rate to the public addresses of chosen edges, every
//! failure recorded with its time, target, request and cause, so a test can
//! show "0 failed requests" across restarts (or that a plain restart fails).
//!
//! - Request `k` starts at `t0 + k / rate`, whatever happened to the earlier
//!   ones (no coordinated omission: a late tick still fires). When
//!   `max_in_flight` requests are running, request `k` is not sent and is
//!   counted as *generator overloaded*: a fault of the test setup.
//! - Each request is its own TCP connection (`Connection: close`), so a closed
//!   listener shows as a refused connection; nothing is retried.
//! - The mix: short `GET /hello`, 1 MiB `POST /sink` whose SHA-256 the origin
//!   answers, `GET /bytes` checked against [`crate::pattern`], and server-sent
//!   event streams (`GET /sse`) opened at the start and held for the whole run,
//!   released at the end. See [`crate::origin`] for the endpoints.
//! - Long-lived sessions beside the requests (see [`session`]): WebSockets
//!   to the origin's `/ws` echo and TCP connections through each target's
//!   public TCP port, each echoing a message every interval and closing
//!   cleanly after its lifetime, then opened again.
//!
//! ```no_run
//! # async fn f(edge: std::net::SocketAddr) {
//! use tests::load::{Load, LoadSpec, Target};
//! let mut spec = LoadSpec::new(vec![Target::new("edge-1", edge)], "app.test");
//! spec.duration = std::time::Duration::from_secs(5);
//! let report = Load::start(spec).finish().await;
//! eprintln!("{report}");
//! report.assert_no_failures();
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

mod session;
pub use session::SessionCount;

/// What `GET /hello` answers.
const HELLO_BODY: &[u8] = b"hello from origin\n";
/// The pattern seed of every upload (they all send the same bytes).
const UPLOAD_SEED: u64 = 0x5eed;
/// How many failures the report prints.
const PRINTED_FAILURES: usize = 20;

/// One address requests go to.
#[derive(Debug, Clone)]
pub struct Target {
    /// A name for the report, such as `edge-3`.
    pub name: String,
    /// A public HTTP address (loopback only).
    pub addr: SocketAddr,
    /// A public TCP port that reaches a TCP echo origin, for TCP sessions.
    pub tcp: Option<SocketAddr>,
}

impl Target {
    /// A target named `name` at `addr`.
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            addr,
            tcp: None,
        }
    }

    /// The same, with a public TCP port for TCP sessions.
    pub fn with_tcp(mut self, tcp: SocketAddr) -> Self {
        self.tcp = Some(tcp);
        self
    }
}

/// What the requests are: fractions of each kind (any non-negative weights;
/// they are normalised), sizes, and the long-lived streams.
#[derive(Debug, Clone)]
pub struct Mix {
    /// Share of `GET /hello`.
    pub hello: f64,
    /// Share of `POST /sink` of `upload_size` bytes.
    pub upload: f64,
    /// Share of `GET /bytes?size=bytes_size&seed=k`.
    pub bytes: f64,
    /// Size of each upload.
    pub upload_size: u64,
    /// Size of each `/bytes` download.
    pub bytes_size: u64,
    /// Server-sent event streams opened at the start and held for the run.
    pub sse_streams: usize,
    /// Events each stream carries before the origin holds it open.
    pub sse_events: u32,
    /// Pause between two events of a stream.
    pub sse_interval: Duration,
    /// At the end, release each stream (`POST /release?id=X` through its
    /// target) and expect a clean end; when false the generator closes the
    /// streams that are intact so far ("ended by the test").
    pub sse_release: bool,
    /// Whether the origin holds each stream open after its events (until
    /// the release); when false a stream ends by itself after its events.
    pub sse_hold: bool,
    /// WebSocket sessions kept open at once (to the origin's `/ws` echo).
    pub websockets: usize,
    /// TCP sessions kept open at once (through each target's TCP port).
    pub tcp_sessions: usize,
    /// How long a session lives before it closes and its slot opens the next.
    pub session_lifetime: Duration,
    /// Pause between two messages of a session.
    pub session_interval: Duration,
}

impl Default for Mix {
    fn default() -> Self {
        Self {
            hello: 0.80,
            upload: 0.15,
            bytes: 0.05,
            upload_size: 1 << 20,
            bytes_size: 256 << 10,
            sse_streams: 0,
            sse_events: 20,
            sse_interval: Duration::from_millis(250),
            sse_release: true,
            sse_hold: true,
            websockets: 0,
            tcp_sessions: 0,
            session_lifetime: Duration::from_secs(20),
            session_interval: Duration::from_millis(250),
        }
    }
}

/// A bounded load: count and time are fixed by the spec.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// Where requests go, round-robin.
    pub targets: Vec<Target>,
    /// The `Host` header: a hostname routed through the tunnel.
    pub host: String,
    /// Requests started per second.
    pub rate_per_s: u32,
    /// How long requests are started for (`rate_per_s * duration` of them).
    pub duration: Duration,
    /// The kinds of request.
    pub mix: Mix,
    /// Requests running at once before a tick counts as generator overloaded.
    pub max_in_flight: usize,
    /// Limit for one request, connect to last body byte (and for opening a
    /// stream, and for a released stream to end).
    pub request_timeout: Duration,
}

impl LoadSpec {
    /// 200 requests/s for 10 s with the default mix, no streams.
    pub fn new(targets: Vec<Target>, host: impl Into<String>) -> Self {
        Self {
            targets,
            host: host.into(),
            rate_per_s: 200,
            duration: Duration::from_secs(10),
            mix: Mix::default(),
            max_in_flight: 512,
            request_timeout: Duration::from_secs(10),
        }
    }

    /// How many requests the schedule holds.
    pub fn planned(&self) -> u64 {
        (f64::from(self.rate_per_s) * self.duration.as_secs_f64()).round() as u64
    }

    /// Names the first field that is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.targets.is_empty() {
            return Err("targets: none given".into());
        }
        if let Some(t) = self.targets.iter().find(|t| !t.addr.ip().is_loopback()) {
            return Err(format!(
                "targets: {} ({}) is not a loopback address",
                t.addr, t.name
            ));
        }
        if self.host.is_empty() {
            return Err("host: empty".into());
        }
        if self.rate_per_s == 0 {
            return Err("rate_per_s: must be at least 1".into());
        }
        if self.duration.is_zero() {
            return Err("duration: must not be zero".into());
        }
        let shares = [self.mix.hello, self.mix.upload, self.mix.bytes];
        if shares.iter().any(|s| !s.is_finite() || *s < 0.0) {
            return Err(format!(
                "mix: shares must be finite and not negative: {shares:?}"
            ));
        }
        if shares.iter().sum::<f64>() <= 0.0 {
            return Err("mix: every share is zero".into());
        }
        if self.mix.tcp_sessions > 0
            && let Some(t) = self.targets.iter().find(|t| t.tcp.is_none())
        {
            return Err(format!(
                "mix: tcp_sessions needs a TCP address on every target; {} has none",
                t.name
            ));
        }
        if let Some(t) = self
            .targets
            .iter()
            .find(|t| t.tcp.is_some_and(|a| !a.ip().is_loopback()))
        {
            return Err(format!(
                "targets: {}'s TCP address is not a loopback address",
                t.name
            ));
        }
        if self.mix.websockets + self.mix.tcp_sessions > 0 && self.mix.session_interval.is_zero() {
            return Err("mix: session_interval must not be zero".into());
        }
        if self.max_in_flight == 0 {
            return Err("max_in_flight: must be at least 1".into());
        }
        if self.request_timeout.is_zero() {
            return Err("request_timeout: must not be zero".into());
        }
        Ok(())
    }
}

/// The kind of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /hello`.
    Hello,
    /// `POST /sink` of the upload size.
    Upload,
    /// `GET /bytes`.
    Bytes,
    /// `GET /sse`, a long-lived stream.
    Sse,
    /// `POST /release`, ending a stream.
    Release,
    /// A WebSocket session to `/ws`.
    WebSocket,
    /// A TCP session through a public TCP port.
    Tcp,
}

impl Kind {
    /// Whether this is a long-lived session rather than a request.
    pub fn is_session(self) -> bool {
        matches!(self, Kind::WebSocket | Kind::Tcp)
    }

    fn short_name(self) -> &'static str {
        match self {
            Kind::WebSocket => "ws",
            Kind::Tcp => "tcp",
            _ => "req",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Hello => "GET /hello",
            Kind::Upload => "POST /sink",
            Kind::Bytes => "GET /bytes",
            Kind::Sse => "GET /sse",
            Kind::Release => "POST /release",
            Kind::WebSocket => "WebSocket /ws",
            Kind::Tcp => "TCP echo",
        })
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The connection was refused (ECONNREFUSED).
    Refused,
    /// Reset, broken pipe, or EOF before a full response.
    Reset(String),
    /// A 5xx answer.
    Status5xx(u16),
    /// Another answer that is not 2xx.
    StatusOther(u16),
    /// A short or wrong body (or a wrong checksum, or a stream out of order).
    Truncated(String),
    /// Not done within the limit.
    Timeout(String),
    /// Anything else.
    Other(String),
}

impl Cause {
    /// The short name the report counts by.
    pub fn name(&self) -> &'static str {
        match self {
            Cause::Refused => "refused",
            Cause::Reset(_) => "reset",
            Cause::Status5xx(_) => "status_5xx",
            Cause::StatusOther(_) => "status_other",
            Cause::Truncated(_) => "truncated",
            Cause::Timeout(_) => "timeout",
            Cause::Other(_) => "other",
        }
    }

    fn from_io(e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => Cause::Refused,
            K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                Cause::Reset(e.to_string())
            }
            K::TimedOut => Cause::Timeout(e.to_string()),
            _ => Cause::Other(e.to_string()),
        }
    }

    /// hyper wraps the socket's error; the cause is the innermost io error,
    /// or an EOF hyper noticed itself.
    fn from_hyper(e: &hyper::Error) -> Self {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                return Cause::from_io(io);
            }
            source = s.source();
        }
        if e.is_incomplete_message() {
            return Cause::Reset(e.to_string());
        }
        Cause::Other(e.to_string())
    }

    fn from_status(status: StatusCode) -> Option<Self> {
        if status.is_success() {
            None
        } else if status.is_server_error() {
            Some(Cause::Status5xx(status.as_u16()))
        } else {
            Some(Cause::StatusOther(status.as_u16()))
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused => f.write_str("refused"),
            Cause::Status5xx(code) | Cause::StatusOther(code) => {
                write!(f, "{} ({code})", self.name())
            }
            Cause::Reset(m) | Cause::Truncated(m) | Cause::Timeout(m) | Cause::Other(m) => {
                write!(f, "{} ({m})", self.name())
            }
        }
    }
}

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it failed, since the load started.
    pub at: Duration,
    /// When it was sent, since the load started.
    pub sent: Duration,
    /// The target's name.
    pub target: String,
    /// What was asked.
    pub kind: Kind,
    /// Why it failed.
    pub cause: Cause,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>9} ms  {}  {}  {}",
            thousands(self.at.as_millis() as u64),
            self.target,
            self.kind,
            self.cause
        )?;
        if self.at - self.sent >= Duration::from_millis(100) {
            write!(
                f,
                "  (sent at {} ms)",
                thousands(self.sent.as_millis() as u64)
            )?;
        }
        Ok(())
    }
}

/// How a long-lived stream ended.
#[derive(Debug, Clone)]
pub enum SseEnd {
    /// Every event, then `done`, then a clean end of the response.
    Finished,
    /// Intact until the generator closed it at the end of the run.
    EndedByTest,
    /// Broken, out of order, or not ended after its release.
    Failed(Failure),
}

/// One long-lived stream.
#[derive(Debug, Clone)]
pub struct SseReport {
    /// The stream's id at the origin.
    pub id: String,
    /// The target's name.
    pub target: String,
    /// Events received, in order.
    pub events: u32,
    /// Events the origin was asked for.
    pub expected: u32,
    /// How it ended.
    pub end: SseEnd,
}

/// What a load run saw.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests the schedule held.
    pub planned: u64,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (sessions are counted in their own fields).
    pub failed: u64,
    /// Ticks that found `max_in_flight` requests running, so sent nothing:
    /// a fault of the test setup, not of the system under test.
    pub generator_overloaded: u64,
    /// Failed requests and sessions by [`Cause::name`].
    pub by_cause: BTreeMap<String, u64>,
    /// Every failed request and session, by time.
    pub failures: Vec<Failure>,
    /// The long-lived streams.
    pub sse: Vec<SseReport>,
    /// The WebSocket sessions.
    pub websockets: SessionCount,
    /// The TCP sessions.
    pub tcp: SessionCount,
    /// From the start to the end of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Failed requests with this cause name.
    pub fn count(&self, cause: &str) -> u64 {
        self.by_cause.get(cause).copied().unwrap_or(0)
    }

    /// Streams that failed.
    pub fn sse_failed(&self) -> usize {
        self.sse
            .iter()
            .filter(|s| matches!(s.end, SseEnd::Failed(_)))
            .count()
    }

    /// Streams that finished intact.
    pub fn sse_finished(&self) -> usize {
        self.sse
            .iter()
            .filter(|s| matches!(s.end, SseEnd::Finished))
            .count()
    }

    /// No request, stream or session failed, and the generator kept its
    /// schedule.
    pub fn is_clean(&self) -> bool {
        self.generator_overloaded == 0
            && self.failed == 0
            && self.sse_failed() == 0
            && self.websockets.failed == 0
            && self.tcp.failed == 0
    }

    /// Panics with the report unless it [is clean](Report::is_clean).
    pub fn assert_no_failures(&self) {
        if self.generator_overloaded > 0 {
            panic!(
                "the load generator could not keep its schedule (a fault of the test setup)\n{self}"
            );
        }
        if !self.is_clean() {
            panic!("{self}");
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "load: {} requests, {} failed",
            thousands(self.requests),
            thousands(self.failed)
        )?;
        if self.requests + self.generator_overloaded < self.planned {
            write!(
                f,
                " (stopped early: {} of {} planned)",
                thousands(self.requests + self.generator_overloaded),
                thousands(self.planned)
            )?;
        }
        writeln!(f)?;
        if !self.sse.is_empty() {
            let ended = self.sse.len() - self.sse_finished() - self.sse_failed();
            writeln!(
                f,
                "  sse: {} streams, {} finished, {} ended by the test, {} failed",
                self.sse.len(),
                self.sse_finished(),
                ended,
                self.sse_failed()
            )?;
        }
        for (name, s) in [("websocket", &self.websockets), ("tcp", &self.tcp)] {
            if s.opened > 0 {
                writeln!(
                    f,
                    "  {name}: {} sessions ({} messages echoed), {} closed cleanly, {} failed",
                    thousands(s.opened),
                    thousands(s.messages),
                    thousands(s.finished),
                    thousands(s.failed)
                )?;
            }
        }
        if self.generator_overloaded > 0 {
            writeln!(
                f,
                "  generator overloaded: {} requests not sent (a fault of the test setup)",
                thousands(self.generator_overloaded)
            )?;
        }
        if !self.by_cause.is_empty() {
            let causes: Vec<String> = self
                .by_cause
                .iter()
                .map(|(c, n)| format!("{c} {}", thousands(*n)))
                .collect();
            writeln!(f, "  by cause: {}", causes.join(", "))?;
            let shown = self.failures.len().min(PRINTED_FAILURES);
            writeln!(
                f,
                "  first {shown} of {} failures (time since start, target, request, cause):",
                thousands(self.failures.len() as u64)
            )?;
            for failure in &self.failures[..shown] {
                writeln!(f, "  {failure}")?;
            }
        }
        for s in &self.sse {
            if let SseEnd::Failed(failure) = &s.end {
                writeln!(
                    f,
                    "  stream {} failed after {} of {} events:\n  {failure}",
                    s.id, s.events, s.expected
                )?;
            }
        }
        Ok(())
    }
}

/// `12345` as `12,345`, as the report prints counts and times.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Picks kinds in proportion to the mix, evenly spread and deterministic
/// (smooth weighted round robin).
struct KindPicker {
    weights: [(Kind, f64); 3],
    credit: [f64; 3],
    total: f64,
}

impl KindPicker {
    fn new(mix: &Mix) -> Self {
        let weights = [
            (Kind::Hello, mix.hello),
            (Kind::Upload, mix.upload),
            (Kind::Bytes, mix.bytes),
        ];
        Self {
            weights,
            credit: [0.0; 3],
            total: weights.iter().map(|(_, w)| w).sum(),
        }
    }

    fn next(&mut self) -> Kind {
        let mut best = 0;
        for i in 0..3 {
            self.credit[i] += self.weights[i].1;
            if self.weights[i].1 > 0.0
                && (self.weights[best].1 <= 0.0 || self.credit[i] > self.credit[best])
            {
                best = i;
            }
        }
        self.credit[best] -= self.total;
        self.weights[best].0
    }
}

/// Counts shared by the scheduler and the request tasks.
#[derive(Default)]
struct Tally {
    requests: u64,
    overloaded: u64,
    failures: Vec<Failure>,
}

/// What every request task needs.
struct Shared {
    spec: LoadSpec,
    t0: Instant,
    upload: Bytes,
    upload_sha256: String,
    tally: Mutex<Tally>,
    in_flight: AtomicUsize,
}

impl Shared {
    fn since_start(&self) -> Duration {
        self.t0.elapsed()
    }
}

/// One request in flight; records an unfinished request if its task is
/// dropped (aborted at the end of the run), and frees its slot.
struct InFlight {
    shared: Arc<Shared>,
    target: usize,
    kind: Kind,
    sent: Duration,
    done: bool,
}

impl InFlight {
    fn finish(mut self, result: Result<(), Cause>) {
        self.done = true;
        if let Err(cause) = result {
            self.record(cause);
        }
    }

    fn record(&self, cause: Cause) {
        let failure = Failure {
            at: self.shared.since_start(),
            sent: self.sent,
            target: self.shared.spec.targets[self.target].name.clone(),
            kind: self.kind,
            cause,
        };
        self.shared.tally.lock().unwrap().failures.push(failure);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.record(Cause::Other("still running when the load stopped".into()));
        }
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A stream's task and what it has read so far.
struct Stream {
    id: String,
    target: usize,
    events: Arc<AtomicU32>,
    task: JoinHandle<Result<(), Failure>>,
}

/// The session slots of a run and their counts.
struct Sessions {
    close: watch::Sender<bool>,
    slots: Vec<JoinHandle<()>>,
    websockets: Arc<session::Counters>,
    tcp: Arc<session::Counters>,
}

impl Sessions {
    fn start(shared: &Arc<Shared>) -> Self {
        let (close, closed) = watch::channel(false);
        let websockets = Arc::new(session::Counters::default());
        let tcp = Arc::new(session::Counters::default());
        let mix = &shared.spec.mix;
        let kinds = std::iter::repeat_n((Kind::WebSocket, &websockets), mix.websockets)
            .chain(std::iter::repeat_n((Kind::Tcp, &tcp), mix.tcp_sessions));
        let slots = kinds
            .enumerate()
            .map(|(i, (kind, counters))| {
                tokio::spawn(session::slot(
                    shared.clone(),
                    kind,
                    i,
                    counters.clone(),
                    closed.clone(),
                ))
            })
            .collect();
        Self {
            close,
            slots,
            websockets,
            tcp,
        }
    }

    /// Closes every session (each cleanly, within the request limit) and
    /// waits for the slots; one still running after that is a failure.
    async fn close(&mut self, shared: &Shared) {
        let _ = self.close.send(true);
        let limit = shared.spec.request_timeout * 2 + Duration::from_secs(2);
        for slot in &mut self.slots {
            if tokio::time::timeout_at(Instant::now() + limit, &mut *slot)
                .await
                .is_err()
            {
                slot.abort();
                shared.tally.lock().unwrap().failures.push(Failure {
                    at: shared.since_start(),
                    sent: shared.since_start(),
                    target: "-".into(),
                    kind: Kind::WebSocket,
                    cause: Cause::Other("a session slot did not close within its limit".into()),
                });
            }
        }
    }
}

/// A running load; [`Load::finish`] or [`Load::stop`] gives the report.
pub struct Load {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    scheduler: JoinHandle<JoinSet<()>>,
    streams: Vec<Stream>,
    sessions: Sessions,
}

impl Load {
    /// Opens the streams and starts the schedule on the current tokio
    /// runtime. Panics when the spec is invalid.
    pub fn start(spec: LoadSpec) -> Self {
        if let Err(e) = spec.validate() {
            panic!("invalid load spec: {e}");
        }
        let mut upload = Vec::with_capacity(spec.mix.upload_size as usize);
        for chunk in crate::pattern::chunks(UPLOAD_SEED, spec.mix.upload_size) {
            upload.extend_from_slice(&chunk);
        }
        let upload = Bytes::from(upload);
        let upload_sha256 = crate::pattern::sha256(UPLOAD_SEED, spec.mix.upload_size);
        let shared = Arc::new(Shared {
            spec,
            t0: Instant::now(),
            upload,
            upload_sha256,
            tally: Mutex::default(),
            in_flight: AtomicUsize::new(0),
        });
        let run = crate::net::random_u32();
        let streams = (0..shared.spec.mix.sse_streams)
            .map(|i| {
                let id = format!("load-{run:08x}-{i}");
                let target = i % shared.spec.targets.len();
                let events = Arc::new(AtomicU32::new(0));
                let task = tokio::spawn(sse_stream(
                    shared.clone(),
                    target,
                    id.clone(),
                    events.clone(),
                ));
                Stream {
                    id,
                    target,
                    events,
                    task,
                }
            })
            .collect();
        let sessions = Sessions::start(&shared);
        let (stop, stopped) = watch::channel(false);
        let scheduler = tokio::spawn(schedule(shared.clone(), stopped));
        Self {
            shared,
            stop,
            scheduler,
            streams,
            sessions,
        }
    }

    /// Time since the load started.
    pub fn elapsed(&self) -> Duration {
        self.shared.since_start()
    }

    /// Waits until every planned request was started, then ends the run as
    /// [`Load::stop`] does.
    pub async fn finish(mut self) -> Report {
        let set = (&mut self.scheduler).await.expect("load scheduler");
        self.end(set).await
    }

    /// Stops starting requests, waits for those in flight (each within its
    /// limit), ends the streams, and reports.
    pub async fn stop(mut self) -> Report {
        let _ = self.stop.send(true);
        let set = (&mut self.scheduler).await.expect("load scheduler");
        self.end(set).await
    }

    async fn end(mut self, mut set: JoinSet<()>) -> Report {
        let limit = self.shared.spec.request_timeout + Duration::from_secs(2);
        if tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            // Each request has its own limit, so this should not happen;
            // the dropped tasks record themselves as unfinished.
            set.abort_all();
            while set.join_next().await.is_some() {}
        }

        let mut sse = Vec::new();
        for stream in std::mem::take(&mut self.streams) {
            sse.push(end_stream(&self.shared, stream).await);
        }
        self.sessions.close(&self.shared).await;

        let elapsed = self.shared.since_start();
        let tally = std::mem::take(&mut *self.shared.tally.lock().unwrap());
        let mut failures = tally.failures;
        failures.sort_by_key(|f| f.at);
        let mut by_cause = BTreeMap::new();
        for f in &failures {
            *by_cause.entry(f.cause.name().to_string()).or_insert(0) += 1;
        }
        Report {
            planned: self.shared.spec.planned(),
            requests: tally.requests,
            failed: failures.iter().filter(|f| !f.kind.is_session()).count() as u64,
            generator_overloaded: tally.overloaded,
            by_cause,
            failures,
            sse,
            websockets: self.sessions.websockets.count(),
            tcp: self.sessions.tcp.count(),
            elapsed,
        }
    }
}

impl Drop for Load {
    /// A load dropped before its report (a test that panicked) closes its
    /// streams; the scheduler stops when the stop sender is gone.
    fn drop(&mut self) {
        for stream in &self.streams {
            stream.task.abort();
        }
        for slot in &self.sessions.slots {
            slot.abort();
        }
    }
}

/// Starts request `k` at `t0 + k / rate` until the plan is done or the load
/// is stopped; returns the requests still running.
async fn schedule(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) -> JoinSet<()> {
    let spec = &shared.spec;
    let mut set = JoinSet::new();
    let mut kinds = KindPicker::new(&spec.mix);
    let rate = u128::from(spec.rate_per_s);
    for k in 0..spec.planned() {
        let at = shared.t0 + Duration::from_nanos((u128::from(k) * 1_000_000_000 / rate) as u64);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        while set.try_join_next().is_some() {}
        let kind = kinds.next();
        let target = (k % spec.targets.len() as u64) as usize;
        if shared.in_flight.load(Ordering::SeqCst) >= spec.max_in_flight {
            shared.tally.lock().unwrap().overloaded += 1;
            continue;
        }
        shared.in_flight.fetch_add(1, Ordering::SeqCst);
        shared.tally.lock().unwrap().requests += 1;
        let guard = InFlight {
            shared: shared.clone(),
            target,
            kind,
            sent: shared.since_start(),
            done: false,
        };
        let shared = shared.clone();
        set.spawn(async move {
            let limit = shared.spec.request_timeout;
            let result = tokio::time::timeout(limit, request(&shared, target, kind, k))
                .await
                .unwrap_or_else(|_| {
                    Err(Cause::Timeout(format!("no full answer within {limit:?}")))
                });
            guard.finish(result);
        });
    }
    set
}

/// One request of `kind`, checked.
async fn request(shared: &Shared, target: usize, kind: Kind, k: u64) -> Result<(), Cause> {
    let spec = &shared.spec;
    let (method, path, body) = match kind {
        Kind::Upload => (Method::POST, "/sink".to_string(), shared.upload.clone()),
        Kind::Bytes => (
            Method::GET,
            format!("/bytes?size={}&seed={k}", spec.mix.bytes_size),
            Bytes::new(),
        ),
        _ => (Method::GET, "/hello".to_string(), Bytes::new()),
    };
    let (status, mut body, _conn) = exchange(shared, target, method, &path, body).await?;
    if let Some(cause) = Cause::from_status(status) {
        return Err(cause);
    }
    match kind {
        Kind::Upload => {
            let got = read_all(&mut body).await?;
            let answer: serde_json::Value = serde_json::from_slice(&got)
                .map_err(|e| Cause::Truncated(format!("the sink's answer is not JSON: {e}")))?;
            let want_bytes = spec.mix.upload_size;
            if answer["bytes"] != want_bytes || answer["sha256"] != shared.upload_sha256.as_str() {
                return Err(Cause::Truncated(format!(
                    "the sink got {} bytes with sha256 {}, not {want_bytes} bytes with {}",
                    answer["bytes"], answer["sha256"], shared.upload_sha256
                )));
            }
        }
        Kind::Bytes => {
            let want = spec.mix.bytes_size;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            let mut n = 0u64;
            while let Some(chunk) = next_data(&mut body).await? {
                n += chunk.len() as u64;
                ctx.update(&chunk);
            }
            if n != want {
                return Err(Cause::Truncated(format!("{n} of {want} bytes")));
            }
            if crate::pattern::hex(ctx.finish().as_ref()) != crate::pattern::sha256(k, want) {
                return Err(Cause::Truncated(format!(
                    "{want} bytes but not pattern {k}"
                )));
            }
        }
        _ => {
            let got = read_all(&mut body).await?;
            if got != HELLO_BODY {
                return Err(Cause::Truncated(format!(
                    "body {:?}",
                    String::from_utf8_lossy(&got)
                )));
            }
        }
    }
    Ok(())
}

/// Aborts the task that drives a connection when the request is done with it.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The client side of one HTTP/1.1 connection.
type Http1 = (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    hyper::client::conn::http1::Connection<TokioIo<TcpStream>, Full<Bytes>>,
);

/// A new connection to `addr` (no Nagle: the requests are small) and the
/// HTTP/1.1 handshake on it.
async fn connect_http1(addr: SocketAddr) -> Result<Http1, Cause> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| Cause::from_io(&e))?;
    let _ = stream.set_nodelay(true);
    hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Cause::from_hyper(&e))
}

/// A new connection to `target`, one request on it, its answer's head.
async fn exchange(
    shared: &Shared,
    target: usize,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, Incoming, ConnTask), Cause> {
    let (mut sender, conn) = connect_http1(shared.spec.targets[target].addr).await?;
    let conn = ConnTask(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, &shared.spec.host)
        .header(header::CONNECTION, "close")
        .header(header::CONTENT_LENGTH, body.len())
        .body(Full::new(body))
        .map_err(|e| Cause::Other(format!("build request: {e}")))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| Cause::from_hyper(&e))?;
    let status = resp.status();
    Ok((status, resp.into_body(), conn))
}

/// The next data chunk of a body, `None` at its clean end.
async fn next_data(body: &mut Incoming) -> Result<Option<Bytes>, Cause> {
    loop {
        match body.frame().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(Cause::from_hyper(&e)),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

async fn read_all(body: &mut Incoming) -> Result<Vec<u8>, Cause> {
    let mut out = Vec::new();
    while let Some(chunk) = next_data(body).await? {
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Opens stream `id` and reads it to its end, checking every event.
async fn sse_stream(
    shared: Arc<Shared>,
    target: usize,
    id: String,
    events: Arc<AtomicU32>,
) -> Result<(), Failure> {
    let sent = shared.since_start();
    let fail = |cause: Cause| Failure {
        at: shared.since_start(),
        sent,
        target: shared.spec.targets[target].name.clone(),
        kind: Kind::Sse,
        cause,
    };
    let mix = &shared.spec.mix;
    let path = format!(
        "/sse?id={id}&events={}&interval_ms={}&hold={}",
        mix.sse_events,
        mix.sse_interval.as_millis(),
        u8::from(mix.sse_hold)
    );
    let limit = shared.spec.request_timeout;
    let (status, mut body, _conn) = tokio::time::timeout(
        limit,
        exchange(&shared, target, Method::GET, &path, Bytes::new()),
    )
    .await
    .unwrap_or_else(|_| Err(Cause::Timeout(format!("no answer within {limit:?}"))))
    .map_err(fail)?;
    if let Some(cause) = Cause::from_status(status) {
        return Err(fail(cause));
    }
    let mut buf = String::new();
    let mut done = false;
    while let Some(chunk) = next_data(&mut body).await.map_err(fail)? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            let event = event.trim_end();
            let n = events.load(Ordering::SeqCst);
            if done {
                return Err(fail(Cause::Truncated(format!("{event:?} after done"))));
            } else if n < mix.sse_events && event == format!("data: event {n}") {
                events.store(n + 1, Ordering::SeqCst);
            } else if n == mix.sse_events && event == "data: done" {
                done = true;
            } else {
                return Err(fail(Cause::Truncated(format!(
                    "{event:?} where event {n} was due"
                ))));
            }
        }
    }
    if !done || !buf.is_empty() {
        return Err(fail(Cause::Truncated(format!(
            "the response ended after {} of {} events{}",
            events.load(Ordering::SeqCst),
            mix.sse_events,
            if done {
                ", done, and a partial event"
            } else {
                ""
            }
        ))));
    }
    Ok(())
}

/// Releases an open stream and waits for its clean end (or closes it when
/// the spec says the test ends streams itself).
async fn end_stream(shared: &Arc<Shared>, mut stream: Stream) -> SseReport {
    let limit = shared.spec.request_timeout;
    let target = shared.spec.targets[stream.target].name.clone();
    let sent = shared.since_start();
    let failed = |kind, cause| {
        SseEnd::Failed(Failure {
            at: shared.since_start(),
            sent,
            target: target.clone(),
            kind,
            cause,
        })
    };
    let joined = |result: Result<Result<(), Failure>, tokio::task::JoinError>| match result {
        Ok(Ok(())) => SseEnd::Finished,
        Ok(Err(failure)) => SseEnd::Failed(failure),
        Err(e) => failed(Kind::Sse, Cause::Other(format!("stream task: {e}"))),
    };
    let end = if stream.task.is_finished() {
        joined((&mut stream.task).await)
    } else if !shared.spec.mix.sse_release {
        stream.task.abort();
        SseEnd::EndedByTest
    } else {
        let path = format!("/release?id={}", stream.id);
        let released = tokio::time::timeout(limit, async {
            let (status, mut body, _conn) =
                exchange(shared, stream.target, Method::POST, &path, Bytes::new()).await?;
            read_all(&mut body).await?;
            Cause::from_status(status).map_or(Ok(()), Err)
        })
        .await
        .unwrap_or_else(|_| Err(Cause::Timeout(format!("no answer within {limit:?}"))));
        match released {
            Err(cause) => {
                stream.task.abort();
                failed(Kind::Release, cause)
            }
            Ok(()) => match tokio::time::timeout(limit, &mut stream.task).await {
                Ok(result) => joined(result),
                Err(_) => {
                    stream.task.abort();
                    let cause =
                        Cause::Timeout(format!("no clean end within {limit:?} of the release"));
                    failed(Kind::Sse, cause)
                }
            },
        }
    };
    SseReport {
        id: stream.id,
        target,
        events: stream.events.load(Ordering::SeqCst),
        expected: shared.spec.mix.sse_events,
        end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads a request head, answers `canned` (nothing when
    /// it is empty) and closes; with `hold`, it never answers.
    async fn canned(canned: &'static [u8], hold: bool) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    if hold {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    let _ = socket.write_all(canned).await;
                });
            }
        });
        addr
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_fault_is_recorded_with_its_cause() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let targets = vec![
            Target::new("closed", closed),
            Target::new("hangup", canned(b"", false).await),
            Target::new(
                "short",
                canned(b"HTTP/1.1 200 OK\r\ncontent-length: 18\r\n\r\nhello", false).await,
            ),
            Target::new(
                "wrong",
                canned(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello", false).await,
            ),
            Target::new(
                "unavailable",
                canned(b"HTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n", false).await,
            ),
            Target::new(
                "missing",
                canned(b"HTTP/1.1 404 Nope\r\ncontent-length: 0\r\n\r\n", false).await,
            ),
            Target::new("silent", canned(b"", true).await),
        ];
        let mut spec = LoadSpec::new(targets, "app.test");
        spec.rate_per_s = 70;
        spec.duration = Duration::from_secs(1);
        spec.request_timeout = Duration::from_millis(500);
        spec.mix.upload = 0.0;
        spec.mix.bytes = 0.0;
        let report = Load::start(spec).finish().await;
        let text = report.to_string();
        assert_eq!((report.requests, report.failed), (70, 70), "{text}");
        for (target, cause) in [
            ("closed", "refused"),
            ("hangup", "reset"),
            ("short", "reset"),
            ("wrong", "truncated"),
            ("unavailable", "status_5xx"),
            ("missing", "status_other"),
            ("silent", "timeout"),
        ] {
            let causes: Vec<&str> = report
                .failures
                .iter()
                .filter(|f| f.target == target)
                .map(|f| f.cause.name())
                .collect();
            assert_eq!(causes, [cause; 10], "{target}\n{text}");
        }
        assert_eq!(report.count("reset"), 20, "{text}");
        assert!(text.contains("status_5xx (503)"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_generator_counts_ticks_it_cannot_send_as_overloaded() {
        let silent = canned(b"", true).await;
        let mut spec = LoadSpec::new(vec![Target::new("silent", silent)], "app.test");
        spec.rate_per_s = 20;
        spec.duration = Duration::from_millis(500);
        spec.max_in_flight = 1;
        spec.request_timeout = Duration::from_secs(2);
        spec.mix.upload = 0.0;
        spec.mix.bytes = 0.0;
        let report = Load::start(spec).finish().await;
        // The first request holds the only slot until its limit; the other
        // nine ticks find the generator full.
        assert_eq!(
            (report.requests, report.generator_overloaded, report.failed),
            (1, 9, 1),
            "{report}"
        );
        let text = report.to_string();
        assert!(
            text.contains("generator overloaded: 9 requests not sent"),
            "{text}"
        );
        let panic = std::panic::catch_unwind(|| report.assert_no_failures()).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("could not keep its schedule"), "{message}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_whole_mix_against_the_origin_fails_nothing() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _origin = tokio::spawn(crate::origin::serve(listener));
        let mut spec = LoadSpec::new(vec![Target::new("origin", addr)], "app.test");
        spec.rate_per_s = 100;
        spec.duration = Duration::from_secs(1);
        spec.mix.sse_streams = 2;
        spec.mix.sse_events = 5;
        spec.mix.sse_interval = Duration::from_millis(50);
        let report = Load::start(spec).finish().await;
        report.assert_no_failures();
        assert_eq!(report.requests, 100);
        assert_eq!(report.sse_finished(), 2, "{report}");

        // Stopped early, the streams are closed by the generator when asked.
        let mut spec = LoadSpec::new(vec![Target::new("origin", addr)], "app.test");
        spec.mix.sse_streams = 1;
        spec.mix.sse_release = false;
        let load = Load::start(spec);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = load.stop().await;
        report.assert_no_failures();
        assert!(report.requests < report.planned, "{report}");
        assert!(matches!(report.sse[0].end, SseEnd::EndedByTest), "{report}");
        assert!(report.to_string().contains("stopped early"), "{report}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sessions_echo_close_cleanly_and_reopen() {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http.local_addr().unwrap();
        let _origin = tokio::spawn(crate::origin::serve(http));
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tcp_addr = tcp.local_addr().unwrap();
        let _echo = tokio::spawn(crate::tcp_origin::serve_echo(tcp));
        let target = Target::new("origin", http_addr).with_tcp(tcp_addr);
        let mut spec = LoadSpec::new(vec![target], "app.test");
        spec.rate_per_s = 20;
        spec.duration = Duration::from_millis(1200);
        spec.mix.websockets = 2;
        spec.mix.tcp_sessions = 2;
        spec.mix.session_lifetime = Duration::from_millis(300);
        spec.mix.session_interval = Duration::from_millis(50);
        let report = Load::start(spec).finish().await;
        report.assert_no_failures();
        // Each slot lives 1.2 s in sessions of 0.3 s, so it opens at least
        // three; each session echoes about six messages.
        for s in [&report.websockets, &report.tcp] {
            assert!(s.opened >= 6 && s.finished == s.opened, "{report}");
            assert!(s.messages >= 3 * s.opened, "{report}");
        }
        let text = report.to_string();
        assert!(text.contains("  websocket: "), "{text}");
        assert!(text.contains("closed cleanly, 0 failed"), "{text}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_session_that_cannot_open_or_gets_a_wrong_echo_is_a_failure() {
        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        // An "echo" that answers every message with other bytes.
        let liar = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let liar_addr = liar.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = liar.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&vec![b'x'; n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let missing = canned(b"HTTP/1.1 404 Nope\r\ncontent-length: 0\r\n\r\n", false).await;
        let targets = vec![
            Target::new("refusing", closed).with_tcp(closed),
            Target::new("lying", missing).with_tcp(liar_addr),
        ];
        let mut spec = LoadSpec::new(targets, "app.test");
        spec.rate_per_s = 2;
        spec.duration = Duration::from_millis(500);
        spec.mix.upload = 0.0;
        spec.mix.bytes = 0.0;
        spec.mix.websockets = 2;
        spec.mix.tcp_sessions = 2;
        spec.mix.session_interval = Duration::from_millis(100);
        let report = Load::start(spec).finish().await;
        assert!(!report.is_clean(), "{report}");
        let causes = |kind: Kind, target: &str| -> BTreeSet<&'static str> {
            report
                .failures
                .iter()
                .filter(|f| f.kind == kind && f.target == target)
                .map(|f| f.cause.name())
                .collect()
        };
        // Slots alternate targets: WebSocket 0 and TCP 2 on the refusing
        // one, WebSocket 1 and TCP 3 on the other.
        assert_eq!(
            causes(Kind::WebSocket, "refusing"),
            ["refused"].into(),
            "{report}"
        );
        assert_eq!(
            causes(Kind::WebSocket, "lying"),
            ["status_other"].into(),
            "{report}"
        );
        assert_eq!(
            causes(Kind::Tcp, "refusing"),
            ["refused"].into(),
            "{report}"
        );
        assert_eq!(causes(Kind::Tcp, "lying"), ["truncated"].into(), "{report}");
        assert!(
            report.websockets.failed >= 2 && report.tcp.failed >= 2,
            "{report}"
        );
        // The requests' count is their own.
        assert_eq!(report.failed, report.requests, "{report}");
    }

    #[test]
    fn thousands_groups_by_three() {
        for (n, s) in [
            (0, "0"),
            (999, "999"),
            (1000, "1,000"),
            (24000, "24,000"),
            (1234567, "1,234,567"),
        ] {
            assert_eq!(thousands(n), s);
        }
    }

    #[test]
    fn the_mix_is_kept_and_spread() {
        let mut picker = KindPicker::new(&Mix::default());
        let kinds: Vec<Kind> = (0..2000).map(|_| picker.next()).collect();
        let count = |k| kinds.iter().filter(|x| **x == k).count();
        assert_eq!(
            (count(Kind::Hello), count(Kind::Upload), count(Kind::Bytes)),
            (1600, 300, 100)
        );
        // Spread: every 20 requests hold one download and three uploads.
        for window in kinds.chunks(20) {
            assert_eq!(window.iter().filter(|k| **k == Kind::Bytes).count(), 1);
            assert_eq!(window.iter().filter(|k| **k == Kind::Upload).count(), 3);
        }
        let mut only = KindPicker::new(&Mix {
            hello: 0.0,
            upload: 1.0,
            bytes: 0.0,
            ..Mix::default()
        });
        assert!((0..10).all(|_| only.next() == Kind::Upload));
    }

    #[test]
    fn validate_names_the_field() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let good = LoadSpec::new(vec![Target::new("edge-1", addr)], "app.test");
        assert_eq!(good.validate(), Ok(()));
        assert_eq!(good.planned(), 2000);
        type Change = fn(&mut LoadSpec);
        let cases: [(&str, Change); 7] = [
            ("tcp_sessions needs a TCP address", |s| {
                s.mix.tcp_sessions = 1
            }),
            ("targets: none", |s| s.targets.clear()),
            ("not a loopback", |s| {
                s.targets[0].addr = "10.0.0.1:80".parse().unwrap()
            }),
            ("rate_per_s", |s| s.rate_per_s = 0),
            ("duration", |s| s.duration = Duration::ZERO),
            ("mix: shares", |s| s.mix.upload = -1.0),
            ("mix: every share is zero", |s| {
                s.mix.hello = 0.0;
                s.mix.upload = 0.0;
                s.mix.bytes = 0.0;
            }),
        ];
        for (want, change) in cases {
            let mut spec = good.clone();
            change(&mut spec);
            let err = spec.validate().unwrap_err();
            assert!(err.contains(want), "{err} should name {want}");
        }
    }

    #[test]
    fn the_report_names_time_target_request_and_cause() {
        let failure = |ms, cause| Failure {
            at: Duration::from_millis(ms),
            sent: Duration::from_millis(ms),
            target: "edge-3".into(),
            kind: Kind::Hello,
            cause,
        };
        let failures: Vec<Failure> = (0..25)
            .map(|i| failure(2000 + i, Cause::Refused))
            .chain([failure(3500, Cause::Status5xx(502))])
            .collect();
        let report = Report {
            planned: 1200,
            requests: 1200,
            failed: 26,
            generator_overloaded: 0,
            by_cause: [("refused".into(), 25), ("status_5xx".into(), 1)].into(),
            failures,
            sse: vec![],
            websockets: SessionCount::default(),
            tcp: SessionCount::default(),
            elapsed: Duration::from_secs(6),
        };
        let text = report.to_string();
        assert!(
            text.starts_with("load: 1,200 requests, 26 failed\n"),
            "{text}"
        );
        assert!(
            text.contains("by cause: refused 25, status_5xx 1"),
            "{text}"
        );
        assert!(
            text.contains("    2,000 ms  edge-3  GET /hello  refused\n"),
            "{text}"
        );
        assert_eq!(text.matches("edge-3").count(), PRINTED_FAILURES, "{text}");
        let clean = Report {
            failed: 0,
            by_cause: BTreeMap::new(),
            failures: vec![],
            ..report
        };
        assert_eq!(clean.to_string(), "load: 1,200 requests, 0 failed\n");
        clean.assert_no_failures();
    }
}
