//! Slow and hostile peers cost only their own tenant: real `edge` and
//! `connector` processes, hostile connectors written here with the `tunnel`
//! crate (real QUIC, real tokens from `edge tunnel create`), raw TCP clients.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tunnel::codec::Frame;
use tunnel::endpoint::{EdgeTrust, client_config, load_certs};
use tunnel::io::{read_control, write_frame};
use tunnel::message::{ControlMessage, Register};
use tunnel::token::TunnelToken;

use tests::net::TestNet;
use tests::proc::eventually;
use tests::tunnel_setup::{Connector, EDGE_NAME, Edge, Pki};
use tests::workdir::Workdir;
use tests::{metrics, origin};

/// A connector that registers for real and then serves nothing. It keeps
/// its control stream open, so the edge routes requests to it.
struct Hostile {
    _endpoint: quinn::Endpoint,
    _conn: quinn::Connection,
    _control: (quinn::SendStream, quinn::RecvStream),
}

impl Hostile {
    /// Registers on `edge` with the token in `token_file`, with `transport`
    /// deciding what the edge may send it.
    async fn register(
        edge: SocketAddr,
        pki: &Pki,
        token_file: &Path,
        mut transport: quinn::TransportConfig,
    ) -> Self {
        transport.keep_alive_interval(Some(Duration::from_secs(1)));
        let trust = EdgeTrust::Ca(load_certs(&pki.ca()).unwrap());
        let mut config = client_config(trust).unwrap();
        config.transport_config(Arc::new(transport));
        let endpoint = tunnel::endpoint::client_endpoint(config, false).unwrap();
        let conn = endpoint.connect(edge, EDGE_NAME).unwrap().await.unwrap();
        let token: TunnelToken = std::fs::read_to_string(token_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let register = ControlMessage::Register(Register {
            protocol_version: tunnel::PROTOCOL_VERSION,
            tunnel_id: token.tunnel_id,
            secret: token.secret,
            connector_id: "hostile".into(),
            conn_index: 0,
            connector_version: "0.0.0-hostile".into(),
        });
        write_frame(&mut send, &Frame::Control(register))
            .await
            .unwrap();
        match read_control(&mut recv).await.unwrap() {
            Some(ControlMessage::Registered(_)) => {}
            other => panic!("the hostile connector was not registered: {other:?}"),
        }
        Self {
            _endpoint: endpoint,
            _conn: conn,
            _control: (send, recv),
        }
    }
}

/// `GET http://host/path` through `edge` on a connection of its own (no
/// pool, so a finished request frees its connection at once).
async fn get(host: &str, edge: SocketAddr, path: &str) -> reqwest::Result<reqwest::Response> {
    tests::http::client_for(host, edge)
        .get(format!("http://{host}:{}{path}", edge.port()))
        .header("connection", "close")
        .timeout(Duration::from_secs(60))
        .send()
        .await
}

async fn metric(edge: &Edge, name: &str, labels: &[(&str, &str)]) -> f64 {
    metrics::sum(&edge.metrics().await, name, labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connector_that_takes_no_requests_costs_only_its_own_tunnel() {
    let work = Workdir::new("slow-connector");
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let _origin = origin::spawn(origin_addr).await;
    let pki = Pki::new(&work);
    let (stuck, tight, good) = (work.join("a"), work.join("c"), work.join("b"));
    pki.create_tunnel(&["a.test"], &stuck);
    pki.create_tunnel(&["c.test"], &tight);
    pki.create_tunnel(&["b.test"], &good);
    // 12 public connections in all: without a cap per tunnel, requests
    // stuck on tunnel A would take every one of them.
    let edge = Edge::start(
        &work,
        &pki,
        &net,
        1,
        &[
            "--max-connections",
            "12",
            "--max-requests-per-tunnel",
            "6",
            "--stream-open-timeout",
            "8s",
        ],
    )
    .await;
    let connector = Connector::start(
        &work,
        &pki,
        &net,
        2,
        &[edge.tunnel],
        &good,
        &format!("http://{origin_addr}"),
        &[],
    );
    connector.wait_ready().await;

    // Tunnel A's connector grants the edge no stream at all.
    let mut no_streams = quinn::TransportConfig::default();
    no_streams.max_concurrent_bidi_streams(0u32.into());
    let _a = Hostile::register(edge.tunnel, &pki, &stuck, no_streams).await;

    let sent = Instant::now();
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let public = edge.public;
            tokio::spawn(async move {
                let r = get("a.test", public, "/").await.unwrap();
                let retry_after = r.headers().get("retry-after").cloned();
                (r.status().as_u16(), retry_after, sent.elapsed())
            })
        })
        .collect();
    // The 6 requests in flight are stuck; the other 14 are turned away.
    eventually(
        "14 requests to tunnel A refused past its cap",
        Duration::from_secs(20),
        || async {
            let n = metric(
                &edge,
                "edge_limit_rejections_total",
                &[("limit", "requests_per_tunnel")],
            )
            .await;
            (n >= 14.0).then_some(())
        },
    )
    .await;
    // Meanwhile tunnel B answers, and well before A's stuck requests end.
    let started = Instant::now();
    let resp = get("b.test", edge.public, "/hello").await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from origin\n");
    let b_took = started.elapsed();
    eprintln!("tunnel B answered in {b_took:?} while tunnel A was stuck");

    let mut statuses = Vec::new();
    for r in requests {
        let (status, retry_after, took) = r.await.unwrap();
        if status == 503 {
            assert_eq!(retry_after.unwrap(), "1", "a 503 says when to retry");
        }
        statuses.push((status, took));
    }
    let refused = statuses.iter().filter(|(s, _)| *s == 503).count();
    let timed_out: Vec<_> = statuses.iter().filter(|(s, _)| *s == 504).collect();
    assert_eq!(refused, 14, "{statuses:?}");
    assert_eq!(timed_out.len(), 6, "{statuses:?}");
    for (_, took) in &timed_out {
        assert!(*took < Duration::from_secs(60), "{took:?}");
    }
    assert!(
        b_took < timed_out.iter().map(|(_, t)| *t).min().unwrap(),
        "B answered before A's requests timed out"
    );

    // Tunnel C's connector grants streams but no room for the request head.
    let mut no_room = quinn::TransportConfig::default();
    no_room.stream_receive_window(8u32.into());
    let _c = Hostile::register(edge.tunnel, &pki, &tight, no_room).await;
    let resp = get("c.test", edge.public, "/").await.unwrap();
    assert_eq!(resp.status(), 504);

    let stuck = metric(&edge, "edge_timeouts_total", &[("stage", "stream_open")]).await;
    assert_eq!(stuck, 7.0, "6 unopened streams and one unwritten head");
    // Every slot of tunnel A was given back: it takes requests again.
    let _ = get("a.test", edge.public, "/").await.unwrap();
    assert_eq!(
        metric(
            &edge,
            "edge_limit_rejections_total",
            &[("limit", "requests_per_tunnel")]
        )
        .await,
        14.0
    );
}

/// A TCP connection to `edge` from `source` (a loopback address of the test).
async fn connect_from(source: std::net::IpAddr, edge: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    socket.connect(edge).await.unwrap()
}

/// Sends one keep-alive GET on `stream` and reads the whole answer.
async fn roundtrip(stream: &mut TcpStream, host: &str) -> String {
    let req = format!("GET /hello HTTP/1.1\r\nhost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    read_answer(stream).await
}

/// Reads until a whole answer arrived (by its Content-Length or its last
/// chunk), or the connection ended.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&buf).into_owned();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let len = head.lines().find_map(|l| {
                    let v = l.strip_prefix("content-length:")?;
                    v.trim().parse::<usize>().ok()
                });
                let chunked = head.contains("transfer-encoding: chunked");
                if len.is_some_and(|n| body.len() >= n) || (chunked && body.ends_with("0\r\n\r\n"))
                {
                    return text;
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return text,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("an answer within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_address_cannot_take_every_public_connection() {
    let work = Workdir::new("per-ip");
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let _origin = origin::spawn(origin_addr).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&["b.test"], &token);
    let edge = Edge::start(&work, &pki, &net, 1, &["--max-connections-per-ip", "4"]).await;
    let connector = Connector::start(
        &work,
        &pki,
        &net,
        2,
        &[edge.tunnel],
        &token,
        &format!("http://{origin_addr}"),
        &[],
    );
    connector.wait_ready().await;

    let greedy = net.ip(50);
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = connect_from(greedy, edge.public).await;
        let answer = roundtrip(&mut s, "b.test").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(s);
    }
    // A fifth connection from the same address is answered 503 and closed.
    let mut fifth = connect_from(greedy, edge.public).await;
    let answer = read_answer(&mut fifth).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), fifth.read_to_end(&mut rest))
        .await
        .expect("the edge closes the refused connection");
    assert!(n.is_err() || rest.is_empty(), "nothing after the 503");

    // Another address is served as usual.
    let mut other = connect_from(net.ip(51), edge.public).await;
    let answer = roundtrip(&mut other, "b.test").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A connection closed gives its place back.
    drop(held.pop());
    let answer = eventually(
        "a freed place is reused",
        Duration::from_secs(10),
        || async {
            let mut s = connect_from(greedy, edge.public).await;
            let answer = roundtrip(&mut s, "b.test").await;
            answer.starts_with("HTTP/1.1 200").then_some(answer)
        },
    )
    .await;
    assert!(answer.contains("hello from origin"), "{answer}");
    let refused = metric(
        &edge,
        "edge_limit_rejections_total",
        &[("limit", "connections_per_ip")],
    )
    .await;
    assert!(refused >= 1.0, "{refused}");
}

