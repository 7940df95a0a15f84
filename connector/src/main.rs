//! `connector`: parse, build, run until a signal, drain.

use std::process::ExitCode;

use clap::Parser;
use connector::access::AccessCommand;
use connector::cli::{Cli, Command, IngressCommand};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let cfg = match args.as_ref().clone().resolve() {
                Ok(cfg) => cfg,
                Err(e) => return fail_config(&e.to_string()),
            };
            daemon::logging::init(cfg.log_format, "CONNECTOR_LOG");
            let release = match daemon::release::current("connector", env!("CARGO_PKG_VERSION")) {
                Ok(r) => r,
                Err(e) => return fail_config(&e.to_string()),
            };
            let runtime = match daemon::runtime::build() {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(connector::run(cfg, *args, release)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("{e:#}")),
            }
        }
        Command::Access(cmd) => access(cmd),
        Command::Ingress(IngressCommand::Validate { config }) => {
            match connector::config::ingress_from_file(&config) {
                Ok(ingress) => {
                    println!("OK: {} ingress rules", ingress.rules().len());
                    ExitCode::SUCCESS
                }
                Err(e) => fail_config(&e.to_string()),
            }
        }
        Command::Ingress(IngressCommand::Rule { url, config }) => {
            let described = connector::config::ingress_from_file(&config)
                .map_err(anyhow::Error::from)
                .and_then(|ingress| connector::describe_match(&ingress, &url));
            match described {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail_config(&format!("{e:#}")),
            }
        }
    }
}

/// `connector access tcp|ssh`: logs on stderr (stdout carries ssh's bytes).
fn access(cmd: AccessCommand) -> ExitCode {
    let (AccessCommand::Tcp { access, .. } | AccessCommand::Ssh { access }) = &cmd;
    let dialer = match connector::access::Dialer::new(access) {
        Ok(d) => d,
        Err(e) => return fail_config(&format!("{e:#}")),
    };
    daemon::logging::init(daemon::logging::LogFormat::Text, "CONNECTOR_LOG");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match daemon::runtime::build() {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let outcome = match cmd {
        AccessCommand::Tcp { listen, .. } => {
            runtime.block_on(connector::access::serve_tcp(dialer, listen))
        }
        AccessCommand::Ssh { .. } => runtime.block_on(connector::access::run_ssh(dialer)),
    };
    // The stdin reader blocks a thread of its own: do not wait for it.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{e:#}")),
    }
}

fn fail_config(msg: &str) -> ExitCode {
    eprintln!("connector: {msg}");
    ExitCode::from(daemon::EXIT_CONFIG as u8)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("connector: {msg}");
    ExitCode::FAILURE
}
