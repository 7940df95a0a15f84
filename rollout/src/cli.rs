//! The `rollout` command line: where the outside systems are (flags, their
//! environment variables, or one config file with the same keys), and the
//! commands.

use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::Deserialize;

use crate::controller::Controller;
use crate::prometheus::Prometheus;
use crate::salt::{SaltApi, SaltSecret};

/// Warren rollout controller: stages a version of `edge` or `connector`, or
/// of both in order (edge first), across data-center cohorts through Salt,
/// gated on Prometheus.
#[derive(Debug, Parser)]
#[command(name = "rollout", version, propagate_version = true)]
pub struct Cli {
    /// Where the outside systems are.
    #[command(flatten)]
    pub connect: Connect,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Connection settings. Each flag has an environment variable; a config
/// file (`--config`) may hold the same keys (`salt_api`, `prometheus`, ...).
/// Secrets come from the environment or a file, never from a plain flag.
#[derive(Debug, Args, Default)]
pub struct Connect {
    /// YAML file with any of these settings.
    #[arg(long, env = "ROLLOUT_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// salt-api base URL, e.g. http://salt-master:8000.
    #[arg(long, env = "SALT_API_URL", global = true, value_name = "URL")]
    pub salt_api: Option<String>,
    /// salt-api user (sharedsecret eauth).
    #[arg(long, env = "SALT_API_USER", global = true, value_name = "USER")]
    pub salt_api_user: Option<String>,
    /// File holding the salt-api secret (else SALT_API_SECRET).
    #[arg(long, env = "SALT_API_SECRET_FILE", global = true, value_name = "FILE")]
    pub salt_api_secret_file: Option<PathBuf>,
    /// Prometheus base URL, e.g. http://prometheus:9090.
    #[arg(long, env = "PROMETHEUS_URL", global = true, value_name = "URL")]
    pub prometheus: Option<String>,
    /// Alertmanager base URL (polled for firing alerts during a rollout).
    #[arg(long, env = "ALERTMANAGER_URL", global = true, value_name = "URL")]
    pub alertmanager: Option<String>,
    /// Grafana base URL (annotations; dashboards for panel gates).
    #[arg(long, env = "GRAFANA_URL", global = true, value_name = "URL")]
    pub grafana: Option<String>,
    /// File holding a Grafana service-account token.
    #[arg(long, env = "GRAFANA_TOKEN_FILE", global = true, value_name = "FILE")]
    pub grafana_token_file: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://... [default: a SQLite file in the user's data folder]
    #[arg(long, env = "ROLLOUT_DATABASE", global = true, value_name = "URL")]
    pub database: Option<String>,
    /// Folder of Grafana dashboards for panel gates. [default: grafana/dashboards]
    #[arg(long, env = "WARREN_DASHBOARDS", global = true, value_name = "DIR")]
    pub dashboards: Option<PathBuf>,
    /// A controller service (`rollout serve`) to work through, e.g.
    /// http://127.0.0.1:9099: `apply` submits the plan to it and follows
    /// the rollout there (Ctrl-C detaches; the rollout goes on), and
    /// `status`, `history`, `pause`, `resume` and `abort` go through its
    /// API. Without it the commands work on the store directly.
    #[arg(long, env = "ROLLOUT_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// File holding the controller service's API token (--server).
    #[arg(long, env = "ROLLOUT_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate to trust for an https --server.
    #[arg(long, env = "ROLLOUT_SERVER_CA", global = true, value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    salt_api: Option<String>,
    salt_api_user: Option<String>,
    salt_api_secret_file: Option<PathBuf>,
    prometheus: Option<String>,
    alertmanager: Option<String>,
    grafana: Option<String>,
    grafana_token_file: Option<PathBuf>,
    database: Option<String>,
    dashboards: Option<PathBuf>,
    server: Option<String>,
    token_file: Option<PathBuf>,
    server_ca: Option<PathBuf>,
}

/// How plans, statuses and progress are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Output {
    /// For people: a table, or progress lines that start with the time of
    /// day in UTC (`[15:08:16.1] ...`).
    #[default]
    #[value(alias = "plain")]
    Table,
    /// For programs: one JSON document, or for progress one JSON object
    /// per event and line (`{"at": RFC 3339 UTC, "event": ..., ...}`).
    Json,
}

