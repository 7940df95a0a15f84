//! An origin that records the request target of every request exactly as
//! it came off the wire (no framework in between that could normalise it),
//! and counts the connections it accepted. It answers every request with
//! `200 origin saw TARGET` and closes the connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A running recording origin; stops when dropped.
pub struct RecordingOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct Seen {
    connections: usize,
    targets: Vec<String>,
}

impl RecordingOrigin {
    /// Listens on `addr`.
    pub async fn start(addr: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("bind recording origin {addr}: {e}"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let task = tokio::spawn(accept_loop(listener, seen.clone()));
        Self { addr, seen, task }
    }

    /// Every request target received, in order.
    pub fn targets(&self) -> Vec<String> {
        self.seen.lock().unwrap().targets.clone()
    }

    /// How many TCP connections it accepted.
    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }
}

impl Drop for RecordingOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, seen: Arc<Mutex<Seen>>) {
    while let Ok((mut sock, _)) = listener.accept().await {
        seen.lock().unwrap().connections += 1;
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
                match sock.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf);
            let target = head
                .lines()
                .next()
                .and_then(|l| l.split(' ').nth(1))
                .unwrap_or_default()
                .to_string();
            seen.lock().unwrap().targets.push(target.clone());
            let body = format!("origin saw {target}");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = sock.write_all(resp.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Sends `GET target` with `Host: host` over a raw TCP connection (no
/// client library that would tidy the target first) and returns the status
/// code and body text.
pub async fn raw_get(addr: SocketAddr, host: &str, target: &str) -> (u16, String) {
    let mut sock = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        sock.read_to_end(&mut out),
    )
    .await;
    assert!(read.is_ok(), "no answer to GET {target} within 20 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line for GET {target}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
