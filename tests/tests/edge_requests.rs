//! The edge's public request handling, driven by a raw TCP client against
//! real `edge` and `connector` processes: which requests are refused (and
//! how they are counted), what reaches the origin, the forwarding headers,
//! metrics when clients leave, and `edge run --config` checking.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tests::bins::bin;
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::tunnel_setup::{Connector, Edge, Pki, single_tunnel};
use tests::workdir::Workdir;
use tests::{metrics, origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HOST: &str = "app.test";

/// A request as the origin received it.
#[derive(Debug, Clone)]
struct Arrival {
    method: String,
    uri: String,
    headers: http::HeaderMap,
}

/// Every request the origin received, in order.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Arrival>>>);

impl Arrivals {
    fn all(&self) -> Vec<Arrival> {
        self.0.lock().unwrap().clone()
    }
}

/// One edge, one connector, and the test origin with a recorder in front.
struct Tunnel {
    _work: Workdir,
    edge: Edge,
    _connector: Connector,
    arrivals: Arrivals,
    _origin: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    async fn start(name: &str) -> Self {
        let work = Workdir::new(name);
        let net = TestNet::new();
        let origin_addr = net.addr(10, 8000);
        let arrivals = Arrivals::default();
        let record = arrivals.clone();
        let app = origin::router().layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                record.0.lock().unwrap().push(Arrival {
                    method: req.method().to_string(),
                    uri: req.uri().to_string(),
                    headers: req.headers().clone(),
                });
                next.run(req)
            },
        ));
        let listener = tokio::net::TcpListener::bind(origin_addr).await.unwrap();
        let origin = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let (_pki, edge, connector) =
            single_tunnel(&work, &net, &[HOST], &format!("http://{origin_addr}")).await;
        Self {
            _work: work,
            edge,
            _connector: connector,
            arrivals,
            _origin: origin,
        }
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metrics::sum(&self.edge.metrics().await, name, labels)
    }
}

/// An answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

