//! The command lines as an operator uses them: example configs, ingress
//! checks, tunnel creation, bad input.

use std::path::PathBuf;
use std::process::Command;

use tests::bins::{bin, workspace};
use tests::workdir::Workdir;

fn examples() -> Vec<PathBuf> {
    let dir = workspace().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_config_parses() {
    let files = examples();
    let mut checked = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("connector") {
            let out = Command::new(bin("connector"))
                .args(["ingress", "validate", "--config"])
                .arg(path)
                .output()
                .unwrap();
            assert!(out.status.success(), "{name}: {out:?}");
            checked += 1;
        } else if name.starts_with("edge") {
            let args = edge::config::RunArgs {
                config: Some(path.clone()),
                ..Default::default()
            };
            args.resolve().unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
        } else if name.starts_with("rollout") {
            let text = std::fs::read_to_string(path).unwrap();
            rollout::spec::Spec::from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            checked += 1;
        } else {
            panic!("{name}: no test knows how to check this example");
        }
    }
    // A walk that finds nothing would pass vacuously.
    assert!(checked >= 3, "checked only {checked} examples");
}

fn write(work: &Workdir, name: &str, text: &str) -> PathBuf {
    let p = work.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn ingress_validate_rejects_a_last_rule_that_is_not_a_catch_all() {
    let work = Workdir::new("ingress-validate");
    let bad = write(
        &work,
        "bad.yaml",
        "ingress:\n  - hostname: a.example.com\n    service: http://127.0.0.1:1\n  - hostname: b.example.com\n    service: http://127.0.0.1:2\n",
    );
    let out = Command::new(bin("connector"))
        .args(["ingress", "validate", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule #2"), "{err}");
    assert!(err.contains("b.example.com"), "{err}");
    assert!(
        err.contains("http_status:404"),
        "the fix is suggested: {err}"
    );
}

#[test]
fn ingress_rule_picks_the_right_rule() {
    let config = workspace().join("examples/connector.yaml");
    let cases = [
        (
            "https://app.example.com/api/v1/users",
            1,
            "http://127.0.0.1:8000",
        ),
        (
            "https://APP.example.com:443/api/",
            1,
            "http://127.0.0.1:8000",
        ),
        ("https://app.example.com/apix", 2, "http://127.0.0.1:3000"),
        ("https://app.example.com/", 2, "http://127.0.0.1:3000"),
        (
            "https://app.example.com/static?x=/api/",
            2,
            "http://127.0.0.1:3000",
        ),
        // A ws:// rule is dialled as http:// (plain requests go there too).
        ("https://chat.example.com/", 3, "http://127.0.0.1:8765"),
        (
            "https://db.internal.example.com/",
            4,
            "https://127.0.0.1:8443",
        ),
        (
            "https://a.b.internal.example.com/x",
            4,
            "https://127.0.0.1:8443",
        ),
        ("https://internal.example.com/", 5, "http_status:404"),
        ("https://other.example.org/api/", 5, "http_status:404"),
    ];
    for (url, rule, service) in cases {
        let out = Command::new(bin("connector"))
            .args(["ingress", "rule", url, "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success(), "{url}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("Matched rule #{rule}\n")),
            "{url}: {text}"
        );
        assert!(
            text.contains(&format!("service: {service}\n")),
            "{url}: {text}"
        );
    }
}

#[test]
fn tunnel_create_prints_only_the_token_and_the_file_holds_no_secret() {
    let work = Workdir::new("tunnel-create");
    let file = work.join("tunnels.yaml");
    let out = Command::new(bin("edge"))
        .args([
            "tunnel",
            "create",
            "--hostname",
            "a.example.com",
            "--hostname",
            "*.b.example.com",
            "--tunnels-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let token = String::from_utf8(out.stdout).unwrap();
    let token = token.trim();
    assert!(
        token.starts_with("wrn1_") && !token.contains(' '),
        "{token}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("a.example.com") && text.contains("*.b.example.com"));
    assert!(
        !text.contains(&token[5..]),
        "the secret is in the tunnels file"
    );

    // The same hostname again: refused, file unchanged.
    let out = Command::new(bin("edge"))
        .args([
            "tunnel",
            "create",
            "--hostname",
            "a.example.com",
            "--tunnels-file",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already routed"));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
}

#[test]
fn bad_configs_exit_with_a_message_that_names_the_problem() {
    let work = Workdir::new("bad-config");
    let cfg = write(
        &work,
        "edge.yaml",
        "public_http: 127.0.0.1:8080\ntunels_file: x\n",
    );
    let out = Command::new(bin("edge"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("tunels_file"));

    let out = Command::new(bin("connector"))
        .args([
            "run",
            "--edge",
            "127.0.0.1:7844",
            "--url",
            "http://127.0.0.1:1",
            "--ca-cert",
            "/nonexistent",
        ])
        .env("CONNECTOR_TOKEN", "wrn1_secretgarbage")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("CONNECTOR_TOKEN"), "{err}");
    assert!(!err.contains("secretgarbage"), "the token leaked: {err}");
}

/// `edge dev-cert` run as `sh -c 'umask 000; exec edge dev-cert ...'`: the
/// key is 0600 afterwards (also when a world-readable key was there before),
/// and, traced with strace where it is installed, every file that will hold
/// the key is created 0600 from the start, never made private afterwards.
#[test]
fn dev_cert_creates_the_key_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let work = Workdir::new("dev-cert-umask");
    let out_dir = work.join("pki");
    std::fs::create_dir_all(&out_dir).unwrap();
    let key = out_dir.join("edge-key.pem");
    // A key left world-readable by an older tool.
    std::fs::write(&key, "old key").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();

    let script = format!(
        "umask 000; exec {} dev-cert --san edge.test --out {}",
        bin("edge").display(),
        out_dir.display()
    );
    let trace = work.join("strace.txt");
    let strace = Command::new("strace").arg("-V").output().is_ok();
    let mut cmd = if strace {
        let mut c = Command::new("strace");
        c.args(["-f", "-e", "trace=open,openat,creat", "-o"])
            .arg(&trace)
            .args(["sh", "-c", &script]);
        c
    } else {
        eprintln!("strace is not installed: checking the final modes only");
        let mut c = Command::new("sh");
        c.args(["-c", &script]);
        c
    };
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&key), 0o600, "edge-key.pem mode {:o}", mode(&key));
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.contains("PRIVATE KEY"), "the old key was not replaced");
    assert!(!out_dir.join("edge-key.pem.tmp").exists());
    // The certificates are public.
    assert_eq!(mode(&out_dir.join("edge.pem")) & 0o444, 0o444);

    if strace {
        let trace = std::fs::read_to_string(&trace).unwrap();
        let creates: Vec<&str> = trace
            .lines()
            .filter(|l| l.contains("edge-key.pem") && l.contains("O_CREAT"))
            .collect();
        assert!(
            !creates.is_empty(),
            "no creation of the key traced:\n{trace}"
        );
        for line in creates {
            assert!(
                line.contains("O_EXCL") && line.contains(", 0600)"),
                "the key file is not created private (0600, new): {line}"
            );
        }
    }
}
