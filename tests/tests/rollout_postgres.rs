//! Several controllers sharing PostgreSQL: the store holds the one-active-
//! rollout lock, and the engine runs a whole rollout on PostgreSQL; then,
//! on the same fleet, two `rollout serve` processes share the runner lease
//! and the standby takes a rollout over when the holder is SIGKILLed in the
//! middle of a bake.

use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rollout::store::RolloutState;
use tests::bins::bin;
use tests::fleet::spec::EdgeSpec;
use tests::fleet::{Fleet, Role};
use tests::postgres::Postgres;
use tests::proc::{Proc, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn controllers_sharing_postgres_run_one_rollout_at_a_time_and_fail_over() {
    let pg = Postgres::start();
    let mut fleet = Fleet::start_with_database("two-controllers", Some(pg.url.clone())).await;
    let v2 = fleet.release("edge", "v2", &[]);
    let spec = fleet.work.join("spec.yaml");
    std::fs::write(
        &spec,
        format!(
            "component: edge\nversion: v2\nartifact: {{url: '{}', sha256: '{}'}}\ncohorts:\n  - {{name: canary, target: 'G@cohort:canary and G@role:edge', batch: 1, bake: 3s}}\n  - {{name: rest, target: 'G@role:edge', batch: 100%, bake: 1s}}\n",
            v2.source, v2.sha256
        ),
    )
    .unwrap();
    let start = || {
        Command::new(bin("rollout"))
            .args(["apply", "-f", spec.to_str().unwrap(), "--yes"])
            .envs(fleet.rollout_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // Two controllers, same database, same component, at the same time.
    let a = start();
    let b = start();
    let outs = tokio::task::spawn_blocking(move || {
        [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()]
    })
    .await
    .unwrap();
    let ok: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let refused: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(ok.len(), 1, "{outs:#?}");
    assert_eq!(refused.len(), 1, "{outs:#?}");
    let err = String::from_utf8_lossy(&refused[0].stderr);
    assert!(err.contains("already active"), "{err}");
    // The winner ran the whole rollout on PostgreSQL.
    let v = fleet.prometheus.versions("edge").await.unwrap();
    assert!(v.values().all(|x| x == "v2"), "{v:?}");

    // Then the controller service fails over.
    lease_holder_killed_in_a_bake(&mut fleet).await;
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Two serve processes on the fleet's PostgreSQL: the fleet's holds the
/// lease. An edge v3 rollout submitted to the standby's API runs in the
/// holder; SIGKILLed in the canary's bake, the holder's lease expires and
/// the standby takes over within the lease's time plus one renewal, resumes
/// from the journal and finishes; Salt's job records show every edge
/// applied exactly once.
async fn lease_holder_killed_in_a_bake(fleet: &mut Fleet) {
    let (mut standby, standby_addr) = fleet.spawn_standby_controller("standby", 105);
    let holder_pid = fleet.controller_pid().expect("the fleet's controller runs");
    let lease = eventually(
        "the fleet's controller holds the lease",
        Duration::from_secs(30),
        || async {
            let l = fleet.store.lease("runner").await.ok()??;
            l.holder.contains(&format!(":{holder_pid}:")).then_some(l)
        },
    )
    .await;
    let ttl = humantime::parse_duration(tests::fleet::LEASE_TTL).unwrap();
    assert!(
        lease.expires_at - lease.renewed_at >= ttl.as_millis() as i64,
        "{lease:?}"
    );
    let before = fleet.salt_applies("edge").await;

    let v3 = fleet.release("edge", "v3", &[]);
    let spec = fleet.work.join("failover-spec.yaml");
    EdgeSpec::new(&v3, "1s")
        .bakes("25s", "1s", "1s")
        .write(&spec);
    let plan = fleet.plan_file(&spec, "failover-plan");
    // The CLI follows through the standby, which lives on.
    let log = fleet.work.join("failover-apply.log");
    let mut cli = Proc::spawn(
        "rollout apply --server (standby)",
        fleet.rollout_via(standby_addr, &["apply", plan.to_str().unwrap(), "--yes"]),
        &log,
    );
    let id = eventually(
        "the rollout is submitted",
        Duration::from_secs(60),
        || async {
            let all = fleet.store.list().await.ok()?;
            all.into_iter()
                .find(|r| r.version == "v3" && r.active)
                .map(|r| r.id)
        },
    )
    .await;
    // In the canary's bake: its version is confirmed.
    eventually("the canary bakes", Duration::from_secs(120), || async {
        let steps = fleet.store.history(&id).await.ok()?;
        steps
            .iter()
            .any(|s| s.event.kind == "confirmed")
            .then_some(())
    })
    .await;
    let last = fleet.store.lease("runner").await.unwrap().unwrap();
    let killed_at = now_ms();
    // SIGKILL (the process group of the holder).
    fleet.stop_controller();
    // Salt's pillar comes from the controller's address: an API-only serve
    // answers there again (it runs nothing and never takes the lease).
    fleet.start_controller_api_only().await;
    let taken = eventually(
        "the standby takes the lease",
        Duration::from_secs(60),
        || async {
            let l = fleet.store.lease("runner").await.ok()??;
            (l.holder != last.holder).then_some(l)
        },
    )
    .await;
    let renewal = ttl.as_millis() as i64 / 3;
    println!(
        "fail-over: holder killed at +0 ms, its lease expired at +{} ms, the standby took it at +{} ms (lease {} ms, renewal {} ms)",
        last.expires_at - killed_at,
        taken.acquired_at - killed_at,
        ttl.as_millis(),
        renewal
    );
    assert!(
        taken.acquired_at >= last.expires_at,
        "taken before the lease expired: {last:?} {taken:?}"
    );
    // Within the expiry plus one renewal interval (and the half-second the
    // worker takes to look again).
    assert!(
        taken.acquired_at <= last.expires_at + renewal + 500,
        "taken too late: {last:?} {taken:?}"
    );
    let status = tokio::task::spawn_blocking(move || cli.wait_exit(Duration::from_secs(240)))
        .await
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "apply --server ends succeeded:\n{text}"
    );
    let rec = fleet.store.get(&id).await.unwrap();
    assert_eq!(rec.summary.state, RolloutState::Succeeded);
    let edges = fleet.ids(Some(Role::Edge));
    fleet.wait_versions("edge", "v3", &edges).await;
    // The journal shows both controllers, the second resuming.
    let steps = fleet.store.history(&id).await.unwrap();
    let runners: Vec<&str> = steps
        .iter()
        .filter(|s| s.event.kind == "runner")
        .filter_map(|s| s.event.detail["holder"].as_str())
        .collect();
    assert!(
        runners.len() >= 2 && runners[0] == last.holder,
        "{runners:?}"
    );
    assert_eq!(runners.last(), Some(&taken.holder.as_str()));
    // Salt's own records: every edge applied exactly once more.
    let after = fleet.salt_applies("edge").await;
    for edge in &edges {
        let n = after.get(edge).copied().unwrap_or(0) - before.get(edge).copied().unwrap_or(0);
        assert_eq!(n, 1, "{edge} applied {n} times: {before:?} -> {after:?}");
    }
    standby.kill();
}
