//! The connector against hostile input and slow peers (issue 9): path rules
//! that dot-segments cannot bypass, an origin that a rogue edge cannot
//! change, and response timers that do not count the upload. Real `edge`
//! and `connector` processes; a rogue edge written with the `tunnel` crate.

use std::time::{Duration, Instant};

use tests::hostile_edge::HostileEdge;
use tests::net::TestNet;
use tests::recording_origin::{RecordingOrigin, raw_get};
use tests::tunnel_setup::{Edge, Pki};
use tests::workdir::Workdir;
use tests::{config_connector, metrics, origin};
use tunnel::message::{ResponseHead, StreamErrorKind};

const HOST: &str = "app.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_never_carry_a_request_past_a_path_rule() {
    let work = Workdir::new("dot-segments");
    let net = TestNet::new();
    let origin = RecordingOrigin::start(net.addr(10, 8000)).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    let edge = Edge::start(&work, &pki, &net, 1, &[]).await;
    let rules = format!(
        "ingress:\n  - path: ^/api/\n    service: http://{}\n  - service: http_status:404\n",
        origin.addr
    );
    let connector = config_connector::start(&work, &pki, &net, 2, &[edge.tunnel], &token, &rules);
    connector.wait_ready().await;

    let (status, body) = raw_get(edge.public, HOST, "/api/ok").await;
    assert_eq!((status, body.as_str()), (200, "origin saw /api/ok"));
    let (status, _) = raw_get(edge.public, HOST, "/admin").await;
    assert_eq!(status, 404, "the catch-all answers paths outside /api/");

    let tricks = [
        "/api/../admin",
        "/api/%2e%2e/admin",
        "/api/.%2E/admin",
        "/api/%2E./admin",
        "/api/..%2fadmin",
        "/api/..;/admin",
        "/api/./../admin",
    ];
    for target in tricks {
        let (status, body) = raw_get(edge.public, HOST, target).await;
        assert_eq!(status, 400, "{target}: {body}");
    }
    let seen = origin.targets();
    assert_eq!(seen, ["/api/ok"], "the origin got requests it must not");

    let m = connector.metrics().await;
    assert_eq!(
        metrics::sum(
            &m,
            "connector_bad_requests_total",
            &[("reason", "dot_segment")]
        ),
        tricks.len() as f64,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rogue_edge_cannot_steer_the_connector_to_another_host() {
    let work = Workdir::new("rogue-edge");
    let net = TestNet::new();
    let origin = RecordingOrigin::start(net.addr(10, 8000)).await;
    // What the rogue edge is after: a service only the connector's host reaches.
    let secret = RecordingOrigin::start(net.addr(13, 9000)).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    let rogue = HostileEdge::bind(&pki, net.addr(1, 7844));
    // `bare.test`'s origin has no port: text pasted after it extends the host.
    let rules = format!(
        "ha_connections: 1\ningress:\n  - hostname: {HOST}\n    service: http://{}\n  - hostname: bare.test\n    service: http://{}\n  - service: http_status:404\n",
        origin.addr,
        net.ip(1),
    );
    let connector = config_connector::start(&work, &pki, &net, 2, &[rogue.addr], &token, &rules);
    let victim = rogue.accept().await;
    connector.wait_ready().await;

    let ok = victim.get(HOST, "/ok").await;
    assert!(
        matches!(ok, ResponseHead::Response { status: 200, .. }),
        "{ok:?}"
    );
    let s = secret.addr;
    let tricks = [
        (HOST, format!("@{s}/steal")),
        (HOST, format!("http://{s}/steal")),
        (HOST, format!("//{s}/steal")),
        (HOST, format!("\\\\{s}\\steal")),
        (HOST, format!("{s}")),
        // 127.x.y.1 followed by "3:9000/steal" is 127.x.y.13:9000.
        ("bare.test", format!("3:{}/steal", s.port())),
        ("bare.test", format!(".{}/steal", s.ip())),
        (HOST, "/api/x\r\nHost: evil".to_string()),
    ];
    for (host, path) in &tricks {
        let answer = victim.get(host, path).await;
        assert_eq!(
            answer,
            ResponseHead::Error(StreamErrorKind::BadRequest),
            "{host} {path:?}"
        );
    }
    assert_eq!(secret.connections(), 0, "the rogue edge reached {s}");
    assert_eq!(origin.targets(), ["/ok"]);

    let m = connector.metrics().await;
    assert_eq!(
        metrics::sum(&m, "connector_bad_requests_total", &[]),
        tricks.len() as f64,
        "{m}"
    );
    assert_eq!(
        metrics::sum(&m, "connector_requests_total", &[("status_class", "4xx")]),
        tricks.len() as f64,
        "{m}"
    );
}

/// An edge that will not time out first, a connector with a short response
/// timeout and the given body idle timeout, and the test origin.
async fn upload_tunnel(
    name: &str,
    response_timeout: &str,
    idle: &str,
) -> (
    Workdir,
    Edge,
    tests::tunnel_setup::Connector,
    tokio::task::JoinHandle<()>,
) {
    let work = Workdir::new(name);
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let origin = origin::spawn(origin_addr).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    let edge = Edge::start(&work, &pki, &net, 1, &["--response-timeout", "300s"]).await;
    let rest = format!(
        "origin_request:\n  response_timeout: {response_timeout}\n  request_body_idle_timeout: {idle}\ningress:\n  - service: http://{origin_addr}\n"
    );
    let connector = config_connector::start(&work, &pki, &net, 2, &[edge.tunnel], &token, &rest);
    connector.wait_ready().await;
    (work, edge, connector, origin)
}

/// `chunks` chunks of 64 KiB, one every `every`; then, if `stall`, nothing
/// more and no end.
fn paced_body(chunks: usize, every: Duration, stall: bool) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i == chunks {
            if stall {
                std::future::pending::<()>().await;
            }
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(vec![b'u'; 64 << 10]), i + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_the_response_timeout_is_not_a_timeout() {
    let (_work, edge, connector, _origin) = upload_tunnel("slow-upload", "2s", "5s").await;
    let client = tests::http::client_for(HOST, edge.public);
    // About 6 s of upload to an origin that answers only after the whole
    // body: three times the connector's response timeout.
    let chunks = 24;
    let started = Instant::now();
    let resp = client
        .post(format!("http://{HOST}:{}/sink", edge.public.port()))
        .body(paced_body(chunks, Duration::from_millis(250), false))
        .send()
        .await
        .expect("answer");
    let took = started.elapsed();
    assert_eq!(resp.status(), 200, "after {took:?}");
    let got: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(got["bytes"], (chunks as u64) << 16);
    assert!(
        took > Duration::from_secs(2),
        "the upload was too fast to prove anything: {took:?}"
    );
    let m = connector.metrics().await;
    assert_eq!(
        metrics::sum(
            &m,
            "connector_origin_errors_total",
            &[("kind", "origin timeout")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_ends_after_the_idle_timeout() {
    // The response timeout is far away: only the idle timeout can end this.
    let (_work, edge, connector, _origin) = upload_tunnel("stalled-upload", "300s", "2s").await;
    let client = tests::http::client_for(HOST, edge.public);
    let started = Instant::now();
    let sent = client
        .post(format!("http://{HOST}:{}/sink", edge.public.port()))
        .body(paced_body(2, Duration::from_millis(50), true))
        .send();
    let result = tokio::time::timeout(Duration::from_secs(60), sent)
        .await
        .expect("a stalled upload must end, not hang");
    eprintln!(
        "stalled upload ended after {:?}: {result:?}",
        started.elapsed()
    );
    if let Ok(resp) = result {
        assert_eq!(resp.status(), 400);
    }
    let m = connector.metrics().await;
    assert_eq!(
        metrics::sum(
            &m,
            "connector_bad_requests_total",
            &[("reason", "request_body_idle_timeout")]
        ),
        1.0,
        "{m}"
    );
}

#[test]
fn a_config_with_several_problems_names_them_all_and_starts_nothing() {
    let work = Workdir::new("config-problems");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    let admin = net.addr(2, tests::tunnel_setup::ADMIN_PORT);
    let config = work.join("connector.yaml");
    std::fs::write(
        &config,
        format!(
            "edges: [\"{}\"]\ntoken_file: {}\nca_cert: {}\nadmin: \"{admin}\"\ngrace_perod: 30s\ningress:\n  - hostname: {HOST}\n    path: \"^/api/(\"\n    service: http://127.0.0.1:8000\n  - hostname: {HOST}\n    service: http://127.0.0.1:3000\n  - hostname: other.test\n    service: http://127.0.0.1:3001\n    origin_request:\n      conect_timeout: 5s\n  - service: http_status:404\n",
            net.addr(1, 7844),
            token.display(),
            pki.ca().display(),
        ),
    )
    .unwrap();
    let expected = [
        "grace_perod: unknown field, did you mean grace_period?",
        "ingress[2].origin_request.conect_timeout: unknown field, did you mean connect_timeout?",
        "ingress[0]: ingress rule #1: path `^/api/(` is not a valid regex",
    ];
    for args in [&["ingress", "validate"][..], &["run"][..]] {
        let mut cmd = std::process::Command::new(tests::bins::bin("connector"));
        cmd.args(args).arg("--config").arg(&config);
        let log = work.join("connector.log");
        let mut proc = tests::proc::Proc::spawn("connector", cmd, &log);
        let status = proc
            .wait_exit(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("connector {args:?} kept running with a bad config"));
        let err = proc.log();
        assert_eq!(status.code(), Some(78), "{args:?}: {err}");
        for line in expected {
            assert!(
                err.contains(line),
                "{args:?} does not name `{line}`:\n{err}"
            );
        }
        assert!(!err.contains("connector started"), "{err}");
        assert!(
            std::net::TcpStream::connect_timeout(&admin, Duration::from_secs(1)).is_err(),
            "the admin listener is up"
        );
    }
}
