//! The local fleet: a real Salt master with salt-api, one minion per host
//! (each with its own address 127.A.B.n, config and root folders, and grains
//! `datacenter`, `cohort`, `role`), a supervisord per host standing in for
//! systemd, `edge` and `connector` installed and run on the hosts by the
//! project's own Salt states, Prometheus scraping every host through
//! file-based discovery, Alertmanager, and an origin.
//!
//! Everything is torn down by pid when the [`Fleet`] is dropped, also when a
//! test panics.

pub mod config;
pub mod pillar;
pub mod service;
pub mod service_user;
pub mod spec;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rollout::prometheus::Prometheus;
use rollout::salt::{ApplyReport, SaltApi, SaltSecret};
use serde_json::json;

use crate::bins::{bin, profile_dir, workspace};
use crate::net::{TestNet, random_u32};
use crate::proc::{Proc, eventually};
use crate::workdir::Workdir;
use config::*;
pub use pillar::Release;

/// The name in the edges' certificate.
pub const EDGE_NAME: &str = "edge.warren.test";
/// The hostname the fleet's tunnel serves.
pub const APP_HOST: &str = "app.fleet.test";
/// The tunnel's TCP hostname: every edge's public TCP port [`Host::public_tcp`]
/// reaches the origin's TCP echo through it.
pub const TCP_HOST: &str = "tcp.fleet.test";

/// What a host runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An edge host.
    Edge,
    /// A connector host.
    Connector,
}

impl Role {
    /// The grain value and component name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Edge => "edge",
            Self::Connector => "connector",
        }
    }
}

/// One host of the fleet.
#[derive(Debug, Clone)]
pub struct Host {
    /// Minion id.
    pub id: String,
    /// Role grain.
    pub role: Role,
    /// Datacenter grain.
    pub datacenter: String,
    /// Cohort grain (`canary` or `main`).
    pub cohort: String,
    /// Its own loopback address.
    pub ip: IpAddr,
}

impl Host {
    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        match self.role {
            Role::Edge => SocketAddr::new(self.ip, EDGE_ADMIN),
            Role::Connector => SocketAddr::new(self.ip, CONNECTOR_ADMIN),
        }
    }

    /// An edge's public HTTP listener.
    pub fn public(&self) -> SocketAddr {
        SocketAddr::new(self.ip, EDGE_PUBLIC)
    }

    /// An edge's public TCP port (to the origin's TCP echo).
    pub fn public_tcp(&self) -> SocketAddr {
        SocketAddr::new(self.ip, EDGE_TCP)
    }

    /// An edge's QUIC listener.
    pub fn tunnel(&self) -> SocketAddr {
        SocketAddr::new(self.ip, EDGE_TUNNEL)
    }
}

/// Six edge hosts in three data centers (one canary) and two connectors.
pub fn default_hosts(net: &TestNet) -> Vec<Host> {
    let mut hosts = Vec::new();
    let edges = [
        ("ams", 1, "canary"),
        ("ams", 2, "main"),
        ("fra", 1, "main"),
        ("fra", 2, "main"),
        ("sin", 1, "main"),
        ("sin", 2, "main"),
    ];
    for (i, (dc, n, cohort)) in edges.into_iter().enumerate() {
        hosts.push(Host {
            id: format!("edge-{dc}-{n}"),
            role: Role::Edge,
            datacenter: dc.into(),
            cohort: cohort.into(),
            ip: net.ip(i as u8 + 1),
        });
    }
    for (i, (dc, cohort)) in [("ams", "canary"), ("fra", "main")].into_iter().enumerate() {
        hosts.push(Host {
            id: format!("conn-{dc}-1"),
            role: Role::Connector,
            datacenter: dc.into(),
            cohort: cohort.into(),
            ip: net.ip(21 + i as u8),
        });
    }
    hosts
}

/// Background requests through every edge; stopped when dropped.
pub struct Traffic(tokio::task::JoinHandle<()>);

