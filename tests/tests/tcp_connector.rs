//! The connector's side of a `tcp` stream (issue 12), without an edge: a
//! rogue edge written with the `tunnel` crate opens the streams by hand
//! against a real `connector` process, so the connector is checked alone
//! (the end-to-end tests through a real edge are in `tcp.rs`).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tests::hostile_edge::{HostileEdge, Victim};
use tests::net::TestNet;
use tests::proc::eventually;
use tests::tunnel_setup::Pki;
use tests::workdir::Workdir;
use tests::{config_connector, metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tunnel::codec::Frame;
use tunnel::io::{BodyPart, BodyReader, read_response_head, write_data, write_frame};
use tunnel::message::{RequestHead, ResponseHead, StreamErrorKind, StreamKind};

/// `tcp://` to an echo origin.
const ECHO: &str = "echo.test";
/// `ssh://` (with a port) to an origin that answers after the client's FIN,
/// with `proxy_protocol: v2`.
const PP: &str = "pp.test";
/// `tcp://` to a port nobody listens on.
const GONE: &str = "gone.test";
/// An HTTP rule.
const WEB: &str = "app.test";
/// `tcp://` to an origin that speaks first and half-closes at once.
const BANNER: &str = "banner.test";

/// Sends a banner and its FIN at once (the other half-close), then reads
/// the client's bytes to their end and hands them to the test.
async fn banner_origin(addr: SocketAddr) -> (SocketAddr, tokio::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = s.write_all(b"banner").await;
                let _ = s.shutdown().await;
                let mut got = Vec::new();
                let _ = s.read_to_end(&mut got).await;
                let _ = tx.send(got).await;
            });
        }
    });
    (addr, rx)
}

/// Echoes each connection's bytes as they come; FIN after the client's.
async fn echo_origin(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(tests::tcp_origin::serve_echo(listener));
    addr
}

