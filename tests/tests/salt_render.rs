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
use tests::fleet::service_user;
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

/// `scripts/release COMPONENT VERSION` with a stand-in binary; returns the
/// tarball's path and sha256.
fn package(work: &Workdir, component: &str, version: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let bin_dir = work.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    let binary = bin_dir.join(component);
    std::fs::write(&binary, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(workspace().join("scripts/release"))
        .args([component, version, "--out"])
        .arg(work.join("releases"))
        .arg("--bin-dir")
        .arg(&bin_dir)
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
    for component in ["edge", "connector"] {
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
        jobs.into_iter()
            .filter_map(|(name, job)| {
                job.join()
                    .expect("thread")
                    .err()
                    .map(|e| format!("{name}: {e:#}"))
            })
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