impl Drop for Traffic {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The running fleet.
pub struct Fleet {
    /// Scratch folder (short path: Salt's unix sockets live inside).
    pub work: Workdir,
    /// The fleet's slice of loopback.
    pub net: TestNet,
    /// Every host.
    pub hosts: Vec<Host>,
    /// salt-api client.
    pub salt: SaltApi,
    /// salt-api URL.
    pub salt_url: String,
    /// salt-api user and secret.
    pub salt_auth: (String, String),
    /// Prometheus client.
    pub prometheus: Prometheus,
    /// Alertmanager URL.
    pub alertmanager_url: String,
    /// The controller's store: where the assigned versions come from.
    pub store: rollout::store::Store,
    /// Its URL (`sqlite://...`), for `rollout` commands.
    pub database: String,
    /// The controller's API (pillar, status), served by `rollout serve`.
    pub controller: SocketAddr,
    /// The release every host starts on, per component.
    pub initial: BTreeMap<String, Release>,
    /// The origin behind the connectors.
    pub origin: SocketAddr,
    procs: Vec<Proc>,
    controller_proc: Option<Proc>,
    prometheus_proc: Option<Proc>,
    prometheus_addr: SocketAddr,
    alertmanager_pid: u32,
    /// The file holding the webhook's bearer token (Alertmanager and `rollout serve` read it).
    pub webhook_token: PathBuf,
    /// The file holding the token of the controller's pillar and status API
    /// (the master's pillar command and `rollout serve` read it).
    pub api_token: PathBuf,
    minions: BTreeMap<String, Proc>,
    minion_dirs: BTreeMap<String, PathBuf>,
}

pub(crate) fn salt_bin(name: &str) -> PathBuf {
    crate::python::cache_dir().join("salt-venv/bin").join(name)
}

/// Starts `cmd` as the leader of its own process group, so teardown can
/// kill it with every child it forked.
fn spawn(name: &str, mut cmd: Command, log: &Path) -> Proc {
    cmd.process_group(0);
    Proc::spawn(name, cmd, log)
}

impl Fleet {
    /// Brings the whole fleet up with release `v1` on every host, verified
    /// in Prometheus, and prints how long it took and the memory it uses.
    /// The controller's store is a SQLite file in the fleet's folder.
    pub async fn start(name: &str) -> Self {
        Self::start_with_database(name, None).await
    }

    /// The same, with the controller's store in `database` (for example a
    /// PostgreSQL shared by several controllers).
    pub async fn start_with_database(name: &str, database: Option<String>) -> Self {
        let started = Instant::now();
        let work = Workdir::short(name);
        let net = TestNet::new();
        let hosts = default_hosts(&net);
        let repo = workspace();
        let w = work.path().to_path_buf();
        let master_ip = net.ip(100);
        let prometheus_addr = net.addr(101, PROMETHEUS);
        let alertmanager_addr = net.addr(102, ALERTMANAGER);
        let origin = net.addr(103, ORIGIN);
        let tcp_echo = net.addr(103, ORIGIN_TCP_ECHO);
        let pillar_addr = net.addr(100, PILLAR);
        // The services run as the unprivileged `warren` and read their
        // files below this folder.
        traversable(&w);
        traversable(&w.join("hosts"));

        // Certificates and the tunnel, made by the binaries themselves.
        let pki = w.join("pki");
        run_ok(
            Command::new(bin("edge"))
                .args(["dev-cert", "--san", EDGE_NAME, "--out"])
                .arg(&pki),
        );
        let tunnels = w.join("tunnels.yaml");
        let token = String::from_utf8(
            run_ok(
                Command::new(bin("edge"))
                    .args(["tunnel", "create", "--hostname", APP_HOST])
                    .args(["--hostname", TCP_HOST, "--tcp-port"])
                    .arg(format!("{EDGE_TCP}={TCP_HOST}"))
                    .arg("--tunnels-file")
                    .arg(&tunnels),
            )
            .stdout,
        )
        .expect("token is text")
        .trim()
        .to_string();
        let tunnels_yaml: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(&tunnels).unwrap()).unwrap();
        let read = |f: &str| std::fs::read_to_string(pki.join(f)).unwrap();