/// Writes `request` on a new connection and reads until the edge closes it
/// (requests say `Connection: close`, or the edge must close on its own).
async fn raw(edge: SocketAddr, request: &[u8]) -> (Answer, SocketAddr) {
    let mut s = TcpStream::connect(edge).await.unwrap();
    let local = s.local_addr().unwrap();
    s.write_all(request).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut bytes))
        .await
        .expect("the edge closes the connection after its answer")
        .unwrap();
    let split = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).to_ascii_lowercase();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let mut body = bytes[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body);
    }
    (Answer { status, head, body }, local)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16)
            .expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_request_heads_get_4xx_before_a_stream_is_opened_and_never_reach_the_origin() {
    let t = Tunnel::start("edge-framing").await;
    let big_header = format!("X-Big: {}\r\n", "a".repeat(70_000));
    // Longer than a frame holds, shorter than hyper's own 65534-byte limit.
    let long_target = format!("/hello?{}", "a".repeat(65_400));
    let refused: Vec<(&str, String, u16)> = vec![
        (
            "two identical Host headers",
            "GET /hello HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n".into(),
            400,
        ),
        (
            "two different Host headers",
            "GET /hello HTTP/1.1\r\nHost: app.test\r\nHost: other.test\r\n".into(),
            400,
        ),
        (
            "a Host with user info",
            "GET /hello HTTP/1.1\r\nHost: user@app.test\r\n".into(),
            400,
        ),
        (
            "a Host with an impossible port",
            "GET /hello HTTP/1.1\r\nHost: app.test:99999\r\n".into(),
            400,
        ),
        (
            "a header too large for a tunnel frame",
            format!("GET /hello HTTP/1.1\r\nHost: app.test\r\n{big_header}"),
            431,
        ),
        (
            "a target too long for a tunnel frame",
            format!("GET {long_target} HTTP/1.1\r\nHost: app.test\r\n"),
            414,
        ),
        (
            "CONNECT",
            "CONNECT app.test:80 HTTP/1.1\r\nHost: app.test:80\r\n".into(),
            405,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, head, want) in &refused {
        let request = format!("{head}Connection: close\r\n\r\n");
        let (answer, _) = raw(t.edge.public, request.as_bytes()).await;
        if answer.status != *want {
            wrong.push(format!("{what}: want {want}, got {}", answer.head));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");

    // An absolute-form target's authority wins over Host.
    let (answer, _) = raw(
        t.edge.public,
        b"GET http://app.test/headers HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "absolute form: {}", answer.head);
    let seen: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(seen["x-forwarded-host"], "app.test");

    // Content-Length and Transfer-Encoding together, with a request
    // smuggled behind a body that Content-Length would cut short: hyper
    // frames the body by Transfer-Encoding, drops Content-Length (RFC 9112
    // §6.3) and closes the connection after its answer, so the origin gets
    // exactly one request and never the smuggled one.
    let (answer, _) = raw(
        t.edge.public,
        b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\n\
          Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n\
          GET /hello HTTP/1.1\r\nHost: app.test\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "CL+TE: {}", answer.head);
    assert_eq!(answer.body, b"hello");

    let arrivals = t.arrivals.all();
    let got: Vec<String> = arrivals
        .iter()
        .map(|a| format!("{} {}", a.method, a.uri))
        .collect();
    assert_eq!(
        got,
        ["GET /headers", "POST /echo"],
        "what reached the origin"
    );
    assert_ne!(
        arrivals[1]
            .headers
            .get("content-length")
            .map(|v| v.as_bytes()),
        Some(&b"4"[..]),
        "the client's Content-Length reached the origin"
    );

    let refusals = refused.len() as f64;
    let status = |class| [("status_class", class)];
    assert_eq!(t.metric("edge_requests_total", &status("5xx")).await, 0.0);
    assert_eq!(
        t.metric("edge_requests_total", &status("4xx")).await,
        refusals
    );
    assert_eq!(t.metric("edge_requests_total", &status("2xx")).await, 2.0);
    assert_eq!(
        t.metric("edge_stream_open_duration_seconds_count", &[])
            .await,
        2.0,
        "a tunnel stream was opened for a refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_replaces_forwarding_headers_and_strips_connection_named_ones() {
    let t = Tunnel::start("edge-forwarding").await;
    let (answer, client) = raw(
        t.edge.public,
        b"GET /headers HTTP/1.1\r\nHost: app.test\r\n\
          X-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
          Forwarded: for=6.6.6.6;proto=https\r\nX-Forwarded-Host: admin.internal\r\n\
          X-Forwarded-Proto: https\r\nX-Request-Id: chosen-by-client\r\n\
          Connection: close, X-Secret\r\nX-Secret: hunter2\r\nKeep-Alive: timeout=5\r\n\
          X-Kept: yes\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.head);
    let seen: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let ip = client.ip().to_string();
    assert_eq!(seen["x-forwarded-for"], ip.as_str(), "{seen}");
    assert_eq!(seen["x-real-ip"], ip.as_str(), "{seen}");
    assert_eq!(seen["x-forwarded-host"], HOST, "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");
    assert_eq!(
        seen["forwarded"],
        format!("for={ip};host={HOST};proto=http"),
        "{seen}"
    );
    assert_ne!(seen["x-request-id"], "chosen-by-client", "{seen}");
    assert!(
        seen.get("x-secret").is_none(),
        "Connection-named header passed: {seen}"
    );
    assert!(
        seen.get("keep-alive").is_none(),
        "hop-by-hop header passed: {seen}"
    );
    assert_eq!(seen["x-kept"], "yes", "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_aborted_by_their_clients_leave_nothing_in_flight_and_are_counted() {
    let t = Tunnel::start("edge-aborts").await;
    // The origin holds each response for longer than the test waits, so
    // every request is still waiting for its head when its client leaves.
    let request = b"GET /slow?ms=90000 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    let in_flight = || async { t.metric("edge_requests_in_flight", &[]).await };
    // 5 rounds of 20 stay below any per-client or per-tunnel cap.
    for round in 0..5 {
        let mut clients = Vec::new();
        for _ in 0..20 {
            let mut s = TcpStream::connect(t.edge.public).await.unwrap();
            s.write_all(request).await.unwrap();
            clients.push(s);
        }
        eventually(
            &format!("round {round}: 20 requests in flight"),
            Duration::from_secs(30),
            || async { (in_flight().await == 20.0).then_some(()) },
        )
        .await;
        drop(clients);
        eventually(
            &format!("round {round}: no request in flight after the clients left"),
            Duration::from_secs(30),
            || async { (in_flight().await == 0.0).then_some(()) },
        )
        .await;
    }
    let closed = t
        .metric("edge_requests_total", &[("status_class", "client_closed")])
        .await;
    assert_eq!(closed, 100.0, "aborted requests counted");
    assert_eq!(
        t.metric("edge_requests_total", &[("status_class", "5xx")])
            .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_run_names_every_problem_of_its_config_file_and_binds_nothing() {
    let work = Workdir::new("edge-config-all");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    let public = net.addr(1, 8080);
    let admin = net.addr(1, 9080);
    let config = work.join("edge.yaml");
    std::fs::write(
        &config,
        format!(
            "public_http: {public}\nadmin: {admin}\ntunel_listen: {}\n\
             max_connections: lots\ngrace_perod: 5s\n",
            net.addr(1, 7844)
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin("edge"));
    cmd.args(["run", "--config"])
        .arg(&config)
        .arg("--tunnels-file")
        .arg(&pki.tunnels_file)
        .arg("--tls-cert")
        .arg(pki.dir.join("edge.pem"))
        .arg("--tls-key")
        .arg(pki.dir.join("edge-key.pem"));
    let log = work.join("edge.log");
    let mut edge = Proc::spawn("edge", cmd, &log);
    let status = edge
        .wait_exit(Duration::from_secs(20))
        .expect("edge exits on a bad config");
    let out = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(78), "{out}");
    for want in [
        "tunel_listen (line 3): unknown field, did you mean tunnel_listen?",
        "max_connections (line 4): ",
        "grace_perod (line 5): unknown field, did you mean grace_period?",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
    for addr in [public, admin] {
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "{addr} was bound by an edge with a bad config"
        );
    }
}
