//! The controller as a service on the real local fleet (one fleet, three
//! scenarios in order, each starting from where the last left the fleet):
//!
//! 1. A plan submitted with `rollout apply --server`, whose CLI is then
//!    SIGKILLed: the fleet's `rollout serve` runs it to the end, and
//!    `rollout status --server` shows it succeeded. Meanwhile the live page
//!    in a real headless Chromium shows its stages and hosts, and a host's
//!    version changes on the page without a reload when Salt moves it.
//! 2. Pause, resume and abort through the API: each without a token, with a
//!    wrong one or with a prefix of it is 401 and changes nothing. With the
//!    token, the page's Pause button (it asks for the token) pauses the
//!    rollout (a screenshot is kept as an artifact), `rollout resume
//!    --server` goes on, and an abort through the API in the canary's bake
//!    puts the canary back.
//! 3. `rollout apply` in a pseudo-terminal draws the live progress display;
//!    `--output json` prints one JSON object per line.

use std::process::Command;
use std::time::Duration;

use rollout::store::{RolloutId, RolloutState};
use serde_json::Value;
use tests::bins::bin;
use tests::chromium::Browser;
use tests::fleet::spec::EdgeSpec;
use tests::fleet::{Fleet, Role};
use tests::proc::{Proc, eventually};
use tests::workdir::artifacts;

/// A plan file of `spec` made now.
fn plan_file(fleet: &Fleet, spec: &EdgeSpec, name: &str) -> std::path::PathBuf {
    let path = fleet.work.join(&format!("{name}.yaml"));
    spec.write(&path);
    fleet.plan_file(&path, name)
}

/// The active rollout of `version`, once it exists.
async fn active(fleet: &Fleet, version: &str) -> RolloutId {
    eventually(
        "the rollout is submitted",
        Duration::from_secs(60),
        || async {
            let all = fleet.store.list().await.ok()?;
            all.into_iter()
                .find(|r| r.version == version && r.active)
                .map(|r| r.id)
        },
    )
    .await
}

async fn state(fleet: &Fleet, id: &RolloutId) -> RolloutState {
    fleet.store.get(id).await.unwrap().summary.state
}

async fn wait_state(fleet: &Fleet, id: &RolloutId, want: RolloutState, limit: Duration) {
    eventually(&format!("rollout {id} is {want}"), limit, || async {
        (state(fleet, id).await == want).then_some(())
    })
    .await;
}

fn api_token(fleet: &Fleet) -> String {
    std::fs::read_to_string(&fleet.api_token)
        .unwrap()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_controller_service_runs_rollouts_with_nobody_attached() {
    let fleet = Fleet::start("service").await;
    let _traffic = fleet.start_traffic();
    let token = api_token(&fleet);
    let browser = submitted_then_cli_killed_with_the_page(&fleet, &token).await;
    api_changes_need_the_token(&fleet, &token, browser).await;
    progress_on_a_terminal(&fleet).await;
}

/// Scenario 1.
async fn submitted_then_cli_killed_with_the_page(fleet: &Fleet, token: &str) -> Browser {
    let v2 = fleet.release("edge", "v2", &[]);
    let plan = plan_file(fleet, &EdgeSpec::new(&v2, "3s"), "v2");
    let log = fleet.work.join("apply-v2.log");
    let mut cli = Proc::spawn(
        "rollout apply --server",
        fleet.rollout_via_controller(&["apply", plan.to_str().unwrap(), "--yes"]),
        &log,
    );
    let id = active(fleet, "v2").await;
    eventually("apply follows the rollout", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("submitted to the controller").then_some(()) }
    })
    .await;
    // The CLI dies; the rollout does not.
    cli.kill();

    let dir = fleet.work.join("chromium");
    std::fs::create_dir_all(&dir).unwrap();
    let mut browser = Browser::launch(&dir);
    browser.answer_prompts(token);
    browser.goto(&format!("http://{}/", fleet.controller));
    let on_page =
        |id: &RolloutId| format!("document.querySelector('[data-rollout=\"{id}\"]') !== null");
    browser
        .wait_for(&on_page(&id), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the page lists the rollout: {e}"));
    // Select it (the page shows the newest by default; a click is what a
    // person does).
    browser.eval(&format!(
        "document.querySelector('[data-rollout=\"{id}\"]').click(), true"
    ));
    browser
        .wait_for(
            "document.querySelectorAll('[data-stage]').length === 3 && document.querySelectorAll('[data-host]').length >= 6",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("the page shows 3 stages and the 6 edges: {e}"));
    // A host Salt moves later (the last stage's) changes on the page
    // without a reload: a marker set on the window now must survive.
    browser.eval("window.__noReload = 1, true");
    let last = "edge-sin-1";
    let host = format!("document.querySelector('[data-host=\"{last}\"]')");
    assert_eq!(browser.eval(&format!("{host}.dataset.version")), "v1");
    browser
        .wait_for(
            &format!("{host} && {host}.dataset.version === 'v2' && window.__noReload === 1"),
            Duration::from_secs(240),
        )
        .unwrap_or_else(|e| panic!("{last} shows v2 without a reload: {e}"));
    wait_state(
        fleet,
        &id,
        RolloutState::Succeeded,
        Duration::from_secs(240),
    )
    .await;
    let out = fleet
        .rollout_via_controller(&["status", id.as_str()])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    let done = line
        .split_whitespace()
        .find(|w| w.contains('/'))
        .and_then(|w| w.split_once('/'));
    assert!(
        line.contains("succeeded") && done.is_some_and(|(n, of)| n == of && n != "0"),
        "{line}"
    );

    let edges = fleet.ids(Some(Role::Edge));
    fleet.wait_versions("edge", "v2", &edges).await;
    browser
}

