//! `rollout status [ID]`: one status line of a rollout (the newest without
//! ID), or with --watch every new journal step until it ends, exiting as its
//! `apply` does.

use std::process::ExitCode;

use rollout::cli::{Connect, Output, StatusArgs};
use rollout::status;

use super::shared::{fail, open_store, pick};

pub async fn run(connect: Connect, args: StatusArgs) -> ExitCode {
    let store = match open_store(&connect).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let id = match pick(&store, args.id).await {
        Ok(id) => id,
        Err(code) => return code,
    };
    let format = match args.output {
        Output::Json => status::Format::Json,
        Output::Auto | Output::Tty | Output::Plain => status::Format::Table,
    };
    if args.watch {
        let mut print = |line: &str| println!("{line}");
        return match status::watch(&store, &id, format, args.interval, &mut print).await {
            Ok(state) => ExitCode::from(status::exit_code(state)),
            Err(e) => fail(1, &e.to_string()),
        };
    }
    match status::line(&store, &id, format).await {
        Ok((line, _)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}
