//! Rollouts begun directly in a store, as `rollout apply` begins them, for
//! tests of the controller's API and CLI that need no fleet.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rollout::store::{RolloutId, Store};

use crate::proc::{Proc, eventually};

/// A one-cohort edge spec of `version`, with `extra` YAML appended (say, a
/// `rollback:` section).
pub fn edge_spec(version: &str, extra: &str) -> String {
    format!(
        "component: edge\nversion: {version}\nartifact:\n  url: salt://releases/edge/{version}/edge.tar.gz\n  sha256: {}\n\
         cohorts:\n  - name: all\n    target: G@role:edge\n{extra}",
        "a".repeat(64)
    )
}

/// Begins a rollout of `spec_yaml` over an empty inventory in the store at
/// `database`; returns its id. The rollout is `running`.
pub async fn begin(database: &str, spec_yaml: &str) -> RolloutId {
    let spec = rollout::spec::Spec::from_yaml(spec_yaml).expect("a valid spec");
    let inventory = rollout::inventory::Inventory::new(vec![]).expect("an empty inventory");
    let plan = rollout::plan::Plan::build(&spec, &inventory, &BTreeMap::new());
    let store = Store::connect(database).await.expect("open the store");
    let id = store.begin_rollout(&spec, &plan).await.expect("begin");
    store.close().await;
    id
}

/// The address a `rollout serve` process logged once it was listening
/// (it is started with `--listen 127.0.0.1:0`).
pub async fn serve_address(serve: &mut Proc) -> SocketAddr {
    eventually("rollout serve to listen", Duration::from_secs(60), || {
        assert!(serve.running(), "rollout serve exited:\n{}", serve.log());
        let log = serve.log();
        let addr = log
            .lines()
            .find(|l| l.contains("API listening"))
            .and_then(|l| l.split_once("listen="))
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok());
        async move { addr }
    })
    .await
}