/// Scenario 2.
async fn api_changes_need_the_token(fleet: &Fleet, token: &str, mut browser: Browser) {
    let v3 = fleet.release("edge", "v3", &[]);
    let plan = plan_file(
        fleet,
        &EdgeSpec::new(&v3, "1s").bakes("5m", "1s", "1s"),
        "v3",
    );
    let http = tests::http::plain_client();
    let base = format!("http://{}", fleet.controller);
    let submit = |bearer: Option<String>| {
        let mut req = http
            .post(format!("{base}/v1/rollouts"))
            .header("content-type", "application/json")
            .body(std::fs::read(&plan).unwrap());
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let wrong = format!("{token}0");
    let prefix = token[..token.len() - 2].to_string();
    let refused = [None, Some(wrong.clone()), Some(prefix.clone())];
    for bearer in refused.clone() {
        let resp = submit(bearer.clone()).await.unwrap();
        assert_eq!(resp.status(), 401, "{bearer:?}");
    }
    assert!(
        fleet
            .store
            .list()
            .await
            .unwrap()
            .iter()
            .all(|r| r.version != "v3")
    );
    let resp = submit(Some(token.to_string())).await.unwrap();
    assert_eq!(resp.status(), 201);
    let v: Value = resp.json().await.unwrap();
    let id = RolloutId(v["id"].as_str().unwrap().to_string());
    // In the canary's bake.
    eventually("the canary bakes", Duration::from_secs(120), || async {
        let steps = fleet.store.history(&id).await.ok()?;
        steps
            .iter()
            .any(|s| s.event.kind == "confirmed")
            .then_some(())
    })
    .await;
    let requests = |steps: &[rollout::store::Step]| {
        steps
            .iter()
            .filter(|s| s.event.kind.ends_with("_requested") || s.event.kind == "resumed")
            .count()
    };
    for action in ["pause", "resume", "abort"] {
        for bearer in refused.clone() {
            let mut req = http.post(format!("{base}/v1/rollouts/{id}/{action}"));
            if let Some(t) = &bearer {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 401, "{action} with {bearer:?}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"].is_string(), "{body}");
        }
        assert_eq!(
            state(fleet, &id).await,
            RolloutState::Running,
            "after a refused {action}"
        );
        assert_eq!(requests(&fleet.store.history(&id).await.unwrap()), 0);
    }
    // With the token: the page's Pause button (the page asks for the token;
    // the prompt is answered with it), resume through the CLI, then abort
    // in the middle of the bake through the API.
    browser.goto(&format!("http://{}/", fleet.controller));
    let row = format!("document.querySelector('[data-rollout=\"{id}\"]')");
    browser
        .wait_for(&format!("{row} !== null"), Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("the page lists the v3 rollout: {e}"));
    browser.eval(&format!("{row}.click(), true"));
    let pause = "document.querySelector('button[data-action=\"pause\"]')";
    browser
        .wait_for(
            &format!("{pause} && !{pause}.disabled"),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("a pause button: {e}"));
    browser.eval(&format!("{pause}.click(), true"));
    wait_state(fleet, &id, RolloutState::Paused, Duration::from_secs(30)).await;
    browser
        .wait_for(
            &format!(
                "document.querySelector('h2[data-rollout=\"{id}\"]')?.dataset.state === 'paused'"
            ),
            Duration::from_secs(30),
        )
        .unwrap_or_else(|e| panic!("the page shows it paused: {e}"));
    let png = artifacts("rollout_service").join("page-paused.png");
    browser.screenshot(&png);
    let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "a {size} byte screenshot");
    println!("screenshot: {}", png.display());
    let steps = fleet.store.history(&id).await.unwrap();
    assert!(
        steps.iter().any(|s| s.event.kind == "pause_requested"),
        "the pause came through the API"
    );
    let out = fleet
        .rollout_via_controller(&["resume", id.as_str()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(state(fleet, &id).await, RolloutState::Running);
    let call = |action: &'static str| {
        http.post(format!("{base}/v1/rollouts/{id}/{action}"))
            .bearer_auth(token)
            .send()
    };
    let resp = call("abort").await.unwrap();
    assert_eq!(resp.status(), 200);
    wait_state(fleet, &id, RolloutState::Aborted, Duration::from_secs(120)).await;
    let steps = fleet.store.history(&id).await.unwrap();
    let assigned: Vec<&str> = steps
        .iter()
        .filter(|s| s.event.kind == "assign")
        .filter_map(|s| s.event.host.as_deref())
        .collect();
    assert_eq!(
        assigned,
        ["edge-ams-1"],
        "the abort came in the canary's bake"
    );
    fleet
        .wait_versions("edge", "v2", &fleet.ids(Some(Role::Edge)))
        .await;
    let resp = call("resume").await.unwrap();
    assert_eq!(resp.status(), 409, "an aborted rollout does not resume");
}

