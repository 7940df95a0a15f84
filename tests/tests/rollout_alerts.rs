//! A bad release rolled back by a real alert: Prometheus evaluates the
//! repository's rules, Alertmanager routes the page to the controller's
//! webhook (or the controller finds it by polling Alertmanager), and the
//! running `rollout apply` rolls back at once, in the middle of its bake.

use std::process::{Command, Stdio};
use std::time::Duration;

use rollout::store::RolloutId;
use serde_json::{Value, json};
use tests::bins::bin;
use tests::fleet::spec::EdgeSpec;
use tests::fleet::timeline::Timeline;
use tests::fleet::{Fleet, Role};
use tests::grafana::Grafana;

const GRAFANA_TOKEN: &str = "glsa_fleet-test-token";

const SELECTOR: &str = r#"{alertname="EdgeReleaseErrorRatioHigh", version="v2"}"#;

/// How the controller may hear of the alert.
#[derive(PartialEq)]
enum Path {
    /// Only the webhook (`rollout apply` is not given Alertmanager's URL).
    Webhook,
    /// The webhook and the poll of Alertmanager.
    WebhookAndPoll,
}

/// Rolls out an edge v2 that answers half its requests with 500, with a
/// canary bake far longer than any alert takes; returns the rollout id and
/// the apply output. Asserts what a person checks afterwards: apply exits 2
/// naming the alert, only the canary was touched, every edge is on v1.
async fn bad_canary_rolled_back(
    fleet: &Fleet,
    path: Path,
    grafana: &Grafana,
) -> (RolloutId, String) {
    let _traffic = fleet.start_traffic();
    let grafana_token = fleet.work.join("grafana.token");
    std::fs::write(&grafana_token, GRAFANA_TOKEN).unwrap();
    let bad = fleet.release("edge", "v2", &["--fault-http-500-ratio", "0.5"]);
    let spec = fleet.work.join("spec.yaml");
    EdgeSpec::new(&bad, "5m")
        .rollback_alert(SELECTOR)
        .write(&spec);
    let out = Command::new(bin("rollout"))
        .args(["apply", "-f", spec.to_str().unwrap(), "--yes"])
        .envs(
            fleet
                .rollout_env()
                .into_iter()
                .filter(|(k, _)| path == Path::WebhookAndPoll || k != "ALERTMANAGER_URL"),
        )
        .env("GRAFANA_URL", &grafana.url)
        .env("GRAFANA_TOKEN_FILE", &grafana_token)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{text}");
    assert_eq!(
        out.status.code(),
        Some(2),
        "apply ends rolled back (exit 2):\n{text}"
    );
    assert!(
        text.contains("ALERT EdgeReleaseErrorRatioHigh"),
        "apply says which alert stopped it:\n{text}"
    );
    let id = fleet.store.list().await.unwrap()[0].id.clone();
    let steps = fleet.store.history(&id).await.unwrap();

    // Later cohorts are never touched: only the canary was assigned.
    let assigned: Vec<&str> = steps
        .iter()
        .filter(|s| s.event.kind == "assign")
        .filter_map(|s| s.event.host.as_deref())
        .collect();
    assert_eq!(assigned, ["edge-ams-1"], "only the canary is touched");
    let edges = fleet.ids(Some(Role::Edge));
    fleet.wait_versions("edge", "v1", &edges).await;
    for host in &edges {
        let a = fleet.store.assignments_for(host).await.unwrap();
        assert_eq!(
            a[&rollout::spec::Component::Edge].version,
            "v1",
            "{host} is assigned v1 again"
        );
    }

    // The history records the alert's labels and the four moments, and the
    // rollback names the alert.
    let alert = steps
        .iter()
        .find(|s| s.event.kind == "alert")
        .expect("an alert event");
    assert_eq!(
        alert.event.detail["labels"]["alertname"],
        "EdgeReleaseErrorRatioHigh"
    );
    assert_eq!(alert.event.detail["labels"]["version"], "v2");
    let started = steps
        .iter()
        .find(|s| s.event.kind == "rollback_started")
        .expect("rollback_started");
    assert!(
        started.event.detail["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("EdgeReleaseErrorRatioHigh"),
        "{:?}",
        started.event.detail
    );
    assert_eq!(
        started.event.detail["cause"]["alert"]["fingerprint"],
        alert.event.detail["fingerprint"]
    );
    // It did not wait for the bake: no batch finished, and the rollback
    // started long before the 5 minute bake could end.
    assert!(!steps.iter().any(|s| s.event.kind == "batch_done"));
    let t = Timeline::of(fleet, &id, "v2").await;
    println!("timeline:\n{}", t.render());
    let firing = t.alert_firing.expect("startsAt");
    let received = t.alert_received.expect("received");
    let rollback = t.rollback_started.expect("rollback started");
    let done = t.rolled_back.expect("rolled back");
    assert!(firing <= received && received <= rollback && rollback <= done);
    if let Some(s) = t.bad_sample_to_rolled_back() {
        println!("first bad sample to the end of the rollback: {s:.1} s (aim: under 20 s)");
    }
    (id, text)
}

async fn post_webhook(fleet: &Fleet, body: &Value, token: Option<&str>) -> (u16, String) {
    let mut req = tests::http::plain_client()
        .post(format!(
            "http://{}/v1/alerts/alertmanager",
            fleet.controller
        ))
        .json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bad_canary_is_rolled_back_by_an_alert_through_the_webhook() {
    let fleet = Fleet::start("alert-webhook").await;
    let grafana = Grafana::start(fleet.net.addr(104, 3000)).await;
    let (id, _) = bad_canary_rolled_back(&fleet, Path::Webhook, &grafana).await;

    // Grafana got the canary stage and the rollback as regions, each
    // closed with its end time, with the token and the rollout's tags.
    let requests = grafana.requests();
    let region = |text: &str| {
        let (n, open) = requests
            .iter()
            .enumerate()
            .find(|(_, r)| {
                r.method == "POST" && r.body["text"].as_str().is_some_and(|t| t.contains(text))
            })
            .unwrap_or_else(|| panic!("no annotation `{text}`: {requests:#?}"));
        let close = requests
            .iter()
            .find(|r| r.method == "PATCH" && r.path == format!("/api/annotations/{}", n + 1))
            .unwrap_or_else(|| panic!("region `{text}` never closed: {requests:#?}"));
        let (start, end) = (
            open.body["time"].as_i64().unwrap(),
            close.body["timeEnd"].as_i64().unwrap(),
        );
        assert!(
            end >= start && start > 1_600_000_000_000,
            "epoch ms: {start} .. {end}"
        );
        let tags: Vec<&str> = open.body["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            tags.contains(&"rollout") && tags.contains(&id.as_str()),
            "{tags:?}"
        );
    };
    region("stage 1 `canary` started");
    region("rollback:");
    assert!(
        requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some(&format!("Bearer {GRAFANA_TOKEN}")[..])),
        "{requests:#?}"
    );
    let steps = fleet.store.history(&id).await.unwrap();
    let alert = steps.iter().find(|s| s.event.kind == "alert").unwrap();
    assert_eq!(alert.event.detail["source"], "webhook", "{alert:?}");

    // The same alert delivered three more times, as Alertmanager's retries
    // would: answered 200, and still one alert and one rollback.
    let labels = alert.event.detail["labels"].clone();
    let payload = json!({
        "version": "4", "status": "firing", "receiver": "controller",
        "groupKey": "{}:{alertname=\"EdgeReleaseErrorRatioHigh\"}",
        "groupLabels": {}, "commonLabels": labels, "commonAnnotations": {},
        "externalURL": fleet.alertmanager_url, "truncatedAlerts": 0,
        "alerts": [{
            "status": "firing", "labels": labels, "annotations": {},
            "startsAt": alert.event.detail["starts_at"], "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "", "fingerprint": alert.event.detail["fingerprint"],
        }],
    });
    let token = std::fs::read_to_string(&fleet.webhook_token).unwrap();
    for _ in 0..3 {
        let (status, body) = post_webhook(&fleet, &payload, Some(token.trim())).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = post_webhook(&fleet, &payload, None).await;
    assert_eq!(status, 401);
    let after = fleet.store.history(&id).await.unwrap();
    let count = |kind: &str| after.iter().filter(|s| s.event.kind == kind).count();
    assert_eq!(count("alert"), 1);
    assert_eq!(count("rollback_started"), 1);
    assert_eq!(count("rolled_back"), 1);

    // The same on the same fleet with the rollout run by the controller
    // service and no CLI process anywhere.
    served_bad_canary_rolled_back(&fleet).await;
}

/// A bad edge v3 submitted to the fleet's `rollout serve` with `apply
/// --server`, whose CLI is killed at once: the webhook's alert rolls it
/// back inside the service, and the journal shows the same timeline as a
/// rollout `apply` runs.
async fn served_bad_canary_rolled_back(fleet: &Fleet) {
    let _traffic = fleet.start_traffic();
    let bad = fleet.release("edge", "v3", &["--fault-http-500-ratio", "0.5"]);
    let spec = fleet.work.join("served-spec.yaml");
    EdgeSpec::new(&bad, "5m")
        .rollback_alert(r#"{alertname="EdgeReleaseErrorRatioHigh", version="v3"}"#)
        .write(&spec);
    let plan = fleet.plan_file(&spec, "served-plan");
    let log = fleet.work.join("served-apply.log");
    let mut cli = tests::proc::Proc::spawn(
        "rollout apply --server",
        fleet.rollout_via_controller(&["apply", plan.to_str().unwrap(), "--yes"]),
        &log,
    );
    let text = tests::proc::eventually("the plan is submitted", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("submitted to the controller").then_some(text) }
    })
    .await;
    cli.kill();
    let id = RolloutId(
        text.split("rollout: ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .expect("the rollout id")
            .to_string(),
    );
    let end = tests::proc::eventually(
        "the service ends the rollout",
        Duration::from_secs(240),
        || async {
            let rec = fleet.store.get(&id).await.ok()?;
            (!rec.summary.state.is_active()).then_some(rec.summary)
        },
    )
    .await;
    assert_eq!(end.state.as_str(), "rolled_back", "{end:?}");
    assert_eq!(end.runner.as_str(), "serve");
    let steps = fleet.store.history(&id).await.unwrap();
    let kinds: Vec<&str> = steps.iter().map(|s| s.event.kind.as_str()).collect();
    assert!(kinds.contains(&"runner"), "the service ran it: {kinds:?}");
    let alert = steps
        .iter()
        .find(|s| s.event.kind == "alert")
        .expect("an alert");
    assert_eq!(alert.event.detail["source"], "webhook", "{alert:?}");
    assert_eq!(alert.event.detail["labels"]["version"], "v3");
    let assigned: Vec<&str> = steps
        .iter()
        .filter(|s| s.event.kind == "assign")
        .filter_map(|s| s.event.host.as_deref())
        .collect();
    assert_eq!(assigned, ["edge-ams-1"], "only the canary is touched");
    assert!(
        !kinds.contains(&"batch_done"),
        "it did not wait for the bake"
    );
    let edges = fleet.ids(Some(Role::Edge));
    fleet.wait_versions("edge", "v1", &edges).await;
    let t = Timeline::of(fleet, &id, "v3").await;
    println!("timeline of the served rollout:\n{}", t.render());
    let firing = t.alert_firing.expect("startsAt");
    let received = t.alert_received.expect("received");
    let rollback = t.rollback_started.expect("rollback started");
    let done = t.rolled_back.expect("rolled back");
    assert!(firing <= received && received <= rollback && rollback <= done);
    // `rollout status` through the API shows the end.
    let out = fleet
        .rollout_via_controller(&["status", id.as_str()])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("rolled_back"), "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_webhook_unreachable_the_poll_of_alertmanager_rolls_back() {
    let fleet = Fleet::start("alert-poll").await;
    fleet.cut_alert_webhook().await;
    // Grafana is down too: the rollout does not wait for it.
    let grafana = Grafana::start_down(fleet.net.addr(104, 3000)).await;
    let (id, text) = bad_canary_rolled_back(&fleet, Path::WebhookAndPoll, &grafana).await;
    assert!(
        text.contains("annotation(s) could not be written"),
        "the failed annotations are reported:\n{text}"
    );
    assert!(!grafana.requests().is_empty());
    let steps = fleet.store.history(&id).await.unwrap();
    let alert = steps.iter().find(|s| s.event.kind == "alert").unwrap();
    assert_eq!(alert.event.detail["source"], "poll", "{alert:?}");
    assert!(text.contains("received by poll"), "{text}");
    // Alertmanager did try the webhook and failed: it was really cut (its
    // notification is still being retried, so count the failed requests).
    let metrics = tests::http::plain_client()
        .get(format!("{}/metrics", fleet.alertmanager_url))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("alertmanager_notification_requests_failed_total{")
                && l.contains("webhook")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        failed >= 1.0,
        "Alertmanager never failed to reach the webhook:\n{metrics}"
    );
}
