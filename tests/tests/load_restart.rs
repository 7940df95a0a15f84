//! The load check can fail, and does not fail by itself: the same bounded
//! load (200 requests/s for 6 s, 4 server-sent event streams held open) run
//! through a plain stop-start restart of the edge shows refused connections
//! at the time of the restart, and run without a restart shows none.

use std::time::Duration;

use tests::load::{Load, LoadSpec, Report, SseEnd, Target, thousands};
use tests::net::TestNet;
use tests::origin;
use tests::tunnel_setup::{Connector, Edge, single_tunnel_with};
use tests::workdir::Workdir;

const HOST: &str = "app.test";

/// One edge (2 s grace period, as in the measurement), one
/// connector, one origin.
struct Tunnel {
    _work: Workdir,
    edge: Edge,
    _connector: Connector,
    _origin: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    async fn start(name: &str) -> Self {
        let work = Workdir::new(name);
        let net = TestNet::new();
        let origin_addr = net.addr(10, 8000);
        let origin = origin::spawn(origin_addr).await;
        let (_pki, edge, connector) = single_tunnel_with(
            &work,
            &net,
            &[HOST],
            &format!("http://{origin_addr}"),
            &tests::bins::bin("edge"),
            &["--grace-period", "2s"],
        )
        .await;
        Self {
            _work: work,
            edge,
            _connector: connector,
            _origin: origin,
        }
    }

    fn load(&self) -> LoadSpec {
        let mut spec = LoadSpec::new(vec![Target::new("edge-1", self.edge.public)], HOST);
        spec.rate_per_s = 200;
        spec.duration = Duration::from_secs(6);
        spec.mix.sse_streams = 4;
        spec.mix.sse_events = 20;
        spec.mix.sse_interval = Duration::from_millis(250);
        spec
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_stop_start_restart_of_the_edge_under_load_shows_refused_requests() {
    let mut t = Tunnel::start("load-restart").await;
    let load = Load::start(t.load());

    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopping = load.elapsed();
    t.edge.proc.signal("TERM");
    let mut waited = Duration::ZERO;
    while t.edge.proc.running() {
        assert!(
            waited < Duration::from_secs(10),
            "the edge did not exit within 10 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    let stopped = load.elapsed();
    t.edge.restart().await;
    let ready = load.elapsed();
    eprintln!("edge: SIGTERM at {stopping:?}, exited at {stopped:?}, ready again at {ready:?}");

    let report = load.finish().await;
    eprintln!("{report}");
    let text = report.to_string();

    assert!(
        report.failed > 0,
        "a stop-start restart lost nothing?\n{text}"
    );
    let refused: Vec<_> = report
        .failures
        .iter()
        .filter(|f| f.cause.name() == "refused")
        .collect();
    assert!(!refused.is_empty(), "no refused connection\n{text}");
    // Refused while the listener was closed: from the SIGTERM until the new
    // process listened (it is ready a little after that).
    let slack = Duration::from_millis(200);
    for f in &refused {
        assert!(
            f.at + slack >= stopping && f.at <= ready + slack,
            "refused at {:?}, outside the restart ({stopping:?} to {ready:?})\n{text}",
            f.at
        );
    }
    assert_eq!(report.generator_overloaded, 0, "{text}");
    // The printed report names the time, the target and the cause.
    let first = &report.failures[0];
    let line = format!(
        "{} ms  edge-1  {}  {}",
        thousands(first.at.as_millis() as u64),
        first.kind,
        first.cause
    );
    assert!(text.contains(&line), "{line:?} is not in\n{text}");
    assert!(
        text.contains("by cause: ") && text.contains("refused "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_load_without_a_restart_fails_nothing() {
    let t = Tunnel::start("load-steady").await;
    let report = Load::start(t.load()).finish().await;
    eprintln!("{report}");
    report.assert_no_failures();
    assert_eq!(report.requests, 1200, "{report}");
    assert_eq!(report.sse.len(), 4, "{report}");
    for s in &report.sse {
        assert!(
            matches!(s.end, SseEnd::Finished) && s.events == 20,
            "stream {} ended {:?} after {} events\n{report}",
            s.id,
            s.end,
            s.events
        );
    }
    check_summary(&report);
}

fn check_summary(report: &Report) {
    let text = report.to_string();
    assert!(
        text.starts_with("load: 1,200 requests, 0 failed\n"),
        "{text}"
    );
    assert!(
        text.contains("sse: 4 streams, 4 finished, 0 ended by the test, 0 failed"),
        "{text}"
    );
}
