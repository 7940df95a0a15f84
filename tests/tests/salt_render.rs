//! The Salt states in `salt/` render with `salt/pillar.example`, for both
//! service managers, and the config files they write are ones the binaries
//! accept; the `rollout` state, applied with a real supervisord, runs the
//! controller. Masterless `salt-call --local` from the cached Salt venv
//! (`scripts/setup` installs it); every call has its own minion config dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tests::bins::{bin, workspace};
use tests::fleet::service_user;
use tests::workdir::Workdir;

/// The states, as `state.apply` names them.
const COMPONENTS: [&str; 3] = ["edge", "connector", "rollout"];

/// Every secret of `salt/pillar.example`: none may appear in a rendered
/// state, a program's config or a command line.
const SECRETS: &[&str] = &[
    "wrn1_example_not_a_real_token",
    "wrn_api_example_not_a_real_token",
    "wrn_hook_example_not_a_real_token",
    "example-not-a-real-password",
];

/// Joins named checks run on scoped threads: the failures, each named.
fn failures_of(jobs: Vec<(&str, thread::ScopedJoinHandle<'_, Result<()>>)>) -> Vec<String> {
    jobs.into_iter()
        .filter_map(|(name, job)| {
            job.join()
                .expect("thread")
                .err()
                .map(|e| format!("{name}: {e:#}"))
        })
        .collect()
}

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
    for component in COMPONENTS {
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

/// Runs `salt-call --local FUNCTION ARGS pillar=...` in a minion dir of its
/// own under `dir`, and returns the `local` part of its JSON output.
fn run_salt(dir: &Path, function: &str, args: &[&str], pillar: &Value) -> Result<Value> {
    let sls = args.join(" ");
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
        .arg(function)
        .args(args)
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
    let local = run_salt(&work.join(&name), "state.show_sls", &[component], &pillar)?;
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
    if component == "rollout" {
        expected.extend(["api-token", "webhook-token", "data"].map(|s| format!("{p}-{s}")));
    }
    for id in &expected {
        ensure!(ids.contains(id), "{name}: no state `{id}` in {ids:?}");
    }
    // The service user comes from the shared state, created as a system
    // user without a login shell.
    for (id, state) in local.as_object().unwrap() {
        let from = if id == "warren-user" || id == "warren-group" {
            "warren.user"
        } else {
            component
        };
        ensure!(
            state["__sls__"] == from,
            "{name}: state {id} comes from {}",
            state["__sls__"]
        );
    }
    let user = local["warren-user"]["user"].to_string();
    for want in [
        r#"{"name":"warren"}"#,
        r#"{"system":true}"#,
        r#"{"shell":"/usr/sbin/nologin"}"#,
        r#"{"createhome":false}"#,
    ] {
        ensure!(
            user.contains(want),
            "{name}: warren-user lacks {want}: {user}"
        );
    }
    // Secrets go to their files through contents_pillar, or a template
    // that reads the pillar itself: never into a state's arguments.
    let text = local.to_string();
    for secret in SECRETS {
        ensure!(
            !text.contains(secret),
            "{name}: the secret {secret} is in the rendered states"
        );
    }
    Ok(())
}

/// Applies a state without a release (the controller's pillar is
/// unreachable): nothing is installed and nothing fails, and the config
/// files it writes are ones the binaries accept.
fn apply_without_release(work: &Workdir, component: &'static str) -> Result<()> {
    let name = format!("apply-{component}");
    let root = work.join(&name).join("host");
    let pillar = example_pillar(&root, "supervisord", false);
    let local = run_salt(&work.join(&name), "state.apply", &[component], &pillar)?;
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
            for file in ["tls/edge-key.pem", "edge.yaml", "tunnels.yaml"] {
                private_to_the_service(&home.join(file))?;
            }
        }
        "rollout" => {
            // What `rollout serve --config` reads: the database URL of the
            // pillar, kept out of the command line.
            let connect = rollout::cli::Connect {
                config: Some(home.join("rollout.yaml")),
                ..Default::default()
            };
            let database = connect
                .database()
                .map_err(|e| anyhow::anyhow!("{name}: rollout.yaml: {e}"))?;
            let want = pillar["warren"]["rollout"]["database"].as_str().unwrap();
            ensure!(
                database == want,
                "{name}: rollout.yaml names another database"
            );
            for (file, key) in [
                ("api-token", "api_token"),
                ("webhook-token", "webhook_token"),
            ] {
                let token = std::fs::read_to_string(home.join(file))?;
                let want = pillar["warren"]["rollout"][key].as_str().unwrap();
                ensure!(token.trim() == want, "{name}: {file} holds another token");
            }
            for file in ["api-token", "webhook-token", "rollout.yaml"] {
                private_to_the_service(&home.join(file))?;
            }
            owned_by_the_service(&home.join("data"), 0o700)?;
        }
        _ => {
            let path = home.join("connector.yaml");
            connector::config::ingress_from_file(&path)
                .map_err(|e| anyhow::anyhow!("{name}: connector.yaml: {e}"))?;
            let token = std::fs::read_to_string(home.join("token"))?;
            ensure!(token.trim() == "wrn1_example_not_a_real_token", "{token}");
            for file in ["token", "connector.yaml"] {
                private_to_the_service(&home.join(file))?;
            }
        }
    }
    Ok(())
}

