//! Every store test runs on SQLite (a temporary file) and on a real
//! PostgreSQL started by the tests themselves (one server shared by the tests
//! running at the same time, stopped and removed when the last one ends,
//! panics included; each test gets its own database).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::*;
use crate::inventory::{Host, Inventory};

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique_dir(prefix: &str) -> PathBuf {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()))
}

fn pg_tool(name: &str) -> String {
    let p = format!("{PG_BIN}/{name}");
    if std::path::Path::new(&p).exists() {
        p
    } else {
        name.to_string()
    }
}

fn run_as_postgres(tool: &str, args: &[&str]) {
    let out = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(pg_tool(tool))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A PostgreSQL server in a temporary folder; stopped and removed on drop.
struct Postgres {
    dir: PathBuf,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        let dir = unique_dir("warren-pg");
        std::fs::create_dir_all(&dir).unwrap();
        // From here on, drop cleans up even if starting fails.
        let mut pg = Postgres { dir, port: 0 };
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&pg.dir)
            .status()
            .unwrap();
        assert!(status.success(), "chown postgres {}", pg.dir.display());
        let data = pg.data();
        run_as_postgres(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let log = pg.dir.join("log").display().to_string();
        // The port is free when picked but may be taken before the server
        // binds it: try a few.
        for attempt in 1..=3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let opts = format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                pg.dir.display()
            );
            let started = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(pg_tool("pg_ctl"))
                .args(["-D", &data, "-o", &opts, "-l", &log, "-w", "start"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if started.success() {
                pg.port = port;
                return pg;
            }
            if attempt == 3 {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                panic!("pg_ctl start failed 3 times; server log:\n{log}");
            }
        }
        unreachable!()
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// Creates a database and returns its URL.
    fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        run_as_postgres(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", "postgres", name],
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Harmless when the server never started.
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(pg_tool("pg_ctl"))
            .args(["-D", &self.data(), "stop", "-m", "immediate", "-w"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static SERVER: Mutex<Weak<Postgres>> = Mutex::new(Weak::new());

/// The shared server, started by the first test that needs it.
fn postgres() -> Arc<Postgres> {
    let mut slot = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(pg) = slot.upgrade() {
        return pg;
    }
    let pg = Arc::new(Postgres::start());
    *slot = Arc::downgrade(&pg);
    pg
}

/// A database for one test; keeps what it needs alive and cleans up after.
enum Db {
    Sqlite(PathBuf),
    Postgres(#[allow(dead_code)] Arc<Postgres>),
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Sqlite(dir) = self {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn sqlite_db() -> (Db, String) {
    let dir = unique_dir("warren-sqlite");
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.join("sub").join("rollout.db").display()
    );
    (Db::Sqlite(dir), url)
}

fn postgres_db(test: &str) -> (Db, String) {
    let pg = postgres();
    let name = format!("t_{test}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let url = pg.database(&name);
    (Db::Postgres(pg), url)
}

fn spec(component: &str, version: &str) -> Spec {
    Spec::from_yaml(&format!(
        r#"
component: {component}
version: {version}
artifact:
  url: salt://releases/{component}/{version}/{component}.tar.gz
  sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
cohorts:
  - name: all
    target: G@role:{component}
    batch: 1
"#
    ))
    .unwrap()
}

fn plan(spec: &Spec) -> Plan {
    let inv = Inventory::new(vec![Host {
        id: "h1".into(),
        datacenter: "ams".into(),
        cohort: "canary".into(),
        role: spec.component.to_string(),
        version: Some("v1".into()),
        reachable: true,
    }])
    .unwrap();
    let matches = [("all".to_string(), vec!["h1".to_string()])].into();
    Plan::build(spec, &inv, &matches)
}

async fn begin(store: &Store, component: &str, version: &str) -> Result<RolloutId, StoreError> {
    let s = spec(component, version);
    store.begin_rollout(&s, &plan(&s)).await
}

// ---------------------------------------------------------------------------
// Scenarios, each run on both backends
// ---------------------------------------------------------------------------

async fn begin_and_read_back(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let s = spec("edge", "v2");
    let p = plan(&s);
    let id = store.begin_rollout(&s, &p).await.unwrap();
    let active = store.active(Component::Edge).await.unwrap().unwrap();
    assert_eq!(active.id, id);
    assert_eq!(active.state, RolloutState::Running);
    assert!(active.active);
    assert_eq!(active.version, "v2");
    assert!(store.active(Component::Connector).await.unwrap().is_none());
    let rec = store.get(&id).await.unwrap();
    assert_eq!(rec.spec, s);
    assert_eq!(rec.plan, p);
    assert_eq!(store.list().await.unwrap(), vec![active]);
    let missing = RolloutId("r-0-nope".into());
    assert!(matches!(
        store.get(&missing).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .journal(&missing, &Event::new("x", serde_json::Value::Null))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn one_active_rollout_per_component(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let first = begin(&store, "edge", "v2").await.unwrap();
    match begin(&store, "edge", "v3").await {
        Err(StoreError::AlreadyActive { component, id }) => {
            assert_eq!(component, Component::Edge);
            assert_eq!(id, first);
        }
        other => panic!("expected AlreadyActive, got {other:?}"),
    }
    // Another component is independent.
    let conn = begin(&store, "connector", "v2").await.unwrap();
    // Pausing keeps the component; a final state releases it.
    store.set_state(&first, RolloutState::Paused).await.unwrap();
    assert!(matches!(
        begin(&store, "edge", "v3").await,
        Err(StoreError::AlreadyActive { .. })
    ));
    store
        .set_state(&first, RolloutState::RolledBack)
        .await
        .unwrap();
    assert!(store.active(Component::Edge).await.unwrap().is_none());
    let second = begin(&store, "edge", "v3").await.unwrap();
    let list = store.list().await.unwrap();
    assert_eq!(list.len(), 3);
    let by_id: BTreeMap<_, _> = list.iter().map(|r| (r.id.clone(), r)).collect();
    assert_eq!(by_id[&first].state, RolloutState::RolledBack);
    assert!(!by_id[&first].active);
    assert!(by_id[&second].active && by_id[&conn].active);
}

async fn journal_is_ordered_and_complete(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let id = begin(&store, "edge", "v2").await.unwrap();
    let e1 = Event::new("batch_start", serde_json::json!({"stage": 0, "batch": 0}));
    let e2 = Event::new("salt_apply", serde_json::json!({"jid": "2026"})).on_host("h1");
    assert_eq!(store.journal(&id, &e1).await.unwrap(), 2);
    assert_eq!(store.journal(&id, &e2).await.unwrap(), 3);
    store.set_state(&id, RolloutState::Succeeded).await.unwrap();
    let h = store.history(&id).await.unwrap();
    let kinds: Vec<&str> = h.iter().map(|s| s.event.kind.as_str()).collect();
    assert_eq!(kinds, ["begin", "batch_start", "salt_apply", "state"]);
    assert_eq!(h.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(h[2].event, e2);
    assert_eq!(
        h[3].event.detail,
        serde_json::json!({"from": "running", "to": "succeeded"})
    );
    assert!(h.windows(2).all(|w| w[0].at <= w[1].at));
    // Journals of two rollouts do not mix.
    let other = begin(&store, "connector", "v2").await.unwrap();
    assert_eq!(store.history(&other).await.unwrap().len(), 1);
    assert!(matches!(
        store.history(&RolloutId("r-0-nope".into())).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn finished_batches_are_remembered(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let id = begin(&store, "edge", "v2").await.unwrap();
    assert!(store.batches_done(&id).await.unwrap().is_empty());
    store.finish_batch(&id, 0, 0).await.unwrap();
    store.finish_batch(&id, 1, 0).await.unwrap();
    store.finish_batch(&id, 1, 1).await.unwrap();
    store.finish_batch(&id, 1, 1).await.unwrap(); // twice: harmless
    let done = store.batches_done(&id).await.unwrap();
    assert_eq!(done, BTreeSet::from([(0, 0), (1, 0), (1, 1)]));
    // Journaled once each.
    let kinds = store.history(&id).await.unwrap();
    assert_eq!(
        kinds
            .iter()
            .filter(|s| s.event.kind == "batch_done")
            .count(),
        3
    );
    // A reconnect (a restarted controller) sees the same.
    store.close().await;
    let again = Store::connect(&url).await.unwrap();
    assert_eq!(again.batches_done(&id).await.unwrap(), done);
}

async fn assignments_are_upserted(url: String) {
    let rel = |v: &str| Release {
        version: v.to_string(),
        source: format!("salt://releases/x/{v}.tar.gz"),
        sha256: "ab".repeat(32),
    };
    let store = Store::connect(&url).await.unwrap();
    assert!(store.assignments_for("h1").await.unwrap().is_empty());
    store
        .assign("h1", Component::Edge, &rel("v2"))
        .await
        .unwrap();
    store
        .assign("h1", Component::Connector, &rel("v7"))
        .await
        .unwrap();
    store
        .assign("h2", Component::Edge, &rel("v1"))
        .await
        .unwrap();
    store
        .assign("h1", Component::Edge, &rel("v3"))
        .await
        .unwrap();
    assert_eq!(
        store.assignments_for("h1").await.unwrap(),
        BTreeMap::from([
            (Component::Edge, rel("v3")),
            (Component::Connector, rel("v7"))
        ])
    );
    store.unassign("h1", Component::Connector).await.unwrap();
    assert_eq!(
        store.assignments_for("h1").await.unwrap(),
        BTreeMap::from([(Component::Edge, rel("v3"))])
    );
    assert_eq!(
        store.assignments_for("h2").await.unwrap(),
        BTreeMap::from([(Component::Edge, rel("v1"))])
    );
}

fn alert(fingerprint: &str, source: &str, received_at_ms: i64) -> AlertRecord {
    AlertRecord {
        fingerprint: fingerprint.into(),
        labels: BTreeMap::from([
            ("alertname".into(), "EdgeReleaseErrorRatioHigh".into()),
            ("component".into(), "edge".into()),
        ]),
        starts_at: "2026-11-27T04:50:01.123456789Z".into(),
        starts_at_ms: Some(1_795_755_001_123),
        source: source.into(),
        selector: r#"{alertname="EdgeReleaseErrorRatioHigh"}"#.into(),
        received_at_ms,
    }
}

async fn alerts_are_recorded_once_per_rollout(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let edge = begin(&store, "edge", "v2").await.unwrap();
    let first = alert("abc123", "webhook", 1000);
    assert!(store.record_rollout_alert(&edge, &first).await.unwrap());
    // A webhook retry, then the poll: the first delivery wins.
    assert!(!store.record_rollout_alert(&edge, &first).await.unwrap());
    let polled = alert("abc123", "poll", 2000);
    assert!(!store.record_rollout_alert(&edge, &polled).await.unwrap());
    assert_eq!(
        store.rollout_alerts(&edge).await.unwrap(),
        std::slice::from_ref(&first)
    );
    let journaled: Vec<Step> = store
        .history(&edge)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.event.kind == "alert")
        .collect();
    assert_eq!(journaled.len(), 1);
    assert_eq!(
        journaled[0].event.detail,
        serde_json::json!({
            "fingerprint": "abc123",
            "labels": {"alertname": "EdgeReleaseErrorRatioHigh", "component": "edge"},
            "starts_at": "2026-11-27T04:50:01.123456789Z",
            "starts_at_ms": 1_795_755_001_123i64,
            "received_at_ms": 1000,
            "source": "webhook",
            "selector": r#"{alertname="EdgeReleaseErrorRatioHigh"}"#,
        })
    );
    // The same fingerprint counts again for another rollout.
    let connector = begin(&store, "connector", "v2").await.unwrap();
    assert!(
        store
            .record_rollout_alert(&connector, &first)
            .await
            .unwrap()
    );
    // Another alert, without a readable start, on the first rollout.
    let late = AlertRecord {
        starts_at_ms: None,
        ..alert("def456", "poll", 3000)
    };
    assert!(store.record_rollout_alert(&edge, &late).await.unwrap());
    assert_eq!(store.rollout_alerts(&edge).await.unwrap(), [first, late]);
    // A rollout that is rolling back or has ended records nothing.
    store
        .set_state(&connector, RolloutState::RollingBack)
        .await
        .unwrap();
    assert!(
        !store
            .record_rollout_alert(&connector, &alert("ghi789", "webhook", 4000))
            .await
            .unwrap()
    );
    assert_eq!(store.rollout_alerts(&connector).await.unwrap().len(), 1);
    assert!(matches!(
        store
            .record_rollout_alert(&RolloutId("r-0-nope".into()), &alert("x", "poll", 1))
            .await,
        Err(StoreError::NotFound(_))
    ));
}

async fn running_or_paused_rollouts_are_listed(url: String) {
    let store = Store::connect(&url).await.unwrap();
    assert!(store.running_or_paused().await.unwrap().is_empty());
    let edge = begin(&store, "edge", "v2").await.unwrap();
    let connector = begin(&store, "connector", "v2").await.unwrap();
    store.set_state(&edge, RolloutState::Paused).await.unwrap();
    // Both created in the same millisecond have no set order.
    let both: BTreeMap<RolloutId, Spec> = store
        .running_or_paused()
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.summary.id, r.spec))
        .collect();
    assert_eq!(
        both,
        BTreeMap::from([
            (edge.clone(), spec("edge", "v2")),
            (connector.clone(), spec("connector", "v2"))
        ])
    );
    store
        .set_state(&connector, RolloutState::RollingBack)
        .await
        .unwrap();
    store
        .set_state(&edge, RolloutState::Succeeded)
        .await
        .unwrap();
    assert!(store.running_or_paused().await.unwrap().is_empty());
}

async fn migrations_run_once(url: String) {
    let a = Store::connect(&url).await.unwrap();
    let id = begin(&a, "edge", "v2").await.unwrap();
    // Connecting again re-checks the migrations and keeps the data.
    let b = Store::connect(&url).await.unwrap();
    assert_eq!(b.active(Component::Edge).await.unwrap().unwrap().id, id);
    let rows = sqlx::query("SELECT version FROM warren_migrations")
        .fetch_all(&b.pool)
        .await
        .unwrap();
    assert_eq!(rows.len(), MIGRATIONS.len());
}

/// Two controllers (two pools) race to begin a rollout of the same
/// component, several rounds: exactly one wins each round.
async fn concurrent_begin_has_one_winner(url: String) {
    let (a, b) = tokio::join!(Store::connect(&url), Store::connect(&url));
    let (a, b) = (a.unwrap(), b.unwrap());
    for round in 0..5 {
        let (sa, sb) = (spec("edge", "v2"), spec("edge", "v3"));
        let (pa, pb) = (plan(&sa), plan(&sb));
        let (ra, rb) = tokio::join!(a.begin_rollout(&sa, &pa), b.begin_rollout(&sb, &pb));
        let (winner, loser) = match (ra, rb) {
            (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
            other => panic!("round {round}: expected one winner, got {other:?}"),
        };
        match loser {
            StoreError::AlreadyActive { component, id } => {
                assert_eq!(component, Component::Edge);
                assert_eq!(id, winner, "round {round}");
            }
            other => panic!("round {round}: loser got {other:?}"),
        }
        assert_eq!(a.active(Component::Edge).await.unwrap().unwrap().id, winner);
        b.set_state(&winner, RolloutState::Succeeded).await.unwrap();
    }
    assert_eq!(a.list().await.unwrap().len(), 5);
}

async fn a_rollout_of_both_components_holds_both(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let both = Spec::from_yaml(
        r#"
components:
  - component: edge
    version: v2
    artifact:
      url: salt://releases/edge/v2/edge.tar.gz
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    cohorts: [{name: all, target: G@role:edge}]
  - component: connector
    version: v2
    artifact:
      url: salt://releases/connector/v2/connector.tar.gz
      sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
    cohorts: [{name: all, target: G@role:connector}]
"#,
    )
    .unwrap();
    let host = |id: &str| Host {
        id: id.into(),
        datacenter: "ams".into(),
        cohort: "canary".into(),
        role: "edge".into(),
        version: Some("v1".into()),
        reachable: true,
    };
    let fleet = |id: &str| -> crate::plan::Fleet {
        (
            Inventory::new(vec![host(id)]).unwrap(),
            [("all".to_string(), vec![id.to_string()])].into(),
        )
    };
    let p = Plan::build_parts(&both, &[fleet("e1"), fleet("c1")]);
    assert!(p.executable(), "{:?}", p.problems);
    let id = store.begin_rollout(&both, &p).await.unwrap();
    for component in [Component::Edge, Component::Connector] {
        assert_eq!(store.active(component).await.unwrap().unwrap().id, id);
    }
    // Listed with both components, as `rollout history` prints it.
    let listed = store.list().await.unwrap();
    assert_eq!(listed[0].describe(), "edge v2 then connector v2");
    assert_eq!(listed[0].components.len(), 2);
    for other in ["edge", "connector"] {
        match begin(&store, other, "v3").await {
            Err(StoreError::AlreadyActive {
                component,
                id: held,
            }) => {
                assert_eq!(component.as_str(), other);
                assert_eq!(held, id);
            }
            got => panic!("{other}: expected AlreadyActive, got {got:?}"),
        }
    }
    let rec = store.get(&id).await.unwrap();
    assert_eq!(rec.spec, both);
    assert_eq!(rec.plan, p);
    store.set_state(&id, RolloutState::Succeeded).await.unwrap();
    assert!(store.active(Component::Connector).await.unwrap().is_none());
    begin(&store, "connector", "v3").await.unwrap();
    // And the other way round: a connector rollout holds off one of both.
    match store.begin_rollout(&both, &p).await {
        Err(StoreError::AlreadyActive { component, .. }) => {
            assert_eq!(component, Component::Connector)
        }
        got => panic!("expected AlreadyActive, got {got:?}"),
    }
}

/// One holder at a time: renewed by its holder, refused to another until
/// it expires, then taken over (with a new `acquired_at`); given up, it is
/// free at once.
async fn the_runner_lease_has_one_holder(url: String) {
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    let ttl = Duration::from_millis(600);
    let first = a.take_lease("runner", "a", ttl).await.unwrap().unwrap();
    assert_eq!(first.holder, "a");
    assert!(first.expires_at - first.renewed_at >= 600, "{first:?}");
    assert_eq!(b.take_lease("runner", "b", ttl).await.unwrap(), None);
    let renewed = a.take_lease("runner", "a", ttl).await.unwrap().unwrap();
    assert_eq!(renewed.acquired_at, first.acquired_at);
    assert!(renewed.expires_at >= first.expires_at);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let taken = b.take_lease("runner", "b", ttl).await.unwrap().unwrap();
    assert_eq!(taken.holder, "b");
    assert!(
        taken.acquired_at > renewed.expires_at,
        "{taken:?} {renewed:?}"
    );
    // The old holder finds it gone and does not get it back.
    assert_eq!(a.take_lease("runner", "a", ttl).await.unwrap(), None);
    // Giving up a lease one does not hold changes nothing.
    a.release_lease("runner", "a").await.unwrap();
    assert_eq!(a.lease("runner").await.unwrap().unwrap().holder, "b");
    b.release_lease("runner", "b").await.unwrap();
    assert_eq!(a.lease("runner").await.unwrap(), None);
    assert!(a.take_lease("runner", "a", ttl).await.unwrap().is_some());
}

/// Two processes race for a free lease, several rounds: one wins each.
async fn concurrent_lease_takers_have_one_winner(url: String) {
    let a = Store::connect(&url).await.unwrap();
    let b = Store::connect(&url).await.unwrap();
    for round in 0..5 {
        let name = format!("race-{round}");
        let ttl = Duration::from_secs(30);
        let (x, y) = tokio::join!(a.take_lease(&name, "a", ttl), b.take_lease(&name, "b", ttl));
        let winners = [x.unwrap(), y.unwrap()].into_iter().flatten().count();
        assert_eq!(winners, 1, "round {round}");
    }
}

/// Pause, resume and abort as the API asks them: allowed ones journal and
/// hand the rollout to the service; refused ones change nothing.
async fn requests_change_state_or_nothing(url: String) {
    let store = Store::connect(&url).await.unwrap();
    let id = begin(&store, "edge", "v2").await.unwrap();
    assert_eq!(store.get(&id).await.unwrap().summary.runner, Runner::Cli);
    let before = store.history(&id).await.unwrap().len();
    let e = store
        .request(&id, Request::Resume, "api")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Refused(_)), "{e}");
    assert!(e.to_string().contains("only a paused rollout"), "{e}");
    assert_eq!(store.history(&id).await.unwrap().len(), before);

    let paused = store.request(&id, Request::Pause, "api").await.unwrap();
    assert_eq!(paused.state, RolloutState::Paused);
    // Pausing leaves the runner: the `apply` stops at its next step.
    assert_eq!(paused.runner, Runner::Cli);
    assert!(store.service_work().await.unwrap().is_empty());

    let resumed = store.request(&id, Request::Resume, "api").await.unwrap();
    assert_eq!(resumed.state, RolloutState::Running);
    assert_eq!(resumed.runner, Runner::Serve);
    let work = store.service_work().await.unwrap();
    assert_eq!(work.len(), 1);
    assert_eq!(work[0].1, Work::Run);

    let aborting = store.request(&id, Request::Abort, "api").await.unwrap();
    assert_eq!(aborting.state, RolloutState::Paused);
    let work = store.service_work().await.unwrap();
    assert_eq!(
        (work[0].0.summary.id.clone(), work[0].1.clone()),
        (id.clone(), Work::Abort)
    );
    let e = store
        .request(&id, Request::Resume, "api")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("abort is already under way"), "{e}");
    let kinds: Vec<String> = store
        .history(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.event.kind)
        .collect();
    for kind in ["pause_requested", "resumed", "abort_requested"] {
        assert!(kinds.contains(&kind.to_string()), "{kinds:?}");
    }
    let e = store
        .request(&RolloutId("r-nope".into()), Request::Pause, "api")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    // Steps read by time see every rollout's journal.
    let all = store.steps_since(0, 1000).await.unwrap();
    assert_eq!(all.len(), kinds.len());
    assert!(all.iter().all(|(r, _)| *r == id));
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_db, url) = super::sqlite_db();
                    super::$name(url).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let (_db, url) = super::postgres_db(stringify!($name));
                    super::$name(url).await;
                }
            )*
        }
    };
}

both_backends!(
    begin_and_read_back,
    one_active_rollout_per_component,
    journal_is_ordered_and_complete,
    finished_batches_are_remembered,
    assignments_are_upserted,
    alerts_are_recorded_once_per_rollout,
    running_or_paused_rollouts_are_listed,
    migrations_run_once,
    concurrent_begin_has_one_winner,
    a_rollout_of_both_components_holds_both,
    the_runner_lease_has_one_holder,
    concurrent_lease_takers_have_one_winner,
    requests_change_state_or_nothing,
);

#[test]
fn default_url_is_in_the_data_folder() {
    let url = default_url();
    assert!(url.starts_with("sqlite://"), "{url}");
    assert!(url.ends_with("/warren/rollout.db?mode=rwc"), "{url}");
}

#[test]
fn states_round_trip() {
    for s in RolloutState::ALL {
        assert_eq!(s.as_str().parse::<RolloutState>().unwrap(), s);
    }
    let active: Vec<_> = RolloutState::ALL
        .into_iter()
        .filter(|s| s.is_active())
        .collect();
    assert_eq!(
        active,
        [
            RolloutState::Running,
            RolloutState::Paused,
            RolloutState::RollingBack
        ]
    );
}

#[test]
fn migrations_split_into_statements() {
    let statements = split_statements(MIGRATIONS[0].2);
    assert!(statements.len() >= 6, "{statements:#?}");
    assert!(
        statements
            .iter()
            .all(|s| !s.contains(';') && !s.contains("--"))
    );
    assert!(
        statements
            .iter()
            .any(|s| s.contains("CREATE UNIQUE INDEX") && s.contains("WHERE active = 1"))
    );
}

#[test]
fn sqlite_urls_create_their_file_unless_they_set_a_mode() {
    let table: &[(&str, Option<(&str, &str)>)] = &[
        (
            "sqlite:///var/x/new.db",
            Some(("/var/x/new.db", "sqlite:///var/x/new.db?mode=rwc")),
        ),
        (
            "sqlite://rel.db",
            Some(("rel.db", "sqlite://rel.db?mode=rwc")),
        ),
        ("sqlite:rel.db", Some(("rel.db", "sqlite:rel.db?mode=rwc"))),
        (
            "sqlite:///x.db?mode=ro",
            Some(("/x.db", "sqlite:///x.db?mode=ro")),
        ),
        (
            "sqlite:///x.db?mode=rwc",
            Some(("/x.db", "sqlite:///x.db?mode=rwc")),
        ),
        (
            "sqlite:///x.db?cache=shared",
            Some(("/x.db", "sqlite:///x.db?cache=shared&mode=rwc")),
        ),
        ("sqlite::memory:", None),
        ("sqlite://:memory:", None),
        ("sqlite:///x.db?mode=memory", None),
        ("postgres://u@h/db", None),
    ];
    for (url, want) in table {
        let got = sqlite_file(url).map(|f| (f.path, f.url));
        let want = want.map(|(p, u)| (PathBuf::from(p), u.to_string()));
        assert_eq!(got, want, "{url}");
    }
}
