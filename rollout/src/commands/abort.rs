//! `rollout abort ID`: roll a paused rollout back here; every host it
//! touched returns to its previous release, newest first.

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
    finish(&id, engine.abort(&id, "by a person").await)
}