/// Scenario 3.
async fn progress_on_a_terminal(fleet: &Fleet) {
    let spec = |version: &str| {
        let r = fleet.release("connector", version, &[]);
        let path = fleet.work.join(&format!("connector-{version}.yaml"));
        std::fs::write(
            &path,
            format!(
                "component: connector\nversion: {version}\nartifact:\n  url: {}\n  sha256: {}\n\
                 cohorts:\n  - name: all\n    target: G@role:connector\n    batch: 1\n    bake: 3s\n",
                r.source, r.sha256
            ),
        )
        .unwrap();
        path
    };
    // In a pseudo-terminal (util-linux `script`): the live display.
    let v2 = spec("v2");
    let typescript = fleet.work.join("tty.typescript");
    let mut cmd = Command::new("script");
    cmd.args(["-qfec"])
        .arg(format!(
            "{} apply -f {} --yes",
            bin("rollout").display(),
            v2.display()
        ))
        .arg(&typescript)
        .envs(fleet.rollout_env())
        .env("TERM", "xterm-256color")
        .env("COLUMNS", "120");
    let out = cmd.output().unwrap();
    let tty = std::fs::read_to_string(&typescript).unwrap_or_default();
    assert!(out.status.success(), "apply in a pty:\n{tty}");
    tests::tty::assert_live_display(&tty);
    // Piped, `--output json`: every line is a JSON object with an event.
    let v3 = spec("v3");
    let out = Command::new(bin("rollout"))
        .args([
            "apply",
            "-f",
            v3.to_str().unwrap(),
            "--yes",
            "--output",
            "json",
        ])
        .envs(fleet.rollout_env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(events.len() > 5, "{text}");
    assert!(
        events
            .iter()
            .all(|e| e["event"].is_string() && e["at"].is_string()),
        "{text}"
    );
    assert!(!text.contains('\u{1b}'), "no terminal codes in a pipe");
}
