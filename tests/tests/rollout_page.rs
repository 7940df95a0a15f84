//! The controller's live page in a real headless Chromium, without a fleet:
//! `rollout serve` (with an API token, reads closed) over a SQLite store that
//! holds a rollout begun through the library. The page shows the rollout's
//! stage and hosts, follows journal steps appended to the store without a
//! reload, and its Pause button (with the token it asks for) pauses the
//! rollout. A screenshot is kept in the test's artifacts folder.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rollout::inventory::{Host, Inventory};
use rollout::plan::Plan;
use rollout::spec::Spec;
use rollout::store::{Event, RolloutId, RolloutState, Store};
use serde_json::json;
use tests::bins::bin;
use tests::chromium::Browser;
use tests::net::random_u32;
use tests::proc::{Proc, eventually};
use tests::workdir::{Workdir, artifacts};

const HOSTS: [&str; 2] = ["edge-ams-1", "edge-ams-2"];

/// Edge v2 over one cohort of two hosts on v1, one host per batch, with an
/// error-ratio gate.
fn spec_and_plan() -> (Spec, Plan) {
    let spec = Spec::from_yaml(&format!(
        "component: edge\nversion: v2\nartifact:\n  url: salt://releases/edge/v2/edge.tar.gz\n  sha256: {}\n\
         cohorts:\n  - name: canary\n    target: G@cohort:canary\n    batch: 1\n    bake: 5m\n\
         gates:\n  - name: error-ratio\n    query: sum(rate(edge_requests_total[2m]))\n    condition: \"< 0.01\"\n    interval: 1m\n    count: 5\n",
        "a".repeat(64)
    ))
    .expect("a valid spec");
    let hosts = HOSTS
        .iter()
        .map(|id| Host {
            id: id.to_string(),
            datacenter: "ams".into(),
            cohort: "canary".into(),
            role: "edge".into(),
            version: Some("v1".into()),
            reachable: true,
        })
        .collect();
    let inventory = Inventory::new(hosts).expect("an inventory");
    let matches = BTreeMap::from([(
        "canary".to_string(),
        HOSTS.iter().map(|h| h.to_string()).collect(),
    )]);
    let plan = Plan::build(&spec, &inventory, &matches);
    assert!(plan.executable(), "{:?}", plan.problems);
    (spec, plan)
}

/// What the engine journals when it moves `host` (batch `batch` of stage 0)
/// to v2 and sees it live: `assign`, then `confirmed`.
async fn move_host(store: &Store, id: &RolloutId, host: &str, batch: usize) {
    let release = json!({"version": "v2", "source": "salt://releases/edge/v2/edge.tar.gz", "sha256": "a".repeat(64)});
    let assign = json!({"at": {"stage": 0, "batch": batch}, "component": "edge", "release": release, "previous": null});
    store
        .journal(id, &Event::new("assign", assign).on_host(host))
        .await
        .expect("journal assign");
    let confirmed = json!({"stage": 0, "hosts": [host], "version": "v2"});
    store
        .journal(id, &Event::new("confirmed", confirmed))
        .await
        .expect("journal confirmed");
}

/// A gate measurement, as the engine journals it during a bake.
async fn measure(store: &Store, id: &RolloutId, value: f64) {
    let detail = json!({"stage": 0, "gate": "error-ratio", "value": value, "outcome": "successful",
        "phase": "running", "condition": "< 0.01"});
    store
        .journal(id, &Event::new("gate", detail))
        .await
        .expect("journal gate");
}

