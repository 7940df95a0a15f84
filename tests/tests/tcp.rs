//! TCP and SSH through a real edge and connector (issue 12): `connector
//! access tcp|ssh` over the edge's WebSocket endpoint, and the edge's
//! public TCP ports. One edge, one connector and one set of origins serve
//! every scenario:
//!
//! - a real sshd (Debian's openssh-server, own host key, a key made here)
//!   runs `echo ok` through `ssh -o ProxyCommand='connector access ssh ...'`
//!   (over the edge's HTTPS listener) and through a public TCP port;
//! - 1 GiB each way, at once, through `connector access tcp` and through a
//!   public TCP port, compared by SHA-256, with the edge's and the
//!   connector's VmRSS sampled meanwhile and held under [`RSS_BOUND`];
//! - half-close: the client sends, shuts down its write side, and still
//!   gets the origin's whole answer (sent only after the origin saw FIN);
//! - `proxy_protocol: v2`: the origin's independent Python parser
//!   (`tests/py/proxy_v2_origin.py`) reads the client's address and port,
//!   then the payload;
//! - an access WebSocket for a hostname without a TCP service gets 404 and
//!   no stream; a refused origin port closes the client's connection and
//!   shows as `origin_unreachable` in the connector's log and metrics.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::bins::bin;
use tests::metrics;
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::public_certs::PublicCa;
use tests::python::{python, script};
use tests::sshd::Sshd;
use tests::tcp_origin::{self, SEED_DOWN, SEED_UP};
use tests::tunnel_setup::{Connector, Edge, Pki};
use tests::workdir::Workdir;
use tests::{config_connector, pattern};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const SSH_HOST: &str = "ssh.test";
const BULK_HOST: &str = "bulk.test";
const HALF_HOST: &str = "half.test";
const PP_HOST: &str = "pp.test";
const REFUSED_HOST: &str = "refused.test";
/// In the TCP tunnel's hostnames, but not a TCP hostname.
const WEB_HOST: &str = "web.test";
/// A second tunnel's hostname, with no TCP service at all.
const OTHER_HOST: &str = "other.test";

/// Public TCP ports on the edge (host 1 of the test's net).
const SSH_PORT: u16 = 2201;
const BULK_PORT: u16 = 2202;
const HALF_PORT: u16 = 2203;
const PP_PORT: u16 = 2204;
const REFUSED_PORT: u16 = 2205;
const HTTPS_PORT: u16 = 8443;

/// The size of each bulk transfer, each way.
const GIB: u64 = 1 << 30;
/// VmRSS bound of the edge and of the connector while 1 GiB goes each way
/// (about 14 MiB each was measured; see README).
const RSS_BOUND: u64 = 128 << 20;
/// The typed error of a refused origin, as a metric label and in the log.
const UNREACHABLE: &str = "origin_unreachable";
/// The half-close origin's answer after the client's FIN.
const HALF_ANSWER: u64 = 1 << 20;

struct Setup {
    work: Workdir,
    net: TestNet,
    edge: Edge,
    connector: Connector,
    sshd: Sshd,
    pp_origin: Proc,
    bulk: tokio::sync::mpsc::UnboundedReceiver<tcp_origin::Received>,
    ca: PublicCa,
    access: Vec<Proc>,
    /// Local listeners of `connector access tcp`, per hostname.
    access_bulk: SocketAddr,
    access_half: SocketAddr,
    access_pp: SocketAddr,
    access_refused: SocketAddr,
}

fn tunnel_create(pki: &Pki, args: &[String], token: &Path) {
    let out = Command::new(bin("edge"))
        .args(["tunnel", "create", "--tunnels-file"])
        .arg(&pki.tunnels_file)
        .args(args)
        .output()
        .expect("run edge tunnel create");
    assert!(
        out.status.success(),
        "tunnel create {args:?} failed: {out:?}"
    );
    std::fs::write(token, out.stdout).expect("write token");
}

