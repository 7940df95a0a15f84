//! `rollout pause ID`: mark a running rollout paused in the store; the
//! `apply` running it stops at its next step (and exits 3).

use std::process::ExitCode;

use rollout::cli::{Connect, RolloutArg};
use rollout::store::{RolloutId, RolloutState};

use super::shared::{fail, open_store};

pub async fn run(connect: Connect, args: RolloutArg) -> ExitCode {
    match super::remote::client(&connect) {
        Err(code) => return code,
        Ok(Some(client)) => return super::remote::request(&client, &args.id, "pause").await,
        Ok(None) => {}
    }
    let store = match open_store(&connect).await {
        Ok(s) => s,
        Err(code) => return code,
    };
    let id = RolloutId(args.id);
    match store.get(&id).await {
        Ok(rec) if rec.summary.state == RolloutState::Running => {
            match store.set_state(&id, RolloutState::Paused).await {
                Ok(()) => {
                    println!("{id} paused; its apply stops at the next step");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(1, &e.to_string()),
            }
        }
        Ok(rec) => fail(
            1,
            &format!(
                "{id} is {}; only a running rollout can be paused",
                rec.summary.state
            ),
        ),
        Err(e) => fail(1, &e.to_string()),
    }
}