/// Reads each connection to its end, then sends back everything it read
/// (a client that did not half-close would never get an answer).
async fn answer_after_fin_origin(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut got = Vec::new();
                if s.read_to_end(&mut got).await.is_ok() {
                    let _ = s.write_all(&got).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    addr
}

/// Opens a `tcp` stream for `host` as an edge would.
async fn open(
    victim: &Victim,
    host: &str,
    client_addr: &str,
    headers: Vec<(String, Vec<u8>)>,
) -> (SendStream, RecvStream) {
    let (mut send, recv) = victim.connection().open_bi().await.unwrap();
    let head = RequestHead {
        kind: StreamKind::Tcp,
        method: "CONNECT".into(),
        authority: host.into(),
        path: String::new(),
        has_body: true,
        headers,
        client_addr: client_addr.into(),
        request_id: format!("tcp-{host}"),
    };
    write_frame(&mut send, &Frame::RequestHead(head))
        .await
        .unwrap();
    (send, recv)
}

async fn head(recv: &mut RecvStream) -> ResponseHead {
    tokio::time::timeout(Duration::from_secs(10), read_response_head(recv))
        .await
        .expect("an answer within 10 s")
        .expect("a response head")
}

async fn read_all(recv: RecvStream) -> Vec<u8> {
    let mut body = BodyReader::new(recv);
    let mut out = Vec::new();
    while let Some(part) = body.next().await.expect("body") {
        if let BodyPart::Data(b) = part {
            out.extend_from_slice(&b);
        }
    }
    out
}

fn ok() -> ResponseHead {
    ResponseHead::Response {
        status: 200,
        headers: vec![],
    }
}

/// The PROXY v2 header for two IPv4 addresses, written out by hand.
fn v2_header(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&src.ip().octets());
    h.extend_from_slice(&dst.ip().octets());
    h.extend_from_slice(&src.port().to_be_bytes());
    h.extend_from_slice(&dst.port().to_be_bytes());
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_streams_reach_tcp_services_and_fail_typed() {
    let work = Workdir::new("tcp-connector");
    let net = TestNet::new();
    let echo = echo_origin(net.addr(10, 0)).await;
    let pp = answer_after_fin_origin(net.addr(11, 0)).await;
    let (banner, mut banner_got) = banner_origin(net.addr(13, 0)).await;
    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&[ECHO, PP, GONE, WEB, BANNER], &token);
    let rogue = HostileEdge::bind(&pki, net.addr(1, 7844));
    let rules = format!(
        "ha_connections: 1\ningress:\n  - hostname: {ECHO}\n    service: tcp://{echo}\n  - hostname: {PP}\n    service: ssh://{pp}\n    origin_request: {{ proxy_protocol: v2 }}\n  - hostname: {GONE}\n    service: tcp://{}\n  - hostname: {WEB}\n    service: http://{echo}\n  - hostname: {BANNER}\n    service: tcp://{banner}\n  - service: http_status:404\n",
        net.addr(12, 9),
    );
    let connector = config_connector::start(&work, &pki, &net, 2, &[rogue.addr], &token, &rules);
    let victim = rogue.accept().await;
    connector.wait_ready().await;

    // 16 MiB both ways at once through the echo origin, the first bytes
    // sent before the 200 (as an edge may), then a half-close.
    let payload: Vec<u8> = (0..16u32 << 20).map(|i| (i % 251) as u8).collect();
    let (mut send, mut recv) = open(&victim, ECHO, "192.0.2.1:4000", vec![]).await;
    write_data(&mut send, Bytes::from_static(b"early "))
        .await
        .unwrap();
    assert_eq!(head(&mut recv).await, ok());
    let writer = {
        let payload = payload.clone();
        async move {
            for chunk in payload.chunks(64 << 10) {
                write_data(&mut send, Bytes::copy_from_slice(chunk))
                    .await
                    .unwrap();
            }
            send.finish().unwrap();
            send
        }
    };
    let (_send, echoed) = tokio::join!(writer, read_all(recv));
    assert_eq!(echoed.len(), payload.len() + 6);
    assert!(echoed.starts_with(b"early "));
    assert!(echoed[6..] == payload[..], "the echo differs");

    // The PROXY v2 header, then the payload; the origin answers only after
    // the client's FIN (half-close). With `warren-destination`...
    let client: SocketAddr = "192.0.2.1:4000".parse().unwrap();
    let dest: SocketAddr = "203.0.113.5:2222".parse().unwrap();
    let (mut send, mut recv) = open(
        &victim,
        PP,
        &client.to_string(),
        vec![("warren-destination".into(), dest.to_string().into_bytes())],
    )
    .await;
    assert_eq!(head(&mut recv).await, ok());
    write_data(&mut send, Bytes::from_static(b"SSH-2.0-test\r\n"))
        .await
        .unwrap();
    send.finish().unwrap();
    let mut want = v2_header(client, dest);
    want.extend_from_slice(b"SSH-2.0-test\r\n");
    assert_eq!(read_all(recv).await, want);
    // ...and without: the origin's address stands in.
    let (mut send, mut recv) = open(&victim, PP, &client.to_string(), vec![]).await;
    assert_eq!(head(&mut recv).await, ok());
    send.finish().unwrap();
    assert_eq!(read_all(recv).await, v2_header(client, pp));

    // The origin's FIN reaches the client, which still sends afterwards.
    let (mut send, mut recv) = open(&victim, BANNER, "192.0.2.1:4004", vec![]).await;
    assert_eq!(head(&mut recv).await, ok());
    assert_eq!(read_all(recv).await, b"banner");
    write_data(&mut send, Bytes::from_static(b"after your FIN"))
        .await
        .unwrap();
    send.finish().unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), banner_got.recv())
        .await
        .expect("the origin reads the client's end within 10 s");
    assert_eq!(got.as_deref(), Some(&b"after your FIN"[..]));

    // An idle connection stays open.
    let (mut send, mut recv) = open(&victim, ECHO, "192.0.2.1:4001", vec![]).await;
    assert_eq!(head(&mut recv).await, ok());
    tokio::time::sleep(Duration::from_secs(2)).await;
    write_data(&mut send, Bytes::from_static(b"still here"))
        .await
        .unwrap();
    send.finish().unwrap();
    assert_eq!(read_all(recv).await, b"still here");

    // Typed errors: a refused port, a hostname whose rule is HTTP, and an
    // HTTP request to a TCP rule.
    let (_send, mut recv) = open(&victim, GONE, "192.0.2.1:4002", vec![]).await;
    assert_eq!(
        head(&mut recv).await,
        ResponseHead::Error(StreamErrorKind::OriginUnreachable)
    );
    let (_send, mut recv) = open(&victim, WEB, "192.0.2.1:4003", vec![]).await;
    assert_eq!(
        head(&mut recv).await,
        ResponseHead::Error(StreamErrorKind::BadRequest)
    );
    assert_eq!(
        victim.get(ECHO, "/").await,
        ResponseHead::Error(StreamErrorKind::BadRequest)
    );

    let log = connector.proc.log();
    let refused = log
        .lines()
        .find(|l| l.contains("TCP origin connect failed"))
        .unwrap_or_else(|| panic!("no log line for the refused origin:\n{log}"));
    for part in [GONE, "tcp-gone.test", "origin_unreachable", "refused"] {
        assert!(refused.contains(part), "{part} missing in: {refused}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("not a TCP service") && l.contains(WEB)),
        "{log}"
    );

    let toward_origin = [("direction", "to_origin")];
    let m = eventually("TCP streams closed", Duration::from_secs(10), || async {
        let m = connector.metrics().await;
        (metrics::sum(&m, "connector_tcp_streams_open", &[]) == 0.0).then_some(m)
    })
    .await;
    let to_origin = (payload.len() + 6 + 14 + 14 + 10) as f64;
    assert_eq!(
        metrics::sum(&m, "connector_tcp_bytes_total", &toward_origin),
        to_origin,
        "{m}"
    );
    assert_eq!(
        metrics::sum(
            &m,
            "connector_tcp_bytes_total",
            &[("direction", "to_client")]
        ),
        // The PROXY headers went to the origin outside the relay; the
        // origin sent them back.
        to_origin + 2.0 * 28.0 - 14.0 + 6.0,
        "{m}"
    );
    for (kind, n) in [
        ("origin_unreachable", 1.0),
        ("bad_request", 1.0),
        ("origin_timeout", 0.0),
    ] {
        assert_eq!(
            metrics::sum(&m, "connector_tcp_errors_total", &[("kind", kind)]),
            n,
            "{kind}: {m}"
        );
    }
    assert_eq!(
        metrics::sum(
            &m,
            "connector_bad_requests_total",
            &[("reason", "not_http_service")]
        ),
        1.0,
        "{m}"
    );
}