        // Host pillar: everything but the assigned release.
        let mut top = String::from("base:\n");
        let edges_quic: Vec<String> = hosts
            .iter()
            .filter(|h| h.role == Role::Edge)
            .map(|h| h.tunnel().to_string())
            .collect();
        for h in &hosts {
            let root = w.join("hosts").join(&h.id);
            let mut warren = json!({
                "root": root.join("opt").display().to_string(),
                "service_manager": "supervisord",
                "supervisord": {
                    "conf_file": root.join("supervisord.conf").display().to_string(),
                    "include_dir": root.join("supervisord.d").display().to_string(),
                },
            });
            match h.role {
                Role::Edge => {
                    warren["edge"] = json!({
                        "config": {
                            "public_http": h.public().to_string(),
                            "public_tcp_address": h.ip.to_string(),
                            "tunnel_listen": h.tunnel().to_string(),
                            "admin": h.admin().to_string(),
                            "location": h.datacenter,
                            "edge_id": h.id,
                            "grace_period": "5s",
                        },
                        "tls": {"cert_pem": read("edge.pem"), "key_pem": read("edge-key.pem")},
                        "tunnels": serde_json::to_value(&tunnels_yaml["tunnels"]).unwrap(),
                    });
                }
                Role::Connector => {
                    warren["connector"] = json!({
                        "config": {
                            "edges": edges_quic,
                            "edge_server_name": EDGE_NAME,
                            "admin": h.admin().to_string(),
                            "ha_connections": edges_quic.len(),
                            // Longer than the longest stream the tests hold
                            // open across a connector release (75 s of
                            // events): a drain finishes it rather than cut it.
                            "grace_period": "90s",
                            "ingress": [
                                {"hostname": TCP_HOST, "service": format!("tcp://{tcp_echo}")},
                                {"service": format!("http://{origin}")},
                            ],
                        },
                        "token": token,
                        "ca_pem": read("ca.pem"),
                    });
                }
            }
            // Host pillar holds the TLS key and the tunnel token.
            write_private(
                &w.join(format!("pillar/hosts/{}.sls", h.id.replace('-', "_"))),
                &format!("#!json\n{}", json!({"warren": warren})),
            );
            top.push_str(&format!(
                "  '{}':\n    - hosts.{}\n",
                h.id,
                h.id.replace('-', "_")
            ));
            traversable(&root);
            std::fs::create_dir_all(root.join("supervisord.d")).unwrap();
            write(&root.join("supervisord.conf"), &supervisord(&root));
        }
        write(&w.join("pillar/top.sls"), &top);

        // Release v1 of each component, as an operator would build it.
        let mut initial = BTreeMap::new();
        for component in ["edge", "connector"] {
            initial.insert(
                component.to_string(),
                make_release(&w, component, "v1", &[]),
            );
        }

        // The controller's store, seeded with what every host starts on.
        let database =
            database.unwrap_or_else(|| format!("sqlite://{}/rollout.db?mode=rwc", w.display()));
        let store = rollout::store::Store::connect(&database)
            .await
            .expect("open the controller store");
        for h in &hosts {
            let r = &initial[h.role.as_str()];
            store
                .assign(&h.id, r.component(), &r.stored())
                .await
                .expect("seed assignment");
        }

        // Salt. The master reads pillar from the controller with the API
        // token, as in production.
        let secret = format!("{:08x}{:08x}", random_u32(), random_u32());
        let api_token = w.join("controller/api.token");
        write(
            &api_token,
            &format!(
                "{:08x}{:08x}{:08x}",
                random_u32(),
                random_u32(),
                random_u32()
            ),
        );
        let salt_conf = w.join("salt/conf");
        // The master config holds salt-api's shared secret.
        write_private(
            &salt_conf.join("master"),
            &master(
                &w.join("salt/root"),
                &repo,
                master_ip,
                pillar_addr,
                &api_token,
                &secret,
            ),
        );
        let mut procs = Vec::new();
        let mut cmd = Command::new(salt_bin("salt-master"));
        cmd.arg("-c").arg(&salt_conf).args(["-l", "warning"]);
        procs.push(spawn("salt-master", cmd, &w.join("salt/master.out")));
        let mut cmd = Command::new(salt_bin("salt-api"));
        cmd.arg("-c").arg(&salt_conf).args(["-l", "warning"]);
        procs.push(spawn("salt-api", cmd, &w.join("salt/api.out")));
        let mut minions = BTreeMap::new();
        let mut minion_dirs = BTreeMap::new();
        for h in &hosts {
            let dir = w.join("hosts").join(&h.id).join("salt");
            write(&dir.join("minion"), &minion(&dir, h, master_ip));
            minions.insert(h.id.clone(), spawn_minion(&h.id, &dir));
            minion_dirs.insert(h.id.clone(), dir);
            let host_dir = w.join("hosts").join(&h.id);
            let mut cmd = Command::new("supervisord");
            cmd.arg("-c").arg(host_dir.join("supervisord.conf"));
            procs.push(spawn(
                &format!("supervisord {}", h.id),
                cmd,
                &host_dir.join("supervisord.out"),
            ));
        }

