//! WebSockets through a real edge and connector to a Python `websockets`
//! echo origin (`tests/py/ws_origin.py`), driven by a Python client
//! (`tests/py/ws_client.py`). One edge, one connector and one origin serve
//! every scenario: echo of 10,000 messages byte for byte, a WebSocket idle
//! for longer than every HTTP timeout, closes from either side reaching the
//! other within a second, 200 WebSockets at once, and origins that refuse
//! the upgrade.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tests::net::{TestNet, random_u32};
use tests::proc::{Proc, eventually};
use tests::python::{python, script};
use tests::tunnel_setup::{Connector, Edge, Pki};
use tests::workdir::Workdir;
use tests::{config_connector, metrics};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const HOST: &str = "ws.test";
/// Every HTTP timeout of the edge and the connector is this short, so an
/// idle WebSocket outlives all of them.
const HTTP_TIMEOUT: &str = "2s";
/// How long the idle WebSocket stays silent: longer than every timeout.
const IDLE_SECONDS: &str = "5";

struct Setup {
    _work: Workdir,
    edge: Edge,
    connector: Connector,
    origin: Proc,
}

impl Setup {
    async fn start() -> Self {
        let work = Workdir::new("websocket");
        let net = TestNet::new();
        let origin_addr = net.addr(10, 8000);
        let mut cmd = Command::new(python());
        cmd.arg(script("ws_origin.py"))
            .arg(origin_addr.ip().to_string())
            .arg(origin_addr.port().to_string())
            .env("PYTHONUNBUFFERED", "1");
        let origin = Proc::spawn("ws-origin", cmd, &work.join("ws-origin.log"));
        eventually(
            "the WebSocket origin listening",
            Duration::from_secs(20),
            || {
                let log = origin.log();
                async move { log.contains("\"listening\"").then_some(()) }
            },
        )
        .await;

        let pki = Pki::new(&work);
        let token = work.join("token");
        pki.create_tunnel(&[HOST], &token);
        let edge = Edge::start(
            &work,
            &pki,
            &net,
            1,
            &[
                "--body-idle-timeout",
                HTTP_TIMEOUT,
                "--response-timeout",
                HTTP_TIMEOUT,
            ],
        )
        .await;
        let rest = format!(
            "origin_request:\n  connect_timeout: {HTTP_TIMEOUT}\n  response_timeout: {HTTP_TIMEOUT}\n  request_body_idle_timeout: {HTTP_TIMEOUT}\n  keep_alive_timeout: {HTTP_TIMEOUT}\ningress:\n  - service: ws://{origin_addr}\n"
        );
        let connector =
            config_connector::start(&work, &pki, &net, 2, &[edge.tunnel], &token, &rest);
        connector.wait_ready().await;
        Self {
            _work: work,
            edge,
            connector,
            origin,
        }
    }

    fn client(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(python());
        cmd.arg(script("ws_client.py"))
            .args(args)
            .env("WS_CONNECT", self.edge.public.to_string());
        cmd
    }