/// `rollout` subcommands. Each has its own arguments struct, so a flag is
/// added in one place and reaches its command's module whole.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec and report every problem with its field's path.
    Validate(ValidateArgs),
    /// Show what a rollout would do: stages, batches and hosts in a stable
    /// order, hosts skipped (already on the version) or unreachable, every
    /// gate evaluated once, and an estimate. Exits 2 when the plan cannot be
    /// executed as written.
    Plan(PlanArgs),
    /// Apply a plan file (refused when the fleet changed since it was made),
    /// or plan a spec and apply it. Prints one line per event. A firing
    /// alert that the spec's `rollback.alerts` selects (delivered to
    /// `serve`'s webhook, or found by polling --alertmanager) rolls back at
    /// once. Exits 0 when the rollout succeeded, 2 when it rolled back, 3
    /// when a gate paused it, 4 when its rollback failed.
    Apply(ApplyArgs),
    /// Show a rollout (the newest without ID), or follow it with --watch.
    Status(StatusArgs),
    /// List rollouts, or show every step of one.
    History(HistoryArgs),
    /// Stop a running rollout at its next step (exit 3 from its `apply`).
    Pause(RolloutArg),
    /// Go on with a paused rollout (or one whose controller was killed),
    /// from the exact step it stopped at; finished batches are not applied
    /// again.
    Resume(RunArgs),
    /// Roll a paused rollout back: every host it touched returns to its
    /// previous release, newest first.
    Abort(RunArgs),
    /// Run the controller as a service: it runs the rollouts submitted to
    /// it (`apply --server`, POST /v1/rollouts) with the same engine as
    /// `apply`, rolls back on Alertmanager's webhook with nobody attached,
    /// and serves the API (/v1/, described at /v1/openapi.json), the live
    /// page (/), the Salt pillar of assigned releases and metrics. Several
    /// serve processes on one PostgreSQL database share the work: one holds
    /// the runner lease and runs rollouts, the others answer the API and
    /// take over when it dies. Without --salt-api it runs no rollouts.
    Serve(ServeArgs),
}

/// Arguments of `rollout validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The rollout spec (YAML).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub spec: PathBuf,
}

/// Arguments of `rollout plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The rollout spec (YAML).
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub spec: PathBuf,
    /// Also write the plan (with the inventory it saw) to this file.
    #[arg(short = 'o', long = "out", value_name = "PLAN.json")]
    pub out: Option<PathBuf>,
    /// Print a table or JSON.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Arguments of `rollout apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan written by `rollout plan -o`.
    #[arg(
        value_name = "PLAN.json",
        required_unless_present = "spec",
        conflicts_with = "spec"
    )]
    pub plan: Option<PathBuf>,
    /// Plan this spec now and apply it.
    #[arg(short = 'f', long = "file", value_name = "SPEC")]
    pub spec: Option<PathBuf>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
    /// Progress as plain lines (`table`, also `plain`: `[HH:MM:SS.d]`
    /// time of day in UTC, then the event) or JSON lines (the plan table
    /// then goes to stderr, so stdout holds only events).
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Arguments of `rollout status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Rollout id. [default: the newest]
    pub id: Option<String>,
    /// Print a table or JSON.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
    /// Follow the rollout: print each new journal step and the status
    /// line when it changes, until the rollout ends; exit as its
    /// `apply` does (0 succeeded, 2 rolled back or aborted, 4 failed).
    #[arg(long, short)]
    pub watch: bool,
    /// How often `--watch` reads the store.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: std::time::Duration,
}

/// Arguments of `rollout history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Rollout id.
    pub id: Option<String>,
}

/// The one rollout that `pause` acts on.
#[derive(Debug, Args)]
pub struct RolloutArg {
    /// Rollout id.
    pub id: String,
}

/// The rollout that `resume` and `abort` run here, and how its progress
/// is printed.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Rollout id.
    pub id: String,
    /// Progress as plain lines (`table`, also `plain`: `[HH:MM:SS.d]`
    /// time of day in UTC, then the event) or one JSON object per event.
    #[arg(long, value_enum, default_value_t)]
    pub output: Output,
}

/// Arguments of `rollout serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9099", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// File holding the bearer token Alertmanager sends to the webhook
    /// (POST /v1/alerts/alertmanager). Without it the webhook refuses
    /// every delivery.
    #[arg(long, env = "WARREN_WEBHOOK_TOKEN_FILE", value_name = "FILE")]
    pub webhook_token_file: Option<PathBuf>,
    /// File holding the API's bearer token: every change (submit, pause,
    /// resume, abort) needs it, and so do reads (GET /pillar/MINION,
    /// /v1/rollouts, events) unless --open-reads. Without it changes are
    /// refused and reads are open, so serve then refuses any --listen
    /// address that is not loopback.
    #[arg(long, env = "WARREN_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Let reads (status, list, events, the page's data, pillar) through
    /// without the token; changes still need it.
    #[arg(long, env = "WARREN_OPEN_READS")]
    pub open_reads: bool,
    /// How long the runner lease lasts without renewal. The serve process
    /// holding it runs the service's rollouts and renews it every third of
    /// this; when it dies another serve sharing the database takes over
    /// within this time plus one renewal interval.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub lease_ttl: std::time::Duration,
    /// PEM certificate chain: serve HTTPS (TLS 1.3/1.2, rustls) instead
    /// of plain HTTP. Required, with --tls-key, off loopback.
    #[arg(
        long,
        env = "WARREN_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "WARREN_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
}

