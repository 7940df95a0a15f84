//! gRPC and trailers end to end: a real grpcio client and server (tests/py)
//! and a hyper HTTP/2 client, through HTTPS at the edge, the tunnel, and a
//! connector whose rule has `origin_request.http2_origin: true` to an h2c
//! origin.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Version};
use http_body_util::{BodyExt, Empty, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tests::bins::bin;
use tests::h2_origin::{H2Origin, TRAILERS_ONLY_MESSAGE};
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::tunnel_setup::{Connector, Edge, Pki};
use tests::workdir::Workdir;
use tests::{config_connector, public_certs, python};

const HOST: &str = "app.test";
const HTTPS_PORT: u16 = 8443;

/// An edge with an HTTPS listener whose certificate serves `app.test`, and a
/// connector whose one rule sends `app.test` over HTTP/2 to `origin`.
struct Tunnel {
    _work: Workdir,
    /// The CA that signed the edge's public certificate.
    public_ca: PathBuf,
    edge: Edge,
    https: std::net::SocketAddr,
    _connector: Connector,
}

impl Tunnel {
    async fn start(work: Workdir, net: &TestNet, origin: std::net::SocketAddr) -> Self {
        let pki = Pki::new(&work);
        let token = work.join("token");
        pki.create_tunnel(&[HOST], &token);

        // The public certificate for app.test, from its own throw-away CA.
        let public = work.join("public-pki");
        let out = Command::new(bin("edge"))
            .args(["dev-cert", "--san", HOST, "--out"])
            .arg(&public)
            .output()
            .expect("run edge dev-cert");
        assert!(out.status.success(), "dev-cert failed: {out:?}");
        let certs = work.join("certs");
        std::fs::create_dir_all(&certs).unwrap();
        std::fs::copy(public.join("edge.pem"), certs.join("app.test.pem")).unwrap();
        std::fs::copy(public.join("edge-key.pem"), certs.join("app.test-key.pem")).unwrap();

        let https = net.addr(1, HTTPS_PORT);
        let https_arg = https.to_string();
        let certs_arg = certs.display().to_string();
        let edge = Edge::start(
            &work,
            &pki,
            net,
            1,
            &[
                "--public-https",
                &https_arg,
                "--public-cert-dir",
                &certs_arg,
            ],
        )
        .await;
        let rules = format!(
            "ingress:\n  - hostname: {HOST}\n    service: http://{origin}\n    origin_request:\n      http2_origin: true\n  - service: http_status:404\n"
        );
        let connector =
            config_connector::start(&work, &pki, net, 2, &[edge.tunnel], &token, &rules);
        connector.wait_ready().await;
        Self {
            public_ca: public.join("ca.pem"),
            _work: work,
            edge,
            https,
            _connector: connector,
        }
    }

    /// An HTTP/2 connection to the edge's HTTPS listener (ALPN h2, the
    /// certificate checked for app.test).
    async fn h2(&self) -> hyper::client::conn::http2::SendRequest<TestBody> {
        let tls = public_certs::connect(&self.public_ca, self.https, HOST, b"h2").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .expect("HTTP/2 handshake with the edge");
        tokio::spawn(conn);
        send
    }
}

type TestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// Byte `i` of the test upload: not a repeating short pattern, so a lost or
/// reordered chunk changes the digest.
fn upload_chunk(n: usize, len: usize) -> Bytes {
    (0..len)
        .map(|i| ((n * 7919 + i * 31 + i / 251) % 256) as u8)
        .collect::<Vec<u8>>()
        .into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_trailers_cross_over_http2() {
    let work = Workdir::new("trailers");
    let net = TestNet::new();
    let origin = H2Origin::start(net.addr(10, 8000)).await;
    let t = Tunnel::start(work, &net, origin.addr).await;
    let mut h2 = t.h2().await;

    // A streamed upload of 16 chunks of 64 KiB, then two trailers.
    let chunks: Vec<Bytes> = (0..16).map(|n| upload_chunk(n, 64 * 1024)).collect();
    let mut whole = Vec::new();
    for c in &chunks {
        whole.extend_from_slice(c);
    }
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("one"));
    trailers.insert("x-checksum", HeaderValue::from_static("sha256-of-the-body"));
    let mut frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> =
        chunks.into_iter().map(|c| Ok(Frame::data(c))).collect();
    frames.push(Ok(Frame::trailers(trailers.clone())));
    let body = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    let req = Request::post(format!("https://{HOST}/echo"))
        .header("te", "trailers")
        .header("content-type", "application/octet-stream")
        .body(body)
        .unwrap();
    let resp = h2.send_request(req).await.expect("echo request");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), Version::HTTP_2);
    let collected = resp.into_body().collect().await.expect("echo body");
    let got_trailers = collected
        .trailers()
        .cloned()
        .expect("response trailers reach the client");
    assert_eq!(got_trailers["x-origin-trailer"], "done");
    assert_eq!(got_trailers["grpc-status"], "0");
    assert!(
        collected.to_bytes() == whole,
        "the echoed body differs from the upload"
    );

    let seen = origin.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!(
        s.version,
        Version::HTTP_2,
        "the origin is spoken to over HTTP/2"
    );
    assert_eq!(s.authority.as_deref(), Some(HOST));
    assert_eq!(s.path, "/echo");
    assert_eq!(s.te.as_deref(), Some("trailers"));
    assert_eq!(s.body_len, whole.len());
    assert_eq!(
        s.body_sha256,
        ring::digest::digest(&ring::digest::SHA256, &whole).as_ref()
    );
    let origin_trailers = s
        .trailers
        .as_ref()
        .expect("request trailers reach the origin");
    assert_eq!(origin_trailers, &trailers);

    // A trailers-only answer (a gRPC error before any message) stays the
    // origin's 200 with its grpc-status and grpc-message.
    let req = Request::post(format!("https://{HOST}/trailers-only"))
        .header("te", "trailers")
        .header("content-type", "application/grpc")
        .body(Empty::new().boxed_unsync())
        .unwrap();
    let resp = h2.send_request(req).await.expect("trailers-only request");
    assert_eq!(resp.status(), 200, "a gRPC error is not a proxy error");
    assert_eq!(resp.headers()["grpc-status"], "5", "{:?}", resp.headers());
    assert_eq!(resp.headers()["grpc-message"], TRAILERS_ONLY_MESSAGE);
    // gRPC clients need the HEADERS frame itself to end the stream.
    assert!(
        hyper::body::Body::is_end_stream(resp.body()),
        "a trailers-only answer must end with its HEADERS frame"
    );
    let collected = resp
        .into_body()
        .collect()
        .await
        .expect("trailers-only body");
    assert!(collected.to_bytes().is_empty());
}