    /// Runs the client to the end; its JSON outcome and whether it passed.
    async fn run(&self, args: &[&str]) -> (bool, Value) {
        let mut cmd = self.client(args);
        let out = tokio::task::spawn_blocking(move || cmd.output().expect("run ws_client.py"))
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let value: Value = serde_json::from_str(line).unwrap_or_else(|_| {
            panic!(
                "ws_client.py {args:?} printed no outcome; stdout: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.success() && value["ok"] == true, value)
    }

    /// The origin's JSON report of `event` (and `id`, when given).
    async fn origin_report(&self, event: &str, id: Option<&str>) -> Value {
        eventually(
            &format!("the origin to report {event}"),
            Duration::from_secs(10),
            || {
                let log = self.origin.log();
                async move {
                    log.lines()
                        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                        .find(|v| v["event"] == event && id.is_none_or(|id| v["id"] == id))
                }
            },
        )
        .await
    }
}

fn url(path: &str) -> String {
    format!("ws://{HOST}{path}")
}

async fn gauge(admin: SocketAddr, name: &str) -> f64 {
    metrics::sum(&metrics::scrape(admin).await, name, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_through_the_tunnel() {
    let s = Setup::start().await;

    // 1. Echo, byte for byte. Sizes are log-uniform between 1 byte and
    // 1 MiB (mean ~75 KiB, ~700 MB each way in all) so the run stays
    // bounded while every size class, up to the largest, is seen.
    let seed = random_u32().to_string();
    let (ok, outcome) = s.run(&["echo", &url("/echo"), &seed, "10000"]).await;
    assert!(
        ok,
        "echo of 10,000 messages failed (seed {seed}; rerun ws_client.py echo with it): {outcome}"
    );
    assert_eq!(outcome["messages"], 10000, "{outcome}");

    // 2. Idle for longer than every HTTP timeout of the edge and the
    // connector, then still echoing.
    let (ok, outcome) = s.run(&["idle", &url("/echo"), IDLE_SECONDS]).await;
    assert!(
        ok,
        "a WebSocket idle for {IDLE_SECONDS}s (HTTP timeouts {HTTP_TIMEOUT}) did not survive: {outcome}"
    );

    // 3. A close from the client reaches the origin, and the closing
    // handshake with its TCP close comes back, within a second.
    let (ok, outcome) = s.run(&["client-close", &url("/watch/c1")]).await;
    assert!(ok, "client close failed: {outcome}");
    let started = outcome["close_started"].as_f64().unwrap();
    let seen = s.origin_report("client_closed", Some("c1")).await["t"]
        .as_f64()
        .unwrap();
    assert!(
        seen - started < 1.0,
        "the origin saw the client's close {:.3}s after it was sent; the acceptance bound is 1s",
        seen - started
    );
    let closed = outcome["closed"].as_f64().unwrap();
    assert!(
        closed - started < 1.0,
        "the client's close took {:.3}s to complete (the origin's TCP close did not come back through the tunnel); the acceptance bound is 1s",
        closed - started
    );

    // 4. A close from the origin reaches the client within a second.
    let (ok, outcome) = s.run(&["origin-close", &url("/close-me")]).await;
    assert!(ok, "origin close failed: {outcome}");
    let closing = s.origin_report("origin_closing", None).await["t"]
        .as_f64()
        .unwrap();
    let closed = outcome["closed"].as_f64().unwrap();
    assert!(
        closed - closing < 1.0,
        "the client saw the origin's close {:.3}s after the origin closed; the acceptance bound is 1s",
        closed - closing
    );
    assert_eq!(outcome["code"], 1000, "{outcome}");

    // 5. 200 WebSockets open at once through one connector.
    const MANY: usize = 200;
    let mut many = tokio::process::Command::from(s.client(&["many", &url("/echo"), "200"]));
    many.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = many.spawn().expect("run ws_client.py many");
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("200 WebSockets did not open within 60s")
        .unwrap()
        .unwrap_or_default();
    assert_eq!(
        first,
        format!("{{\"open\": {MANY}}}"),
        "opening {MANY} WebSockets"
    );
    let (edge_admin, connector_admin) = (s.edge.admin, s.connector.admin);
    eventually("edge_websockets_open to read 200", Duration::from_secs(10), || async move {
        (gauge(edge_admin, "edge_websockets_open").await == MANY as f64).then_some(())
    })
    .await;
    eventually(
        "connector_websockets_open to read 200",
        Duration::from_secs(10),
        || async move {
            (gauge(connector_admin, "connector_websockets_open").await == MANY as f64).then_some(())
        },
    )
    .await;
    // An upgraded connection still holds its place in the connection caps
    // (--max-connections, --max-connections-per-ip): hyper has handed it
    // over, but the client still holds a socket of the edge.
    let open_conns = gauge(edge_admin, "edge_public_connections").await;
    assert!(
        open_conns >= MANY as f64,
        "edge_public_connections reads {open_conns} with {MANY} WebSockets open: \
         upgraded connections must keep their places in the connection caps"
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let last = tokio::time::timeout(Duration::from_secs(60), stdout.next_line())
        .await
        .expect("200 WebSockets did not echo and close within 60s")
        .unwrap()
        .unwrap_or_default();
    let status = child.wait().await.unwrap();
    let outcome: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
    assert!(
        status.success() && outcome["echoed"] == MANY,
        "each of {MANY} WebSockets should echo: {last}"
    );
    for (admin, name) in [
        (edge_admin, "edge_websockets_open"),
        (connector_admin, "connector_websockets_open"),
    ] {
        eventually(
            &format!("{name} back to 0"),
            Duration::from_secs(10),
            || async move { (gauge(admin, name).await == 0.0).then_some(()) },
        )
        .await;
    }

    // 6. An origin that is no WebSocket server: its answer reaches the client.
    for (path, want, body) in [
        ("/plain200", 200, "plain origin, no websocket here"),
        ("/plain404", 404, "no such page"),
    ] {
        let (ok, outcome) = s.run(&["status", &url(path)]).await;
        assert!(ok, "{path}: {outcome}");
        assert_eq!(outcome["status"], want, "{path}: {outcome}");
        assert!(
            outcome["body"].as_str().unwrap_or_default().contains(body),
            "{path}: {outcome}"
        );
    }

    // 7. HTTP/2 extended CONNECT (RFC 8441) on the plain listener (h2c):
    // answered 200, then WebSocket frames both ways over the h2 stream.
    h2_websocket_echo(s.edge.public).await;

    // Every WebSocket is a request with status 101 at the connector; at the
    // edge the HTTP/1.1 ones are 101s and the HTTP/2 one a 200.
    let upgraded = (4 + MANY) as f64;
    let edge_1xx = metrics::sum(
        &s.edge.metrics().await,
        "edge_requests_total",
        &[("status_class", "1xx")],
    );
    assert_eq!(
        edge_1xx, upgraded,
        "edge_requests_total{{status_class=\"1xx\"}}"
    );
    let connector_1xx = metrics::sum(
        &s.connector.metrics().await,
        "connector_requests_total",
        &[("status_class", "1xx")],
    );
    assert_eq!(
        connector_1xx,
        upgraded + 1.0,
        "connector_requests_total{{status_class=\"1xx\"}}"
    );
}

/// A WebSocket over HTTP/2 by hand: extended CONNECT with `:protocol
/// websocket`, then one masked text frame out, its echo back, and a close.
async fn h2_websocket_echo(edge: SocketAddr) {
    use http_body_util::Empty;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::io::AsyncReadExt;

    let tcp = tokio::net::TcpStream::connect(edge).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(tcp))
        .await
        .expect("h2c prior-knowledge handshake with the edge");
    let conn = tokio::spawn(conn);
    // One plain request first: the edge's SETTINGS (with
    // ENABLE_CONNECT_PROTOCOL) have then surely arrived.
    let plain = http::Request::get(format!("http://{HOST}/plain200"))
        .body(Empty::new())
        .unwrap();
    sender.send_request(plain).await.expect("h2 GET");
    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("http://{HOST}/echo"))
        .header("sec-websocket-version", "13")
        .body(Empty::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let resp = sender
        .send_request(req)
        .await
        .expect("extended CONNECT through the edge");
    assert_eq!(resp.status(), 200, "RFC 8441 answers 200: {resp:?}");
    assert!(
        !resp.headers().contains_key("sec-websocket-accept"),
        "the accept answers the edge's key, not the client's: {resp:?}"
    );
    let mut ws = TokioIo::new(hyper::upgrade::on(resp).await.expect("h2 stream upgraded"));

    let payload = b"hello over h2";
    ws.write_all(&masked_frame(0x1, payload)).await.unwrap();
    let mut head = [0u8; 2];
    ws.read_exact(&mut head).await.unwrap();
    assert_eq!(
        head,
        [0x81, payload.len() as u8],
        "an unmasked final text frame"
    );
    let mut echoed = vec![0u8; payload.len()];
    ws.read_exact(&mut echoed).await.unwrap();
    assert_eq!(echoed, payload);

    ws.write_all(&masked_frame(0x8, &1000u16.to_be_bytes()))
        .await
        .unwrap();
    ws.read_exact(&mut head).await.unwrap();
    assert_eq!(head[0], 0x88, "the origin answers the close");
    let mut rest = vec![0u8; usize::from(head[1])];
    ws.read_exact(&mut rest).await.unwrap();
    drop(ws);
    drop(sender);
    conn.abort();
}

/// A client frame (short payload, fixed mask).
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}
