//! `edge`: parse, build, run until a signal, drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use edge::cli::{Cli, Command, TunnelCommand};
use edge::sockets::{Broker, SocketSource, WORKER_ENV};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = match args.resolve() {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            daemon::logging::init(cfg.log_format, "EDGE_LOG");
            let worker = std::env::var_os(WORKER_ENV).is_some();
            if !worker && !cfg.single_process {
                let mut argv = std::env::args_os();
                return edge::supervisor::run(edge::supervisor::Options {
                    program: argv.next().unwrap_or_else(|| "edge".into()),
                    args: argv.collect(),
                    admin: cfg.admin,
                    upgrade_timeout: cfg.upgrade_timeout,
                });
            }
            let sockets = if worker {
                // A worker dies with its supervisor: a supervisor killed
                // outright (an OOM kill, a manager's last resort) is
                // restarted by its service manager, and its new workers
                // must find the ports free, not held by a draining orphan.
                let _ = rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::KILL,
                ));
                match Broker::from_stdin() {
                    Ok(b) => SocketSource::Supervised(Arc::new(b)),
                    Err(e) => return fail(&e.to_string()),
                }
            } else {
                SocketSource::Direct
            };
            let release = match daemon::release::current("edge", env!("CARGO_PKG_VERSION")) {
                Ok(r) => r,
                Err(e) => return fail_config(&e.to_string()),
            };
            if release.fault_injection.exit_at_start {
                eprintln!("edge: fault injection: this release exits at start");
                return ExitCode::from(3);
            }
            let runtime = match daemon::runtime::build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(edge::run(cfg, release, sockets)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::Upgrade(args) => {
            let cfg = match args.resolve() {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            // The supervisor's own wait, plus the old worker's stop.
            let limit = cfg.upgrade_timeout + Duration::from_secs(30);
            match edge::supervisor::request_upgrade(cfg.admin, limit) {
                Ok(summary) => {
                    println!("upgraded: {summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&format!("upgrade failed: {e}")),
            }
        }
        Command::Workers(args) => {
            let cfg = match args.resolve() {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            match edge::supervisor::list_workers(cfg.admin) {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(&e),
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
