//! The README's main job: a real local fleet (Salt master and minions,
//! supervisord, Prometheus, Alertmanager, 6 edges in 3 data centers and 2
//! connector replicas), then `rollout plan` and `rollout apply` of edge v2
//! then connector v2 in one rollout, under a steady 200 requests/s over all
//! six edges that must fail nothing, then `rollout status`; then a bad
//! release that a real alert (Prometheus rule, Alertmanager, the
//! controller's webhook) rolls back, with its timeline. Everything is torn
//! down at the end, and the last line is the load's count.

use std::process::Command;
use std::time::{Duration, Instant};

use tests::bins::bin;
use tests::fleet::Fleet;
use tests::fleet::spec::{ComponentsSpec, EdgeSpec};
use tests::fleet::timeline::Timeline;
use tests::load::Load;

/// The good release's gate: the edge dashboard's error-ratio panel, with
/// its red threshold as the condition.
const PANEL_GATE: &str = "  - name: error-ratio
    grafana:
      dashboard: warren-edge
      panel: Error ratio (5xx)
    interval: 2s
    count: 3
    no_data: pass
";

/// The page that rolls the bad release back.
const ALERT: &str = r#"{alertname="EdgeReleaseErrorRatioHigh", version="v3"}"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    println!("== starting a local fleet (Salt, supervisord, Prometheus, Alertmanager; about 30 s)");
    let mut fleet = Fleet::start("demo").await;
    let result = run(&fleet, started).await;
    if result.is_err() {
        // The processes' logs are what tell why.
        fleet.work.keep();
    }
    result
}

/// Everything after the fleet is up.
async fn run(fleet: &Fleet, started: Instant) -> anyhow::Result<()> {
    println!("   salt-api   {}", fleet.salt_url);
    println!("   prometheus {}", fleet.prometheus.url());
    println!("   controller http://{}", fleet.controller);
    let _traffic = fleet.start_traffic();

    println!("\n== building release v2 of the edge and of the connector");
    let v2 = fleet.release("edge", "v2", &[]);
    println!("   {} sha256 {}", v2.source, v2.sha256);
    let connector_v2 = fleet.release("connector", "v2", &[]);
    println!("   {} sha256 {}", connector_v2.source, connector_v2.sha256);
    let spec = fleet.work.join("rollout.yaml");
    ComponentsSpec::new(&v2, &connector_v2, "5s")
        .gates(PANEL_GATE)
        .write(&spec);
    let plan = fleet.work.join("plan.json");
    let rollout = |args: &[&str]| {
        let mut cmd = Command::new(bin("rollout"));
        cmd.args(args).envs(fleet.rollout_env());
        cmd
    };

    println!("\n== rollout plan -f rollout.yaml -o plan.json");
    let status = rollout(&[
        "plan",
        "-f",
        spec.to_str().unwrap_or_default(),
        "-o",
        plan.to_str().unwrap_or_default(),
    ])
    .status()?;
    anyhow::ensure!(status.success(), "rollout plan failed: {status}");

    println!(
        "\n== rollout apply plan.json --yes, under 200 requests/s over all six edges \
         (GETs, 1 MiB uploads, downloads, 6 event streams, 6 WebSocket and 6 TCP sessions)"
    );
    let load = Load::start(fleet.rollout_load(Duration::from_secs(600)));
    let status = rollout(&["apply", plan.to_str().unwrap_or_default(), "--yes"]).status()?;
    let report = load.stop().await;
    anyhow::ensure!(status.success(), "rollout apply failed: {status}");
    println!("\n== the load during the rollout");
    print!("{report}");
    anyhow::ensure!(
        report.is_clean(),
        "requests or sessions failed during the rollout"
    );

    println!("\n== rollout status");
    rollout(&["status"]).status()?;
    let versions = fleet.prometheus.versions("edge").await?;
    println!("\n== edge versions in Prometheus");
    for (host, version) in &versions {
        println!("   {host:<12} {version}");
    }
    anyhow::ensure!(
        versions.values().all(|v| v == "v2"),
        "not every edge is on v2"
    );

    println!("\n== building release v3 of the edge, which answers half its requests with 500");
    let v3 = fleet.release("edge", "v3", &["--fault-http-500-ratio", "0.5"]);
    let bad_spec = fleet.work.join("rollout-v3.yaml");
    EdgeSpec::new(&v3, "5s")
        .bakes("2m", "5s", "5s")
        .rollback_alert(ALERT)
        .write(&bad_spec);
    println!("   rolled back at once when this alert fires: {ALERT}");
    println!(
        "\n== rollout apply -f rollout-v3.yaml --yes (the canary bakes 2 minutes; the alert should not need them)"
    );
    let status = rollout(&[
        "apply",
        "-f",
        bad_spec.to_str().unwrap_or_default(),
        "--yes",
    ])
    .status()?;
    anyhow::ensure!(
        status.code() == Some(2),
        "rollout apply of the bad release should end rolled back (exit 2), got {status}"
    );
    let id = fleet
        .store
        .list()
        .await?
        .into_iter()
        .max_by_key(|r| r.created_at)
        .map(|r| r.id)
        .ok_or_else(|| anyhow::anyhow!("no rollout recorded"))?;
    let timeline = Timeline::of(fleet, &id, "v3").await;
    println!("\n== timeline of rollout {id}");
    print!("{}", timeline.render());
    if let Some(s) = timeline.bad_sample_to_rolled_back() {
        println!("   first bad sample to every host back: {s:.1} s");
    }
    let edges = fleet.ids(Some(tests::fleet::Role::Edge));
    fleet.wait_versions("edge", "v2", &edges).await;
    println!("\n== edge versions in Prometheus");
    for (host, version) in fleet.prometheus.versions("edge").await? {
        println!("   {host:<12} {version}");
    }
    println!(
        "\ndone in {:.0?}; tearing the fleet down",
        started.elapsed()
    );
    // The rollout of both components, as the load saw it.
    println!("{}", report.to_string().lines().next().unwrap_or_default());
    Ok(())
}