/// Dials `edge` again and again from `endpoint` without ever registering:
/// each connection promises a whole control frame and sends most of it,
/// opens every other stream it may and fills it, then waits for the edge to
/// give up on it.
async fn never_register(
    endpoint: quinn::Endpoint,
    edge: SocketAddr,
    attempts: Arc<AtomicUsize>,
    limit: usize,
    until: Instant,
) {
    // A frame header for a 64 KiB control frame, and 60,000 bytes of it.
    let mut partial = vec![1u8, 1, 0, 1, 0, 0];
    partial.resize(60_000, 0);
    let junk = vec![0u8; 1 << 20];
    while Instant::now() < until && attempts.fetch_add(1, Ordering::SeqCst) < limit {
        // Paced, so the flood lasts while the real connector registers.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(connecting) = endpoint.connect(edge, EDGE_NAME) else {
            continue;
        };
        let Ok(Ok(conn)) = tokio::time::timeout(Duration::from_secs(5), connecting).await else {
            continue;
        };
        let mut streams = Vec::new();
        for _ in 0..4 {
            let Ok(Ok((mut send, recv))) =
                tokio::time::timeout(Duration::from_millis(500), conn.open_bi()).await
            else {
                break;
            };
            let bytes = if streams.is_empty() { &partial } else { &junk };
            let _ = tokio::time::timeout(Duration::from_millis(1500), send.write_all(bytes)).await;
            streams.push((send, recv));
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), conn.closed()).await;
    }
}

