//! An edge upgraded in place refuses nothing: under a steady 200
//! requests/s with server-sent event streams held open and WebSockets open
//! at every moment, `edge upgrade` run 20 times in a row fails no request
//! and cuts no stream or WebSocket, while the
//! supervisor's pid stays and the worker's changes each time. A release
//! that exits at once fails its upgrade, says why, and the old worker goes
//! on serving without a refused request. (tests/tests/load_restart.rs shows
//! the same load through a plain stop-start does fail.)

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use tests::load::{Load, LoadSpec, SseEnd, Target};
use tests::net::TestNet;
use tests::origin;
use tests::tunnel_setup::{Connector, Edge, single_tunnel_with};
use tests::workdir::Workdir;

const HOST: &str = "app.test";

struct Tunnel {
    work: Workdir,
    edge: Edge,
    connector: Connector,
    _origin: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    /// One edge started from `program` (a link the test may switch), one
    /// connector, one origin.
    async fn start(name: &str, program: &Path) -> Self {
        let work = Workdir::new(name);
        let net = TestNet::new();
        let origin_addr = net.addr(10, 8000);
        let origin = origin::spawn(origin_addr).await;
        let (_pki, edge, connector) = single_tunnel_with(
            &work,
            &net,
            &[HOST],
            &format!("http://{origin_addr}"),
            program,
            &["--grace-period", "5s"],
        )
        .await;
        Self {
            work,
            edge,
            connector,
            _origin: origin,
        }
    }

    fn load(&self, duration: Duration, sse_streams: usize) -> LoadSpec {
        let mut spec = LoadSpec::new(vec![Target::new("edge-1", self.edge.public)], HOST);
        spec.rate_per_s = 200;
        spec.duration = duration;
        spec.mix.sse_streams = sse_streams;
        // Two seconds of events, then the origin holds each stream open
        // (across every upgrade) until the generator releases it at the end.
        spec.mix.sse_events = 20;
        spec.mix.sse_interval = Duration::from_millis(100);
        // WebSockets open at every moment, each for a second: every worker
        // that is replaced has some, and must finish them before it exits.
        spec.mix.websockets = 8;
        spec.mix.session_lifetime = Duration::from_secs(1);
        spec.mix.session_interval = Duration::from_millis(50);
        spec
    }
}

/// A link to the edge binary the test can point elsewhere, as Salt's
/// release switch does.
fn release_link(dir: &Path) -> std::path::PathBuf {
    let link = dir.join("edge");
    std::os::unix::fs::symlink(tests::bins::bin("edge"), &link).unwrap();
    link
}

/// Points `link` at `target` in one step (rename over it).
fn switch(link: &Path, target: &Path) {
    let tmp = link.with_extension("next");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).unwrap();
    std::fs::rename(&tmp, link).unwrap();
}

/// The worker pid in `edge upgrade`'s answer.
fn new_worker_pid(stdout: &str) -> u32 {
    let after = stdout
        .split("(pid ")
        .nth(1)
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"));
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_upgrades_in_a_row_under_load_fail_nothing() {
    let dir = tempdir("edge-upgrade-link");
    let program = release_link(&dir);
    let mut t = Tunnel::start("edge-upgrade", &program).await;
    let supervisor = t.edge.proc.pid();
    let load = Load::start(t.load(Duration::from_secs(120), 4));
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut workers = HashSet::new();
    for round in 1..=20 {
        let out = tokio::task::block_in_place(|| t.edge.upgrade());
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "upgrade {round} failed: {stdout}{stderr}\nedge log:\n{}",
            t.edge.proc.log()
        );
        assert!(stdout.starts_with("upgraded: generation "), "{stdout}");
        workers.insert(new_worker_pid(&stdout));
        // Requests land on the new worker for a moment before the next.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    eprintln!("{report}");
    report.assert_no_failures();
    assert!(report.requests >= 1_000, "{report}");
    assert!(report.websockets.finished >= 20, "{report}");
    assert_eq!(report.sse.len(), 4, "{report}");
    for s in &report.sse {
        assert!(
            matches!(s.end, SseEnd::Finished),
            "stream {} ended {:?} after {} events\n{report}",
            s.id,
            s.end,
            s.events
        );
    }
    assert_eq!(workers.len(), 20, "each upgrade starts a new worker");
    let log = t.edge.proc.log();
    assert_eq!(
        log.matches("replaced by a new worker").count(),
        20,
        "every old worker drained"
    );
    // Make before break: the connector registered with each new worker.
    assert!(
        log.matches("connector registered").count() > 20,
        "the connector did not move to every new worker:\n{log}"
    );
    assert!(t.edge.proc.running(), "the supervisor is still there");
    assert_eq!(t.edge.proc.pid(), supervisor);

    // The connector moved its connections to each new worker in turn.
    let metrics = t.connector.metrics().await;
    assert!(metrics.contains("connector_drains_total"), "{metrics}");
    t.edge.proc.kill();
    let _ = std::fs::remove_dir_all(&dir);
    drop(t.work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_that_exits_at_once_fails_its_upgrade_and_the_old_worker_serves_on() {
    let dir = tempdir("edge-upgrade-broken");
    let program = release_link(&dir);
    let t = Tunnel::start("edge-upgrade-broken", &program).await;
    let broken = dir.join("broken.sh");
    std::fs::write(
        &broken,
        "#!/bin/sh\necho 'this release cannot start' >&2\nexit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let load = Load::start(t.load(Duration::from_secs(5), 2));
    tokio::time::sleep(Duration::from_secs(1)).await;

    switch(&program, &broken);
    let out = tokio::task::block_in_place(|| t.edge.upgrade());
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("exited with exit status: 3 before it was ready")
            && stderr.contains("keeps serving"),
        "{stderr}"
    );
    assert!(t.edge.proc.log().contains("this release cannot start"));

    // Back to a good release: the next upgrade works.
    switch(&program, &tests::bins::bin("edge"));
    let out = tokio::task::block_in_place(|| t.edge.upgrade());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let report = load.finish().await;
    eprintln!("{report}");
    report.assert_no_failures();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder for the release links (outside the work dir, which the
/// harness may clean while the edge still runs from it).
fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
