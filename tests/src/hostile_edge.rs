//! A rogue edge written with the `tunnel` crate: it holds a certificate the
//! connector trusts, registers the real connector like an edge does, and
//! then sends whatever request heads a test crafts.

use std::net::SocketAddr;
use std::time::Duration;

use tunnel::codec::Frame;
use tunnel::io::{read_control, read_response_head, write_frame};
use tunnel::message::{ControlMessage, Registered, RequestHead, ResponseHead, StreamKind};

use crate::tunnel_setup::Pki;

/// The rogue edge's QUIC endpoint.
pub struct HostileEdge {
    endpoint: quinn::Endpoint,
    /// Its QUIC address.
    pub addr: SocketAddr,
}

/// A connector connection the rogue edge registered.
pub struct Victim {
    conn: quinn::Connection,
    // The control stream stays open while the connection serves.
    _control: (quinn::SendStream, quinn::RecvStream),
}

impl HostileEdge {
    /// Listens on `addr` with the edge certificate of `pki`.
    pub fn bind(pki: &Pki, addr: SocketAddr) -> Self {
        let certs = tunnel::endpoint::load_certs(&pki.dir.join("edge.pem")).expect("edge cert");
        let key = tunnel::endpoint::load_key(&pki.dir.join("edge-key.pem")).expect("edge key");
        let config = tunnel::endpoint::server_config(certs, key).expect("server config");
        let endpoint = tunnel::endpoint::server_endpoint(addr, config).expect("bind rogue edge");
        Self { endpoint, addr }
    }

    /// Accepts the next connector connection and answers its registration
    /// with `Registered`, whatever token it carries.
    pub async fn accept(&self) -> Victim {
        let incoming = tokio::time::timeout(Duration::from_secs(20), self.endpoint.accept())
            .await
            .expect("a connector dials within 20 s")
            .expect("endpoint open");
        let conn = incoming.await.expect("QUIC handshake");
        let (mut send, mut recv) = conn.accept_bi().await.expect("control stream");
        match read_control(&mut recv).await.expect("read register") {
            Some(ControlMessage::Register(_)) => {}
            other => panic!("expected a registration, got {other:?}"),
        }
        let hello = ControlMessage::Registered(Registered {
            edge_id: "rogue".into(),
            location: "nowhere".into(),
        });
        write_frame(&mut send, &Frame::Control(hello))
            .await
            .expect("answer register");
        Victim {
            conn,
            _control: (send, recv),
        }
    }
}

impl Drop for HostileEdge {
    fn drop(&mut self) {
        self.endpoint
            .close(quinn::VarInt::from_u32(0), b"test over");
    }
}

impl Victim {
    /// The QUIC connection, to open streams of any kind by hand.
    pub fn connection(&self) -> &quinn::Connection {
        &self.conn
    }

    /// Sends a GET head with `authority` and `path`, no body, and returns
    /// the connector's answer.
    pub async fn get(&self, authority: &str, path: &str) -> ResponseHead {
        let (mut send, mut recv) = self.conn.open_bi().await.expect("open stream");
        let head = RequestHead {
            kind: StreamKind::Http,
            method: "GET".into(),
            authority: authority.into(),
            path: path.into(),
            has_body: false,
            headers: vec![],
            client_addr: "127.0.0.1:1".into(),
            request_id: "rogue".into(),
        };
        write_frame(&mut send, &Frame::RequestHead(head))
            .await
            .expect("write head");
        send.finish().expect("finish");
        tokio::time::timeout(Duration::from_secs(20), read_response_head(&mut recv))
            .await
            .unwrap_or_else(|_| panic!("no answer to {path:?} within 20 s"))
            .unwrap_or_else(|e| panic!("bad answer to {path:?}: {e}"))
    }
}
