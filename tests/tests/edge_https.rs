//! The edge's public HTTPS and HTTP/2, checked the way a user would: with
//! curl, openssl and nghttp against real `edge` and `connector` processes.
//! Certificates by SNI from a directory (each hostname gets its own, a name
//! without one fails the handshake, a pair dropped in is served without a
//! restart), h2 and HTTP/1.1 over TLS, h2c on the plain listener, the
//! forwarding scheme the origin sees, 1 GiB each way over h2 with bounded
//! edge memory, the redirect to HTTPS, and the config checks.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::bins::bin;
use tests::metrics;
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::public_certs::PublicCa;
use tests::tunnel_setup::{Connector, Edge, Pki};
use tests::workdir::Workdir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HTTPS_PORT: u16 = 8443;
/// Not hyper's default (200) nor ours (256): proves the flag reaches SETTINGS.
const MAX_STREAMS: &str = "100";

/// What a curl run gave.
struct Curl {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .await
        .expect("run curl");
    Curl {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The SHA-256 fingerprint of the certificate the edge shows for `sni`
/// (`None`: no SNI at all), or `None` if it shows none.
async fn served_fingerprint(addr: SocketAddr, sni: Option<&str>) -> Option<String> {
    let name = match sni {
        Some(n) => format!("-servername {n}"),
        None => "-noservername".into(),
    };
    let script = format!(
        "openssl s_client -connect {addr} {name} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256 2>/dev/null"
    );
    let out = tokio::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .await
        .expect("run openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .split_once('=')
        .map(|(_, fp)| fp.trim().to_string())
}

/// One edge with HTTPS, a connector, and the test origin.
struct Setup {
    _work: Workdir,
    edge: Edge,
    _connector: Connector,
    _origin: tokio::task::JoinHandle<()>,
    ca: PublicCa,
    cert_dir: std::path::PathBuf,
    https: SocketAddr,
    origin: SocketAddr,
}

impl Setup {
    async fn start(
        name: &str,
        hostnames: &[&str],
        certs: &[(&str, &[&str])],
    ) -> (Self, Vec<String>) {
        let work = Workdir::new(name);
        let net = TestNet::new();
        let origin_addr = net.addr(10, 8000);
        let origin = tests::origin::spawn(origin_addr).await;
        let pki = Pki::new(&work);
        let token = work.join("token");
        pki.create_tunnel(hostnames, &token);
        let cert_dir = work.join("public-certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        let ca = PublicCa::new(&work.join("public-ca"));
        let fps = certs
            .iter()
            .map(|(stem, names)| ca.issue(&cert_dir, stem, names))
            .collect();
        let https = net.addr(1, HTTPS_PORT);
        let edge = Edge::start(
            &work,
            &pki,
            &net,
            1,
            &[
                "--public-https",
                &https.to_string(),
                "--public-cert-dir",
                &cert_dir.display().to_string(),
                "--tls-handshake-timeout",
                "2s",
                "--http2-max-concurrent-streams",
                MAX_STREAMS,
            ],
        )
        .await;
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
        let setup = Self {
            _work: work,
            edge,
            _connector: connector,
            _origin: origin,
            ca,
            cert_dir,
            https,
            origin: origin_addr,
        };
        (setup, fps)
    }

    /// curl to `https://host:8443/path`, trusting the test CA.
    async fn https(&self, host: &str, path: &str, extra: &[&str]) -> Curl {
        let resolve = format!("{host}:{HTTPS_PORT}:{}", self.https.ip());
        let url = format!("https://{host}:{HTTPS_PORT}{path}");
        let ca = self.ca.ca_pem.display().to_string();
        let mut args = vec!["--resolve", &resolve, "--cacert", &ca];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(&args).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_serves_each_hostname_its_own_certificate_over_h2_and_http1() {
    let (s, fps) = Setup::start(
        "edge-https",
        &["a.test", "b.test", "c.test", "*.wild.test"],
        &[
            ("a", &["a.test"]),
            ("b", &["b.test"]),
            ("wild", &["*.wild.test"]),
            ("exact", &["x.wild.test"]),
        ],
    )
    .await;
    let [fp_a, fp_b, fp_wild, fp_exact] = [&fps[0], &fps[1], &fps[2], &fps[3]];

    // A client that connects and says nothing is cut off after the
    // handshake timeout (2s here) and counted; run it beside the rest.
    let https = s.https;
    let silent = tokio::spawn(async move {
        let mut sock = tokio::net::TcpStream::connect(https).await.unwrap();
        let mut buf = [0u8; 16];
        tokio::time::timeout(Duration::from_secs(20), sock.read(&mut buf)).await
    });

    for (host, fp) in [("a.test", fp_a), ("b.test", fp_b)] {
        assert_eq!(
            served_fingerprint(s.https, Some(host)).await.as_ref(),
            Some(fp),
            "{host} must get its own certificate"
        );
        for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
            let r = s
                .https(host, "/hello", &[flag, "-w", "%{http_version}"])
                .await;
            assert_eq!(r.code, Some(0), "curl {flag} {host}: {}", r.stderr);
            assert_eq!(
                r.stdout,
                format!("hello from origin\n{version}"),
                "curl {flag} https://{host}: the origin's answer, over HTTP/{version}"
            );
        }
    }

    // Exact beats wildcard; a wildcard covers one label only.
    assert_eq!(
        served_fingerprint(s.https, Some("x.wild.test"))
            .await
            .as_ref(),
        Some(fp_exact)
    );
    assert_eq!(
        served_fingerprint(s.https, Some("y.wild.test"))
            .await
            .as_ref(),
        Some(fp_wild)
    );
    assert_eq!(
        served_fingerprint(s.https, Some("a.b.wild.test")).await,
        None
    );

    // c.test has a tunnel but no certificate: the handshake fails, and no
    // other tenant's certificate is shown. Nor without SNI.
    let r = s.https("c.test", "/hello", &[]).await;
    assert_eq!(r.code, Some(35), "a TLS handshake failure: {}", r.stderr);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert_eq!(served_fingerprint(s.https, Some("c.test")).await, None);
    assert_eq!(served_fingerprint(s.https, None).await, None);

    // A pair dropped into the directory is served without a restart.
    let fp_c = s.ca.issue(&s.cert_dir, "c", &["c.test"]);
    let got = eventually(
        "the new certificate for c.test is served",
        Duration::from_secs(10),
        || async { served_fingerprint(s.https, Some("c.test")).await },
    )
    .await;
    assert_eq!(got, fp_c);
    let r = s.https("c.test", "/hello", &["--http2"]).await;
    assert_eq!(r.stdout, "hello from origin\n", "{}", r.stderr);

    // A bad pair is logged by file name and counted; the others keep serving.
    std::fs::write(s.cert_dir.join("broken-key.pem"), "not a key").unwrap();
    std::fs::write(s.cert_dir.join("broken.pem"), "not a certificate").unwrap();
    eventually(
        "the broken pair is counted",
        Duration::from_secs(10),
        || async {
            let m = s.edge.metrics().await;
            (metrics::sum(&m, "edge_public_certificate_errors_total", &[]) >= 1.0).then_some(())
        },
    )
    .await;
    assert!(
        s.edge.proc.log().contains("broken"),
        "{}",
        s.edge.proc.log()
    );
    assert_eq!(
        served_fingerprint(s.https, Some("a.test")).await.as_ref(),
        Some(fp_a)
    );
    let m = s.edge.metrics().await;
    assert_eq!(
        metrics::sum(&m, "edge_public_certificates", &[]),
        5.0,
        "{m}"
    );

    // The scheme the origin sees is the listener's.
    let r = s.https("a.test", "/headers", &["--http2"]).await;
    let seen: serde_json::Value = serde_json::from_str(&r.stdout).expect("headers JSON");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    assert!(
        seen["forwarded"]
            .as_str()
            .unwrap()
            .ends_with(";proto=https"),
        "{seen}"
    );
    let plain = s.edge.public.to_string();
    let r = curl(&[
        "--http2-prior-knowledge",
        "-H",
        "Host: a.test",
        "-w",
        "\n%{http_version}",
        &format!("http://{plain}/headers"),
    ])
    .await;
    let (body, version) = r.stdout.rsplit_once('\n').expect("body and version");
    assert_eq!(version, "2", "h2c with prior knowledge: {}", r.stderr);
    let seen: serde_json::Value = serde_json::from_str(body).expect("headers JSON");
    assert_eq!(seen["x-forwarded-proto"], "http", "{seen}");

    // The stream limit and header list size are announced in SETTINGS.
    let out = tokio::process::Command::new("nghttp")
        .args(["-nv", &format!("http://{plain}/hello")])
        .output()
        .await
        .expect("run nghttp");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "SETTINGS_MAX_CONCURRENT_STREAMS(0x03):{MAX_STREAMS}"
        )),
        "the edge's SETTINGS must carry --http2-max-concurrent-streams:\n{text}"
    );
    assert!(
        text.contains("SETTINGS_MAX_HEADER_LIST_SIZE(0x06):65536"),
        "{text}"
    );

    let closed = silent.await.unwrap();
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS client must be closed by the handshake timeout: {closed:?}"
    );

    let m = s.edge.metrics().await;
    for (labels, at_least) in [
        ([("protocol", "h2"), ("tls", "true")], 4.0),
        ([("protocol", "http1.1"), ("tls", "true")], 2.0),
        ([("protocol", "h2"), ("tls", "false")], 1.0),
    ] {
        let n = metrics::sum(&m, "edge_public_requests_total", &labels);
        assert!(n >= at_least, "{labels:?}: {n}\n{m}");
    }
    let failures = |reason| {
        metrics::sum(
            &m,
            "edge_tls_handshake_failures_total",
            &[("reason", reason)],
        )
    };
    assert!(failures("no_certificate") >= 4.0, "{m}");
    assert_eq!(failures("timeout"), 1.0, "{m}");

    // SIGTERM drains h2 too: a response in flight on an HTTP/2 connection
    // finishes (GOAWAY lets it), then the edge exits cleanly.
    let resolve = format!("a.test:{HTTPS_PORT}:{}", s.https.ip());
    let ca = s.ca.ca_pem.display().to_string();
    let mut child = tokio::process::Command::new("curl")
        .args(["-sSN", "--http2", "--max-time", "60", "--resolve", &resolve])
        .args(["--cacert", &ca])
        .arg(format!("https://a.test:{HTTPS_PORT}/sse?id=drain&events=1"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&seen).contains("data: event 0") {
        let n = out.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended before its first event");
        seen.extend_from_slice(&buf[..n]);
    }
    let mut edge = s.edge;
    edge.proc.signal("TERM");
    eventually("the edge is draining", Duration::from_secs(10), || async {
        let m = edge.metrics().await;
        (metrics::sum(&m, "edge_draining", &[]) == 1.0).then_some(())
    })
    .await;
    tests::http::plain_client()
        .post(format!("http://{}/release?id=drain", s.origin))
        .send()
        .await
        .expect("release the held response");
    out.read_to_end(&mut seen).await.unwrap();
    let done = child.wait_with_output().await.unwrap();
    assert!(
        done.status.success(),
        "the h2 response in flight at SIGTERM must finish: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert!(
        String::from_utf8_lossy(&seen).ends_with("data: done\n\n"),
        "{}",
        String::from_utf8_lossy(&seen)
    );
    let status = edge
        .proc
        .wait_exit(Duration::from_secs(30))
        .expect("the edge exits once the h2 connection is done");
    assert!(status.success(), "{status:?}\n{}", edge.proc.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_each_way_over_h2_arrives_intact_with_bounded_edge_memory() {
    const SIZE: u64 = 1 << 30;
    const SEED: u64 = 11;
    let (s, _) = Setup::start("edge-https-big", &["big.test"], &[("big", &["big.test"])]).await;
    let resolve = format!("big.test:{HTTPS_PORT}:{}", s.https.ip());
    let ca = s.ca.ca_pem.display().to_string();

    // Down: hashed as it streams out of curl.
    let url = format!("https://big.test:{HTTPS_PORT}/bytes?size={SIZE}&seed={SEED}");
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "300", "--resolve", &resolve])
        .args(["--cacert", &ca, "-w", "%{stderr}%{http_version}", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut out = child.stdout.take().unwrap();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut n = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let k = out.read(&mut buf).await.unwrap();
        if k == 0 {
            break;
        }
        n += k as u64;
        ctx.update(&buf[..k]);
    }
    let done = child.wait_with_output().await.unwrap();
    let version = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{version}");
    assert_eq!(version, "2", "the download ran over h2");
    assert_eq!(n, SIZE);
    assert_eq!(
        tests::pattern::hex(ctx.finish().as_ref()),
        tests::pattern::sha256(SEED, SIZE),
        "the downloaded bytes differ from what the origin sent"
    );

    // Up: streamed into curl's stdin; the origin reports what it got.
    let url = format!("https://big.test:{HTTPS_PORT}/sink");
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "--http2", "--max-time", "300", "--resolve", &resolve])
        .args(["--cacert", &ca, "-X", "POST", "-T", "-"])
        .args(["-w", "%{stderr}%{http_version}", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut stdin = child.stdin.take().unwrap();
    let writer = tokio::spawn(async move {
        for chunk in tests::pattern::chunks(SEED + 1, SIZE) {
            stdin.write_all(&chunk).await.unwrap();
        }
    });
    let done = child.wait_with_output().await.unwrap();
    writer.await.unwrap();
    let version = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{version}");
    assert_eq!(version, "2", "the upload ran over h2");
    let sink: serde_json::Value =
        serde_json::from_slice(&done.stdout).expect("the origin's sink report");
    assert_eq!(sink["bytes"], SIZE, "{sink}");
    assert_eq!(
        sink["sha256"].as_str().unwrap(),
        tests::pattern::sha256(SEED + 1, SIZE),
        "the uploaded bytes differ from what curl sent"
    );

    let peak = s.edge.proc.peak_rss().expect("edge VmHWM");
    eprintln!(
        "edge VmHWM after 1 GiB each way over h2: {} MiB",
        peak >> 20
    );
    assert!(
        peak < 128 << 20,
        "edge peak RSS {} MiB after 1 GiB each way: bodies must stream through \
         bounded windows, not be buffered",
        peak >> 20
    );
}

/// An edge with an HTTPS listener on its own address and an empty
/// certificate directory, plus `extra` flags; and that HTTPS address.
async fn edge_with_empty_cert_dir(work: &Workdir, extra: &[&str]) -> (Edge, SocketAddr) {
    let net = TestNet::new();
    let pki = Pki::new(work);
    let cert_dir = work.join("public-certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let https = net.addr(1, HTTPS_PORT);
    let (https_arg, dir_arg) = (https.to_string(), cert_dir.display().to_string());
    let mut args = vec!["--public-https", &https_arg, "--public-cert-dir", &dir_arg];
    args.extend_from_slice(extra);
    (Edge::start(work, &pki, &net, 1, &args).await, https)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_redirects_to_https_with_the_https_port() {
    let work = Workdir::new("edge-https-redirect");
    let (edge, _) = edge_with_empty_cert_dir(&work, &["--redirect-http-to-https"]).await;
    let plain = edge.public;
    for flag in ["--http1.1", "--http2-prior-knowledge"] {
        let r = curl(&[
            flag,
            "-H",
            "Host: app.test:8080",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            &format!("http://{plain}/a/b?c=d&e"),
        ])
        .await;
        assert_eq!(
            r.stdout,
            format!("308 https://app.test:{HTTPS_PORT}/a/b?c=d&e"),
            "{flag}: {}",
            r.stderr
        );
    }
    // No Host: 400, as without the redirect.
    let mut sock = tokio::net::TcpStream::connect(plain).await.unwrap();
    sock.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 400"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_check_names_half_configured_https_and_a_missing_directory() {
    let work = Workdir::new("edge-https-config");
    let net = TestNet::new();
    let pki = Pki::new(&work);
    let https = net.addr(1, HTTPS_PORT).to_string();
    let missing = work.join("no-such-dir").display().to_string();
    let cases: [(&[&str], &str); 3] = [
        (
            &["--public-cert-dir", &missing],
            "public_https: is required with public_cert_dir",
        ),
        (
            &["--public-https", &https],
            "public_cert_dir: is required with public_https: pass --public-cert-dir",
        ),
        (
            &["--public-https", &https, "--public-cert-dir", &missing],
            "no-such-dir is not a readable directory",
        ),
    ];
    for (i, (args, want)) in cases.iter().enumerate() {
        let mut cmd = Command::new(bin("edge"));
        cmd.args(["run", "--public-http", &net.addr(1, 8080).to_string()])
            .args(["--admin", &net.addr(1, 9080).to_string()])
            .arg("--tunnels-file")
            .arg(&pki.tunnels_file)
            .arg("--tls-cert")
            .arg(pki.dir.join("edge.pem"))
            .arg("--tls-key")
            .arg(pki.dir.join("edge-key.pem"))
            .args(*args);
        let mut edge = Proc::spawn("edge", cmd, &work.join(&format!("edge-{i}.log")));
        let status = edge
            .wait_exit(Duration::from_secs(20))
            .expect("edge exits on a bad config");
        let out = edge.log();
        assert_eq!(status.code(), Some(78), "{out}");
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_connections_count_against_the_shared_per_address_cap() {
    let work = Workdir::new("edge-https-per-ip");
    let (edge, https) = edge_with_empty_cert_dir(&work, &["--max-connections-per-ip", "1"]).await;
    // One client connection, silent in its handshake, takes the address's
    // only place (for the handshake timeout, 10s by default).
    let _held = tokio::net::TcpStream::connect(https).await.unwrap();
    eventually(
        "the first HTTPS connection is accepted",
        Duration::from_secs(10),
        || async {
            let m = edge.metrics().await;
            (metrics::sum(&m, "edge_public_connections", &[]) == 1.0).then_some(())
        },
    )
    .await;
    // A second one over TLS is closed before any handshake...
    let mut second = tokio::net::TcpStream::connect(https).await.unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a connection past the per-address cap must be closed at once: {read:?}"
    );
    // ...and the cap is shared with the plain listener, which says 503.
    let mut plain = tokio::net::TcpStream::connect(edge.public).await.unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    let m = edge.metrics().await;
    assert_eq!(
        metrics::sum(
            &m,
            "edge_limit_rejections_total",
            &[("limit", "connections_per_ip")]
        ),
        2.0,
        "{m}"
    );
}