impl Setup {
    async fn start() -> Self {
        let work = Workdir::new("tcp");
        let net = TestNet::new();
        let origin_ip = net.ip(10);
        let sshd_addr = SocketAddr::new(origin_ip, 2222);
        let bulk_addr = SocketAddr::new(origin_ip, 9001);
        let half_addr = SocketAddr::new(origin_ip, 9002);
        let pp_addr = SocketAddr::new(origin_ip, 9003);
        // Nothing listens there.
        let refused_addr = SocketAddr::new(origin_ip, 9004);

        let sshd = Sshd::start(&work, sshd_addr).await;
        let bulk = tcp_origin::spawn_bulk(bulk_addr).await;
        tcp_origin::spawn_half_close(half_addr, HALF_ANSWER).await;
        let mut cmd = Command::new(python());
        cmd.arg(script("proxy_v2_origin.py"))
            .arg(pp_addr.ip().to_string())
            .arg(pp_addr.port().to_string())
            .env("PYTHONUNBUFFERED", "1");
        let pp_origin = Proc::spawn("pp-origin", cmd, &work.join("pp-origin.log"));

        let pki = Pki::new(&work);
        let token = work.join("token");
        let mut args: Vec<String> = Vec::new();
        for h in [
            SSH_HOST,
            BULK_HOST,
            HALF_HOST,
            PP_HOST,
            REFUSED_HOST,
            WEB_HOST,
        ] {
            args.extend(["--hostname".into(), h.into()]);
        }
        for h in [SSH_HOST, BULK_HOST, HALF_HOST, PP_HOST, REFUSED_HOST] {
            args.extend(["--tcp-hostname".into(), h.into()]);
        }
        for (port, h) in [
            (SSH_PORT, SSH_HOST),
            (BULK_PORT, BULK_HOST),
            (HALF_PORT, HALF_HOST),
            (PP_PORT, PP_HOST),
            (REFUSED_PORT, REFUSED_HOST),
        ] {
            args.extend(["--tcp-port".into(), format!("{port}={h}")]);
        }
        tunnel_create(&pki, &args, &token);
        tunnel_create(
            &pki,
            &["--hostname".into(), OTHER_HOST.into()],
            &work.join("other-token"),
        );

        let cert_dir = work.join("public-certs");
        std::fs::create_dir_all(&cert_dir).unwrap();
        let ca = PublicCa::new(&work.join("public-ca"));
        ca.issue(
            &cert_dir,
            "tcp",
            &[SSH_HOST, BULK_HOST, WEB_HOST, OTHER_HOST],
        );
        let https = net.addr(1, HTTPS_PORT);
        let edge = Edge::start(
            &work,
            &pki,
            &net,
            1,
            &[
                "--public-tcp-address",
                &net.ip(1).to_string(),
                "--public-https",
                &https.to_string(),
                "--public-cert-dir",
                &cert_dir.display().to_string(),
            ],
        )
        .await;
        let rest = format!(
            "ingress:\n\
             \x20 - hostname: {SSH_HOST}\n    service: ssh://{sshd_addr}\n\
             \x20 - hostname: {BULK_HOST}\n    service: tcp://{bulk_addr}\n\
             \x20 - hostname: {HALF_HOST}\n    service: tcp://{half_addr}\n\
             \x20 - hostname: {PP_HOST}\n    service: tcp://{pp_addr}\n    origin_request:\n      proxy_protocol: v2\n\
             \x20 - hostname: {REFUSED_HOST}\n    service: tcp://{refused_addr}\n\
             \x20 - service: http_status:404\n"
        );
        let connector =
            config_connector::start(&work, &pki, &net, 2, &[edge.tunnel], &token, &rest);
        connector.wait_ready().await;

        // One `connector access tcp` per TCP hostname, over the plain
        // listener (the ssh scenario uses HTTPS).
        let edge_url = format!("http://{}", edge.public);
        let mut access = Vec::new();
        let mut listens = Vec::new();
        for (i, host) in [BULK_HOST, HALF_HOST, PP_HOST, REFUSED_HOST]
            .into_iter()
            .enumerate()
        {
            let listen = net.addr(3, 7001 + i as u16);
            let mut cmd = Command::new(bin("connector"));
            cmd.args(["access", "tcp", "--hostname", host, "--listen"])
                .arg(listen.to_string())
                .args(["--edge-url", &edge_url])
                .env("CONNECTOR_LOG", "info");
            let p = Proc::spawn(
                &format!("access-{host}"),
                cmd,
                &work.join(&format!("access-{host}.log")),
            );
            access.push(p);
            listens.push(listen);
        }
        for p in &access {
            eventually(
                &format!("{} listening", p.name()),
                Duration::from_secs(10),
                || {
                    let log = p.log();
                    async move { log.contains("access tcp listening").then_some(()) }
                },
            )
            .await;
        }
        eventually(
            "the PROXY v2 origin listening",
            Duration::from_secs(10),
            || {
                let log = pp_origin.log();
                async move { log.contains("\"listening\"").then_some(()) }
            },
        )
        .await;
        Self {
            work,
            net,
            edge,
            connector,
            sshd,
            pp_origin,
            bulk,
            ca,
            access,
            access_bulk: listens[0],
            access_half: listens[1],
            access_pp: listens[2],
            access_refused: listens[3],
        }
    }

