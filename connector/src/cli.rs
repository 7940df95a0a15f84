//! The `connector` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::RunArgs;

/// Warren connector: dials out to edges, keeps HA tunnel connections, and
/// forwards each proxied request to a local origin by ingress rules. The
/// origin needs no inbound port.
#[derive(Debug, Parser)]
#[command(name = "connector", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `connector` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run until SIGTERM, then drain.
    ///
    /// Either `--config FILE` (YAML with edges, token_file, ca_cert and
    /// ingress rules) or quick mode: `--edge ADDR --token-file FILE
    /// --ca-cert FILE --url URL`, where URL may be a TCP service such as
    /// `ssh://127.0.0.1:22`.
    ///
    /// The config file is re-read on SIGHUP and when it changes: ingress
    /// rules and origin options apply to new requests at once, an invalid
    /// file is refused (logged, counted) and the running config stays.
    /// SIGTERM unregisters every tunnel connection (the edges send new
    /// requests to other replicas of the tunnel), lets the requests in
    /// flight finish within --grace-period, then exits.
    Run(Box<RunArgs>),
    /// Check and try ingress rules.
    #[command(subcommand)]
    Ingress(IngressCommand),
    /// Reach a TCP service through the edge from this machine: a local
    /// listener (`tcp`) or an SSH ProxyCommand (`ssh`).
    ///
    /// Each connection is a WebSocket to the edge's HTTPS (or plain)
    /// listener for --hostname, carried through the tunnel to the connector
    /// that serves it. The edge's tunnels file must list the hostname in
    /// `tcp_hostnames`. Example: `ssh -o ProxyCommand='connector access ssh
    /// --hostname %h --edge-url https://edge.example.com'
    /// user@ssh.example.com`.
    #[command(subcommand)]
    Access(crate::access::AccessCommand),
}

/// `connector ingress` subcommands.
#[derive(Debug, Subcommand)]
pub enum IngressCommand {
    /// Check the ingress rules of a config file; exits non-zero naming the
    /// first bad rule.
    Validate {
        /// The connector config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the rule (1-based number and service) that a URL matches.
    Rule {
        /// The URL to test, e.g. https://app.example.com/api/v1.
        url: String,
        /// The connector config file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}