/// A folder the service writes: owned by `warren`, with `mode`.
fn owned_by_the_service(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let (uid, gid) = service_user::ids(service_user::NAME).context("no user warren")?;
    ensure!(
        meta.mode() & 0o777 == mode && meta.uid() == uid && meta.gid() == gid,
        "{} has mode {:o}, owner {}, group {} (want {mode:o} warren:warren)",
        path.display(),
        meta.mode() & 0o777,
        meta.uid(),
        meta.gid()
    );
    Ok(())
}

/// A file the service reads: owned by root, group `warren`, mode 0640 (the
/// service can read it, nobody else, and it cannot change it).
fn private_to_the_service(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let (_, gid) = service_user::ids(service_user::NAME).context("no user warren")?;
    ensure!(
        meta.mode() & 0o777 == 0o640 && meta.uid() == 0 && meta.gid() == gid,
        "{} has mode {:o}, owner {}, group {} (want 0640 root:warren)",
        path.display(),
        meta.mode() & 0o777,
        meta.uid(),
        meta.gid()
    );
    Ok(())
}

#[test]
fn states_render_for_both_service_managers_and_write_configs_the_binaries_accept() {
    let work = Workdir::new("salt-render");
    // Each salt-call spends most of its time starting Python: run them side
    // by side.
    let results: Vec<(String, Result<()>)> = thread::scope(|s| {
        let mut jobs = Vec::new();
        for component in COMPONENTS {
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
    assert_eq!(results.len(), 9);
}

/// `scripts/release COMPONENT VERSION` with a stand-in binary; returns the
/// tarball's path and sha256.
fn package(work: &Workdir, component: &str, version: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = work.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let binary = bin_dir.join(component);
    std::fs::write(&binary, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    package_from(work, component, version, &bin_dir)
}

/// `scripts/release COMPONENT VERSION --bin-dir BIN_DIR`; returns the
/// tarball's path and sha256.
fn package_from(
    work: &Workdir,
    component: &str,
    version: &str,
    bin_dir: &Path,
) -> (PathBuf, String) {
    let out = Command::new(workspace().join("scripts/release"))
        .args([component, version, "--out"])
        .arg(work.join("releases"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "scripts/release: {out:?}");
    let info: Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        PathBuf::from(info["file"].as_str().unwrap()),
        info["sha256"].as_str().unwrap().to_string(),
    )
}

/// Runs `release.sh ARGS`; returns whether it succeeded and its output.
fn release_sh(args: &[&str]) -> (bool, String) {
    let out = Command::new("sh")
        .arg(workspace().join("salt/warren/files/release.sh"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The release steps compare the manifest's version as text: `1.2.3+b1`
/// installs and is recognised as itself, and a tarball whose manifest says
/// `1x2x3` is not taken for `1.2.3` (a regex would match both ways wrong).
#[test]
fn release_steps_compare_versions_literally() {
    let work = Workdir::new("release-sh-versions");
    let home = work.join("host/edge");
    let home_s = home.to_str().unwrap();
    std::fs::create_dir_all(home.join("downloads")).unwrap();

    let (tarball, sha) = package(&work, "edge", "1.2.3+b1");
    std::fs::copy(&tarball, home.join("downloads/edge-1.2.3+b1.tar.gz")).unwrap();
    for step in ["verify", "unpack"] {
        let (ok, text) = release_sh(&[step, home_s, "edge", "1.2.3+b1", &sha]);
        assert!(ok, "{step} 1.2.3+b1: {text}");
    }
    assert!(home.join("releases/1.2.3+b1/edge").is_file());
    let (ok, text) = release_sh(&["unpack", home_s, "edge", "1.2.3+b1", &sha]);
    assert!(ok && text.contains("changed=no"), "unpack again: {text}");
    let (ok, text) = release_sh(&["switch", home_s, "1.2.3+b1"]);
    assert!(ok, "switch: {text}");
    assert_eq!(
        std::fs::read_link(home.join("current")).unwrap(),
        PathBuf::from("releases/1.2.3+b1")
    );

    // A tarball of 1x2x3 under the name of 1.2.3: refused, nothing unpacked.
    let (tarball, sha) = package(&work, "edge", "1x2x3");
    std::fs::copy(&tarball, home.join("downloads/edge-1.2.3.tar.gz")).unwrap();
    let (ok, text) = release_sh(&["unpack", home_s, "edge", "1.2.3", &sha]);
    assert!(!ok, "1x2x3 was taken for 1.2.3: {text}");
    assert!(
        text.contains("not version 1.2.3") && text.contains("1x2x3"),
        "{text}"
    );
    assert!(!home.join("releases/1.2.3").exists());
    assert!(!home.join("releases/.1.2.3.tmp").exists());
}

/// Renders the service definition of `component` for `manager` through the
/// real state (`state.sls_id`, which runs its requisites too: the service
/// user is created), for a host with a release installed and the example
/// pillar changed by `edit`; returns the file's path and text.
fn render_service(
    work: &Workdir,
    name: &str,
    component: &str,
    manager: &str,
    edit: impl FnOnce(&mut Value),
) -> Result<(PathBuf, String)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = work.join(name);
    let root = dir.join("host");
    let mut pillar = example_pillar(&root, manager, false);
    pillar["warren"]["systemd"] = serde_json::json!({"unit_dir": dir.join("units")});
    pillar["warren"]["supervisord"] = serde_json::json!({
        "conf_file": dir.join("supervisord.conf"),
        "include_dir": dir.join("supervisord.d"),
    });
    edit(&mut pillar);
    std::fs::create_dir_all(dir.join("units"))?;
    let binary = root.join(component).join("current").join(component);
    std::fs::create_dir_all(binary.parent().unwrap())?;
    std::fs::write(&binary, "#!/bin/sh\n")?;
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))?;
    let (id, file) = match manager {
        "supervisord" => (
            format!("warren-{component}-program"),
            dir.join(format!("supervisord.d/warren-{component}.conf")),
        ),
        _ => (
            format!("warren-{component}-unit"),
            dir.join(format!("units/warren-{component}.service")),
        ),
    };
    let local = run_salt(&dir, "state.sls_id", &[&id, component], &pillar)?;
    for (state, ret) in local.as_object().unwrap() {
        ensure!(ret["result"] == true, "{name}: {state} failed: {ret}");
    }
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("{name}: {}", file.display()))?;
    Ok((file, text))
}

/// Every line of `want` is a line of `text`.
fn has_lines(name: &str, text: &str, want: &[&str]) -> Result<()> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let missing: Vec<&&str> = want.iter().filter(|w| !lines.contains(w)).collect();
    ensure!(missing.is_empty(), "{name}: missing {missing:?} in\n{text}");
    Ok(())
}

const SANDBOX: &[&str] = &[
    "User=warren",
    "Group=warren",
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "RestrictSUIDSGID=yes",
    "UMask=0077",
];

/// `systemd-analyze verify` accepts the unit, where systemd's tools are
/// installed (the test does not install them).
fn systemd_verifies(name: &str, unit: &Path) -> Result<()> {
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
    else {
        eprintln!("{name}: systemd-analyze is not installed, the unit is not verified");
        return Ok(());
    };
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && !err.contains(unit.file_name().unwrap().to_str().unwrap()),
        "{name}: systemd-analyze verify {}: {}\n{err}",
        unit.display(),
        out.status
    );
    Ok(())
}

fn edge_on_port_80(pillar: &mut Value) {
    pillar["warren"]["edge"]["config"]["public_http"] = "127.0.1.1:80".into();
}

/// The service definitions the states install run the edge and the
/// connector as the unprivileged `warren`: `user=` under supervisord, and
/// under systemd a sandbox without capabilities, except the right to bind a
/// port below 1024 where the pillar configures one; supervisord, which can
/// grant no capability, refuses such a port with a message that says what
/// to do.
#[test]
fn service_definitions_run_as_an_unprivileged_user_in_a_sandbox() {
    let work = Workdir::new("salt-services");
    type Check = Box<dyn FnOnce(&Workdir) -> Result<()> + Send>;
    let mut checks: Vec<(&str, Check)> = Vec::new();
    for component in COMPONENTS {
        checks.push((
            "supervisord program",
            Box::new(move |work| {
                let name = format!("{component}-supervisord");
                let (_, text) = render_service(work, &name, component, "supervisord", |_| {})?;
                has_lines(&name, &text, &["user=warren", "umask=077"])
            }),
        ));
    }
    checks.push((
        "edge unit",
        Box::new(|work| {
            let (unit, text) = render_service(work, "edge-systemd", "edge", "systemd", |_| {})?;
            has_lines("edge unit", &text, SANDBOX)?;
            has_lines(
                "edge unit",
                &text,
                &[
                    "CapabilityBoundingSet=",
                    "AmbientCapabilities=",
                    "PrivateTmp=yes",
                ],
            )?;
            ensure!(
                !text.contains("ReadWritePaths"),
                "it writes nowhere:\n{text}"
            );
            systemd_verifies("edge unit", &unit)
        }),
    ));
    checks.push((
        "edge unit on port 80",
        Box::new(|work| {
            let (unit, text) =
                render_service(work, "edge-systemd-80", "edge", "systemd", edge_on_port_80)?;
            has_lines("edge unit on port 80", &text, SANDBOX)?;
            has_lines(
                "edge unit on port 80",
                &text,
                &[
                    "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
                    "AmbientCapabilities=CAP_NET_BIND_SERVICE",
                ],
            )?;
            systemd_verifies("edge unit on port 80", &unit)
        }),
    ));
    checks.push((
        "connector unit with an origin socket in /tmp",
        Box::new(|work| {
            let (unit, text) = render_service(work, "connector-systemd", "connector", "systemd", |p| {
                let ingress = p["warren"]["connector"]["config"]["ingress"].as_array_mut().unwrap();
                ingress.insert(0, serde_json::json!({"hostname": "sock.test", "service": "unix:/tmp/app.sock"}));
            })?;
            has_lines("connector unit", &text, SANDBOX)?;
            // A private /tmp would hide the origin's socket.
            has_lines("connector unit", &text, &["CapabilityBoundingSet=", "PrivateTmp=no"])?;
            systemd_verifies("connector unit", &unit)
        }),
    ));
    checks.push((
        "rollout unit",
        Box::new(|work| {
            let (unit, text) =
                render_service(work, "rollout-systemd", "rollout", "systemd", |_| {})?;
            has_lines("rollout unit", &text, SANDBOX)?;
            // Its SQLite store is the one place it writes.
            let data = work.join("rollout-systemd/host/rollout/data");
            has_lines(
                "rollout unit",
                &text,
                &[
                    "CapabilityBoundingSet=",
                    "PrivateTmp=yes",
                    &format!("ReadWritePaths={}", data.display()),
                ],
            )?;
            let exec = text
                .lines()
                .find(|l| l.starts_with("ExecStart="))
                .context("no ExecStart")?;
            for flag in [
                "serve",
                "--config",
                "--api-token-file",
                "--webhook-token-file",
            ] {
                ensure!(exec.split(' ').any(|w| w == flag), "no {flag}: {exec}");
            }
            for secret in SECRETS {
                ensure!(!text.contains(secret), "the unit holds {secret}:\n{text}");
            }
            systemd_verifies("rollout unit", &unit)
        }),
    ));
    checks.push((
        "edge on port 80 under supervisord",
        Box::new(|work| {
            let err = match render_service(
                work,
                "edge-supervisord-80",
                "edge",
                "supervisord",
                edge_on_port_80,
            ) {
                Ok((_, text)) => bail!("rendered a program that cannot bind port 80:\n{text}"),
                Err(e) => format!("{e:#}"),
            };
            for want in ["port 80", "below 1024", "systemd"] {
                ensure!(err.contains(want), "the error does not say {want:?}: {err}");
            }
            Ok(())
        }),
    ));
    let failures: Vec<String> = thread::scope(|s| {
        let jobs: Vec<_> = checks
            .into_iter()
            .map(|(name, check)| (name, s.spawn(|| check(&work))))
            .collect();
        failures_of(jobs)
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The rollout state refuses, at render, what `rollout serve` would refuse
/// at start (an address off loopback without TLS) and a database URL that
/// is not PostgreSQL's, and says what to do without repeating the URL, which
/// may hold a password.
#[test]
fn rollout_state_refuses_what_serve_would_and_never_repeats_the_database_url() {
    let work = Workdir::new("salt-rollout-refusals");
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &[&str]); 3] = [
        (
            "open",
            |p| p["warren"]["rollout"]["config"]["listen"] = "0.0.0.0:9099".into(),
            &[
                "0.0.0.0:9099",
                "not a loopback address",
                "warren:rollout:tls",
            ],
        ),
        (
            "mysql",
            |p| {
                p["warren"]["rollout"]["database"] =
                    "mysql://rollout:hunter2-secret@db.test/rollout".into()
            },
            &["warren:rollout:database", "postgres://", "SQLite"],
        ),
        (
            "no-token",
            |p| {
                p["warren"]["rollout"]
                    .as_object_mut()
                    .unwrap()
                    .remove("api_token");
            },
            &["pillar warren:rollout:api_token is required"],
        ),
    ];
    let failures: Vec<String> = thread::scope(|s| {
        let jobs: Vec<_> = cases
            .into_iter()
            .map(|(name, edit, want)| {
                let work = &work;
                let job = s.spawn(move || -> Result<()> {
                    let mut pillar = example_pillar(&work.join(name).join("host"), "systemd", true);
                    edit(&mut pillar);
                    let err =
                        match run_salt(&work.join(name), "state.show_sls", &["rollout"], &pillar) {
                            Ok(local) => bail!("rendered: {local}"),
                            Err(e) => format!("{e:#}"),
                        };
                    for w in want {
                        ensure!(err.contains(w), "the error does not say {w:?}: {err}");
                    }
                    ensure!(
                        !err.contains("hunter2-secret"),
                        "the error repeats the URL: {err}"
                    );
                    Ok(())
                });
                (name, job)
            })
            .collect();
        failures_of(jobs)
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// A supervisord of the test's own (socket, pidfile and include folder in
/// its folder), shut down with its programs when dropped.
struct Supervisord {
    conf: PathBuf,
    include_dir: PathBuf,
    proc: tests::proc::Proc,
}

impl Supervisord {
    fn start(dir: &Path) -> Supervisord {
        let include_dir = dir.join("supervisord.d");
        std::fs::create_dir_all(&include_dir).unwrap();
        let d = dir.display();
        let conf = dir.join("supervisord.conf");
        std::fs::write(
            &conf,
            format!(
                "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
                 [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\n\
                 nodaemon=true\nchildlogdir={d}\n\n\
                 [rpcinterface:supervisor]\n\
                 supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
                 [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
                 [include]\nfiles = {d}/supervisord.d/*.conf\n"
            ),
        )
        .unwrap();
        let mut cmd = Command::new("supervisord");
        cmd.arg("-c").arg(&conf);
        let proc = tests::proc::Proc::spawn("supervisord", cmd, &dir.join("supervisord.out"));
        let sup = Supervisord {
            conf,
            include_dir,
            proc,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sup.pid("").is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "supervisord did not answer within 20 s:\n{}",
                sup.proc.log()
            );
            thread::sleep(std::time::Duration::from_millis(100));
        }
        sup
    }

    /// The pid of `program` (of supervisord itself for ""), when it runs.
    fn pid(&self, program: &str) -> Option<u32> {
        let out = Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .arg("pid")
            .args((!program.is_empty()).then_some(program))
            .output()
            .ok()?;
        let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
        (pid > 0).then_some(pid)
    }
}

impl Drop for Supervisord {
    fn drop(&mut self) {
        // supervisord stops its programs (TERM) before it exits.
        let _ = Command::new("supervisorctl")
            .arg("-c")
            .arg(&self.conf)
            .arg("shutdown")
            .output();
        if self
            .proc
            .wait_exit(std::time::Duration::from_secs(30))
            .is_none()
        {
            self.proc.kill();
        }
    }
}

/// The command line of process `pid`, its arguments joined by spaces.
fn command_line(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// Applies the rollout state; every state must succeed. Returns the
/// state results.
fn apply_rollout(dir: &Path, pillar: &Value) -> Value {
    let local = run_salt(dir, "state.apply", &["rollout"], pillar).unwrap();
    let failed: Vec<String> = local
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, state)| state["result"] != true)
        .map(|(id, state)| format!("{id}: {}", state["comment"]))
        .collect();
    assert!(failed.is_empty(), "failed states:\n{}", failed.join("\n"));
    local
}

/// The rollout state, applied masterless with a real supervisord and a
/// release of the workspace's `rollout`: the controller serves as the
/// unprivileged user with the token files the state wrote (private to it),
/// its store in its data folder, and no secret on its command line; the same
/// pillar again changes nothing; TLS and a new API token restart it, and
/// then it serves HTTPS and accepts only the new token.
#[tokio::test]
async fn rollout_state_runs_the_controller_under_supervisord() {
    use reqwest::StatusCode;
    let work = Workdir::new("salt-rollout");
    let salt_dir = work.join("salt");
    let home = work.join("host/rollout");
    let sup = Supervisord::start(&work.join("supervisor"));
    let bin_dir = bin("rollout").parent().unwrap().to_path_buf();
    let (tarball, sha) = package_from(&work, "rollout", "v-salt", &bin_dir);
    let listen = tests::net::TestNet::new().addr(1, 9099);
    let mut pillar = example_pillar(&work.join("host"), "supervisord", true);
    pillar["warren"]["supervisord"] =
        serde_json::json!({"conf_file": sup.conf, "include_dir": sup.include_dir});
    let ctl = &mut pillar["warren"]["rollout"];
    ctl["release"] = serde_json::json!({"version": "v-salt", "source": tarball, "sha256": sha});
    ctl["config"]["listen"] = listen.to_string().into();
    // The SQLite store in its data folder.
    ctl.as_object_mut().unwrap().remove("database");
    let api_token = ctl["api_token"].as_str().unwrap().to_string();
    let webhook_token = ctl["webhook_token"].as_str().unwrap().to_string();

    apply_rollout(&salt_dir, &pillar);
    let pid = sup.pid("warren-rollout").expect("warren-rollout runs");
    let (uid, _) = service_user::ids(service_user::NAME).unwrap();
    let creds = service_user::credentials(pid).unwrap();
    assert!(creds.uids.iter().all(|u| *u == uid), "{creds:?}");
    let cmdline = command_line(pid);
    for flag in ["--config", "--api-token-file", "--webhook-token-file"] {
        assert!(cmdline.contains(flag), "{cmdline}");
    }
    for secret in [api_token.as_str(), webhook_token.as_str(), "sqlite:"] {
        assert!(!cmdline.contains(secret), "{secret} in {cmdline}");
    }
    let program = std::fs::read_to_string(sup.include_dir.join("warren-rollout.conf")).unwrap();
    for secret in SECRETS {
        assert!(!program.contains(secret), "{secret} in\n{program}");
    }
    for file in ["api-token", "webhook-token", "rollout.yaml"] {
        private_to_the_service(&home.join(file)).unwrap();
    }
    owned_by_the_service(&home.join("data"), 0o700).unwrap();
    assert!(home.join("data/rollout.db").is_file(), "no SQLite store");

    // It serves with the tokens of the files the state wrote.
    let http = tests::http::plain_client();
    let rollouts = format!("http://{listen}/v1/rollouts");
    let resp = http.get(&rollouts).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .get(&rollouts)
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let webhook = format!("http://{listen}{}", rollout::api::WEBHOOK_PATH);
    let no_alerts = serde_json::json!({"version": "4", "alerts": []});
    let resp = http
        .post(&webhook)
        .bearer_auth(&api_token)
        .json(&no_alerts)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = http
        .post(&webhook)
        .bearer_auth(&webhook_token)
        .json(&no_alerts)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let metrics = http
        .get(format!("http://{listen}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"rollout_build_info{version="v-salt"} 1"#),
        "{metrics}"
    );

    // The same pillar again: nothing changes, nothing restarts.
    let local = apply_rollout(&salt_dir, &pillar);
    for (id, state) in local.as_object().unwrap() {
        assert_eq!(
            state["changes"],
            serde_json::json!({}),
            "{id} changed: {state}"
        );
    }
    assert_eq!(sup.pid("warren-rollout"), Some(pid), "restarted");

    // HTTPS and a new API token: restarted, serving both.
    let pki = tests::tunnel_setup::Pki::new(&work).dir;
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();
    let new_token = "wrn_api_the_second_token";
    let ctl = &mut pillar["warren"]["rollout"];
    ctl["tls"] = serde_json::json!({"cert_pem": read("edge.pem"), "key_pem": read("edge-key.pem")});
    ctl["api_token"] = new_token.into();
    apply_rollout(&salt_dir, &pillar);
    let new_pid = sup.pid("warren-rollout").expect("warren-rollout runs");
    assert_ne!(new_pid, pid, "not restarted");
    private_to_the_service(&home.join("tls/rollout-key.pem")).unwrap();
    assert!(!command_line(new_pid).contains(new_token));
    rollout::tls::ensure_provider();
    let ca = reqwest::Certificate::from_pem(read("ca.pem").as_bytes()).unwrap();
    let https = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([ca])
        .resolve(tests::tunnel_setup::EDGE_NAME, listen)
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap();
    let rollouts = format!(
        "https://{}:{}/v1/rollouts",
        tests::tunnel_setup::EDGE_NAME,
        listen.port()
    );
    for (token, want) in [
        (new_token, StatusCode::OK),
        (api_token.as_str(), StatusCode::UNAUTHORIZED),
    ] {
        let resp = https
            .get(&rollouts)
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), want);
    }
}
