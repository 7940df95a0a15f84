//! The README's main job: a local origin, an edge and a connector on
//! loopback, and requests through them. Everything is torn down at the end.

use std::time::Instant;

use tests::net::TestNet;
use tests::tunnel_setup::{Connector, Edge, Pki};
use tests::workdir::Workdir;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let work = Workdir::new("demo");
    let net = TestNet::new();
    let origin_addr = net.addr(10, 8000);
    let _origin = tests::origin::spawn(origin_addr).await;
    println!("origin      http://{origin_addr} (no inbound port needed: the connector dials out)");

    let pki = Pki::new(&work);
    let token = work.join("token");
    pki.create_tunnel(&["app.demo.test"], &token);
    println!("tunnel      app.demo.test, token in {}", token.display());

    let edge = Edge::start(&work, &pki, &net, 1, &[]).await;
    println!(
        "edge        public http://{}  tunnel quic://{}  admin http://{}",
        edge.public, edge.tunnel, edge.admin
    );
    let connector = Connector::start(
        &work,
        &pki,
        &net,
        2,
        &[edge.tunnel],
        &token,
        &format!("http://{origin_addr}"),
        &[],
    );
    connector.wait_ready().await;
    println!("connector   registered, admin http://{}", connector.admin);

    let client = tests::http::client_for("app.demo.test", edge.public);
    for path in ["/hello", "/headers"] {
        let url = format!("http://app.demo.test:{}{path}", edge.public.port());
        let resp = client.get(&url).send().await?;
        println!("\nGET {url} -> {}", resp.status());
        println!("{}", resp.text().await?.trim_end());
    }
    let m = tests::metrics::scrape(edge.admin).await;
    println!(
        "\nedge_requests_total{{status_class=\"2xx\"}} = {}",
        tests::metrics::sum(&m, "edge_requests_total", &[("status_class", "2xx")])
    );
    println!("done in {:?}; tearing down", started.elapsed());
    Ok(())
}
