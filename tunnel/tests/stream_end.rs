//! How request streams end, over a real QUIC connection on loopback. A
//! stream whose end has arrived must close quietly when its reader is done
//! with it, even if the reader never asked for that end (hyper stops reading
//! a body at its Content-Length; the connector never reads past a head that
//! has no body). quinn answers a stream dropped before its end with
//! STOP_SENDING, a packet of its own and an immediate ACK from the peer on
//! every request. A stream whose end has not arrived must still be stopped,
//! so a client that goes away aborts the origin's response.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, Endpoint};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tunnel::codec::{self, Frame};
use tunnel::endpoint::{self, EdgeTrust};
use tunnel::io::{BodyPart, BodyReader, read_request_head, read_response_head, write_data};
use tunnel::message::{RequestHead, ResponseHead, StreamKind};

/// The edge's and the connector's ends of one tunnel connection.
struct Tunnel {
    edge: Connection,
    connector: Connection,
    _endpoints: (Endpoint, Endpoint),
}

async fn tunnel() -> Tunnel {
    let certs = tunnel::dev_cert::generate(&["edge.test".to_string()]).unwrap();
    let chain = vec![CertificateDer::from_pem_slice(certs.cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(certs.key_pem.as_bytes()).unwrap();
    let ca = CertificateDer::from_pem_slice(certs.ca_pem.as_bytes()).unwrap();
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server =
        endpoint::server_endpoint(addr, endpoint::server_config(chain, key).unwrap()).unwrap();
    let client = endpoint::client_endpoint(
        endpoint::client_config(EdgeTrust::Ca(vec![ca])).unwrap(),
        false,
    )
    .unwrap();
    let dial = client
        .connect(server.local_addr().unwrap(), "edge.test")
        .unwrap();
    let accept = async { server.accept().await.unwrap().await.unwrap() };
    let (connector, edge) = tokio::join!(dial, accept);
    Tunnel {
        edge,
        connector: connector.unwrap(),
        _endpoints: (server, client),
    }
}

fn head(has_body: bool) -> Bytes {
    let head = RequestHead {
        kind: StreamKind::Http,
        method: "GET".into(),
        authority: "app.test".into(),
        path: "/hello".into(),
        has_body,
        headers: vec![("accept".into(), b"*/*".to_vec())],
        client_addr: "127.0.0.9:5555".into(),
        request_id: "rid".into(),
    };
    let mut out = BytesMut::new();
    codec::encode_request_head(&head, &mut out).unwrap();
    out.freeze()
}

/// One request as the edge and the connector make it: a head without a
/// body, and a response whose body the edge reads exactly, as hyper does,
/// without asking for the end of the stream.
async fn exchange(t: &Tunnel) {
    let (mut send, mut recv) = t.edge.open_bi().await.unwrap();
    send.write_chunk(head(false)).await.unwrap();
    send.finish().unwrap();

    let (mut c_send, mut c_recv) = t.connector.accept_bi().await.unwrap();
    let got = read_request_head(&mut c_recv).await.unwrap();
    assert!(!got.has_body);
    drop(c_recv);
    let resp = ResponseHead::Response {
        status: 200,
        headers: vec![("content-length".into(), b"13".to_vec())],
    };
    let mut frame = BytesMut::new();
    codec::encode(&Frame::ResponseHead(resp), &mut frame).unwrap();
    c_send.write_all(&frame).await.unwrap();
    write_data(&mut c_send, Bytes::from_static(b"hello, world\n"))
        .await
        .unwrap();
    c_send.finish().unwrap();

    let ResponseHead::Response { status, .. } = read_response_head(&mut recv).await.unwrap() else {
        panic!("an error head");
    };
    assert_eq!(status, 200);
    let mut body = BodyReader::new(recv);
    let mut read = Vec::new();
    while read.len() < 13 {
        match body.next().await.unwrap() {
            Some(BodyPart::Data(b)) => read.extend_from_slice(&b),
            other => panic!("expected body bytes, got {other:?}"),
        }
    }
    assert_eq!(read, b"hello, world\n");
    drop(body);
    // The connector's side is done once the edge has acknowledged it.
    assert_eq!(c_send.stopped().await.unwrap(), None);
}

#[tokio::test]
async fn streams_whose_end_arrived_close_without_stop_sending() {
    let t = tunnel().await;
    for _ in 0..3 {
        exchange(&t).await;
    }
    // Anything the three exchanges queued goes out before this one's frames.
    exchange(&t).await;
    assert_eq!(
        t.connector.stats().frame_rx.stop_sending,
        0,
        "the edge stopped response streams that had ended"
    );
    assert_eq!(
        t.edge.stats().frame_rx.stop_sending,
        0,
        "the connector stopped request streams that had ended"
    );
}

#[tokio::test]
async fn a_reader_that_leaves_before_the_end_still_stops_the_stream() {
    let t = tunnel().await;
    let (mut send, recv) = t.edge.open_bi().await.unwrap();
    send.write_chunk(head(false)).await.unwrap();
    send.finish().unwrap();
    let (mut c_send, mut c_recv) = t.connector.accept_bi().await.unwrap();
    read_request_head(&mut c_recv).await.unwrap();
    // A body that goes on: the edge reads one piece, then its client leaves.
    write_data(&mut c_send, Bytes::from_static(b"first piece"))
        .await
        .unwrap();
    let mut body = BodyReader::new(recv);
    assert!(matches!(
        body.next().await.unwrap(),
        Some(BodyPart::Data(_))
    ));
    drop(body);
    let stopped = tokio::time::timeout(Duration::from_secs(5), c_send.stopped())
        .await
        .expect("the connector learns that nobody reads the body");
    assert_eq!(stopped.unwrap(), Some(quinn::VarInt::from_u32(0)));
}
