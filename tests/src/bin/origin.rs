//! `origin ADDR`: the test origin as a process, for the benchmark and the
//! local fleet.

#[tokio::main]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".into());
    let listener = match tokio::net::TcpListener::bind(&addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("origin: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("origin listening on {addr}");
    tests::origin::serve(listener).await;
}
