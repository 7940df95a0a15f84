//! `tcp_bench`: the new-TCP-connections-per-second tool of `scripts/bench`.
//!
//! - `tcp_bench echo ADDR`: an echo server (each connection's bytes back,
//!   until the client's FIN).
//! - `tcp_bench connect ADDR N CONCURRENCY`: N connections, CONCURRENCY at
//!   a time; each connects, sends one byte, reads it back and closes.
//!   Prints one JSON line: `{"conns": N, "errors": E, "seconds": S,
//!   "per_s": R}` (R counts the successful ones). A connection that takes
//!   over 5 s counts as an error, so a run is bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const USAGE: &str = "usage: tcp_bench echo ADDR | tcp_bench connect ADDR N CONCURRENCY";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["echo", addr] => echo(addr).await,
        ["connect", addr, n, conc] => {
            let (Ok(n), Ok(conc)) = (n.parse::<u64>(), conc.parse::<u64>()) else {
                fail(USAGE)
            };
            connect(addr, n, conc.max(1)).await
        }
        _ => fail(USAGE),
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("tcp_bench: {msg}");
    std::process::exit(2)
}

async fn echo(addr: &str) {
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(&format!("cannot bind {addr}: {e}")));
    eprintln!("tcp_bench echo listening on {addr}");
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            // Out of descriptors and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            let (mut r, mut w) = sock.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
        });
    }
}

async fn connect(addr: &str, n: u64, conc: u64) {
    let addr: std::net::SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| fail(&format!("`{addr}` is not IP:PORT: {e}")));
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..conc)
        .map(|_| {
            let (next, errors) = (next.clone(), errors.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    let one = tokio::time::timeout(Duration::from_secs(5), one_echo(addr)).await;
                    if !matches!(one, Ok(Ok(()))) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let seconds = start.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    println!(
        "{{\"conns\": {n}, \"errors\": {errors}, \"seconds\": {seconds:.3}, \"per_s\": {:.1}}}",
        (n - errors) as f64 / seconds
    );
}

async fn one_echo(addr: std::net::SocketAddr) -> std::io::Result<()> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    sock.write_all(b"x").await?;
    let mut b = [0u8; 1];
    sock.read_exact(&mut b).await?;
    if b != *b"x" {
        return Err(std::io::Error::other("wrong echo"));
    }
    Ok(())
}