fn spawn_serve(work: &Workdir, database: &str, token_file: &Path) -> Proc {
    let mut cmd = Command::new(bin("rollout"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--database", database])
        .arg("--api-token-file")
        .arg(token_file);
    for var in [
        "WARREN_WEBHOOK_TOKEN_FILE",
        "WARREN_API_TOKEN_FILE",
        "ROLLOUT_DATABASE",
        "ROLLOUT_CONFIG",
        "ROLLOUT_LOG",
        "SALT_API_URL",
    ] {
        cmd.env_remove(var);
    }
    Proc::spawn("serve", cmd, &work.join("serve.log"))
}

/// The host's attribute on the page, as JavaScript.
fn host_attr(host: &str, attr: &str) -> String {
    format!("document.querySelector('[data-host=\"{host}\"]')?.dataset.{attr}")
}

#[tokio::test]
async fn the_page_shows_a_rollout_follows_it_live_and_pauses_it() {
    let work = Workdir::new("rollout_page");
    let database = format!("sqlite://{}?mode=rwc", work.join("r.db").display());
    let store = Store::connect(&database).await.expect("open the store");
    let (spec, plan) = spec_and_plan();
    let id = store.begin_rollout(&spec, &plan).await.expect("begin");
    // The first host is already on v2 and baking when the page opens.
    move_host(&store, &id, HOSTS[0], 0).await;
    measure(&store, &id, 0.002).await;

    let token = format!("page-{:08x}{:08x}", random_u32(), random_u32());
    let token_file = work.join("api.token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the token file");
    let mut serve = spawn_serve(&work, &database, &token_file);
    let addr = tests::rollouts::serve_address(&mut serve).await;

    let mut browser = Browser::launch(work.path());
    // Reads are closed: the page asks for the token (once) and keeps it.
    browser.answer_prompts(&token);
    browser.goto(&format!("http://{addr}/"));
    let wait = Duration::from_secs(20);
    browser
        .wait_for("document.body.dataset.live === '1'", wait)
        .expect("the page opens the event stream");
    let listed = format!("document.querySelector('nav [data-rollout=\"{id}\"]') !== null");
    browser
        .wait_for(&listed, wait)
        .expect("the rollout is listed");
    browser
        .wait_for(
            "document.querySelectorAll('[data-stage]').length === 1",
            wait,
        )
        .expect("the page shows the rollout's one stage");
    assert_eq!(browser.eval(&host_attr(HOSTS[0], "version")), "v2");
    assert_eq!(browser.eval(&host_attr(HOSTS[0], "state")), "baking");
    assert_eq!(browser.eval(&host_attr(HOSTS[1], "version")), "v1");
    assert_eq!(browser.eval(&host_attr(HOSTS[1], "state")), "pending");

    // Salt moves the second host: the page follows without a reload (a mark
    // left on `window` survives only if the document is the same).
    browser.eval("window.notReloaded = true");
    store.finish_batch(&id, 0, 0).await.expect("finish batch 0");
    move_host(&store, &id, HOSTS[1], 1).await;
    measure(&store, &id, 0.004).await;
    browser
        .wait_for(
            &format!("{} === 'v2'", host_attr(HOSTS[1], "version")),
            wait,
        )
        .expect("the second host's version changes on the page");
    assert_eq!(browser.eval(&host_attr(HOSTS[0], "state")), "done");
    assert_eq!(browser.eval(&host_attr(HOSTS[1], "state")), "baking");
    assert_eq!(browser.eval("window.notReloaded === true"), true);
    browser
        .wait_for(
            "document.querySelectorAll('[data-gate=\"error-ratio\"] circle').length === 2",
            wait,
        )
        .expect("the gate's chart shows both measurements");

    // Pause, with the token the button asks for.
    browser.eval("document.querySelector('[data-action=\"pause\"]').click()");
    eventually("the store to say paused", wait, || {
        let store = store.clone();
        let id = id.clone();
        async move {
            let state = store
                .get(&id)
                .await
                .expect("read the rollout")
                .summary
                .state;
            (state == RolloutState::Paused).then_some(())
        }
    })
    .await;
    browser
        .wait_for(
            &format!(
                "document.querySelector('h2[data-rollout=\"{id}\"]')?.dataset.state === 'paused'"
            ),
            wait,
        )
        .expect("the page shows the rollout paused");
    assert_eq!(
        browser.eval("document.getElementById('error').hidden"),
        true
    );

    let png = artifacts("rollout_page").join("page.png");
    browser.screenshot(&png);
    let bytes = std::fs::read(&png).expect("read the screenshot");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        bytes.len() > 10_000,
        "a {} byte screenshot is blank",
        bytes.len()
    );
    eprintln!("screenshot: {}", png.display());

    drop(browser);
    assert!(!serve.log().contains(&token), "the token is in serve's log");
    serve.kill();
    store.close().await;
}
