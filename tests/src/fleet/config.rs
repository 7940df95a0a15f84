//! The configuration files of the local fleet: Salt master and minions,
//! supervisord per host, Prometheus with file-based discovery, Alertmanager.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde_json::{Value, json};

use super::{Host, Role};

/// Ports every fleet host uses on its own address.
pub const EDGE_PUBLIC: u16 = 8080;
/// QUIC.
pub const EDGE_TUNNEL: u16 = 7844;
/// Edge admin.
pub const EDGE_ADMIN: u16 = 9080;
/// Connector admin.
pub const CONNECTOR_ADMIN: u16 = 9081;
/// salt-api.
pub const SALT_API: u16 = 8000;
/// The interim pillar server (the rollout controller's, later).
pub const PILLAR: u16 = 8001;
/// Prometheus.
pub const PROMETHEUS: u16 = 9090;
/// Alertmanager.
pub const ALERTMANAGER: u16 = 9093;
/// The origin.
pub const ORIGIN: u16 = 8000;
/// The origin's TCP echo (the fleet tunnel's TCP service).
pub const ORIGIN_TCP_ECHO: u16 = 8002;
/// An edge's public TCP port for [`super::TCP_HOST`].
pub const EDGE_TCP: u16 = 2222;

pub(crate) fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create config dir");
    }
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Writes a file that holds a secret (a key, a token, the salt-api secret):
/// created mode 0600, so only root, who runs the fleet's tools, reads it.
pub(crate) fn write_private(path: &Path, text: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("create config dir");
    }
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// Makes `dir` (created if needed) traversable and readable by everyone, as
/// the folders above a host's install root must be for the service user,
/// whatever the umask of the test run.
pub(crate) fn traversable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).expect("create dir");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
}

/// The master config: file roots (the repo's states and the release
/// artifacts), host pillar from files, assigned versions from the
/// controller through `cmd_json` and `salt/master/release_pillar.py` (curl
/// with the API token, releases only), salt-api with sharedsecret eauth.
/// `dir` is the master's root folder, `WORK/salt/root`; `controller` is
/// `rollout serve`'s address (plain HTTP: it listens on loopback).
pub(crate) fn master(
    dir: &Path,
    repo: &Path,
    ip: IpAddr,
    controller: SocketAddr,
    api_token: &Path,
    secret: &str,
) -> String {
    let d = dir.display();
    let files = dir
        .parent()
        .and_then(Path::parent)
        .expect("the root is WORK/salt/root");
    json!({
        "interface": ip.to_string(),
        "root_dir": d.to_string(),
        "pki_dir": format!("{d}/pki"),
        "cachedir": format!("{d}/cache"),
        "sock_dir": format!("{d}/sock"),
        "pidfile": format!("{d}/master.pid"),
        "log_file": format!("{d}/master.log"),
        "api_logfile": format!("{d}/api.log"),
        "api_pidfile": format!("{d}/api.pid"),
        "log_level_logfile": "info",
        "user": "root",
        "auto_accept": true,
        "gather_job_timeout": 2,
        "worker_threads": 3,
        "file_roots": {"base": [format!("{}/salt", repo.display()), format!("{}/files", files.display())]},
        "pillar_roots": {"base": [format!("{}/pillar", files.display())]},
        // Salt 3008 no longer ships http_json; cmd_json is the same
        // contract: the JSON answer merges into pillar, and any failure
        // gives an empty dict (logged), never an error.
        "ext_pillar": [{"cmd_json": pillar_command(repo, controller, api_token)}],
        "pillar_source_merging_strategy": "recurse",
        "netapi_enable_clients": ["local", "local_async", "local_batch", "runner", "wheel"],
        "rest_cherrypy": {"host": ip.to_string(), "port": SALT_API, "disable_ssl": true},
        "external_auth": {"sharedsecret": {"warren": [".*", "@runner", "@wheel", "@jobs"]}},
        "sharedsecret": secret,
    })
    .to_string()
}

