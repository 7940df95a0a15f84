//! `rollout status [ID]`: one status line of a rollout (the newest without
//! ID), or with --watch every new journal step until it ends, exiting as its
//! `apply` does. Through the controller service's API with `--server`.

use std::process::ExitCode;

use rollout::cli::{Connect, Output, StatusArgs};
use rollout::status::{self, Source};

use super::remote;
use super::shared::{fail, open_store, pick};

pub async fn run(connect: Connect, args: StatusArgs) -> ExitCode {
    let format = match args.output {
        Output::Table => status::Format::Table,
        Output::Json => status::Format::Json,
    };
    let client = match remote::client(&connect) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let store;
    let (source, id) = match &client {
        Some(client) => match remote::pick(client, args.id).await {
            Ok(id) => (Source::Api(client), id),
            Err(code) => return code,
        },
        None => {
            store = match open_store(&connect).await {
                Ok(s) => s,
                Err(code) => return code,
            };
            match pick(&store, args.id).await {
                Ok(id) => (Source::Store(&store), id),
                Err(code) => return code,
            }
        }
    };
    if args.watch {
        let mut print = |line: &str| println!("{line}");
        return match status::watch(&source, &id, format, args.interval, &mut print).await {
            Ok(state) => ExitCode::from(status::exit_code(state)),
            Err(e) => fail(1, &e),
        };
    }
    match status::line(&source, &id, format).await {
        Ok((line, _)) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}
