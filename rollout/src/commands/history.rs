//! `rollout history [ID]`: every rollout in the store, one line each, or
//! every journal step of one.

use std::process::ExitCode;

use rollout::cli::{Connect, HistoryArgs};
use rollout::store::{RolloutId, Store};

use super::shared::{fail, open_store};

pub async fn run(connect: Connect, args: HistoryArgs) -> ExitCode {
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
            for r in all {
                println!("{}  {}  {}", r.id, r.describe(), r.state);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

async fn steps(store: &Store, id: &RolloutId) -> ExitCode {
    match store.history(id).await {
        Ok(steps) => {
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
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}