/// The messages `grpc_server.py` streams: `message(i)` there.
fn streamed_digest(count: usize) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for i in 0..count {
        let mut msg = format!("message {i:05} ").into_bytes();
        msg.extend(std::iter::repeat_n(b'x', i % 97));
        ctx.update(&(msg.len() as u32).to_be_bytes());
        ctx.update(&msg);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_through_https_to_an_h2c_origin_keep_their_statuses() {
    const STREAMED: usize = 10_000;
    const ROUNDS: usize = 200;
    let work = Workdir::new("grpc");
    let net = TestNet::new();
    let origin = net.addr(10, 50051);
    let mut cmd = Command::new(python::python());
    cmd.arg(python::script("grpc_server.py"))
        .arg(origin.to_string())
        .env("PYTHONUNBUFFERED", "1");
    let server = Proc::spawn("grpc-server", cmd, &work.join("grpc-server.log"));
    eventually(
        "the gRPC server listens",
        Duration::from_secs(20),
        || async { tokio::net::TcpStream::connect(origin).await.ok().map(drop) },
    )
    .await;
    let t = Tunnel::start(work, &net, origin).await;

    let out = tokio::task::spawn_blocking({
        let https = t.https.to_string();
        let ca = t.public_ca.clone();
        move || {
            Command::new(python::python())
                .arg(python::script("grpc_client.py"))
                .args([&https, HOST])
                .arg(ca)
                .args([STREAMED.to_string(), ROUNDS.to_string()])
                .output()
                .expect("run grpc_client.py")
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "grpc_client.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("client JSON");

    let unary = &got["unary"];
    assert_eq!(unary["code"], "OK", "{unary}");
    assert_eq!(unary["reply"], "echo: hello");
    assert_eq!(unary["trailers"]["x-origin-trailer"], "unary-done");

    let stream = &got["server_stream"];
    assert_eq!(stream["code"], "OK", "{stream}");
    assert_eq!(stream["count"], STREAMED);
    assert_eq!(
        stream["sha256"],
        streamed_digest(STREAMED),
        "messages differ from those sent"
    );
    assert_eq!(stream["trailers"]["x-origin-trailer"], "stream-done");

    let bidi = &got["bidi"];
    assert_eq!(bidi["code"], "OK", "{bidi}");
    let want: Vec<String> = (0..ROUNDS).map(|i| format!("ROUND {i}")).collect();
    assert_eq!(bidi["answers"], serde_json::json!(want));

    let missing = &got["missing"];
    assert_eq!(missing["code"], "NOT_FOUND", "{missing}");
    assert_eq!(missing["details"], "no such thing: the-key");

    // Every call was an HTTP 200 at the edge: no gRPC status became a
    // proxy error.
    let metrics = t.edge.metrics().await;
    let non_2xx: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("edge_requests_total") && !l.contains("2xx"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert!(non_2xx.is_empty(), "{non_2xx:?}");
    drop(t);
    drop(server);
}