        // Prometheus and Alertmanager.
        let prom_dir = w.join("prometheus");
        write(
            &prom_dir.join("targets/edge.json"),
            &targets(&hosts, Role::Edge),
        );
        write(
            &prom_dir.join("targets/connector.json"),
            &targets(&hosts, Role::Connector),
        );
        write(
            &prom_dir.join("prometheus.yml"),
            &prometheus(
                &prom_dir,
                &repo,
                alertmanager_addr,
                &[("rollout", pillar_addr)],
            ),
        );
        let prometheus_proc = spawn_prometheus(&prom_dir, prometheus_addr);
        let am_dir = w.join("alertmanager");
        // Alertmanager pages the controller's webhook with a bearer token
        // from a file, as in production (alerts/alertmanager.yml).
        let webhook_token = w.join("controller/webhook.token");
        write_private(
            &webhook_token,
            &format!(
                "{:08x}{:08x}{:08x}",
                random_u32(),
                random_u32(),
                random_u32()
            ),
        );
        let webhook = format!("http://{pillar_addr}{WEBHOOK_PATH}");
        write(
            &am_dir.join("alertmanager.yml"),
            &alertmanager(&webhook, &webhook_token),
        );
        let mut cmd = Command::new("prometheus-alertmanager");
        cmd.arg(format!(
            "--config.file={}/alertmanager.yml",
            am_dir.display()
        ))
        .arg(format!("--storage.path={}/data", am_dir.display()))
        .arg(format!("--web.listen-address={alertmanager_addr}"))
        .arg("--cluster.listen-address=")
        .arg(format!("--web.external-url=http://{alertmanager_addr}"));
        let alertmanager_proc = spawn("alertmanager", cmd, &am_dir.join("alertmanager.log"));
        let alertmanager_pid = alertmanager_proc.pid();
        procs.push(alertmanager_proc);

        let mut cmd = Command::new(bin("origin"));
        cmd.arg(origin.to_string()).arg(tcp_echo.to_string());
        procs.push(spawn("origin", cmd, &w.join("origin.log")));
        let salt_url = format!("http://{master_ip}:{SALT_API}");
        let controller_env =
            controller_env(&salt_url, &secret, &format!("http://{prometheus_addr}"));
        let controller = spawn_controller(
            &w,
            &database,
            pillar_addr,
            (&webhook_token, &api_token),
            &controller_env,
        );

        let salt =
            SaltApi::new(&salt_url, "warren", SaltSecret(secret.clone())).expect("salt-api client");
        let fleet = Self {
            work,
            net,
            hosts,
            salt,
            salt_url,
            salt_auth: ("warren".into(), secret),
            prometheus: Prometheus::new(&format!("http://{prometheus_addr}")),
            alertmanager_url: format!("http://{alertmanager_addr}"),
            store,
            database,
            controller: pillar_addr,
            initial,
            origin,
            procs,
            controller_proc: Some(controller),
            prometheus_proc: Some(prometheus_proc),
            prometheus_addr,
            alertmanager_pid,
            webhook_token,
            api_token,
            minions,
            minion_dirs,
        };

        fleet.wait_controller().await;
        fleet.wait_minions(&fleet.ids(None)).await;
        let salt_ready = started.elapsed();

        let all = fleet.ids(None);
        let report = fleet.apply(&all).await;
        assert!(
            report.failures().is_empty(),
            "the first highstate failed: {:#?}",
            report.failures()
        );
        let highstate_done = started.elapsed();
        fleet
            .wait_versions("edge", "v1", &fleet.ids(Some(Role::Edge)))
            .await;
        fleet
            .wait_versions("connector", "v1", &fleet.ids(Some(Role::Connector)))
            .await;
        eprintln!(
            "fleet up in {:.1?} (minions answering after {salt_ready:.1?}, highstate done after {highstate_done:.1?}); \
             {} processes use {} MiB (PSS)",
            started.elapsed(),
            fleet.pids().len(),
            fleet.memory_pss() >> 20
        );
        fleet
    }

