//! The edge's side of TCP through the tunnel, on a real edge and connector
//! with an in-test TCP echo origin that half-closes after its peer does: a
//! public TCP port (bound from the tunnels file, and a second one bound at a
//! reload), an access WebSocket (`warren-tcp`) spoken by hand with
//! `tunnel::websocket` on the plain and the HTTPS listener, the 404 for a
//! hostname without TCP, the metrics, and a drain with a connection open.
//! The end-to-end suite with sshd, `connector access` and 1 GiB transfers
//! is tests/tcp.rs.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use tests::bins::bin;
use tests::net::TestNet;
use tests::proc::{Proc, eventually};
use tests::public_certs::{self, PublicCa};
use tests::tunnel_setup::{Edge, Pki};
use tests::workdir::Workdir;
use tests::{metrics, python};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tunnel::websocket::{Role, WsStream};

const TCP_HOST: &str = "tcp.test";
const WEB_HOST: &str = "web.test";
const PORT: u16 = 2222;
const LATER_PORT: u16 = 2223;
const HTTPS_PORT: u16 = 8443;

/// Echoes every byte; when the client half-closes, sends a trailer and
/// half-closes too (so a half-close must cross the tunnel both ways).
async fn echo_origin(addr: SocketAddr) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(b"<bye>").await;
                let _ = s.shutdown().await;
            });
        }
    });
}

fn create(pki: &Pki, args: &[&str]) {
    let out = Command::new(bin("edge"))
        .args(["tunnel", "create", "--tunnels-file"])
        .arg(&pki.tunnels_file)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "tunnel create failed: {out:?}");
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

/// Sends `data`, half-closes, and returns all that comes back.
async fn round_trip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: S,
    data: &[u8],
) -> Vec<u8> {
    let (mut r, mut w) = tokio::io::split(s);
    let write = async {
        w.write_all(data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let mut back = Vec::new();
    let read = r.read_to_end(&mut back);
    let (_, read) =
        tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(write, read) })
            .await
            .expect("the answer within 20 s");
    read.unwrap();
    back
}

/// Opens an access WebSocket for `host`; the status line and headers, and
/// the connection when it is 101.
async fn access(edge: SocketAddr, host: &str) -> (String, Option<BufReader<TcpStream>>) {
    access_over(TcpStream::connect(edge).await.unwrap(), host).await
}

