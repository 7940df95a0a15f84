//! A connector started from a YAML config file (for ingress rules and
//! origin options that quick mode's `--url` cannot express).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use crate::bins::bin;
use crate::net::TestNet;
use crate::proc::Proc;
use crate::tunnel_setup::{ADMIN_PORT, Connector, EDGE_NAME, Pki};
use crate::workdir::Workdir;

/// Starts a connector on host `n` with a config file holding the edges,
/// token, CA and admin address, followed by `rest` (YAML: `ingress`,
/// `origin_request`, `ha_connections`, ...). Does not wait for readiness.
pub fn start(
    work: &Workdir,
    pki: &Pki,
    net: &TestNet,
    n: u8,
    edges: &[SocketAddr],
    token_file: &Path,
    rest: &str,
) -> Connector {
    let admin = net.addr(n, ADMIN_PORT);
    let edges: Vec<String> = edges.iter().map(|e| format!("\"{e}\"")).collect();
    let yaml = format!(
        "edges: [{}]\ntoken_file: {}\nca_cert: {}\nedge_server_name: {EDGE_NAME}\nadmin: \"{admin}\"\n{rest}",
        edges.join(", "),
        token_file.display(),
        pki.ca().display(),
    );
    let config = work.join(&format!("connector-{n}.yaml"));
    std::fs::write(&config, yaml).expect("write connector config");
    let mut cmd = Command::new(bin("connector"));
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("CONNECTOR_LOG", "info")
        .env_remove("CONNECTOR_TOKEN");
    let proc = Proc::spawn("connector", cmd, &work.join(&format!("connector-{n}.log")));
    Connector { proc, admin }
}