    fn port(&self, port: u16) -> SocketAddr {
        self.net.addr(1, port)
    }

    /// `connector access ssh` with stdin/stdout as given.
    fn access_ssh(&self, host: &str) -> Command {
        let mut cmd = Command::new(bin("connector"));
        cmd.args(["access", "ssh", "--hostname", host, "--edge-url"])
            .arg(format!("http://{}", self.edge.public))
            .stdin(Stdio::null());
        cmd
    }
}

async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("run command"))
        .await
        .unwrap()
}

/// A client socket bound to `ip` (so the PROXY header's source is known).
async fn connect_from(ip: std::net::IpAddr, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip, 0)).unwrap();
    sock.connect(to).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_ssh_through_the_tunnel() {
    let started = Instant::now();
    let mut s = Setup::start().await;
    eprintln!("setup: {:?}", started.elapsed());
    // The expected pattern digests, computed while the SSH scenario runs.
    let expected = tokio::task::spawn_blocking(|| {
        (
            pattern::sha256(SEED_UP, GIB),
            pattern::sha256(SEED_DOWN, GIB),
        )
    });

    // 1. SSH through `connector access ssh` as a ProxyCommand, over the
    // edge's HTTPS listener with a private CA, then through a public port.
    let t = Instant::now();
    let known = s.work.join("known_hosts");
    let port_name = format!("[{}]:{SSH_PORT}", s.net.ip(1));
    s.sshd.known_hosts(&known, &[SSH_HOST, &port_name]);
    let proxy = format!(
        "{} access ssh --hostname %h --edge-url https://{}:{HTTPS_PORT} --ca-cert {}",
        bin("connector").display(),
        s.net.ip(1),
        s.ca.ca_pem.display()
    );
    let mut cmd = s.sshd.client(&known);
    cmd.arg("-o")
        .arg(format!("ProxyCommand={proxy}"))
        .args([SSH_HOST, "echo", "ok"]);
    let out = output(cmd).await;
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "ssh through `connector access ssh` failed: {out:?}"
    );
    let mut cmd = s.sshd.client(&known);
    cmd.args(["-p", &SSH_PORT.to_string()])
        .arg(s.net.ip(1).to_string())
        .args(["echo", "ok"]);
    let out = output(cmd).await;
    assert!(
        out.status.success() && out.stdout == b"ok\n",
        "ssh through the public TCP port failed: {out:?}"
    );
    eprintln!("ssh: {:?}", t.elapsed());

    // 2. 404 for an access WebSocket to a hostname without a TCP service:
    // the tunnel's web-only hostname and another tunnel's hostname. No
    // stream is opened, and `access ssh` says what to fix.
    let t = Instant::now();
    let streams_before = connector_streams(&s.connector).await;
    for host in [WEB_HOST, OTHER_HOST] {
        let out = output(s.access_ssh(host)).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("404") && stderr.contains("tcp_hostnames"),
            "access ssh to {host} (no TCP service) must fail naming 404 and tcp_hostnames: {out:?}"
        );
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
        // The same by hand, to see the edge's exact answer.
        let status = raw_upgrade(s.edge.public, host).await;
        assert!(status.starts_with("HTTP/1.1 404"), "{host}: {status}");
    }
    let edge_metrics = s.edge.metrics().await;
    assert!(
        metrics::sum(
            &edge_metrics,
            "edge_tcp_refused_total",
            &[("reason", "no_tcp_service")]
        ) >= 4.0,
        "edge_tcp_refused_total{{reason=\"no_tcp_service\"}} did not count the 404s"
    );
    assert_eq!(
        connector_streams(&s.connector).await,
        streams_before,
        "a 404 must open no stream (the connector counted one)"
    );
    eprintln!("404: {:?}", t.elapsed());

    // 3. Half-close, through access and through the public port: the
    // client sends, shuts down its write side, and gets the origin's whole
    // answer, which the origin sends only after it saw the FIN.
    let t = Instant::now();
    for (via, addr) in [("access", s.access_half), ("port", s.port(HALF_PORT))] {
        let payload: Vec<u8> = pattern::chunks(7, 300_000).flatten().collect();
        let want_sha = pattern::hex(ring::digest::digest(&ring::digest::SHA256, &payload).as_ref());
        let mut sock = tcp_origin::connect(addr).await;
        sock.write_all(&payload).await.unwrap();
        sock.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), sock.read_to_end(&mut answer))
            .await
            .unwrap_or_else(|_| panic!("half-close via {via}: no complete answer in 20s"))
            .unwrap_or_else(|e| panic!("half-close via {via}: {e}"));
        let line_end = answer
            .iter()
            .position(|b| *b == b'\n')
            .expect("answer line");
        let line = String::from_utf8_lossy(&answer[..line_end]);
        assert_eq!(
            line,
            format!("received {} sha256 {want_sha}", payload.len()),
            "half-close via {via}"
        );
        let rest = &answer[line_end + 1..];
        let want_rest: Vec<u8> = pattern::chunks(SEED_DOWN, HALF_ANSWER).flatten().collect();
        assert!(
            rest == want_rest.as_slice(),
            "half-close via {via}: got {} of {HALF_ANSWER} answer bytes after the line",
            rest.len()
        );
    }
    eprintln!("half-close: {:?}", t.elapsed());

    // 4. PROXY protocol v2: the origin's own parser reads the client's
    // address, then the payload.
    let t = Instant::now();
    let client_ip = s.net.ip(5);
    let mut sock = connect_from(client_ip, s.port(PP_PORT)).await;
    let client = sock.local_addr().unwrap();
    sock.write_all(b"pp-via-port").await.unwrap();
    sock.shutdown().await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "ok 11\n");
    let report = pp_report(&s.pp_origin, "pp-via-port").await;
    assert_eq!(report["command"], "PROXY", "{report}");
    assert_eq!(report["family"], "inet", "{report}");
    assert_eq!(report["protocol"], "stream", "{report}");
    assert_eq!(report["src"], client.to_string(), "{report}");
    assert_eq!(report["dst"], s.port(PP_PORT).to_string(), "{report}");
    // Through access the source is `connector access`'s own socket as the
    // edge sees it, the destination the edge's listener.
    let mut sock = tcp_origin::connect(s.access_pp).await;
    sock.write_all(b"pp-via-access").await.unwrap();
    sock.shutdown().await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "ok 13\n");
    let report = pp_report(&s.pp_origin, "pp-via-access").await;
    assert_eq!(report["command"], "PROXY", "{report}");
    assert_eq!(report["dst"], s.edge.public.to_string(), "{report}");
    let src: SocketAddr = report["src"]
        .as_str()
        .unwrap()
        .parse()
        .expect("src address");
    assert!(src.ip().is_loopback() && src.port() != 0, "{report}");
    assert!(
        !s.pp_origin.log().contains("\"error\""),
        "the parser refused a header: {}",
        s.pp_origin.log()
    );
    eprintln!("proxy v2: {:?}", t.elapsed());

    // 5. A refused origin port: the client's connection is closed, and the
    // connector logs and counts the typed error.
    let t = Instant::now();
    // Twice through access: the listener keeps serving after a refusal.
    for (via, addr) in [
        ("access", s.access_refused),
        ("access, again", s.access_refused),
        ("port", s.port(REFUSED_PORT)),
    ] {
        let mut sock = tcp_origin::connect(addr).await;
        let _ = sock.write_all(b"hello?").await;
        let mut buf = [0u8; 16];
        let got = tokio::time::timeout(Duration::from_secs(15), sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("refused origin via {via}: the connection stayed open"));
        assert!(
            matches!(got, Ok(0) | Err(_)),
            "refused origin via {via}: read {got:?}, want a closed connection"
        );
    }
    let errors = eventually(
        "connector_tcp_errors_total{kind=\"origin_unreachable\"} >= 3",
        Duration::from_secs(10),
        || async {
            let n = metrics::sum(
                &s.connector.metrics().await,
                "connector_tcp_errors_total",
                &[("kind", UNREACHABLE)],
            );
            (n >= 3.0).then_some(n)
        },
    )
    .await;
    assert!(errors >= 3.0);
    let log = s.connector.proc.log();
    assert!(
        log.lines()
            .any(|l| l.contains(REFUSED_HOST) && l.contains(UNREACHABLE)),
        "the connector's log names no origin_unreachable for {REFUSED_HOST}"
    );
    assert!(
        s.access[3].running(),
        "connector access tcp exited after a refusal"
    );
    let access_log = s.access[3].log();
    assert!(
        access_log.contains("502"),
        "access tcp logged no 502 for the refused origin: {access_log}"
    );
    eprintln!("refused: {:?}", t.elapsed());

    // 6. 1 GiB each way at once, through access and through a public port,
    // with the edge's and the connector's memory sampled meanwhile.
    let (want_up, want_down) = expected.await.unwrap();
    for (via, addr) in [("access", s.access_bulk), ("port", s.port(BULK_PORT))] {
        let t = Instant::now();
        let (stop, sampler) =
            tcp_origin::sample_rss(vec![s.edge.proc.pid(), s.connector.proc.pid()]);
        let sock = tcp_origin::connect(addr).await;
        let (len, sha) =
            tokio::time::timeout(Duration::from_secs(120), tcp_origin::bulk_client(sock, GIB))
                .await
                .unwrap_or_else(|_| panic!("1 GiB each way via {via} took over 120s"))
                .unwrap_or_else(|e| panic!("1 GiB each way via {via}: {e}"));
        let _ = stop.send(());
        let peaks = sampler.await.unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), s.bulk.recv())
            .await
            .expect("the bulk origin's report")
            .expect("bulk origin running");
        assert_eq!(
            (len, sha.as_str()),
            (GIB, want_down.as_str()),
            "to the client via {via}"
        );
        assert_eq!(got.len, GIB, "to the origin via {via}");
        assert_eq!(got.sha256, want_up, "to the origin via {via}");
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "1 GiB each way via {via}: {secs:.1}s ({:.0} MiB/s each way); peak VmRSS edge {} MiB, connector {} MiB",
            1024.0 / secs,
            peaks[0] >> 20,
            peaks[1] >> 20
        );
        for (name, peak) in [("edge", peaks[0]), ("connector", peaks[1])] {
            assert!(
                peak > 0 && peak < RSS_BOUND,
                "{name} VmRSS peaked at {} MiB during 1 GiB each way via {via}; the bound is {} MiB",
                peak >> 20,
                RSS_BOUND >> 20
            );
        }
    }
    let m = s.connector.metrics().await;
    assert!(
        metrics::sum(
            &m,
            "connector_tcp_bytes_total",
            &[("direction", "to_origin")]
        ) >= (2 * GIB) as f64,
        "connector_tcp_bytes_total{{direction=\"to_origin\"}} missed the bulk bytes"
    );
    let m = s.edge.metrics().await;
    assert!(
        metrics::sum(&m, "edge_tcp_bytes_total", &[("direction", "to_client")]) >= (2 * GIB) as f64,
        "edge_tcp_bytes_total{{direction=\"to_client\"}} missed the bulk bytes"
    );
    eprintln!("whole test: {:?}", started.elapsed());
}

/// Every stream the connector served or refused, by its counters.
async fn connector_streams(connector: &Connector) -> f64 {
    let m = connector.metrics().await;
    [
        "connector_requests_total",
        "connector_bad_requests_total",
        "connector_tcp_errors_total",
    ]
    .iter()
    .map(|name| metrics::sum(&m, name, &[]))
    .sum()
}

/// The status line the edge answers to an access WebSocket request for
/// `host`.
async fn raw_upgrade(edge: SocketAddr, host: &str) -> String {
    let mut sock = TcpStream::connect(edge).await.expect("connect to the edge");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: warren-tcp\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
        .await
        .expect("an answer within 10s")
        .expect("read the answer");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The PROXY v2 origin's report of the connection that carried `payload`.
async fn pp_report(origin: &Proc, payload: &str) -> Value {
    eventually(
        &format!("the PROXY v2 origin's report of {payload}"),
        Duration::from_secs(10),
        || {
            let log = origin.log();
            async move {
                log.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .find(|v| v["event"] == "connection" && v["payload"] == payload)
            }
        },
    )
    .await
}
