//! The connector's live config and its restart that refuses nothing, on a
//! real edge, two connector replicas of one tunnel and two origins, under a
//! steady load through the edge that counts every failed request with its
//! cause:
//! - the ingress rules change 20 times (a new rule, a changed origin, a
//!   changed origin option, an invalid file): no request fails, each valid
//!   change is in force on both replicas within a second of the file being
//!   written (measured from the write to the replica's
//!   `connector_config_last_reload_success_timestamp_seconds`, and seen
//!   through the edge), and an invalid file is counted while the old rules
//!   keep serving;
//! - each replica in turn gets SIGTERM while it serves slow requests and is
//!   started again, three rounds: no request fails, the slow ones finish.
//!
//! A second test drives SIGHUP with polling off: a valid file, an invalid
//! one, a setting only a restart applies, and a quick-mode connector that
//! has no file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::routing::get;
use tests::bins::bin;
use tests::metrics;
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::tunnel_setup::{ADMIN_PORT, Connector, EDGE_NAME, Edge, Pki};
use tests::workdir::Workdir;

const HOST: &str = "app.test";
/// Load: one request every this often, every fifth on a new connection.
const LOAD_EVERY: Duration = Duration::from_millis(20);
/// What "in force within a second" means (the acceptance).
const IN_FORCE_WITHIN: Duration = Duration::from_secs(1);
/// Tunnel connections per replica.
const HA: usize = 2;
/// Longest wait for a state the test expects; past it the test fails
/// with what it waited for (not a measurement).
const PATIENCE: Duration = Duration::from_secs(15);

