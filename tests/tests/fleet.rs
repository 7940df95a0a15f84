//! The local fleet and the project's Salt states, for real: a Salt master
//! with salt-api, a minion per host, supervisord, Prometheus, Alertmanager,
//! and `edge`/`connector` installed by highstate.

use std::collections::BTreeMap;
use std::time::Duration;

use rollout::salt::HostOutcome;
use tests::fleet::{Fleet, Role, service_user};

async fn versions(fleet: &Fleet, component: &str) -> BTreeMap<String, String> {
    fleet
        .prometheus
        .versions(component)
        .await
        .expect("Prometheus answers")
}

async fn hello_through_every_edge(fleet: &Fleet) {
    for edge in fleet.hosts.iter().filter(|h| h.role == Role::Edge) {
        let url = format!(
            "http://{}:{}/hello",
            tests::fleet::APP_HOST,
            edge.public().port()
        );
        let resp = fleet
            .client_via(edge)
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request through {}: {e}", edge.id));
        assert_eq!(resp.status(), 200, "through {}", edge.id);
        assert_eq!(resp.text().await.unwrap(), "hello from origin\n");
    }
}

/// Every edge and connector runs as the unprivileged `warren` (all four
/// uids and gids, no effective capability), and the key and the token they
/// read are readable by root and that group only.
fn services_run_as_the_service_user(fleet: &Fleet) {
    use std::os::unix::fs::MetadataExt;
    let (uid, gid) =
        service_user::ids(service_user::NAME).expect("the states created the user warren");
    assert_ne!(uid, 0);
    for h in &fleet.hosts {
        let pid = fleet
            .service_pid(&h.id)
            .unwrap_or_else(|| panic!("no {} runs on {}", h.role.as_str(), h.id));
        let who = service_user::credentials(pid).expect("the service runs");
        assert_eq!(who.uids, [uid; 4], "{} (pid {pid}): {who:?}", h.id);
        assert_eq!(who.gids, [gid; 4], "{} (pid {pid}): {who:?}", h.id);
        assert_eq!(who.cap_eff, "0000000000000000", "{} (pid {pid})", h.id);
    }
    for (host, file) in [
        ("edge-ams-1", "edge/tls/edge-key.pem"),
        ("conn-ams-1", "connector/token"),
    ] {
        let path = fleet.install_root(host).join(file);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.mode() & 0o777, meta.uid(), meta.gid()),
            (0o640, 0, gid),
            "{}: want mode 640, root:warren",
            path.display()
        );
    }
}

fn failure_text(outcome: &HostOutcome) -> String {
    match outcome {
        HostOutcome::FailedState { failures } => failures.join("\n"),
        other => panic!("expected a failed state, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn salt_states_install_switch_and_protect_releases_on_a_real_fleet() {
    let mut fleet = Fleet::start("salt-states").await;

    // From nothing: v1 everywhere (checked by start), and every edge
    // reaches the origin through the tunnel.
    let edges = fleet.ids(Some(Role::Edge));
    assert_eq!(edges.len(), 6);
    let dcs: std::collections::BTreeSet<_> = fleet
        .hosts
        .iter()
        .filter(|h| h.role == Role::Edge)
        .map(|h| h.datacenter.clone())
        .collect();
    assert_eq!(dcs.len(), 3);
    assert!(versions(&fleet, "edge").await.values().all(|v| v == "v1"));
    hello_through_every_edge(&fleet).await;
    services_run_as_the_service_user(&fleet);

    // v2 on exactly two hosts.
    let v2 = fleet.release("edge", "v2", &[]);
    let two = vec!["edge-ams-2".to_string(), "edge-fra-1".to_string()];
    for h in &two {
        fleet.assign(h, &v2).await;
    }
    let report = fleet.apply(&two).await;
    assert_eq!(report.hosts.keys().cloned().collect::<Vec<_>>(), two);
    assert!(report.failures().is_empty(), "{report:#?}");
    fleet.wait_versions("edge", "v2", &two).await;
    let seen = versions(&fleet, "edge").await;
    for id in &edges {
        let want = if two.contains(id) { "v2" } else { "v1" };
        assert_eq!(seen[id], want, "{id}");
    }

    // A highstate everywhere leaves every host on its assigned version.
    let all = fleet.ids(None);
    let report = fleet.apply(&all).await;
    assert!(report.failures().is_empty(), "{report:#?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = versions(&fleet, "edge").await;
    for id in &edges {
        let want = if two.contains(id) { "v2" } else { "v1" };
        assert_eq!(seen[id], want, "{id} after highstate");
    }
    hello_through_every_edge(&fleet).await;

    // A release whose sha256 does not match fails that host's state with a
    // comment that says why, and the previous release keeps serving.
    let mut v3 = fleet.release("edge", "v3", &[]);
    v3.sha256 = "0".repeat(64);
    fleet.assign("edge-sin-1", &v3).await;
    let report = fleet.apply(&["edge-sin-1".to_string()]).await;
    let text = failure_text(&report.hosts["edge-sin-1"]).to_lowercase();
    assert!(
        text.contains("hash") || text.contains("checksum") || text.contains("sha256"),
        "{text}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(versions(&fleet, "edge").await["edge-sin-1"], "v1");

    // A release that never becomes ready fails the state run, and the host
    // goes back to serving its previous release.
    let v4 = fleet.release("edge", "v4", &["--fault-never-ready"]);
    fleet.assign("edge-sin-2", &v4).await;
    let report = fleet.apply(&["edge-sin-2".to_string()]).await;
    let text = failure_text(&report.hosts["edge-sin-2"]);
    assert!(text.to_lowercase().contains("ready"), "{text}");
    fleet
        .wait_versions("edge", "v1", &["edge-sin-2".to_string()])
        .await;

    // Put the two failed hosts back on v1 for what follows.
    let v1 = fleet.initial["edge"].clone();
    fleet.assign("edge-sin-1", &v1).await;
    fleet.assign("edge-sin-2", &v1).await;

    // With the source of assignments down, a highstate keeps every host on
    // the release it runs: nothing fails, nothing reverts.
    fleet.stop_controller();
    let report = fleet.apply(&all).await;
    assert!(report.failures().is_empty(), "{report:#?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = versions(&fleet, "edge").await;
    for id in &edges {
        let want = if two.contains(id) { "v2" } else { "v1" };
        assert_eq!(seen[id], want, "{id} with the controller down");
    }
    fleet.start_controller().await;
    hello_through_every_edge(&fleet).await;
    // Also after new releases and rollbacks.
    services_run_as_the_service_user(&fleet);

    // Teardown leaves no process of the fleet, checked by pid.
    let pids = fleet.teardown();
    assert!(pids.len() > 20, "only {} fleet pids found", pids.len());
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .map(|s| {
                    !s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(false)
        })
        .collect();
    assert!(alive.is_empty(), "still running after teardown: {alive:?}");
}
