//! The README's main job: a real local fleet (Salt master and minions,
//! supervisord, Prometheus, Alertmanager, 6 edges in 3 data centers and 2
//! connectors), then `rollout plan` and `rollout apply` of a new edge
//! version over three cohorts with live progress, then `rollout status`.
//! Everything is torn down at the end.

use std::process::Command;
use std::time::Instant;

use tests::bins::bin;
use tests::fleet::Fleet;

const SPEC: &str = r#"component: edge
version: {version}
artifact:
  url: {url}
  sha256: {sha}
cohorts:
  - name: canary
    target: G@cohort:canary and G@role:edge
    batch: 1
    bake: 10s
  - name: ams-fra
    target: G@role:edge and ( G@datacenter:ams or G@datacenter:fra )
    batch: 50%
    bake: 5s
  - name: rest
    target: G@role:edge
    batch: 100%
    bake: 5s
gates:
  - name: error-ratio
    grafana:
      dashboard: warren-edge
      panel: Error ratio (5xx)
    interval: 2s
    count: 3
    no_data: pass
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    println!("== starting a local fleet (Salt, supervisord, Prometheus, Alertmanager; about 30 s)");
    let fleet = Fleet::start("demo").await;
    println!("   salt-api   {}", fleet.salt_url);
    println!("   prometheus {}", fleet.prometheus.url());
    println!("   controller http://{}", fleet.controller);
    let _traffic = fleet.start_traffic();

    println!("\n== building release v2 of the edge");
    let v2 = fleet.release("edge", "v2", &[]);
    println!("   {} sha256 {}", v2.source, v2.sha256);
    let spec = fleet.work.join("rollout.yaml");
    std::fs::write(
        &spec,
        SPEC.replace("{version}", &v2.version)
            .replace("{url}", &v2.source)
            .replace("{sha}", &v2.sha256),
    )?;
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

    println!("\n== rollout apply plan.json --yes");
    let status = rollout(&["apply", plan.to_str().unwrap_or_default(), "--yes"]).status()?;
    anyhow::ensure!(status.success(), "rollout apply failed: {status}");

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
    println!(
        "\ndone in {:.0?}; tearing the fleet down",
        started.elapsed()
    );
    Ok(())
}