/// The master's `cmd_json` command for the controller's pillar, as
/// `salt/master.example` writes it but over plain HTTP to a loopback
/// controller, run by the Salt venv's Python.
pub fn pillar_command(repo: &Path, controller: SocketAddr, api_token: &Path) -> String {
    format!(
        "{python} {script} --token-file {token} -- curl --silent --show-error --fail \
         --max-time 5 --max-filesize 65536 http://{controller}/pillar/ %s",
        python = super::salt_bin("python3").display(),
        script = repo.join("salt/master/release_pillar.py").display(),
        token = api_token.display(),
    )
}

/// One minion's config: its own root, the master's address, its grains.
pub(crate) fn minion(dir: &Path, host: &Host, master: IpAddr) -> String {
    let d = dir.display();
    json!({
        "id": host.id,
        "master": master.to_string(),
        "root_dir": d.to_string(),
        "pki_dir": format!("{d}/pki"),
        "cachedir": format!("{d}/cache"),
        "sock_dir": format!("{d}/sock"),
        "pidfile": format!("{d}/minion.pid"),
        "log_file": format!("{d}/minion.log"),
        "user": "root",
        "acceptance_wait_time": 1,
        "grains": {
            "datacenter": host.datacenter,
            "cohort": host.cohort,
            "role": host.role.as_str(),
        },
    })
    .to_string()
}

/// supervisord for one host, in the foreground so the harness owns its pid.
pub(crate) fn supervisord(host_dir: &Path) -> String {
    let d = host_dir.display();
    format!(
        "[unix_http_server]\nfile={d}/supervisor.sock\n\n\
         [supervisord]\nlogfile={d}/supervisord.log\npidfile={d}/supervisord.pid\nnodaemon=true\nchildlogdir={d}\n\n\
         [rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n\n\
         [supervisorctl]\nserverurl=unix://{d}/supervisor.sock\n\n\
         [include]\nfiles = {d}/supervisord.d/*.conf\n"
    )
}

/// Prometheus: scrape and evaluate every second; targets from files the
/// harness writes as the fleet changes; rules from `alerts/` when present.
pub(crate) fn prometheus(
    dir: &Path,
    repo: &Path,
    alertmanager: SocketAddr,
    extra_jobs: &[(&str, SocketAddr)],
) -> String {
    let d = dir.display();
    let rules = repo.join("alerts/rules");
    let rule_files: Vec<String> = if rules.is_dir() {
        vec![format!("{}/*.yml", rules.display())]
    } else {
        vec![]
    };
    let mut jobs: Vec<Value> = ["edge", "connector"]
        .iter()
        .map(|job| {
            json!({
                "job_name": job,
                "file_sd_configs": [{"files": [format!("{d}/targets/{job}.json")], "refresh_interval": "1s"}],
            })
        })
        .collect();
    for (name, addr) in extra_jobs {
        jobs.push(json!({"job_name": name, "static_configs": [{"targets": [addr.to_string()], "labels": {"datacenter": "all"}}]}));
    }
    json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "1s"},
        "rule_files": rule_files,
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager.to_string()]}]}]},
        "scrape_configs": jobs,
    })
    .to_string()
}

/// Prometheus file-SD targets for the hosts of one role.
pub(crate) fn targets(hosts: &[Host], role: Role) -> String {
    let list: Vec<Value> = hosts
        .iter()
        .filter(|h| h.role == role)
        .map(|h| {
            json!({
                "targets": [h.admin().to_string()],
                "labels": {
                    "host": h.id,
                    "datacenter": h.datacenter,
                    "cohort": h.cohort,
                    "role": h.role.as_str(),
                    "component": h.role.as_str(),
                },
            })
        })
        .collect();
    Value::Array(list).to_string()
}

/// The controller's Alertmanager webhook.
pub const WEBHOOK_PATH: &str = "/v1/alerts/alertmanager";

/// Alertmanager: every alert to the controller's webhook (answering or
/// not), with the bearer token read from `token_file`.
pub(crate) fn alertmanager(webhook: &str, token_file: &Path) -> String {
    json!({
        "route": {
            "receiver": "controller",
            "group_by": ["alertname", "component", "datacenter"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
        },
        "receivers": [{"name": "controller", "webhook_configs": [{
            "url": webhook,
            "send_resolved": true,
            "http_config": {"authorization": {"type": "Bearer", "credentials_file": token_file.display().to_string()}},
        }]}],
    })
    .to_string()
}
