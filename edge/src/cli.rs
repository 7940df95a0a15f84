//! The `edge` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::RunArgs;

/// Warren edge: accepts QUIC tunnel connections from connectors and public
/// HTTP traffic, and routes each request by hostname through a tunnel.
#[derive(Debug, Parser)]
#[command(name = "edge", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `edge` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge until SIGTERM, then drain.
    ///
    /// Settings come from flags, EDGE_* environment variables, or a YAML file
    /// given with --config (flags and variables win over the file).
    Run(Box<RunArgs>),
    /// Replace the running edge's worker with a new one, refusing nothing.
    ///
    /// Asks the supervisor of the edge (`edge run`) whose admin address the
    /// given settings name: it starts a new worker from the binary its
    /// service path names now (so switch the release first), waits until it
    /// is ready, lets it serve, and tells the old worker to drain. Prints
    /// each step; exits non-zero, with the old worker still serving, when
    /// the new one does not come up. Takes the same settings as `edge run`
    /// (use the same --config), and checks them first. SIGHUP to the
    /// supervisor does the same without an answer.
    Upgrade(Box<RunArgs>),
    /// List the running edge's workers: the serving one and any still
    /// draining after an upgrade.
    Workers(Box<RunArgs>),
    /// Manage tunnels in the tunnels file.
    #[command(subcommand)]
    Tunnel(TunnelCommand),
    /// Write a local CA (ca.pem) and an edge certificate and key
    /// (edge.pem, edge-key.pem) signed by it, for local use.
    DevCert {
        /// Folder to write the three files to (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Extra names or IP addresses for the certificate, besides
        /// localhost and 127.0.0.1.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
    },
}

/// `edge tunnel` subcommands.
#[derive(Debug, Subcommand)]
pub enum TunnelCommand {
    /// Create a tunnel and print its token, alone on stdout.
    ///
    /// The tunnels file gets the tunnel's id, hostnames and a SHA-256 hash of
    /// its secret; the secret itself exists only in the printed token. A
    /// running edge picks the new tunnel up without a restart.
    Create {
        /// Hostname routed to the tunnel; exact or `*.` wildcard. Repeatable.
        #[arg(long = "hostname", value_name = "HOST", required = true)]
        hostnames: Vec<String>,
        /// A hostname of this tunnel on which `connector access` may open
        /// TCP connections (exact, or one of its `*.` wildcards).
        /// Repeatable. The hostnames of --tcp-port serve TCP too.
        #[arg(long = "tcp-hostname", value_name = "HOST")]
        tcp_hostnames: Vec<String>,
        /// A public TCP port of this tunnel: the edge listens on it (on
        /// --public-tcp-address) and carries each connection to the
        /// connector rule for HOST (default: the first --hostname). A port
        /// belongs to one tunnel. Repeatable.
        #[arg(long = "tcp-port", value_name = "PORT[=HOST]")]
        tcp_ports: Vec<crate::tunnels::TcpPortArg>,
        /// The tunnels file (created if missing).
        #[arg(long, env = "EDGE_TUNNELS_FILE", value_name = "FILE")]
        tunnels_file: PathBuf,
    },
    /// List the tunnels in the tunnels file.
    List {
        /// The tunnels file.
        #[arg(long, env = "EDGE_TUNNELS_FILE", value_name = "FILE")]
        tunnels_file: PathBuf,
    },
}