/// [`access`] over an established connection (TLS for the HTTPS listener).
async fn access_over<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    s: S,
    host: &str,
) -> (String, Option<BufReader<S>>) {
    let mut s = BufReader::new(s);
    let key = tunnel::websocket::client_key();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\
         Sec-WebSocket-Protocol: warren-tcp\r\n\r\n"
    );
    s.get_mut().write_all(req.as_bytes()).await.unwrap();
    let mut head = String::new();
    loop {
        let mut line = String::new();
        s.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    if head.starts_with("HTTP/1.1 101") {
        let lower = head.to_ascii_lowercase();
        let accept = tunnel::websocket::accept_key(key.as_bytes()).to_ascii_lowercase();
        assert!(
            lower.contains(&format!("sec-websocket-accept: {accept}")),
            "{head}"
        );
        assert!(
            lower.contains("sec-websocket-protocol: warren-tcp"),
            "{head}"
        );
        (head, Some(s))
    } else {
        (head, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_ports_access_websockets_and_refusals() {
    let work = Workdir::new("tcp-edge");
    let net = TestNet::new();
    let origin = net.addr(10, 9000);
    echo_origin(origin).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    let out = Command::new(bin("edge"))
        .args(["tunnel", "create", "--tunnels-file"])
        .arg(&pki.tunnels_file)
        .args(["--hostname", TCP_HOST, "--tcp-port", &PORT.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    std::fs::write(&token, &out.stdout).unwrap();
    create(&pki, &["--hostname", WEB_HOST]);
    let edge_ip = net.ip(1).to_string();
    let cert_dir = work.join("public-certs");
    std::fs::create_dir_all(&cert_dir).unwrap();
    let ca = PublicCa::new(&work.join("public-ca"));
    ca.issue(&cert_dir, "tcp", &[TCP_HOST]);
    let https = net.addr(1, HTTPS_PORT);
    let mut edge = Edge::start(
        &work,
        &pki,
        &net,
        1,
        &[
            "--public-tcp-address",
            &edge_ip,
            "--grace-period",
            "20s",
            "--public-https",
            &https.to_string(),
            "--public-cert-dir",
            &cert_dir.display().to_string(),
        ],
    )
    .await;
    let rest = format!(
        "ingress:\n  - hostname: {TCP_HOST}\n    service: tcp://{origin}\n  - service: http_status:404\n"
    );
    let connector =
        tests::config_connector::start(&work, &pki, &net, 2, &[edge.tunnel], &token, &rest);
    connector.wait_ready().await;

    // A public TCP port: 1 MiB out, half-close, all of it back plus the
    // origin's trailer.
    let data = payload(1 << 20);
    let s = TcpStream::connect(net.addr(1, PORT)).await.unwrap();
    let back = round_trip(s, &data).await;
    assert_eq!(back.len(), data.len() + 5);
    assert!(back[..data.len()] == data[..] && back.ends_with(b"<bye>"));

    // An access WebSocket: the same over binary frames.
    let (head, conn) = access(edge.public, TCP_HOST).await;
    let conn = conn.unwrap_or_else(|| panic!("no 101: {head}"));
    let early = conn.buffer().into();
    let ws = WsStream::with_input(conn.into_inner(), Role::Client, early);
    let back = round_trip(ws, &data).await;
    assert_eq!(back.len(), data.len() + 5);
    assert!(back[..data.len()] == data[..] && back.ends_with(b"<bye>"));

    // The same on the HTTPS listener (HTTP/1.1 by ALPN).
    let tls = public_certs::connect(&ca.ca_pem, https, TCP_HOST, b"http/1.1").await;
    let (head, conn) = access_over(tls, TCP_HOST).await;
    let conn = conn.unwrap_or_else(|| panic!("no 101 over HTTPS: {head}"));
    let early = conn.buffer().into();
    let ws = WsStream::with_input(conn.into_inner(), Role::Client, early);
    let back = round_trip(ws, &data).await;
    assert_eq!(back.len(), data.len() + 5);
    assert!(back[..data.len()] == data[..] && back.ends_with(b"<bye>"));

    // No TCP on the hostname: 404, no stream.
    let (head, conn) = access(edge.public, WEB_HOST).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(conn.is_none());

    // Someone else's WebSocket (Python's `websockets`) against the edge:
    // its masking, a text frame, an empty frame, a ping, and a Close that
    // half-closes, so Warren's framing is not only checked against itself.
    let out = Command::new(python::python())
        .arg(python::script("ws_tcp_peer.py"))
        .args([
            "client",
            &format!("ws://{TCP_HOST}/"),
            &edge.public.to_string(),
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    eprintln!("websockets client through the edge: {line}");
    assert!(
        out.status.success() && line.contains("\"ok\": true"),
        "websockets client through the edge: {line} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // And `connector access tcp` against a `websockets` server: the client
    // side's masking and handshake, checked by an independent peer.
    let peer_addr = net.addr(4, 9001);
    let mut cmd = Command::new(python::python());
    cmd.arg(python::script("ws_tcp_peer.py")).args([
        "server",
        &peer_addr.ip().to_string(),
        &peer_addr.port().to_string(),
    ]);
    let peer = Proc::spawn("ws-peer", cmd, &work.join("ws-peer.log"));
    let listen = net.addr(4, 9002);
    let mut cmd = Command::new(bin("connector"));
    cmd.args(["access", "tcp", "--hostname", TCP_HOST, "--listen"])
        .arg(listen.to_string())
        .args(["--edge-url", &format!("http://{peer_addr}")]);
    let access_client = Proc::spawn("access-to-peer", cmd, &work.join("access-peer.log"));
    for p in [&peer, &access_client] {
        eventually(
            &format!("{} ready", p.name()),
            Duration::from_secs(10),
            || {
                let log = p.log();
                async move { (log.contains("listening")).then_some(()) }
            },
        )
        .await;
    }
    // A standard server answers a Close at once (RFC 6455 section 5.5.1),
    // so all of the echo is read before this side half-closes.
    let mut s = TcpStream::connect(listen).await.unwrap();
    let (mut r, mut w) = s.split();
    let mut back = vec![0u8; data.len()];
    let (wrote, read) = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(w.write_all(&data), r.read_exact(&mut back))
    })
    .await
    .expect("the echo within 20 s");
    wrote.unwrap();
    read.unwrap();
    assert!(
        back == data,
        "the echo through connector access and a websockets server differs"
    );
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty(), "bytes after the echo: {}", rest.len());
    drop((peer, access_client));

    // A port added by a reload is bound within a few seconds.
    create(
        &pki,
        &[
            "--hostname",
            "later.test",
            "--tcp-port",
            &LATER_PORT.to_string(),
        ],
    );
    let later = net.addr(1, LATER_PORT);
    eventually(
        "the new port bound",
        Duration::from_secs(10),
        || async move { TcpStream::connect(later).await.ok().map(|_| ()) },
    )
    .await;

    let text = edge.metrics().await;
    for (name, labels, at_least) in [
        ("edge_tcp_connections_total", &[("via", "port")][..], 1.0),
        ("edge_tcp_connections_total", &[("via", "access")][..], 2.0),
        (
            "edge_tcp_bytes_total",
            &[("direction", "to_origin")][..],
            3.0 * data.len() as f64,
        ),
        (
            "edge_tcp_bytes_total",
            &[("direction", "to_client")][..],
            3.0 * data.len() as f64,
        ),
        (
            "edge_tcp_refused_total",
            &[("reason", "no_tcp_service")][..],
            1.0,
        ),
        ("edge_tcp_ports_bound", &[][..], 2.0),
    ] {
        let v = metrics::sum(&text, name, labels);
        assert!(v >= at_least, "{name}{labels:?} = {v}, want >= {at_least}");
    }

    // SIGTERM: the ports stop accepting, an open TCP connection goes on
    // within the grace period, and the edge exits once it is done.
    let mut open = TcpStream::connect(net.addr(1, PORT)).await.unwrap();
    let mut one = [0u8; 1];
    open.write_all(b"a").await.unwrap();
    open.read_exact(&mut one).await.unwrap();
    edge.proc.signal("TERM");
    let port = net.addr(1, PORT);
    eventually("the port closed", Duration::from_secs(5), || async move {
        TcpStream::connect(port).await.is_err().then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let back = round_trip(open, b"still here").await;
    assert_eq!(back, b"still here<bye>");
    let started = std::time::Instant::now();
    let status = tokio::task::block_in_place(|| edge.proc.wait_exit(Duration::from_secs(10)));
    assert!(
        status.is_some_and(|s| s.success()),
        "edge did not exit cleanly: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the edge waited for the whole grace period"
    );
}