/// A client endpoint on `source` that buffers little itself.
fn flood_endpoint(pki: &Pki, source: std::net::IpAddr) -> quinn::Endpoint {
    let trust = EdgeTrust::Ca(load_certs(&pki.ca()).unwrap());
    let mut config = client_config(trust).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.send_window(256 << 10);
    config.transport_config(Arc::new(transport));
    let mut endpoint = quinn::Endpoint::client(SocketAddr::new(source, 0)).unwrap();
    endpoint.set_default_client_config(config);
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregistered_quic_connections_are_capped_and_a_connector_still_registers() {
    let work = Workdir::new("pending-flood");
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let _origin = origin::spawn(origin_addr).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&["b.test"], &token);
    let edge = Edge::start(
        &work,
        &pki,
        &net,
        1,
        &[
            "--max-pending-registrations",
            "32",
            "--max-pending-registrations-per-ip",
            "4",
            "--registration-timeout",
            "3s",
        ],
    )
    .await;

    // Phase 1: 6 addresses, 8 dialers each; each address may hold 4
    // pending connections, so together they stay under the cap of 32.
    // 1,600 connections in phase 1, 400 in phase 2, 40 s at most.
    let (first, second) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let until = Instant::now() + Duration::from_secs(40);
    let mut flood = tokio::task::JoinSet::new();
    let mut dial_from =
        |hosts: std::ops::Range<u8>, dialers: usize, attempts: &Arc<AtomicUsize>, limit| {
            for h in hosts {
                let endpoint = flood_endpoint(&pki, net.ip(h));
                for _ in 0..dialers {
                    flood.spawn(never_register(
                        endpoint.clone(),
                        edge.tunnel,
                        attempts.clone(),
                        limit,
                        until,
                    ));
                }
            }
        };
    dial_from(100..106, 8, &first, 1600);
    let admin = edge.admin;
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                let m = metrics::scrape(admin).await;
                let n = metrics::sum(&m, "edge_pending_registrations", &[]) as usize;
                peak.fetch_max(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    eventually(
        "the per-address cap refuses connections",
        Duration::from_secs(30),
        || async {
            let n = metrics::sum(
                &metrics::scrape(admin).await,
                "edge_limit_rejections_total",
                &[("limit", "pending_registrations_per_ip")],
            );
            (n >= 10.0).then_some(())
        },
    )
    .await;

    // A real connector registers and serves in the middle of the flood.
    let connector = Connector::start(
        &work,
        &pki,
        &net,
        2,
        &[edge.tunnel],
        &token,
        &format!("http://{origin_addr}"),
        &[],
    );
    connector.wait_ready().await;
    let resp = get("b.test", edge.public, "/hello").await.unwrap();
    assert_eq!(resp.status(), 200);

    // Phase 2: 12 more addresses: now the cap of 32 in all holds too.
    dial_from(110..122, 4, &second, 400);
    eventually(
        "the global cap refuses connections",
        Duration::from_secs(30),
        || async {
            let n = metrics::sum(
                &metrics::scrape(admin).await,
                "edge_limit_rejections_total",
                &[("limit", "pending_registrations")],
            );
            (n >= 1.0).then_some(())
        },
    )
    .await;
    while flood.join_next().await.is_some() {}
    sampler.abort();
    let dialed = first.load(Ordering::SeqCst).min(1600) + second.load(Ordering::SeqCst).min(400);
    let peak = peak.load(Ordering::SeqCst);
    let rss = edge.proc.peak_rss().unwrap();
    eprintln!(
        "{dialed} connections dialed; pending peaked at {peak}; edge peak RSS {} MiB",
        rss >> 20
    );
    assert!(dialed >= 1000, "the flood dialed {dialed}");
    assert!(peak <= 32, "pending peaked at {peak}");
    // Without the caps the edge peaked at 172 MiB under this flood; with
    // them, 13 MiB.
    assert!(rss < 64 << 20, "edge peak RSS {rss} bytes");

    // The refusals were logged a few times, not once each.
    let m = edge.metrics().await;
    let refused = metrics::sum(&m, "edge_limit_rejections_total", &[]);
    let log = edge.proc.log();
    let warned = log.lines().filter(|l| l.contains("refused")).count();
    eprintln!("{refused} refusals, {warned} log lines about them");
    assert!(warned <= 20, "{warned} lines for {refused} refusals");

    // The connector still serves.
    let resp = get("b.test", edge.public, "/hello").await.unwrap();
    assert_eq!(resp.status(), 200);
}

/// A body of `chunks` pieces of 64 KiB, one every `every`.
fn throttled_body(chunks: usize, every: Duration) -> reqwest::Body {
    let stream = futures_util::stream::unfold(0, move |i| async move {
        if i == chunks {
            return None;
        }
        tokio::time::sleep(every).await;
        Some((Ok::<_, std::io::Error>(vec![7u8; 64 << 10]), i + 1))
    });
    reqwest::Body::wrap_stream(stream)
}

/// One edge (with `extra` flags), one connector, the test origin.
async fn one_tunnel(work: &Workdir, net: &TestNet, extra: &[&str]) -> (Edge, Connector) {
    let origin_addr = net.addr(10, 8000);
    tokio::spawn(origin::serve(
        tokio::net::TcpListener::bind(origin_addr).await.unwrap(),
    ));
    let pki = Pki::new(work);
    let token = work.join("token");
    pki.create_tunnel(&["b.test"], &token);
    let edge = Edge::start(work, &pki, net, 1, extra).await;
    let connector = Connector::start(
        work,
        &pki,
        net,
        2,
        &[edge.tunnel],
        &token,
        &format!("http://{origin_addr}"),
        &[],
    );
    connector.wait_ready().await;
    (edge, connector)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_response_timeout_starts_when_the_upload_is_complete() {
    let work = Workdir::new("long-upload");
    let net = TestNet::new();
    let (edge, _connector) = one_tunnel(&work, &net, &["--response-timeout", "2s"]).await;
    // 24 pieces, one every 250 ms: about 6 s of upload to an origin that
    // answers only once it has the whole body.
    let started = Instant::now();
    let resp = tests::http::client_for("b.test", edge.public)
        .post(format!("http://b.test:{}/sink", edge.public.port()))
        .body(throttled_body(24, Duration::from_millis(250)))
        .send()
        .await
        .unwrap();
    let took = started.elapsed();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert_eq!(status, 200, "after {took:?}: {body}");
    assert!(
        took > Duration::from_secs(4),
        "the upload was slow: {took:?}"
    );
    let got: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(got["bytes"], 24 * (64 << 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_end_after_the_idle_timeout() {
    let work = Workdir::new("stalled-bodies");
    let net = TestNet::new();
    let (edge, _connector) = one_tunnel(&work, &net, &["--body-idle-timeout", "2s"]).await;

    // A client that stops in the middle of its upload gets 408.
    let mut s = connect_from(net.ip(60), edge.public).await;
    let head = "POST /sink HTTP/1.1\r\nhost: b.test\r\ncontent-length: 1000000\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&[1u8; 1000]).await.unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(20));

    // A response body the connector stops sending is cut off: the origin
    // sends one event and then holds the response open.
    let resp = get("b.test", edge.public, "/sse?id=held&events=1")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ended = tokio::time::timeout(Duration::from_secs(20), resp.bytes())
        .await
        .expect("the held response ends");
    assert!(ended.is_err(), "a cut-off body is not a clean end");

    // A client that asks for 64 MiB and reads none of it does not hold
    // its connection (and its tunnel's stream) for ever.
    let mut s = connect_from(net.ip(61), edge.public).await;
    let head = "GET /bytes?size=67108864 HTTP/1.1\r\nhost: b.test\r\n\r\n";
    s.write_all(head.as_bytes()).await.unwrap();
    let admin = edge.admin;
    eventually(
        "the edge gives up on a client that reads nothing",
        Duration::from_secs(30),
        || async move {
            let m = metrics::scrape(admin).await;
            let n = metrics::sum(&m, "edge_timeouts_total", &[("stage", "client_write_idle")]);
            (n >= 1.0).then_some(())
        },
    )
    .await;
    drop(s);

    let m = edge.metrics().await;
    for stage in ["request_body_idle", "response_body_idle"] {
        let n = metrics::sum(&m, "edge_timeouts_total", &[("stage", stage)]);
        assert_eq!(n, 1.0, "{stage}");
    }
}
