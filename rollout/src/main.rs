//! `rollout`: parse, set up logging and the runtime, run the command.

mod commands;

use std::process::ExitCode;

use clap::Parser;
use commands::shared::fail;
use rollout::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    daemon::logging::init(daemon::logging::LogFormat::Text, "ROLLOUT_LOG");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the async runtime: {e}")),
    };
    let connect = cli.connect;
    runtime.block_on(async move {
        match cli.command {
            Command::Validate(args) => commands::validate::run(args),
            Command::Plan(args) => commands::plan::run(connect, args).await,
            Command::Apply(args) => commands::apply::run(connect, args).await,
            Command::Status(args) => commands::status::run(connect, args).await,
            Command::History(args) => commands::history::run(connect, args).await,
            Command::Pause(args) => commands::pause::run(connect, args).await,
            Command::Resume(args) => commands::resume::run(connect, args).await,
            Command::Abort(args) => commands::abort::run(connect, args).await,
            Command::Serve(args) => commands::serve::run(connect, args).await,
        }
    })
}
