//! `rollout resume ID`: run a paused rollout (or one whose controller was
//! killed) here, from the exact step it stopped at.

use std::process::ExitCode;

use rollout::cli::{Connect, RolloutArg};
use rollout::store::RolloutId;

use super::shared::{attach, finish, progress_line};

pub async fn run(connect: Connect, args: RolloutArg) -> ExitCode {
    let (controller, store) = match attach(connect).await {
        Ok(cs) => cs,
        Err(code) => return code,
    };
    let engine = rollout::engine::Engine {
        controller: &controller,
        store: &store,
        progress: &progress_line,
    };
    let id = RolloutId(args.id);
    progress_line(&format!("resuming {id}"));
    finish(&id, engine.run(&id).await)
}
