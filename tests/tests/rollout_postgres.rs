//! Several controllers sharing PostgreSQL: the store holds the one-active-
//! rollout lock, and the engine runs a whole rollout on PostgreSQL.

use std::process::{Command, Stdio};

use tests::bins::bin;
use tests::fleet::Fleet;
use tests::postgres::Postgres;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_controllers_sharing_postgres_cannot_run_two_rollouts_of_one_component() {
    let pg = Postgres::start();
    let fleet = Fleet::start_with_database("two-controllers", Some(pg.url.clone())).await;
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
}
