//! `rollout status` once and `--watch` on a store that another controller
//! changes: the watch prints each new step and state as they happen, keeps
//! watching through a pause, and ends with the rollout, exiting as its
//! `apply` would.

use std::process::Command;
use std::time::Duration;

use rollout::store::{Event, RolloutState, Store};
use serde_json::json;
use tests::bins::bin;
use tests::proc::{Proc, eventually};
use tests::workdir::Workdir;

fn status(database: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("rollout"));
    cmd.arg("status")
        .args(args)
        .args(["--database", database])
        .env_remove("ROLLOUT_CONFIG");
    cmd
}

async fn wait_for(watch: &mut Proc, needle: &str) {
    eventually(
        &format!("`{needle}` from the watch"),
        Duration::from_secs(60),
        || {
            let log = watch.log();
            let running = watch.running();
            async move {
                if log.contains(needle) {
                    return Some(());
                }
                assert!(running, "the watch ended early:\n{log}");
                None
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_follows_a_rollout_to_its_end() {
    let work = Workdir::new("rollout-status");
    let database = format!("sqlite://{}?mode=rwc", work.join("rollout.db").display());
    let id = tests::rollouts::begin(&database, &tests::rollouts::edge_spec("v3", "")).await;

    let out = status(&database, &[]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains(id.as_str()) && text.contains("edge v3") && text.contains("running"),
        "{text}"
    );

    let mut watch = Proc::spawn(
        "rollout status --watch",
        status(&database, &[id.as_str(), "--watch", "--interval", "100ms"]),
        &work.join("watch.log"),
    );
    wait_for(&mut watch, "running").await;
    wait_for(&mut watch, "begin").await;

    // Another controller pauses the rollout: the watch says so and goes on.
    let store = Store::connect(&database).await.unwrap();
    store
        .journal(
            &id,
            &Event::new("paused", json!({"reason": "gate p99 is inconclusive"})),
        )
        .await
        .unwrap();
    store.set_state(&id, RolloutState::Paused).await.unwrap();
    wait_for(&mut watch, "gate p99 is inconclusive").await;
    wait_for(&mut watch, "paused  0/0").await;
    assert!(watch.running(), "a paused rollout is still watched");

    // It is rolled back: the watch prints the end and exits 2, as apply.
    store
        .journal(
            &id,
            &Event::new("rolled_back", json!({"reason": "aborted: by a person"})),
        )
        .await
        .unwrap();
    store
        .set_state(&id, RolloutState::RolledBack)
        .await
        .unwrap();
    let exit = watch
        .wait_exit(Duration::from_secs(30))
        .expect("the watch ends with the rollout");
    let log = watch.log();
    assert_eq!(exit.code(), Some(2), "{log}");
    let order: Vec<usize> = ["begin", "paused", "rolled_back", "rolled_back  0/0"]
        .iter()
        .map(|needle| {
            log.find(needle)
                .unwrap_or_else(|| panic!("no `{needle}` in:\n{log}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order:\n{log}"
    );

    // An unknown id is an error naming it.
    let out = status(&database, &["r-nope", "--watch"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("r-nope"),
        "{out:?}"
    );
}
