//! `rollout history [ID]`: every rollout in the store, one line each, or
//! every journal step of one.

use std::process::ExitCode;

use rollout::cli::{Connect, HistoryArgs};
use rollout::store::{RolloutId, RolloutSummary, Step, Store};

use super::shared::{fail, open_store};

pub async fn run(connect: Connect, args: HistoryArgs) -> ExitCode {
    match super::remote::client(&connect) {
        Err(code) => return code,
        Ok(Some(client)) => return remote(&client, args.id).await,
        Ok(None) => {}
    }
    let store = match open_store(&connect).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    match args.id {
        None => list(&store).await,
        Some(id) => steps(&store, &RolloutId(id)).await,
    }
}

async fn list(store: &Store) -> ExitCode {
    match store.list().await {
        Ok(all) => {
            print_list(&all);
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

/// The same through the controller service's API.
async fn remote(client: &rollout::client::Client, id: Option<String>) -> ExitCode {
    match id {
        None => match client.list().await {
            Ok(all) => {
                print_list(&all);
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e.to_string()),
        },
        Some(id) => match client.get(&id).await {
            Ok(r) => {
                print_steps(&r.steps);
                ExitCode::SUCCESS
            }
            Err(e) => fail(1, &e.to_string()),
        },
    }
}

fn print_list(all: &[RolloutSummary]) {
    for r in all {
        println!("{}  {}  {}", r.id, r.describe(), r.state);
    }
}

fn print_steps(steps: &[Step]) {
    for s in steps {
        println!(
            "{:>4}  {}  {:<16} {:<14} {}",
            s.seq,
            s.at,
            s.event.kind,
            s.event.host.as_deref().unwrap_or("-"),
            s.event.detail
        );
    }
}

async fn steps(store: &Store, id: &RolloutId) -> ExitCode {
    match store.history(id).await {
        Ok(steps) => {
            print_steps(&steps);
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}
