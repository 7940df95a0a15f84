//! TCP origins and clients for the TCP tests, in the test process: a bulk
//! origin that hashes what it gets while it sends its own pattern, a
//! half-close origin that answers only after the client's FIN, and the
//! client side of both.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::pattern;

/// Pattern seed of the client -> origin bytes.
pub const SEED_UP: u64 = 0x7570_7570;
/// Pattern seed of the origin -> client bytes.
pub const SEED_DOWN: u64 = 0x646f_776e;

/// What the bulk origin got on one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Bytes after the 8-byte size header.
    pub len: u64,
    /// Their SHA-256, hex.
    pub sha256: String,
}

/// Echo origin: each connection's bytes back as they come, and a FIN
/// after the client's.
pub async fn serve_echo(listener: TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
    }
}

/// Bulk origin: each connection starts with a u64 (little-endian), the
/// number of pattern bytes ([`SEED_DOWN`]) to send back; the origin sends
/// them and then FIN while it reads and hashes the rest until the client's
/// FIN, and reports what it read on the channel.
pub async fn spawn_bulk(addr: SocketAddr) -> mpsc::UnboundedReceiver<Received> {
    let listener = TcpListener::bind(addr).await.expect("bind the bulk origin");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = sock.into_split();
                let Ok(size) = r.read_u64_le().await else {
                    return;
                };
                let send = tokio::spawn(async move {
                    let _ = send_pattern(&mut w, SEED_DOWN, size).await;
                    let _ = w.shutdown().await;
                });
                if let Ok((len, sha256)) = hash_to_end(&mut r).await {
                    let _ = tx.send(Received { len, sha256 });
                }
                let _ = send.await;
            });
        }
    });
    rx
}

/// Half-close origin: reads to the client's FIN, then answers
/// `received N sha256 HEX\n` followed by `answer` pattern bytes
/// ([`SEED_DOWN`]), then closes.
pub async fn spawn_half_close(addr: SocketAddr, answer: u64) {
    let listener = TcpListener::bind(addr)
        .await
        .expect("bind the half-close origin");
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok((len, sha)) = hash_to_end(&mut sock).await else {
                    return;
                };
                let line = format!("received {len} sha256 {sha}\n");
                if sock.write_all(line.as_bytes()).await.is_err() {
                    return;
                }
                let _ = send_pattern(&mut sock, SEED_DOWN, answer).await;
                let _ = sock.shutdown().await;
            });
        }
    });
}

/// Writes `size` bytes of pattern `seed`.
pub async fn send_pattern<W: AsyncWrite + Unpin>(
    w: &mut W,
    seed: u64,
    size: u64,
) -> std::io::Result<()> {
    // Generated on a blocking thread a few chunks ahead, so the test's own
    // CPU time is spent hashing and moving bytes, not waiting on the
    // generator.
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(16);
    let generator = tokio::task::spawn_blocking(move || {
        for c in pattern::chunks(seed, size) {
            if tx.blocking_send(c).is_err() {
                return;
            }
        }
    });
    while let Some(c) = rx.recv().await {
        w.write_all(&c).await?;
    }
    let _ = generator.await;
    Ok(())
}

/// Reads to EOF; the byte count and SHA-256 (hex).
pub async fn hash_to_end<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<(u64, String)> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 256 * 1024];
    let mut len = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, pattern::hex(ctx.finish().as_ref())))
}

/// The client of the bulk origin, over `sock`: sends the size header and
/// `size` bytes of [`SEED_UP`], then FIN, while it reads and hashes the
/// origin's bytes; returns (bytes received, their SHA-256).
pub async fn bulk_client(sock: TcpStream, size: u64) -> std::io::Result<(u64, String)> {
    let (mut r, mut w) = sock.into_split();
    let up = async move {
        w.write_u64_le(size).await?;
        send_pattern(&mut w, SEED_UP, size).await?;
        w.shutdown().await
    };
    let down = hash_to_end(&mut r);
    let ((), got) = tokio::try_join!(up, down)?;
    Ok(got)
}

/// Connects, retrying for a few seconds (a listener that is about to be up).
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let start = std::time::Instant::now();
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => return s,
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("cannot connect to {addr}: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Peak of VmRSS samples of `pids`, in bytes, taken every 100 ms until
/// `stop` is dropped or sent.
pub fn sample_rss(
    pids: Vec<u32>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<u64>>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut peak = vec![0u64; pids.len()];
        loop {
            for (i, pid) in pids.iter().enumerate() {
                if let Some(rss) = vm_rss(*pid) {
                    peak[i] = peak[i].max(rss);
                }
            }
            tokio::select! {
                _ = &mut stopped => return peak,
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    (stop, task)
}

/// VmRSS of a process and its children (the edge's worker), in bytes.
pub fn vm_rss(pid: u32) -> Option<u64> {
    use crate::proc::{children, status_bytes};
    let own = status_bytes(pid, "VmRSS:")?;
    Some(
        own + children(pid)
            .into_iter()
            .filter_map(|c| status_bytes(c, "VmRSS:"))
            .sum::<u64>(),
    )
}