    /// Minion ids, of one role or all, sorted.
    pub fn ids(&self, role: Option<Role>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| role.is_none_or(|r| h.role == r))
            .map(|h| h.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// A host by id.
    pub fn host(&self, id: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("no host {id}"))
    }

    /// A host's install root (pillar `warren:root`).
    pub fn install_root(&self, id: &str) -> PathBuf {
        self.work.join("hosts").join(id).join("opt")
    }

    /// The pid of the service (edge or connector) running on host `id`:
    /// the process whose command runs the host's `current` release.
    pub fn service_pid(&self, id: &str) -> Option<u32> {
        let component = self.host(id).role.as_str();
        let exe = self
            .install_root(id)
            .join(component)
            .join("current")
            .join(component);
        let exe = exe.to_string_lossy();
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
            let pid = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv0 = cmdline.split(|b| *b == 0).next()?;
            (String::from_utf8_lossy(argv0) == exe).then_some(pid)
        })
    }

    /// Waits until every host in `ids` answers `test.ping`.
    pub async fn wait_minions(&self, ids: &[String]) {
        let want: BTreeSet<String> = ids.iter().cloned().collect();
        eventually(
            "every minion answers test.ping",
            Duration::from_secs(120),
            || async {
                let answered = self.salt.ping("*", Duration::from_secs(2)).await.ok()?;
                let up: BTreeSet<String> = answered
                    .into_iter()
                    .filter(|(_, ok)| *ok)
                    .map(|(id, _)| id)
                    .collect();
                want.is_subset(&up).then_some(())
            },
        )
        .await;
    }

    /// `state.apply` (highstate) on exactly `ids`.
    pub async fn apply(&self, ids: &[String]) -> ApplyReport {
        self.salt
            .apply(ids, None, Duration::from_secs(120))
            .await
            .expect("salt-api answers")
    }

    /// Builds a release with `scripts/release` into the master's file root.
    pub fn release(&self, component: &str, version: &str, faults: &[&str]) -> Release {
        make_release(self.work.path(), component, version, faults)
    }

    /// Waits until Prometheus shows `version` on every host in `ids`.
    pub async fn wait_versions(&self, component: &str, version: &str, ids: &[String]) {
        eventually(
            &format!("{component} {version} on {ids:?} in Prometheus"),
            Duration::from_secs(60),
            || async {
                let seen = self.prometheus.versions(component).await.ok()?;
                ids.iter()
                    .all(|id| seen.get(id).is_some_and(|v| v == version))
                    .then_some(())
            },
        )
        .await;
    }

    /// Assigns `release` to `host` in the controller's store.
    pub async fn assign(&self, host: &str, release: &Release) {
        self.store
            .assign(host, release.component(), &release.stored())
            .await
            .expect("store assignment");
    }

    /// Kills Prometheus (its data stays on disk).
    pub fn stop_prometheus(&mut self) {
        if let Some(mut p) = self.prometheus_proc.take() {
            kill_group(p.pid());
            p.kill();
        }
    }

    /// Starts Prometheus again on its data and waits until it scrapes every
    /// host again.
    pub async fn start_prometheus(&mut self) {
        if self.prometheus_proc.is_none() {
            let dir = self.work.join("prometheus");
            self.prometheus_proc = Some(spawn_prometheus(&dir, self.prometheus_addr));
        }
        let ids = self.ids(Some(Role::Edge));
        eventually(
            "Prometheus scrapes every edge again",
            Duration::from_secs(60),
            || async {
                let up = self.prometheus.query("up{job=\"edge\"} == 1").await.ok()?;
                (up.len() == ids.len()).then_some(())
            },
        )
        .await;
    }

    /// Stops the controller: Salt then gets no assignments.
    pub fn stop_controller(&mut self) {
        if let Some(mut p) = self.controller_proc.take() {
            kill_group(p.pid());
            p.kill();
        }
    }

    /// The pid of the fleet's controller service, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller_proc.as_ref().map(Proc::pid)
    }

    /// Another `rollout serve` on the fleet's store with the controller's
    /// settings, on an address of its own (for fail-over tests); the caller
    /// owns the process.
    pub fn spawn_standby_controller(&self, name: &str, host: u8) -> (Proc, SocketAddr) {
        let listen = self.net.addr(host, self.controller.port());
        let env = controller_env(&self.salt_url, &self.salt_auth.1, self.prometheus.url());
        let dir = self.work.join(name);
        std::fs::create_dir_all(&dir).expect("standby folder");
        let proc = spawn_controller(
            &dir,
            &self.database,
            listen,
            (&self.webhook_token, &self.api_token),
            &env,
        );
        (proc, listen)
    }

    /// Starts the controller again as the API alone (pillar, webhook, status;
    /// no worker, so it never takes the runner lease) and waits for it: Salt
    /// gets its pillar while a standby runs the rollouts.
    pub async fn start_controller_api_only(&mut self) {
        if self.controller_proc.is_none() {
            self.controller_proc = Some(spawn_controller(
                self.work.path(),
                &self.database,
                self.controller,
                (&self.webhook_token, &self.api_token),
                &[],
            ));
        }
        self.wait_controller().await;
    }

    /// Starts the controller again and waits for it.
    pub async fn start_controller(&mut self) {
        if self.controller_proc.is_none() {
            let env = controller_env(&self.salt_url, &self.salt_auth.1, self.prometheus.url());
            self.controller_proc = Some(spawn_controller(
                self.work.path(),
                &self.database,
                self.controller,
                (&self.webhook_token, &self.api_token),
                &env,
            ));
        }
        self.wait_controller().await;
    }

    async fn wait_controller(&self) {
        let url = format!("http://{}/healthz", self.controller);
        eventually(
            "the controller answers",
            Duration::from_secs(30),
            || async {
                crate::http::plain_client()
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status() == 200)
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Points Alertmanager's webhook at a port where nothing listens and
    /// reloads it: the controller then hears of alerts only by polling.
    pub async fn cut_alert_webhook(&self) {
        let dead = format!("http://{}{WEBHOOK_PATH}", self.net.addr(100, 9));
        let am_dir = self.work.join("alertmanager");
        write(
            &am_dir.join("alertmanager.yml"),
            &alertmanager(&dead, &self.webhook_token),
        );
        signal_quietly(&["-HUP", &self.alertmanager_pid.to_string()]);
        let status = format!("{}/api/v2/status", self.alertmanager_url);
        eventually(
            "Alertmanager loads the cut webhook",
            Duration::from_secs(20),
            || async {
                let body: serde_json::Value = crate::http::plain_client()
                    .get(&status)
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()?;
                body["config"]["original"]
                    .as_str()
                    .is_some_and(|c| c.contains(&dead))
                    .then_some(())
            },
        )
        .await;
    }

    /// Environment for `rollout` commands against this fleet.
    pub fn rollout_env(&self) -> Vec<(String, String)> {
        vec![
            ("SALT_API_URL".into(), self.salt_url.clone()),
            ("SALT_API_USER".into(), self.salt_auth.0.clone()),
            ("SALT_API_SECRET".into(), self.salt_auth.1.clone()),
            ("PROMETHEUS_URL".into(), self.prometheus.url().to_string()),
            ("ALERTMANAGER_URL".into(), self.alertmanager_url.clone()),
            ("ROLLOUT_DATABASE".into(), self.database.clone()),
            (
                "WARREN_DASHBOARDS".into(),
                workspace().join("grafana/dashboards").display().to_string(),
            ),
        ]
    }

    /// Sends requests through every edge (one round every 50 ms) until the
    /// returned guard is dropped, for at most five minutes: gates need
    /// traffic to measure.
    pub fn start_traffic(&self) -> Traffic {
        let edges: Vec<Host> = self
            .hosts
            .iter()
            .filter(|h| h.role == Role::Edge)
            .cloned()
            .collect();
        let clients: Vec<(reqwest::Client, String)> = edges
            .iter()
            .map(|e| {
                (
                    self.client_via(e),
                    format!("http://{APP_HOST}:{}/hello", e.public().port()),
                )
            })
            .collect();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(300) {
                for (client, url) in &clients {
                    let _ = client.get(url).timeout(Duration::from_secs(2)).send().await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Traffic(task)
    }

    /// A bounded load on every edge's public address, round-robin, for the
    /// fleet's app hostname (see [`crate::load`]).
    pub fn load_spec(&self, rate_per_s: u32, duration: Duration) -> crate::load::LoadSpec {
        let targets = self
            .hosts
            .iter()
            .filter(|h| h.role == Role::Edge)
            .map(|h| crate::load::Target::new(h.id.clone(), h.public()).with_tcp(h.public_tcp()))
            .collect();
        let mut spec = crate::load::LoadSpec::new(targets, APP_HOST);
        spec.rate_per_s = rate_per_s;
        spec.duration = duration;
        spec
    }

    /// The load a rollout is checked under: [`Fleet::load_spec`] at 200
    /// requests/s, with six event streams open at the start that carry 75 s
    /// of events (across the edge upgrades; shorter than the connectors'
    /// grace period, so a connector's drain finishes them), and six
    /// WebSocket and six TCP sessions open at all times, each echoing four
    /// messages a second for 20 s before it closes and the next opens.
    pub fn rollout_load(&self, duration: Duration) -> crate::load::LoadSpec {
        let mut load = self.load_spec(200, duration);
        load.mix.sse_streams = 6;
        load.mix.sse_events = 300;
        load.mix.sse_interval = Duration::from_millis(250);
        load.mix.sse_hold = false;
        load.mix.websockets = 6;
        load.mix.tcp_sessions = 6;
        load.mix.session_lifetime = Duration::from_secs(20);
        load.mix.session_interval = Duration::from_millis(250);
        load
    }

    /// Restarts a host's service the plain way, `supervisorctl restart`
    /// (stop, then start; no upgrade in place): the load check's
    /// counter-example, since the ports refuse between the two.
    pub async fn restart_plainly(&self, id: &str) {
        let host = self
            .hosts
            .iter()
            .find(|h| h.id == id)
            .unwrap_or_else(|| panic!("no host {id}"));
        let conf = self.work.join("hosts").join(id).join("supervisord.conf");
        let out = tokio::process::Command::new("supervisorctl")
            .arg("-c")
            .arg(&conf)
            .args(["restart", &format!("warren-{}", host.role.as_str())])
            .output()
            .await
            .expect("run supervisorctl");
        assert!(
            out.status.success(),
            "supervisorctl restart on {id}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops a minion (the host becomes unreachable for Salt).
    pub fn stop_minion(&mut self, id: &str) {
        if let Some(mut p) = self.minions.remove(id) {
            kill_group(p.pid());
            p.kill();
        }
    }

    /// Starts a stopped minion again.
    pub fn start_minion(&mut self, id: &str) {
        let dir = self.minion_dirs[id].clone();
        self.minions.insert(id.to_string(), spawn_minion(id, &dir));
    }

    /// A client that sends the fleet's app hostname to an edge.
    pub fn client_via(&self, edge: &Host) -> reqwest::Client {
        crate::http::client_for(APP_HOST, edge.public())
    }

    /// Every pid of the fleet: the processes it started, their descendants,
    /// and anything running from the fleet's folder (the services that
    /// supervisord started in process groups of their own).
    pub fn pids(&self) -> BTreeSet<u32> {
        let roots: Vec<u32> = self
            .procs
            .iter()
            .chain(self.minions.values())
            .chain(self.controller_proc.iter())
            .chain(self.prometheus_proc.iter())
            .map(Proc::pid)
            .collect();
        fleet_pids(&roots, self.work.path())
    }

    /// Sum of the proportional set size of every fleet process, in bytes.
    pub fn memory_pss(&self) -> u64 {
        self.pids()
            .into_iter()
            .filter_map(|pid| {
                let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
                let line = text.lines().find(|l| l.starts_with("Pss:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum::<u64>()
            * 1024
    }

    /// Kills every fleet process by pid and returns the pids it killed.
    pub fn teardown(&mut self) -> BTreeSet<u32> {
        let pids = self.pids();
        for p in self
            .procs
            .iter()
            .chain(self.minions.values())
            .chain(self.controller_proc.iter())
            .chain(self.prometheus_proc.iter())
        {
            kill_group(p.pid());
        }
        for pid in &pids {
            signal_quietly(&["-KILL", &pid.to_string()]);
        }
        for p in self
            .procs
            .iter_mut()
            .chain(self.minions.values_mut())
            .chain(self.controller_proc.iter_mut())
            .chain(self.prometheus_proc.iter_mut())
        {
            p.kill();
        }
        // Reap stragglers that a dying parent forked at the last moment.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let left = self.pids();
            if left.is_empty() {
                break;
            }
            for pid in left {
                signal_quietly(&["-KILL", &pid.to_string()]);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        pids
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn spawn_prometheus(dir: &Path, addr: SocketAddr) -> Proc {
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}/prometheus.yml", dir.display()))
        .arg(format!("--storage.tsdb.path={}/data", dir.display()))
        .arg(format!("--web.listen-address={addr}"))
        .arg("--web.enable-lifecycle");
    spawn("prometheus", cmd, &dir.join("prometheus.log"))
}

/// The runner lease of the fleet's controllers.
pub const LEASE_TTL: &str = "6s";

/// What the fleet's `rollout serve` runs rollouts with: Salt, Prometheus
/// and the dashboards. Not Alertmanager's URL: the service hears of alerts
/// through the webhook only, so a test shows the webhook rolled back.
fn controller_env(salt_url: &str, secret: &str, prometheus: &str) -> Vec<(String, String)> {
    vec![
        ("SALT_API_URL".into(), salt_url.into()),
        ("SALT_API_USER".into(), "warren".into()),
        ("SALT_API_SECRET".into(), secret.into()),
        ("PROMETHEUS_URL".into(), prometheus.into()),
        (
            "WARREN_DASHBOARDS".into(),
            workspace().join("grafana/dashboards").display().to_string(),
        ),
    ]
}

/// The fleet's controller service: the pillar, the webhook, the API, and
/// the worker that runs rollouts submitted to it.
fn spawn_controller(
    work: &Path,
    database: &str,
    listen: SocketAddr,
    (token, api_token): (&Path, &Path),
    env: &[(String, String)],
) -> Proc {
    let mut cmd = Command::new(bin("rollout"));
    cmd.env_remove("ALERTMANAGER_URL")
        .env_remove("SALT_API_URL")
        .envs(env.iter().map(|(k, v)| (k, v)));
    cmd.args([
        "serve",
        "--listen",
        &listen.to_string(),
        "--database",
        database,
        // A short lease: the fail-over test waits for it to expire.
        "--lease-ttl",
        LEASE_TTL,
    ])
    .arg("--webhook-token-file")
    .arg(token)
    .arg("--api-token-file")
    .arg(api_token);
    spawn("rollout serve", cmd, &work.join("controller.log"))
}

fn spawn_minion(id: &str, dir: &Path) -> Proc {
    let mut cmd = Command::new(salt_bin("salt-minion"));
    cmd.arg("-c").arg(dir).args(["-l", "warning"]);
    spawn(&format!("salt-minion {id}"), cmd, &dir.join("minion.out"))
}

fn kill_group(pgid: u32) {
    signal_quietly(&["-KILL", "--", &format!("-{pgid}")]);
}

/// Runs `kill ARGS`, ignoring "no such process": the target may be gone.
fn signal_quietly(args: &[&str]) {
    let _ = Command::new("kill")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status();
}

fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("run command");
    assert!(out.status.success(), "{cmd:?} failed: {out:?}");
    out
}

/// Runs `scripts/release` with the binaries of this build.
fn make_release(work: &Path, component: &str, version: &str, faults: &[&str]) -> Release {
    let out = run_ok(
        Command::new(workspace().join("scripts/release"))
            .args([component, version, "--out"])
            .arg(work.join("files/releases"))
            .arg("--bin-dir")
            .arg(profile_dir())
            .args(faults),
    );
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("release prints JSON");
    Release {
        component: component.to_string(),
        version: version.to_string(),
        source: format!("salt://releases/{component}/{version}/{component}-{version}.tar.gz"),
        sha256: info["sha256"].as_str().expect("sha256").to_string(),
    }
}

/// Processes descending from `roots`, plus any whose command line names
/// `dir`.
pub fn fleet_pids(roots: &[u32], dir: &Path) -> BTreeSet<u32> {
    let needle = dir.display().to_string();
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The command name may hold spaces; fields restart after ')'.
            let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<&str> = after.split_whitespace().collect();
            if fields.first() == Some(&"Z") {
                continue;
            }
            if let Some(ppid) = fields.get(1).and_then(|p| p.parse().ok()) {
                parent.insert(pid, ppid);
            }
        }
        if let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(&needle)
        {
            found.insert(pid);
        }
    }
    let alive: BTreeSet<u32> = parent.keys().copied().collect();
    found.extend(roots.iter().filter(|p| alive.contains(p)));
    loop {
        let before = found.len();
        for (pid, ppid) in &parent {
            if found.contains(ppid) {
                found.insert(*pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found
}
