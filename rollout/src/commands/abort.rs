//! `rollout abort ID`: roll a paused rollout back here; every host it
//! touched returns to its previous release, newest first.

use std::process::ExitCode;

use rollout::cli::{Connect, RunArgs};
use rollout::store::RolloutId;

use super::events::view;
use super::shared::{attach, finish};

pub async fn run(connect: Connect, args: RunArgs) -> ExitCode {
    // Through the service, which runs it from then on.
    match super::remote::client(&connect) {
        Err(code) => return code,
        Ok(Some(client)) => return super::remote::request(&client, &args.id, "abort").await,
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
    finish(&id, engine.abort(&id, "by a person").await)
}
