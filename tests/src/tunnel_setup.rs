//! Starting real `edge` and `connector` processes for a test: certificates
//! and tunnels made by the binaries themselves, loopback addresses of the
//! test's own, readiness awaited.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::bins::bin;
use crate::net::TestNet;
use crate::proc::{Proc, eventually};
use crate::workdir::Workdir;

/// Ports every edge of a test uses on its own address.
pub const PUBLIC_PORT: u16 = 8080;
/// QUIC port of every edge.
pub const TUNNEL_PORT: u16 = 7844;
/// Admin port of every edge and connector.
pub const ADMIN_PORT: u16 = 9080;

/// The name in the edges' certificate that connectors verify.
pub const EDGE_NAME: &str = "edge.warren.test";

/// Certificates and a tunnels file shared by a test's edges.
pub struct Pki {
    /// Folder with ca.pem, edge.pem, edge-key.pem.
    pub dir: PathBuf,
    /// The tunnels file.
    pub tunnels_file: PathBuf,
}

impl Pki {
    /// Runs `edge dev-cert` into `work/pki`.
    pub fn new(work: &Workdir) -> Self {
        let dir = work.join("pki");
        let out = Command::new(bin("edge"))
            .args(["dev-cert", "--san", EDGE_NAME, "--out"])
            .arg(&dir)
            .output()
            .expect("run edge dev-cert");
        assert!(out.status.success(), "dev-cert failed: {out:?}");
        Self {
            dir,
            tunnels_file: work.join("tunnels.yaml"),
        }
    }

    /// The CA file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Runs `edge tunnel create` and writes the printed token to a file.
    pub fn create_tunnel(&self, hostnames: &[&str], token_file: &Path) {
        let mut cmd = Command::new(bin("edge"));
        cmd.args(["tunnel", "create", "--tunnels-file"])
            .arg(&self.tunnels_file);
        for h in hostnames {
            cmd.args(["--hostname", h]);
        }
        let out = cmd.output().expect("run edge tunnel create");
        assert!(out.status.success(), "tunnel create failed: {out:?}");
        let token = String::from_utf8(out.stdout).expect("utf-8 token");
        assert_eq!(token.lines().count(), 1, "the token is alone on stdout");
        std::fs::write(token_file, token).expect("write token");
    }
}

/// A running edge.
pub struct Edge {
    /// The process.
    pub proc: Proc,
    /// Public HTTP address.
    pub public: SocketAddr,
    /// QUIC address.
    pub tunnel: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    args: Vec<String>,
    log: PathBuf,
    program: PathBuf,
}

impl Edge {
    /// Starts an edge on host `n` of `net` and waits until it is ready.
    pub async fn start(work: &Workdir, pki: &Pki, net: &TestNet, n: u8, extra: &[&str]) -> Self {
        Self::start_program(&bin("edge"), work, pki, net, n, extra).await
    }

