//! The Salt states in `salt/` render with `salt/pillar.example`, for both
//! service managers, and the config files they write are ones the binaries
//! accept. Masterless `salt-call --local` from the cached Salt venv
//! (`scripts/setup` installs it); every call has its own minion config dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tests::bins::workspace;
use tests::workdir::Workdir;

fn salt_call() -> PathBuf {
    let cache = std::env::var_os("WARREN_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/warren")
        });
    let bin = cache.join("salt-venv/bin/salt-call");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup to install Salt",
        bin.display()
    );
    bin
}

/// `salt/pillar.example` as JSON, with its install root moved into `root`.
fn example_pillar(root: &Path, manager: &str, with_release: bool) -> Value {
    let path = workspace().join("salt/pillar.example");
    let text = std::fs::read_to_string(&path).unwrap();
    let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut pillar: Value = serde_json::to_value(yaml).unwrap();
    let warren = pillar["warren"]
        .as_object_mut()
        .expect("warren: in pillar.example");
    warren.insert("root".into(), root.to_string_lossy().into());
    warren.insert("service_manager".into(), manager.into());
    for component in ["edge", "connector"] {
        let c = warren[component].as_object_mut().unwrap();
        assert!(
            c.contains_key("release"),
            "pillar.example has {component}:release"
        );
        if !with_release {
            c.remove("release");
        }
    }
    pillar
}

/// Runs `salt-call --local FUNCTION SLS pillar=...` in a minion dir of its
/// own under `dir`, and returns the `local` part of its JSON output.
fn run_salt(dir: &Path, function: &str, sls: &str, pillar: &Value) -> Result<Value> {
    std::fs::create_dir_all(dir)?;
    let minion = format!(
        "id: salt-render\nfile_client: local\nroot_dir: {dir}\ncachedir: {dir}/cache\n\
         log_file: {dir}/minion.log\nfile_roots:\n  base:\n    - {salt}\n",
        dir = dir.display(),
        salt = workspace().join("salt").display(),
    );
    std::fs::write(dir.join("minion"), minion)?;
    let out = Command::new(salt_call())
        .arg("-c")
        .arg(dir)
        .args([
            "--local",
            "--out=json",
            "--retcode-passthrough",
            "-l",
            "error",
        ])
        .args([function, sls])
        .arg(format!("pillar={pillar}"))
        .output()
        .context("run salt-call")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success(),
        "{function} {sls}: salt-call exited with {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    let json: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("{function} {sls}: output is not JSON: {stdout}"))?;
    let local = json["local"].clone();
    // A render error comes back as a list of strings instead of a dict.
    if !local.is_object() {
        bail!("{function} {sls}: render error: {local}");
    }
    Ok(local)
}

/// The state ids of a `state.show_sls` answer.
fn ids(local: &Value) -> Vec<String> {
    local.as_object().unwrap().keys().cloned().collect()
}

fn show(work: &Workdir, component: &'static str, manager: &'static str) -> Result<()> {
    let name = format!("show-{component}-{manager}");
    let pillar = example_pillar(&work.join(&name).join("host"), manager, true);
    let local = run_salt(&work.join(&name), "state.show_sls", component, &pillar)?;
    let ids = ids(&local);
    let p = format!("warren-{component}");
    let mut expected: Vec<String> = [
        "config", "fetch", "verify", "unpack", "switch", "ready", "version", "rollback", "prune",
    ]
    .iter()
    .map(|s| format!("{p}-{s}"))
    .collect();
    match manager {
        "supervisord" => {
            expected.extend(["program", "update", "restart"].map(|s| format!("{p}-{s}")))
        }
        _ => expected.extend(["unit", "service"].map(|s| format!("{p}-{s}"))),
    }
    for id in &expected {
        ensure!(ids.contains(id), "{name}: no state `{id}` in {ids:?}");
    }
    for (id, state) in local.as_object().unwrap() {
        ensure!(
            state["__sls__"] == component,
            "{name}: state {id} comes from {}",
            state["__sls__"]
        );
    }
    // The secret goes to its file through contents_pillar, never inline.
    let text = local.to_string();
    ensure!(
        !text.contains("wrn1_example_not_a_real_token"),
        "{name}: the token is in the rendered states"
    );
    Ok(())
}

/// Applies a state without a release (the controller's pillar is
/// unreachable): nothing is installed and nothing fails, and the config
/// files it writes are ones the binaries accept.
fn apply_without_release(work: &Workdir, component: &'static str) -> Result<()> {
    let name = format!("apply-{component}");
    let root = work.join(&name).join("host");
    let pillar = example_pillar(&root, "supervisord", false);
    let local = run_salt(&work.join(&name), "state.apply", component, &pillar)?;
    for (id, state) in local.as_object().unwrap() {
        ensure!(state["result"] == true, "{name}: {id} failed: {state}");
        ensure!(
            !id.contains("-switch"),
            "{name}: {id} ran without a release"
        );
    }
    let home = root.join(component);
    ensure!(
        !home.join("current").exists(),
        "{name}: something was installed"
    );
    match component {
        "edge" => {
            let args = edge::config::RunArgs {
                config: Some(home.join("edge.yaml")),
                ..Default::default()
            };
            let cfg = args
                .resolve()
                .map_err(|e| anyhow::anyhow!("{name}: edge.yaml: {e}"))?;
            ensure!(cfg.tls_key == home.join("tls/edge-key.pem"), "{cfg:?}");
            let tunnels = edge::tunnels::load(&cfg.tunnels_file)
                .map_err(|e| anyhow::anyhow!("{name}: tunnels.yaml: {e}"))?;
            ensure!(!tunnels.tunnels.is_empty(), "{name}: no tunnels rendered");
            edge::tunnels::TunnelTable::build(&tunnels)
                .map_err(|e| anyhow::anyhow!("{name}: tunnels.yaml: {e}"))?;
            mode_is_0600(&home.join("tls/edge-key.pem"))?;
        }
        _ => {
            let path = home.join("connector.yaml");
            connector::config::ingress_from_file(&path)
                .map_err(|e| anyhow::anyhow!("{name}: connector.yaml: {e}"))?;
            let token = std::fs::read_to_string(home.join("token"))?;
            ensure!(token.trim() == "wrn1_example_not_a_real_token", "{token}");
            mode_is_0600(&home.join("token"))?;
        }
    }
    Ok(())
}

fn mode_is_0600(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "{} has mode {mode:o}", path.display());
    Ok(())
}

#[test]
fn states_render_for_both_service_managers_and_write_configs_the_binaries_accept() {
    let work = Workdir::new("salt-render");
    // Each salt-call spends most of its time starting Python: run them side
    // by side.
    let results: Vec<(String, Result<()>)> = thread::scope(|s| {
        let mut jobs = Vec::new();
        for component in ["edge", "connector"] {
            for manager in ["supervisord", "systemd"] {
                let work = &work;
                jobs.push((
                    format!("show_sls {component} ({manager})"),
                    s.spawn(move || show(work, component, manager)),
                ));
            }
            let work = &work;
            jobs.push((
                format!("apply {component} without a release"),
                s.spawn(move || apply_without_release(work, component)),
            ));
        }
        jobs.into_iter()
            .map(|(name, job)| (name, job.join().expect("thread")))
            .collect()
    });
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(name, r)| r.as_ref().err().map(|e| format!("{name}: {e:#}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_eq!(results.len(), 6);
}