/// A setting that is missing or wrong; never contains a secret.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl Connect {
    fn merged(mut self) -> Result<Self, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let f: ConfigFile = serde_yaml::from_str(&text)
            .map_err(|e| ConfigError(format!("config file {} is invalid: {e}", path.display())))?;
        self.salt_api = self.salt_api.or(f.salt_api);
        self.salt_api_user = self.salt_api_user.or(f.salt_api_user);
        self.salt_api_secret_file = self.salt_api_secret_file.or(f.salt_api_secret_file);
        self.prometheus = self.prometheus.or(f.prometheus);
        self.alertmanager = self.alertmanager.or(f.alertmanager);
        self.grafana = self.grafana.or(f.grafana);
        self.grafana_token_file = self.grafana_token_file.or(f.grafana_token_file);
        self.database = self.database.or(f.database);
        self.dashboards = self.dashboards.or(f.dashboards);
        self.server = self.server.or(f.server);
        self.token_file = self.token_file.or(f.token_file);
        self.server_ca = self.server_ca.or(f.server_ca);
        Ok(self)
    }

    /// The controller service to work through, when one is configured.
    pub fn server(&self) -> Result<Option<crate::client::ServerSettings>, ConfigError> {
        let merged = Connect {
            config: self.config.clone(),
            server: self.server.clone(),
            token_file: self.token_file.clone(),
            server_ca: self.server_ca.clone(),
            ..Default::default()
        }
        .merged()?;
        Ok(merged.server.map(|url| crate::client::ServerSettings {
            url,
            token_file: merged.token_file,
            ca_file: merged.server_ca,
        }))
    }

    /// The database URL: the flag, the file, or the default SQLite file.
    pub fn database(&self) -> Result<String, ConfigError> {
        let merged = Connect {
            config: self.config.clone(),
            database: self.database.clone(),
            ..Default::default()
        }
        .merged()?;
        Ok(merged.database.unwrap_or_else(crate::store::default_url))
    }

    /// The controller when salt-api is configured (flag, environment or
    /// file), else `None`; a partial configuration is an error.
    pub fn controller_if_configured(self) -> Result<Option<Controller>, ConfigError> {
        let c = self.merged()?;
        if c.salt_api.is_none() {
            return Ok(None);
        }
        c.controller().map(Some)
    }

    /// The controller, or a message naming what is missing.
    pub fn controller(self) -> Result<Controller, ConfigError> {
        let c = self.merged()?;
        let missing = |flag: &str, env: &str| {
            ConfigError(format!(
                "{flag} is required: pass it, set {env}, or put it in --config"
            ))
        };
        let salt_url = c
            .salt_api
            .ok_or_else(|| missing("--salt-api", "SALT_API_URL"))?;
        let user = c
            .salt_api_user
            .ok_or_else(|| missing("--salt-api-user", "SALT_API_USER"))?;
        let secret = read_secret(c.salt_api_secret_file.as_deref())?;
        let prometheus = c
            .prometheus
            .ok_or_else(|| missing("--prometheus", "PROMETHEUS_URL"))?;
        let salt =
            SaltApi::new(&salt_url, &user, secret).map_err(|e| ConfigError(e.to_string()))?;
        let alertmanager = c
            .alertmanager
            .as_deref()
            .map(crate::alerts::Alertmanager::new)
            .transpose()
            .map_err(|e| ConfigError(format!("--alertmanager: {e}")))?;
        let grafana = match &c.grafana {
            None => None,
            Some(url) => {
                let token = c
                    .grafana_token_file
                    .as_deref()
                    .map(|path| {
                        std::fs::read_to_string(path)
                            .map(|t| t.trim().to_string())
                            .map_err(|e| {
                                ConfigError(format!(
                                    "cannot read Grafana token file {}: {e}",
                                    path.display()
                                ))
                            })
                    })
                    .transpose()?;
                Some(
                    crate::annotations::GrafanaClient::new(url, token)
                        .map_err(|e| ConfigError(format!("--grafana: {e}")))?,
                )
            }
        };
        Ok(Controller {
            salt,
            prometheus: Prometheus::new(&prometheus),
            dashboards: c.dashboards.unwrap_or_else(crate::grafana::default_dir),
            alertmanager,
            grafana,
        })
    }
}

fn read_secret(file: Option<&Path>) -> Result<SaltSecret, ConfigError> {
    match file {
        Some(path) => std::fs::read_to_string(path)
            .map(|s| SaltSecret(s.trim().to_string()))
            .map_err(|e| {
                ConfigError(format!(
                    "cannot read salt-api secret file {}: {e}",
                    path.display()
                ))
            }),
        None => std::env::var("SALT_API_SECRET")
            .map(SaltSecret)
            .map_err(|_| {
                ConfigError(
                    "no salt-api secret: set SALT_API_SECRET or pass --salt-api-secret-file FILE"
                        .into(),
                )
            }),
    }
}