/// An origin that says which one it is at `/whoami`, and otherwise is the
/// tests' origin.
async fn spawn_origin(addr: SocketAddr, name: &'static str) -> tokio::task::JoinHandle<()> {
    let app = Router::new()
        .route("/whoami", get(move || async move { name }))
        .merge(tests::origin::router());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("bind origin {addr}: {e}"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// The ingress rules of one valid config.
#[derive(Debug, Clone)]
struct Rules {
    /// `g{N}.app.test` rules to origin a, one per "new rule" change.
    extra: Vec<u32>,
    /// Which origin `app.test` goes to.
    origin: &'static str,
    /// `http_host_header` of the `app.test` rule.
    host_header: Option<String>,
}

/// One change of the config file.
#[derive(Debug, Clone)]
enum Change {
    NewRule(u32),
    ChangedOrigin(&'static str),
    HostHeader(String),
    /// An invalid file, and what its error names.
    Invalid(&'static str, &'static str),
}

struct Setup {
    work: Workdir,
    net: TestNet,
    pki: Pki,
    edge: Edge,
    token: PathBuf,
    origins: [SocketAddr; 2],
    _origin_tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Setup {
    async fn start(name: &str) -> Self {
        let work = Workdir::new(name);
        let net = TestNet::new();
        let origins = [net.addr(10, 8000), net.addr(11, 8000)];
        let tasks = vec![
            spawn_origin(origins[0], "a").await,
            spawn_origin(origins[1], "b").await,
        ];
        let pki = Pki::new(&work);
        let token = work.join("token");
        pki.create_tunnel(&[HOST, "*.app.test"], &token);
        let edge = Edge::start(&work, &pki, &net, 1, &[]).await;
        Self {
            work,
            net,
            pki,
            edge,
            token,
            origins,
            _origin_tasks: tasks,
        }
    }

    fn origin(&self, name: &str) -> SocketAddr {
        match name {
            "a" => self.origins[0],
            _ => self.origins[1],
        }
    }

    /// The config file of the replica on host `n`: `ingress` is YAML.
    fn config_text(&self, n: u8, ingress: &str) -> String {
        format!(
            "edges: [\"{}\"]\ntoken_file: {}\nca_cert: {}\nedge_server_name: {EDGE_NAME}\nadmin: \"{}\"\nha_connections: {HA}\ngrace_period: 10s\ningress:\n{ingress}",
            self.edge.tunnel,
            self.token.display(),
            self.pki.ca().display(),
            self.net.addr(n, ADMIN_PORT),
        )
    }

    fn ingress(&self, rules: &Rules) -> String {
        let a = self.origin("a");
        let mut y = String::new();
        for g in &rules.extra {
            y.push_str(&format!(
                "  - hostname: g{g}.app.test\n    service: http://{a}\n"
            ));
        }
        y.push_str(&format!(
            "  - hostname: {HOST}\n    service: http://{}\n",
            self.origin(rules.origin)
        ));
        if let Some(h) = &rules.host_header {
            y.push_str(&format!(
                "    origin_request:\n      http_host_header: {h}\n"
            ));
        }
        y.push_str("  - service: http_status:404\n");
        y
    }

    fn client(&self, host: &str) -> reqwest::Client {
        tests::http::client_for(host, self.edge.public)
    }

    fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.edge.public.port())
    }
}

/// Writes `text` to `path` the way an operator's tool should: a new file
/// renamed over the old one. Returns when the rename happened.
fn replace_file(path: &Path, text: &str) -> SystemTime {
    let tmp = path.with_extension("yaml.new");
    std::fs::write(&tmp, text).expect("write the new config");
    let at = SystemTime::now();
    std::fs::rename(&tmp, path).expect("rename the new config into place");
    at
}

/// A connector replica started from its own config file.
struct Replica {
    n: u8,
    config: PathBuf,
    extra_args: Vec<String>,
    runs: u32,
    connector: Connector,
}

impl Replica {
    fn start(work: &Workdir, net: &TestNet, n: u8, text: &str, extra_args: &[&str]) -> Self {
        let config = work.join(&format!("connector-{n}.yaml"));
        std::fs::write(&config, text).expect("write the connector config");
        let extra_args: Vec<String> = extra_args.iter().map(|s| s.to_string()).collect();
        let proc = spawn_connector(work, n, 1, &config, &extra_args);
        Self {
            n,
            config,
            extra_args,
            runs: 1,
            connector: Connector {
                proc,
                admin: net.addr(n, ADMIN_PORT),
            },
        }
    }

    fn restart(&mut self, work: &Workdir) {
        self.runs += 1;
        self.connector.proc =
            spawn_connector(work, self.n, self.runs, &self.config, &self.extra_args);
    }

    async fn metric(&self, name: &str) -> f64 {
        metrics::sum(&self.connector.metrics().await, name, &[])
    }

    /// Waits until `name` on this replica reaches `value`.
    async fn wait_metric(&self, name: &str, value: f64, what: &str) {
        let admin = self.connector.admin;
        eventually(what, PATIENCE, || async move {
            let m = metrics::scrape(admin).await;
            (metrics::sum(&m, name, &[]) >= value).then_some(())
        })
        .await;
    }
}

fn spawn_connector(work: &Workdir, n: u8, run: u32, config: &Path, extra: &[String]) -> Proc {
    let mut cmd = Command::new(bin("connector"));
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .args(extra)
        .env("CONNECTOR_LOG", "info")
        .env_remove("CONNECTOR_TOKEN");
    Proc::spawn(
        "connector",
        cmd,
        &work.join(&format!("connector-{n}-run{run}.log")),
    )
}

/// A failed request of the load: when, which kind, why.
#[derive(Debug)]
struct Failure {
    at: Duration,
    kind: &'static str,
    cause: String,
}

/// A fixed-rate load of `GET /hello` through the edge, on a keep-alive
/// client and (every fifth request) on a new connection each time.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, u64)>,
    failures: Arc<Mutex<Vec<Failure>>>,
}

impl Load {
    fn start(s: &Setup) -> Self {
        let keep_alive = s.client(HOST);
        let fresh = reqwest::Client::builder()
            .no_proxy()
            .resolve(HOST, s.edge.public)
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let url = s.url(HOST, "/hello");
        let stop = Arc::new(AtomicBool::new(false));
        let failures: Arc<Mutex<Vec<Failure>>> = Arc::default();
        let started = Instant::now();
        let task = {
            let stop = stop.clone();
            let failures = failures.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(LOAD_EVERY);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut requests = tokio::task::JoinSet::new();
                let (mut sent, mut fresh_sent) = (0u64, 0u64);
                while !stop.load(Ordering::SeqCst) {
                    tick.tick().await;
                    sent += 1;
                    let (client, kind) = match sent % 5 {
                        0 => {
                            fresh_sent += 1;
                            (fresh.clone(), "new-connection")
                        }
                        _ => (keep_alive.clone(), "keep-alive"),
                    };
                    let url = url.clone();
                    let failures = failures.clone();
                    requests.spawn(async move {
                        let cause = match client
                            .get(&url)
                            .timeout(Duration::from_secs(20))
                            .send()
                            .await
                        {
                            Err(e) => Some(format!("{e:?}")),
                            Ok(r) => {
                                let status = r.status();
                                match r.text().await {
                                    Ok(body) if status == 200 && body == "hello from origin\n" => {
                                        None
                                    }
                                    Ok(body) => Some(format!("status {status}, body {body:?}")),
                                    Err(e) => Some(format!("status {status}, body cut: {e:?}")),
                                }
                            }
                        };
                        if let Some(cause) = cause {
                            failures.lock().unwrap().push(Failure {
                                at: started.elapsed(),
                                kind,
                                cause,
                            });
                        }
                    });
                    while requests.try_join_next().is_some() {}
                }
                while requests.join_next().await.is_some() {}
                (sent, fresh_sent)
            })
        };
        Self {
            stop,
            task,
            failures,
        }
    }

    /// Stops the load, waits for its last requests, and fails the test
    /// with every failure if there was one.
    async fn finish(self, what: &str) {
        self.stop.store(true, Ordering::SeqCst);
        let (sent, fresh) = self.task.await.expect("load task");
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        eprintln!(
            "load during {what}: {sent} requests ({fresh} on new connections), {} failed",
            failures.len()
        );
        assert!(
            failures.is_empty(),
            "{} of {sent} requests failed during {what}:\n{}",
            failures.len(),
            failures
                .iter()
                .map(|f| format!("  at {:?} ({}): {}", f.at, f.kind, f.cause))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// What `GET` answers through the edge, as (status, body).
async fn fetch(client: &reqwest::Client, url: &str) -> (u16, String) {
    match client
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, format!("{e}")),
    }
}

