//! The fleet's controller service from a test's side: `rollout` commands
//! through its API, plan files to submit, and Salt's own records of what
//! was applied.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::Fleet;
use crate::bins::bin;

impl Fleet {
    /// `rollout ARGS` through the fleet's controller service (`--server`
    /// with the API token), not the store.
    pub fn rollout_via_controller(&self, args: &[&str]) -> Command {
        self.rollout_via(self.controller, args)
    }

    /// `rollout ARGS` through the controller service at `server`.
    pub fn rollout_via(&self, server: SocketAddr, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("rollout"));
        cmd.args(args)
            .arg("--server")
            .arg(format!("http://{server}"))
            .arg("--token-file")
            .arg(&self.api_token)
            .env_remove("ROLLOUT_DATABASE");
        cmd
    }

    /// `rollout plan -f SPEC -o NAME.json` on the fleet as it is now; the
    /// plan file's path.
    pub fn plan_file(&self, spec: &Path, name: &str) -> PathBuf {
        let plan = self.work.join(&format!("{name}.json"));
        let out = Command::new(bin("rollout"))
            .arg("plan")
            .arg("-f")
            .arg(spec)
            .arg("-o")
            .arg(&plan)
            .envs(self.rollout_env())
            .output()
            .expect("run rollout plan");
        assert!(
            out.status.success(),
            "rollout plan: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        plan
    }

    /// `state.apply COMPONENT` jobs per host, from Salt's own job records.
    /// The controller sends list targets as JSON arrays, never as a
    /// comma-joined string a minion id could smuggle a name into.
    pub async fn salt_applies(&self, component: &str) -> BTreeMap<String, usize> {
        let jobs = self
            .salt
            .call(
                serde_json::json!({"client": "runner", "fun": "jobs.list_jobs", "search_function": "state.apply"}),
                Duration::from_secs(30),
            )
            .await
            .expect("jobs.list_jobs");
        let mut applied = BTreeMap::new();
        for job in jobs.as_object().expect("a map of jobs").values() {
            // Arguments: [component], plus the `queue` keyword argument.
            if job["Arguments"][0] != component {
                continue;
            }
            let hosts = job["Target"].as_array();
            assert!(hosts.is_some(), "a list target, not {}", job["Target"]);
            for host in hosts.into_iter().flatten() {
                *applied
                    .entry(host.as_str().unwrap_or_default().to_string())
                    .or_default() += 1;
            }
        }
        applied
    }
}
