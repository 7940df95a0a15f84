//! `edge`: parse, build, run until a signal, drain.

use std::process::ExitCode;

use clap::Parser;
use edge::cli::{Cli, Command, TunnelCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = match args.resolve() {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            daemon::logging::init(cfg.log_format, "EDGE_LOG");
            let release = match daemon::release::current("edge", env!("CARGO_PKG_VERSION")) {
                Ok(r) => r,
                Err(e) => return fail_config(&e.to_string()),
            };
            let runtime = match daemon::runtime::build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(edge::run(cfg, release)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::Tunnel(TunnelCommand::Create {
            hostnames,
            tcp_hostnames,
            tcp_ports,
            tunnels_file,
        }) => match edge::tunnel_create(
            &tunnels_file,
            &edge::tunnels::NewTunnel {
                hostnames,
                tcp_hostnames,
                tcp_ports,
            },
        ) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("{e:#}")),
        },
        Command::Tunnel(TunnelCommand::List { tunnels_file }) => {
            match edge::tunnels::load(&tunnels_file) {
                Ok(file) => {
                    for t in file.tunnels {
                        println!("{}\t{}", t.id, t.hostnames.join(","));
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e.to_string()),
            }
        }
        Command::DevCert { out, sans } => match edge::dev_cert(&out, &sans) {
            Ok(()) => {
                eprintln!(
                    "wrote {0}/ca.pem, {0}/edge.pem and {0}/edge-key.pem",
                    out.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => fail(&format!("{e:#}")),
        },
    }
}

fn fail_config(msg: &str) -> ExitCode {
    eprintln!("edge: {msg}");
    ExitCode::from(daemon::EXIT_CONFIG as u8)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("edge: {msg}");
    ExitCode::FAILURE
}
