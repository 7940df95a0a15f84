//! `rollout resume ID`: run a paused rollout (or one whose controller was
//! killed) here, from the exact step it stopped at.

use std::process::ExitCode;

use rollout::cli::{Connect, RunArgs};
use rollout::progress::Progress;
use rollout::store::RolloutId;

use super::events::view;
use super::shared::{attach, finish};

pub async fn run(connect: Connect, args: RunArgs) -> ExitCode {
    // Through the service, which runs it from then on.
    match super::remote::client(&connect) {
        Err(code) => return code,
        Ok(Some(client)) => return super::remote::request(&client, &args.id, "resume").await,
        Ok(None) => {}
    }
    let (controller, store) = match attach(connect).await {
        Ok(cs) => cs,
        Err(code) => return code,
    };
    let say = view(args.output);
    let engine = rollout::engine::Engine {
        controller: &controller,
        store: &store,
        progress: &say,
    };
    let id = RolloutId(args.id);
    say(&Progress::Resuming {
        rollout: id.clone(),
    });
    finish(&id, engine.run(&id).await)
}