/// Whether a request through the edge shows `rules` in force for `change`.
async fn shows(s: &Setup, change: &Change, rules: &Rules) -> Result<(), String> {
    let (host, path, want): (String, &str, String) = match change {
        Change::NewRule(g) => (
            format!("g{g}.app.test"),
            "/hello",
            "hello from origin\n".into(),
        ),
        Change::ChangedOrigin(o) => (HOST.into(), "/whoami", (*o).into()),
        Change::HostHeader(h) => (HOST.into(), "/headers", format!("\"host\":\"{h}\"")),
        Change::Invalid(..) => {
            // The last valid rules still serve: every check at once.
            if let Some(g) = rules.extra.last() {
                Box::pin(shows(s, &Change::NewRule(*g), rules)).await?;
            }
            if let Some(h) = &rules.host_header {
                Box::pin(shows(s, &Change::HostHeader(h.clone()), rules)).await?;
            }
            return Box::pin(shows(s, &Change::ChangedOrigin(rules.origin), rules)).await;
        }
    };
    // A new connection each time, so no pooled stream is favoured.
    let client = s.client(&host);
    let (status, body) = fetch(&client, &s.url(&host, path)).await;
    match status == 200 && body.contains(&want) {
        true => Ok(()),
        false => Err(format!(
            "GET http://{host}{path} answered {status} {body:?}, expected 200 with {want:?}"
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_rule_changes_and_replica_restarts_under_load_fail_no_request() {
    let begun = Instant::now();
    let s = Setup::start("connector-reload").await;
    let mut rules = Rules {
        extra: Vec::new(),
        origin: "a",
        host_header: None,
    };
    let mut replicas = [3u8, 4].map(|n| {
        Replica::start(
            &s.work,
            &s.net,
            n,
            &s.config_text(n, &s.ingress(&rules)),
            &[],
        )
    });
    for r in &replicas {
        r.connector.wait_ready().await;
    }
    wait_edge_connections(&s, 2 * HA).await;
    eprintln!("edge and two replicas up in {:?}", begun.elapsed());

    // (a) 20 changes of the rules under load.
    let load = Load::start(&s);
    let (mut valid, mut invalid) = (0.0, 0.0);
    let mut slowest = Duration::ZERO;
    for i in 1..=20u32 {
        let change = match i % 4 {
            1 => Change::NewRule(i),
            2 => Change::ChangedOrigin(if rules.origin == "a" { "b" } else { "a" }),
            3 => Change::HostHeader(format!("h{i}.test")),
            _ if i % 8 == 0 => Change::Invalid("ingres:\n  - service: http_status:404\n", "ingres"),
            _ => Change::Invalid(
                "  - hostname: broken.app.test\n    service: ftp://127.0.0.1:21\n",
                "ingress[0]",
            ),
        };
        let mut next = rules.clone();
        match &change {
            Change::NewRule(g) => next.extra.push(*g),
            Change::ChangedOrigin(o) => next.origin = o,
            Change::HostHeader(h) => next.host_header = Some(h.clone()),
            Change::Invalid(..) => {}
        }
        let mut written = Vec::new();
        for r in &replicas {
            let text = match &change {
                Change::Invalid(bad, _) if bad.starts_with("ingres:") => {
                    format!("{}{bad}", s.config_text(r.n, &s.ingress(&rules)))
                }
                Change::Invalid(bad, _) => {
                    s.config_text(r.n, &format!("{bad}{}", s.ingress(&rules)))
                }
                _ => s.config_text(r.n, &s.ingress(&next)),
            };
            written.push(replace_file(&r.config, &text));
        }
        let wrote = Instant::now();
        if let Change::Invalid(_, named) = &change {
            invalid += 1.0;
            for r in &replicas {
                r.wait_metric(
                    "connector_config_reload_errors_total",
                    invalid,
                    &format!("replica {} to count invalid file #{invalid}", r.n),
                )
                .await;
                assert_eq!(
                    r.metric("connector_config_last_reload_successful").await,
                    0.0
                );
                let log = r.connector.proc.log();
                let refused = log
                    .lines()
                    .rfind(|l| l.contains("config reload refused"))
                    .unwrap_or_default();
                assert!(
                    refused.contains(named),
                    "replica {}: the refusal names `{named}`: {refused}",
                    r.n
                );
            }
            for _ in 0..8 {
                if let Err(e) = shows(&s, &change, &rules).await {
                    panic!("change #{i} (an invalid file): the old rules must keep serving: {e}");
                }
            }
            eprintln!("change #{i}: invalid file ({named}) refused and counted; old rules serve");
            continue;
        }
        valid += 1.0;
        // Through the edge: the first request that shows the change.
        let seen = eventually(
            &format!("change #{i} ({change:?}) to show through the edge"),
            PATIENCE,
            || {
                let (s, change, next) = (&s, &change, &next);
                async move { shows(s, change, next).await.ok().map(|()| wrote.elapsed()) }
            },
        )
        .await;
        // On each replica: from the write to the swap.
        for (r, at) in replicas.iter().zip(&written) {
            r.wait_metric(
                "connector_config_reloads_total",
                valid,
                &format!("replica {} to apply change #{i}", r.n),
            )
            .await;
            let applied = r
                .metric("connector_config_last_reload_success_timestamp_seconds")
                .await;
            let written = at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            let took = Duration::from_secs_f64((applied - written).max(0.0));
            slowest = slowest.max(took);
            assert!(
                took <= IN_FORCE_WITHIN,
                "change #{i} ({change:?}): replica {} put it in force {took:?} after the file was written; it must be within {IN_FORCE_WITHIN:?} (the file is polled every 250 ms)",
                r.n
            );
        }
        // Every request from now on sees it.
        for _ in 0..8 {
            if let Err(e) = shows(&s, &change, &next).await {
                panic!("change #{i} ({change:?}) in force on both replicas, yet: {e}");
            }
        }
        eprintln!("change #{i}: {change:?} seen through the edge after {seen:?}");
        rules = next;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!(
        "20 changes ({valid} valid, {invalid} invalid): slowest from write to in force on a replica {slowest:?}"
    );
    // The last change was an invalid file: a restart would refuse it, so
    // put the good one back (a reload like any other).
    for r in &replicas {
        replace_file(&r.config, &s.config_text(r.n, &s.ingress(&rules)));
        r.wait_metric(
            "connector_config_reloads_total",
            valid + 1.0,
            &format!("replica {} to take the good file back", r.n),
        )
        .await;
    }
    load.finish("20 changes of the ingress rules").await;

    // (b) Each replica stopped (SIGTERM) and started again, three rounds.
    let load = Load::start(&s);
    let slow_client = s.client(HOST);
    let mut slow_sent = 0u64;
    for round in 1..=3 {
        for r in replicas.iter_mut() {
            wait_edge_connections(&s, 2 * HA).await;
            // Slow requests spread over all four connections (the edge
            // picks the one with the fewest in flight): some on the replica
            // that is about to stop.
            let slow: Vec<_> = (0..2 * HA)
                .map(|_| {
                    let c = slow_client.clone();
                    let url = s.url(HOST, "/slow?ms=1500");
                    tokio::spawn(async move { fetch(&c, &url).await })
                })
                .collect();
            slow_sent += slow.len() as u64;
            wait_slow_started(&s, slow_sent).await;
            eprintln!(
                "round {round}: replica {} has {} streams in flight at SIGTERM",
                r.n,
                r.metric("connector_streams_in_flight").await
            );
            let signalled = Instant::now();
            r.connector.proc.signal("TERM");
            let status = r
                .connector
                .proc
                .wait_exit(PATIENCE)
                .unwrap_or_else(|| panic!("replica {} did not exit after SIGTERM", r.n));
            assert!(status.success(), "replica {} exited with {status}", r.n);
            let log = r.connector.proc.log();
            assert!(log.contains("draining"), "replica {}: {log}", r.n);
            eprintln!(
                "round {round}: replica {} drained and exited {:?} after SIGTERM",
                r.n,
                signalled.elapsed()
            );
            for t in slow {
                let (status, body) = t.await.unwrap();
                assert_eq!(
                    (status, body.as_str()),
                    (200, "slow done after 1500 ms\n"),
                    "a slow request in flight across the replica's stop"
                );
            }
            r.restart(&s.work);
            r.connector.wait_ready().await;
        }
    }
    wait_edge_connections(&s, 2 * HA).await;
    load.finish("3 rounds of stopping and starting each replica")
        .await;
    eprintln!("whole test {:?}", begun.elapsed());
}

/// Waits until the origins have started `n` slow requests in all.
async fn wait_slow_started(s: &Setup, n: u64) {
    let origins = s.origins;
    eventually(
        &format!("the origins to start {n} slow requests"),
        PATIENCE,
        || async move {
            let mut started = 0;
            for o in origins {
                let stats: serde_json::Value = tests::http::plain_client()
                    .get(format!("http://{o}/stats"))
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                started += stats["slow_started"].as_u64()?;
            }
            (started >= n).then_some(())
        },
    )
    .await;
}

/// Waits until the edge has `n` registered connections for the tunnel.
async fn wait_edge_connections(s: &Setup, n: usize) {
    let admin = s.edge.admin;
    eventually(
        &format!("the edge to count {n} tunnel connections"),
        PATIENCE,
        || async move {
            let m = metrics::scrape(admin).await;
            (metrics::sum(&m, "edge_tunnel_connections", &[]) == n as f64).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_keeps_the_last_good_config_and_names_what_needs_a_restart() {
    let s = Setup::start("connector-sighup").await;
    let mut rules = Rules {
        extra: Vec::new(),
        origin: "a",
        host_header: None,
    };
    let n = 3;
    let r = Replica::start(
        &s.work,
        &s.net,
        n,
        &s.config_text(n, &s.ingress(&rules)),
        &["--config-poll-interval", "0s"],
    );
    r.connector.wait_ready().await;
    let probe = s.client("g1.app.test");
    let g1 = s.url("g1.app.test", "/hello");
    assert_eq!(fetch(&probe, &g1).await.0, 404, "no rule for g1 yet");

    // A valid file, then SIGHUP: in force.
    rules.extra.push(1);
    replace_file(&r.config, &s.config_text(n, &s.ingress(&rules)));
    let hup = Instant::now();
    r.connector.proc.signal("HUP");
    r.wait_metric("connector_config_reloads_total", 1.0, "the SIGHUP reload")
        .await;
    eprintln!("SIGHUP to reloaded: {:?}", hup.elapsed());
    assert_eq!(
        fetch(&probe, &g1).await,
        (200, "hello from origin\n".into())
    );
    let log = r.connector.proc.log();
    let reloaded = log
        .lines()
        .rfind(|l| l.contains("config reloaded"))
        .expect("the reload is logged");
    assert!(reloaded.contains("SIGHUP"), "{reloaded}");

    // An invalid file: refused, counted, the running rules stay.
    replace_file(
        &r.config,
        &s.config_text(
            n,
            "  - service: http_status:404\n  - hostname: late.app.test\n    service: http_status:204\n",
        ),
    );
    r.connector.proc.signal("HUP");
    r.wait_metric(
        "connector_config_reload_errors_total",
        1.0,
        "the refused reload",
    )
    .await;
    assert_eq!(
        r.metric("connector_config_last_reload_successful").await,
        0.0
    );
    assert_eq!(r.metric("connector_config_reloads_total").await, 1.0);
    assert_eq!(fetch(&probe, &g1).await.0, 200, "the last good rules serve");
    let log = r.connector.proc.log();
    let refused = log
        .lines()
        .rfind(|l| l.contains("config reload refused"))
        .expect("the refusal is logged");
    assert!(refused.contains("ingress"), "{refused}");
    assert!(
        refused.contains(&r.config.display().to_string()),
        "{refused}"
    );

    // A setting only a restart applies: named, and the rest applied.
    rules.extra.push(2);
    replace_file(
        &r.config,
        &s.config_text(n, &s.ingress(&rules))
            .replace(&format!("ha_connections: {HA}"), "ha_connections: 3"),
    );
    r.connector.proc.signal("HUP");
    r.wait_metric("connector_config_reloads_total", 2.0, "the second reload")
        .await;
    assert_eq!(r.metric("connector_config_restart_required").await, 1.0);
    assert_eq!(
        r.metric("connector_config_last_reload_successful").await,
        1.0
    );
    let g2 = s.client("g2.app.test");
    assert_eq!(fetch(&g2, &s.url("g2.app.test", "/hello")).await.0, 200);
    let log = r.connector.proc.log();
    assert!(
        log.contains(
            "ha_connections changed in the config file; restart the connector to apply it"
        ),
        "{log}"
    );
    assert_eq!(
        metrics::sum(
            &r.connector.metrics().await,
            "connector_tunnel_connections",
            &[]
        ),
        HA as f64,
        "the running connections stay as they were"
    );

    // Quick mode has no file: SIGHUP is logged and does not stop it.
    let mut quick = Connector::start(
        &s.work,
        &s.pki,
        &s.net,
        5,
        &[s.edge.tunnel],
        &s.token,
        &format!("http://{}", s.origin("a")),
        &[],
    );
    quick.wait_ready().await;
    quick.proc.signal("HUP");
    eventually(
        "the quick-mode connector to log the SIGHUP",
        PATIENCE,
        || {
            let log = quick.proc.log();
            async move { log.contains("no file to reload").then_some(()) }
        },
    )
    .await;
    assert!(quick.proc.running(), "SIGHUP must not end the connector");
}
