//! The commands through a controller service (`--server URL`): `apply`
//! submits the plan and follows the rollout there, and Ctrl-C only detaches
//! (the rollout goes on in the service); `status`, `history`, `pause`,
//! `resume` and `abort` read and ask through the API.

use std::process::ExitCode;
use std::time::Duration;

use rollout::cli::Connect;
use rollout::client::Client;
use rollout::status::{self, Format, Source};
use rollout::store::RolloutId;

use super::shared::fail;

/// Exit code when Ctrl-C detached from a rollout that goes on.
pub const EXIT_DETACHED: u8 = 130;
/// How often a followed rollout is read.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The client of the configured server, `None` without `--server`.
pub fn client(connect: &Connect) -> Result<Option<Client>, ExitCode> {
    let config = |e: &dyn std::fmt::Display| fail(daemon::EXIT_CONFIG as u8, &e.to_string());
    match connect.server() {
        Err(e) => Err(config(&e)),
        Ok(None) => Ok(None),
        Ok(Some(settings)) => Client::new(&settings).map(Some).map_err(|e| config(&e)),
    }
}

/// Submits a plan file and follows the rollout until it ends or Ctrl-C.
pub async fn submit_and_follow(client: &Client, plan_file: String, format: Format) -> ExitCode {
    let id = match client.submit(plan_file.into_bytes()).await {
        Ok(id) => id,
        Err(e) => return fail(1, &format!("not started: {e}")),
    };
    eprintln!(
        "rollout: {id} submitted to the controller at {}; it runs there (Ctrl-C detaches, the rollout goes on)",
        client.url()
    );
    follow(client, &RolloutId(id), format).await
}

/// Follows a rollout as `status --watch` does; Ctrl-C detaches.
pub async fn follow(client: &Client, id: &RolloutId, format: Format) -> ExitCode {
    let mut print = |line: &str| println!("{line}");
    let source = Source::Api(client);
    let watched = status::watch(&source, id, format, FOLLOW_EVERY, &mut print);
    tokio::select! {
        result = watched => match result {
            Ok(state) => ExitCode::from(status::exit_code(state)),
            Err(e) => fail(1, &e),
        },
        _ = tokio::signal::ctrl_c() => {
            let url = client.url();
            eprintln!(
                "\nrollout: detached; {id} goes on in the controller at {url}. \
                 Follow it with `rollout status {id} --watch --server {url}`, \
                 stop it with `rollout pause {id} --server {url}`"
            );
            ExitCode::from(EXIT_DETACHED)
        }
    }
}

/// `pause`, `resume` or `abort` through the API.
pub async fn request(client: &Client, id: &str, action: &str) -> ExitCode {
    match client.request(id, action).await {
        Ok(summary) => {
            let what = match action {
                "pause" => "paused; it stops at its next step".to_string(),
                "resume" => "running again; the controller service runs it".to_string(),
                _ => "aborting; the controller service puts every touched host back".to_string(),
            };
            println!("{} {what} (state {})", summary.id, summary.state);
            ExitCode::SUCCESS
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

/// The newest rollout's id when none is given.
pub async fn pick(client: &Client, id: Option<String>) -> Result<RolloutId, ExitCode> {
    if let Some(id) = id {
        return Ok(RolloutId(id));
    }
    match client.list().await {
        Ok(all) => all
            .into_iter()
            .next()
            .map(|r| r.id)
            .ok_or_else(|| fail(1, "no rollout yet")),
        Err(e) => Err(fail(1, &e.to_string())),
    }
}
