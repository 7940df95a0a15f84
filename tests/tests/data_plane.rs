//! The data plane end to end: real `edge` and `connector` processes and a
//! real origin on loopback addresses of each test's own.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tests::net::TestNet;
use tests::proc::eventually;
use tests::tunnel_setup::{Connector, Edge, Pki, single_tunnel};
use tests::workdir::Workdir;
use tests::{metrics, origin, pattern};

const HOST: &str = "app.test";

/// One edge, one connector, one origin: the smallest real tunnel.
struct Tunnel {
    work: Workdir,
    net: TestNet,
    pki: Pki,
    edge: Edge,
    connector: Connector,
    _origin: tokio::task::JoinHandle<()>,
}

impl Tunnel {
    async fn start(name: &str) -> Self {
        let work = Workdir::new(name);
        let net = TestNet::new();
        let origin_addr = net.addr(10, 8000);
        let origin = origin::spawn(origin_addr).await;
        let (pki, edge, connector) =
            single_tunnel(&work, &net, &[HOST], &format!("http://{origin_addr}")).await;
        Self {
            work,
            net,
            pki,
            edge,
            connector,
            _origin: origin,
        }
    }

    fn client(&self) -> reqwest::Client {
        tests::http::client_for(HOST, self.edge.public)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{HOST}:{}{path}", self.edge.public.port())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_and_a_1_gib_post_round_trip_intact_in_bounded_memory() {
    let begun = Instant::now();
    let t = Tunnel::start("round-trip").await;
    eprintln!("tunnel up in {:?}", begun.elapsed());
    let client = t.client();

    let resp = client.get(t.url("/hello")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.text().await.unwrap(), "hello from origin\n");
    assert!(!rid.is_empty());

    let headers: serde_json::Value = client
        .get(t.url("/headers"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(headers["host"], format!("{HOST}:{}", t.edge.public.port()));
    assert_eq!(headers["x-forwarded-proto"], "http");
    let xff = headers["x-forwarded-for"].as_str().unwrap();
    assert!(xff.parse::<std::net::IpAddr>().is_ok(), "{xff}");
    assert!(
        headers["x-request-id"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );

    // GET of 256 MiB with Content-Length.
    let size = 256 << 20;
    let started = Instant::now();
    let resp = client
        .get(t.url(&format!("/bytes?size={size}&seed=7")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.content_length(), Some(size));
    let (n, sum) = digest(resp).await;
    assert_eq!((n, sum), (size, pattern::sha256(7, size)));
    eprintln!("GET 256 MiB through the tunnel: {:?}", started.elapsed());

    // POST of 1 GiB, chunked (no length), echoed back as it streams.
    let size: u64 = 1 << 30;
    let started = Instant::now();
    let (body, sent) = pattern::tracked_body(11, size);
    let resp = client.post(t.url("/echo")).body(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (n, sum) = digest(resp).await;
    assert_eq!(n, size, "echoed length");
    assert_eq!(sum, pattern::finish(sent), "echoed content");
    eprintln!(
        "POST 1 GiB echoed through the tunnel: {:?}",
        started.elapsed()
    );

    // POST of 1 GiB with Content-Length to a sink that checksums it.
    let started = Instant::now();
    let (body, sent) = pattern::tracked_body(12, size);
    let got: serde_json::Value = client
        .post(t.url("/sink"))
        .header("content-length", size)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    eprintln!("POST 1 GiB with Content-Length: {:?}", started.elapsed());
    assert_eq!(got["bytes"], size);
    assert_eq!(got["sha256"], pattern::finish(sent));

    eprintln!("all transfers done at {:?}", begun.elapsed());
    let limit = 64 << 20;
    let edge_rss = t.edge.proc.peak_rss().unwrap();
    let conn_rss = t.connector.proc.peak_rss().unwrap();
    eprintln!(
        "peak RSS: edge {} MiB, connector {} MiB",
        edge_rss >> 20,
        conn_rss >> 20
    );
    assert!(edge_rss < limit, "edge peak RSS {edge_rss} bytes");
    assert!(conn_rss < limit, "connector peak RSS {conn_rss} bytes");

    let m = t.edge.metrics().await;
    assert!(metrics::sum(&m, "edge_requests_total", &[("status_class", "2xx")]) >= 5.0);
    assert_eq!(
        metrics::sum(
            &m,
            "edge_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let m = t.connector.metrics().await;
    assert_eq!(
        metrics::sum(
            &m,
            "connector_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert!(metrics::sum(&m, "connector_requests_total", &[("status_class", "2xx")]) >= 5.0);
}

async fn digest(resp: reqwest::Response) -> (u64, String) {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0u64;
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body chunk");
        n += chunk.len() as u64;
        ctx.update(&chunk);
    }
    (n, pattern::hex(ctx.finish().as_ref()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_sent_events_arrive_while_the_origin_holds_the_response() {
    let t = Tunnel::start("sse").await;
    let client = t.client();
    let resp = client
        .get(t.url("/sse?id=s1&events=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut stream = resp.bytes_stream();
    let mut seen = String::new();
    // Both events must arrive although the origin has not finished the
    // response: it waits for the release below.
    while !seen.contains("event 1") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .expect("an event arrives while the response is held open")
            .expect("stream open")
            .unwrap();
        seen.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    assert!(seen.starts_with("data: event 0\n\n"), "{seen}");
    assert!(!seen.contains("done"), "the origin has not finished yet");

    tests::http::plain_client()
        .post(format!("http://{}/release?id=s1", t.net.addr(10, 8000)))
        .send()
        .await
        .unwrap();
    while let Some(chunk) = stream.next().await {
        seen.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert!(seen.ends_with("data: done\n\n"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_404_and_a_tunnel_without_connector_gets_502() {
    let work = Workdir::new("no-route");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    pki.create_tunnel(&[HOST, "*.wild.test"], &work.join("token"));
    // No grace after start: the 502 comes at once (a restarted edge's wait
    // for its connectors is the next test).
    let edge = Edge::start(&work, &pki, &net, 1, &["--registration-grace", "0s"]).await;

    let client = tests::http::client_for("nope.test", edge.public);
    let resp = client
        .get(format!("http://nope.test:{}/", edge.public.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = resp.text().await.unwrap();
    assert!(body.len() < 100 && body.contains("no tunnel"), "{body}");

    for host in [HOST, "APP.TEST", "a.wild.test"] {
        let client = tests::http::client_for(host, edge.public);
        let resp = client
            .get(format!("http://{host}:{}/", edge.public.port()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 502, "{host}");
        let body = resp.text().await.unwrap();
        assert!(body.contains("no connector"), "{body}");
    }

    // A tunnel created while the edge runs is picked up without a restart.
    let late = "late.test";
    let client = tests::http::client_for(late, edge.public);
    let url = format!("http://{late}:{}/", edge.public.port());
    assert_eq!(client.get(&url).send().await.unwrap().status(), 404);
    pki.create_tunnel(&[late], &work.join("late-token"));
    eventually(
        "the new tunnel is routed",
        Duration::from_secs(10),
        || async {
            let status = client.get(&url).send().await.ok()?.status();
            (status == 502).then_some(())
        },
    )
    .await;
    let pid = edge.proc.pid();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "same process"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_edge_holds_a_request_until_its_connector_registers() {
    let work = Workdir::new("registration-grace");
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let _origin = origin::spawn(origin_addr).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    // As after a restart: the edge is up, its connector is not back yet.
    let edge = Edge::start(&work, &pki, &net, 1, &["--registration-grace", "60s"]).await;
    let client = tests::http::client_for(HOST, edge.public);
    let url = format!("http://{HOST}:{}/hello", edge.public.port());
    let request = tokio::spawn(async move {
        let resp = client.get(&url).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !request.is_finished(),
        "the request was answered without a connector"
    );
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
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), request)
        .await
        .expect("answered once the connector registered")
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_refused_counted_and_retried_with_backoff() {
    let work = Workdir::new("wrong-token");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    let good = work.join("good-token");
    pki.create_tunnel(&[HOST], &good);
    let edge = Edge::start(&work, &pki, &net, 1, &[]).await;

    // The right tunnel id with another secret.
    let good_token: tunnel::token::TunnelToken = std::fs::read_to_string(&good)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let forged = tunnel::token::TunnelToken {
        tunnel_id: good_token.tunnel_id,
        secret: tunnel::token::Secret([7; 32]),
    };
    let bad = work.join("bad-token");
    std::fs::write(&bad, forged.to_string()).unwrap();
    let connector = Connector::start(
        &work,
        &pki,
        &net,
        2,
        &[edge.tunnel],
        &bad,
        "http://127.0.0.1:1",
        &[
            "--ha-connections",
            "1",
            "--backoff-base",
            "200ms",
            "--log-format",
            "json",
        ],
    );

    let admin = edge.admin;
    eventually(
        "6 refusals counted by the edge",
        Duration::from_secs(40),
        || async move {
            let m = metrics::scrape(admin).await;
            (metrics::sum(
                &m,
                "edge_registration_failures_total",
                &[("reason", "bad_token")],
            ) >= 6.0)
                .then_some(())
        },
    )
    .await;
    assert!(!tests::http::ready(connector.admin).await, "never ready");

    // The connector logs the edge's reason, and its waits grow.
    let log = connector.proc.log();
    assert!(log.contains("bad_token"), "{log}");
    assert!(
        !log.contains(&forged.to_string()),
        "the token is in the log"
    );
    let waits: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "no edge took the connection; retrying")
        .filter_map(|v| v["wait_ms"].as_u64())
        .collect();
    assert!(waits.len() >= 5, "{waits:?}");
    assert!(
        waits.windows(2).all(|w| w[1] >= w[0]),
        "waits never shrink: {waits:?}"
    );
    assert!(waits[waits.len() - 1] > waits[0], "waits grow: {waits:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_gives_502_naming_only_the_category() {
    let work = Workdir::new("origin-down");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    let edge = Edge::start(&work, &pki, &net, 1, &[]).await;
    // Nothing listens on host 10 port 1.
    let dead = format!("http://{}", net.addr(10, 1));
    let connector = Connector::start(&work, &pki, &net, 2, &[edge.tunnel], &token, &dead, &[]);
    connector.wait_ready().await;
    let client = tests::http::client_for(HOST, edge.public);
    let resp = client
        .get(format!("http://{HOST}:{}/x", edge.public.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    assert!(body.contains("origin unreachable"), "{body}");
    assert!(!body.contains(&net.addr(10, 1).to_string()), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_edges_survive_a_killed_edge_and_rebalance_when_it_returns() {
    let work = Workdir::new("two-edges");
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let _origin = origin::spawn(origin_addr).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[HOST], &token);
    let mut a = Edge::start(&work, &pki, &net, 1, &[]).await;
    let b = Edge::start(&work, &pki, &net, 2, &[]).await;
    let connector = Connector::start(
        &work,
        &pki,
        &net,
        3,
        &[a.tunnel, b.tunnel],
        &token,
        &format!("http://{origin_addr}"),
        &["--backoff-base", "200ms", "--backoff-max", "2s"],
    );
    connector.wait_ready().await;
    let conns = |admin| async move {
        metrics::sum(
            &metrics::scrape(admin).await,
            "edge_tunnel_connections",
            &[],
        )
    };
    eventually(
        "2 connections on each edge",
        Duration::from_secs(20),
        || async { (conns(a.admin).await == 2.0 && conns(b.admin).await == 2.0).then_some(()) },
    )
    .await;

    let via_b = tests::http::client_for(HOST, b.public);
    let url_b = format!("http://{HOST}:{}/hello", b.public.port());
    a.proc.signal("KILL");
    let killed = Instant::now();
    let mut first_ok = None;
    let mut failures = 0;
    while killed.elapsed() < Duration::from_secs(4) {
        match via_b
            .get(&url_b)
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {
                first_ok.get_or_insert(killed.elapsed());
            }
            _ => failures += 1,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_ok = first_ok.expect("requests succeed through the other edge");
    eprintln!("first success through edge B {first_ok:?} after the kill; {failures} failures");
    assert!(first_ok < Duration::from_secs(2), "{first_ok:?}");

    eventually(
        "all 4 connections fail over to edge B",
        Duration::from_secs(30),
        || async { (conns(b.admin).await == 4.0).then_some(()) },
    )
    .await;

    a.restart().await;
    eventually(
        "connections move back onto edge A",
        Duration::from_secs(40),
        || async {
            let (na, nb) = (conns(a.admin).await, conns(b.admin).await);
            (na == 2.0 && nb == 2.0).then_some(())
        },
    )
    .await;
    let m = connector.metrics().await;
    assert!(
        metrics::sum(&m, "connector_reconnects_total", &[]) >= 2.0,
        "{m}"
    );
    let via_a = tests::http::client_for(HOST, a.public);
    let resp = via_a
        .get(format!("http://{HOST}:{}/hello", a.public.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_slow_request_finish_then_the_edge_exits() {
    let mut t = Tunnel::start("sigterm").await;
    let _ = &t.pki;
    let client = t.client();
    let url = t.url("/slow?ms=2000");
    let slow = tokio::spawn(async move {
        let r = client.get(url).send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    });
    let origin = t.net.addr(10, 8000);
    eventually(
        "the slow request reaches the origin",
        Duration::from_secs(10),
        || async move {
            let stats: serde_json::Value = tests::http::plain_client()
                .get(format!("http://{origin}/stats"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (stats["slow_started"] == 1).then_some(())
        },
    )
    .await;
    t.edge.proc.signal("TERM");
    let signalled = Instant::now();
    let (status, body) = slow.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "slow done after 2000 ms\n");
    let status = t
        .edge
        .proc
        .wait_exit(Duration::from_secs(35))
        .expect("edge exits within its grace period");
    assert!(status.success(), "{status:?}");
    eprintln!("edge exited {:?} after SIGTERM", signalled.elapsed());
    assert!(t.edge.proc.log().contains("in-flight requests finished"));
    let _ = t.work.path();
}

#[tokio::test]
async fn a_live_edge_refuses_garbage_frames_and_keeps_serving() {
    use tunnel::endpoint::{EdgeTrust, client_config, client_endpoint, load_certs};
    let work = Workdir::new("garbage");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    pki.create_tunnel(&[HOST], &work.join("token"));
    let edge = Edge::start(&work, &pki, &net, 1, &[]).await;
    let trust = EdgeTrust::Ca(load_certs(&pki.ca()).unwrap());
    let endpoint = client_endpoint(client_config(trust).unwrap(), false).unwrap();

    let inputs: Vec<Vec<u8>> = vec![
        vec![9, 1, 0, 0, 0, 0],                                // wrong version
        vec![1, 1, 0xff, 0xff, 0xff, 0xff],                    // oversized
        vec![1, 1, 0, 0, 0, 40, 1, 2],                         // truncated
        vec![1, 0x7e, 0, 0, 0, 0],                             // unknown type
        (0..200u32).map(|i| (i * 7919 % 251) as u8).collect(), // noise
    ];
    for input in &inputs {
        let conn = endpoint
            .connect(edge.tunnel, tests::tunnel_setup::EDGE_NAME)
            .unwrap()
            .await
            .unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send.write_all(input).await.unwrap();
        let _ = send.finish();
        // The edge closes the connection; it must not hang or die.
        let _ = tokio::time::timeout(Duration::from_secs(5), recv.read_to_end(1024)).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    }
    let m = edge.metrics().await;
    assert_eq!(
        metrics::sum(
            &m,
            "edge_registration_failures_total",
            &[("reason", "malformed")]
        ),
        inputs.len() as f64,
        "{m}"
    );
    assert!(tests::http::ready(edge.admin).await, "edge still serves");
}
