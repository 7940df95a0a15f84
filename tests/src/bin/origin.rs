//! `origin ADDR [TCP_ECHO_ADDR]`: the test origin as a process, for the
//! benchmark and the local fleet; with a second address, also a TCP echo
//! origin there (see [`tests::tcp_origin::serve_echo`]).

use tokio::net::TcpListener;

async fn bind(addr: &str) -> TcpListener {
    match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("origin: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8000".into());
    let listener = bind(&addr).await;
    if let Some(echo) = args.next() {
        let echo_listener = bind(&echo).await;
        eprintln!("origin: TCP echo listening on {echo}");
        tokio::spawn(tests::tcp_origin::serve_echo(echo_listener));
    }
    eprintln!("origin listening on {addr}");
    tests::origin::serve(listener).await;
}