    /// [`Edge::start`] with the binary at `program` (a path a test can
    /// point elsewhere later, as a release switch does).
    pub async fn start_program(
        program: &Path,
        work: &Workdir,
        pki: &Pki,
        net: &TestNet,
        n: u8,
        extra: &[&str],
    ) -> Self {
        let public = net.addr(n, PUBLIC_PORT);
        let tunnel = net.addr(n, TUNNEL_PORT);
        let admin = net.addr(n, ADMIN_PORT);
        let mut args: Vec<String> = vec![
            "run".into(),
            "--public-http".into(),
            public.to_string(),
            "--tunnel-listen".into(),
            tunnel.to_string(),
            "--admin".into(),
            admin.to_string(),
            "--tunnels-file".into(),
            pki.tunnels_file.display().to_string(),
            "--tls-cert".into(),
            pki.dir.join("edge.pem").display().to_string(),
            "--tls-key".into(),
            pki.dir.join("edge-key.pem").display().to_string(),
            "--location".into(),
            format!("dc{n}"),
            "--edge-id".into(),
            format!("edge-{n}"),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let log = work.join(&format!("edge-{n}.log"));
        let proc = spawn_edge(program, &args, &log);
        let edge = Self {
            proc,
            public,
            tunnel,
            admin,
            args,
            log,
            program: program.to_path_buf(),
        };
        edge.wait_ready().await;
        edge
    }

    /// Waits for `/ready`.
    pub async fn wait_ready(&self) {
        let admin = self.admin;
        eventually("edge /ready", Duration::from_secs(20), || async move {
            crate::http::ready(admin).await.then_some(())
        })
        .await;
    }

    /// Starts the same edge again after it stopped.
    pub async fn restart(&mut self) {
        self.proc.kill();
        self.proc = spawn_edge(&self.program, &self.args, &self.log);
        self.wait_ready().await;
    }

    /// `edge upgrade` with this edge's settings: its output, whether it
    /// succeeded or not.
    pub fn upgrade(&self) -> std::process::Output {
        Command::new(bin("edge"))
            .arg("upgrade")
            .args(&self.args[1..])
            .output()
            .expect("run edge upgrade")
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::metrics::scrape(self.admin).await
    }
}

fn spawn_edge(program: &Path, args: &[String], log: &Path) -> Proc {
    let mut cmd = Command::new(program);
    cmd.args(args).env(
        "EDGE_LOG",
        std::env::var("TEST_EDGE_LOG").unwrap_or("info".into()),
    );
    // Append: a restarted edge keeps the earlier lines.
    let prior = std::fs::read_to_string(log).unwrap_or_default();
    let proc = Proc::spawn("edge", cmd, log);
    if !prior.is_empty() {
        let _ = std::fs::write(log.with_extension("previous.log"), prior);
    }
    proc
}

/// A running connector.
pub struct Connector {
    /// The process.
    pub proc: Proc,
    /// Admin address.
    pub admin: SocketAddr,
}

impl Connector {
    /// Starts a connector in quick mode on host `n`'s admin port; does not
    /// wait for readiness (a test may expect it never to register).
    #[allow(clippy::too_many_arguments)] // each is a different knob of the command line
    pub fn start(
        work: &Workdir,
        pki: &Pki,
        net: &TestNet,
        n: u8,
        edges: &[SocketAddr],
        token_file: &Path,
        url: &str,
        extra: &[&str],
    ) -> Self {
        let admin = net.addr(n, ADMIN_PORT);
        let mut cmd = Command::new(bin("connector"));
        cmd.arg("run");
        for e in edges {
            cmd.args(["--edge", &e.to_string()]);
        }
        cmd.arg("--token-file")
            .arg(token_file)
            .arg("--ca-cert")
            .arg(pki.ca())
            .args(["--edge-server-name", EDGE_NAME])
            .args(["--url", url, "--admin", &admin.to_string()])
            .args(extra)
            .env(
                "CONNECTOR_LOG",
                std::env::var("TEST_CONNECTOR_LOG").unwrap_or("info".into()),
            )
            .env_remove("CONNECTOR_TOKEN");
        let proc = Proc::spawn("connector", cmd, &work.join(&format!("connector-{n}.log")));
        Self { proc, admin }
    }

    /// Waits for `/ready` (at least one registered connection).
    pub async fn wait_ready(&self) {
        let admin = self.admin;
        eventually("connector /ready", Duration::from_secs(20), || async move {
            crate::http::ready(admin).await.then_some(())
        })
        .await;
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::metrics::scrape(self.admin).await
    }
}

/// The smallest real tunnel: certificates from `edge dev-cert`, one tunnel
/// for `hostnames`, an edge on host 1 of `net` and a registered connector on
/// host 2 that serves `origin_url`.
pub async fn single_tunnel(
    work: &Workdir,
    net: &TestNet,
    hostnames: &[&str],
    origin_url: &str,
) -> (Pki, Edge, Connector) {
    single_tunnel_with(work, net, hostnames, origin_url, &bin("edge"), &[]).await
}

/// [`single_tunnel`] with the edge started from `edge_program` with
/// `edge_extra` flags.
pub async fn single_tunnel_with(
    work: &Workdir,
    net: &TestNet,
    hostnames: &[&str],
    origin_url: &str,
    edge_program: &Path,
    edge_extra: &[&str],
) -> (Pki, Edge, Connector) {
    let pki = Pki::new(work);
    let token = work.join("token");
    pki.create_tunnel(hostnames, &token);
    let edge = Edge::start_program(edge_program, work, &pki, net, 1, edge_extra).await;
    let connector = Connector::start(work, &pki, net, 2, &[edge.tunnel], &token, origin_url, &[]);
    connector.wait_ready().await;
    (pki, edge, connector)
}
