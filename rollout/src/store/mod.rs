//! The durable store: one code path over `sqlx::Any`, one set of migrations,
//! for SQLite (the embedded default) and PostgreSQL (several controllers).
//!
//! Every transition is appended to the journal before it is acted on; the
//! database enforces one active rollout per component (a unique partial
//! index), so two controllers sharing PostgreSQL cannot both start one.
//!
//! SQL here is portable: `$n` placeholders, each used once and in ascending
//! order; BIGINT epoch milliseconds; JSON as TEXT; flags as BIGINT 0/1.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

use crate::plan::Plan;
use crate::spec::{Component, Spec};

mod service;
pub use service::{Lease, Request, Runner, Work};

#[cfg(test)]
mod tests;

/// Embedded migrations, applied in order, each once.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "rollout_alerts",
        include_str!("migrations/0002_rollout_alerts.sql"),
    ),
    (3, "service", include_str!("migrations/0003_service.sql")),
];

/// Key of the PostgreSQL advisory lock held while migrating.
const MIGRATION_LOCK: i64 = 0x5741_5252_454e; // "WARREN"
/// The PostgreSQL advisory lock that serialises starting rollouts.
const BEGIN_LOCK: i64 = 0x5741_5252_454f;

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another rollout of this component is active.
    #[error("rollout {id} of {component} is already active")]
    AlreadyActive {
        /// The component.
        component: Component,
        /// The active rollout.
        id: RolloutId,
    },
    /// No rollout has this id.
    #[error("no rollout {0}")]
    NotFound(RolloutId),
    /// The rollout's state does not allow what was asked (the message says
    /// why and what would).
    #[error("{0}")]
    Refused(String),
    /// A stored value is not what this version of the controller expects.
    #[error("stored {what} is invalid: {reason}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A migration failed.
    #[error("migration {version} ({name}) failed: {source}")]
    Migration {
        /// Its number.
        version: i64,
        /// Its name.
        name: &'static str,
        /// The database error.
        source: sqlx::Error,
    },
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The SQLite file could not be opened or created.
    #[error("cannot open the SQLite database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The database error.
        source: sqlx::Error,
    },
    /// The database folder could not be created.
    #[error("creating {path}: {source}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// A release as assigned to a host: what the Salt states install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// Version.
    pub version: String,
    /// Artifact URL (`salt://...`, `http(s)://...`).
    pub source: String,
    /// SHA-256 of the artifact.
    pub sha256: String,
}

/// A rollout's id, like `r-1764210000000-9f86d081`: creation time and randomness,
/// generated here so no backend-specific sequence is needed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RolloutId(pub String);

impl RolloutId {
    fn generate(now_ms: i64) -> RolloutId {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 4];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .expect("the system random source works");
        RolloutId(format!("r-{now_ms}-{}", crate::inventory::hex(&bytes)))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RolloutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Applying batches.
    Running,
    /// Waiting for a person (an inconclusive gate).
    Paused,
    /// Undoing what it did.
    RollingBack,
    /// Every batch done. Final.
    Succeeded,
    /// Rolled back. Final.
    RolledBack,
    /// Stopped by a person. Final.
    Aborted,
    /// Could not finish or roll back; needs a person. Final.
    Failed,
}

impl RolloutState {
    /// Every state.
    pub const ALL: [RolloutState; 7] = [
        RolloutState::Running,
        RolloutState::Paused,
        RolloutState::RollingBack,
        RolloutState::Succeeded,
        RolloutState::RolledBack,
        RolloutState::Aborted,
        RolloutState::Failed,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            RolloutState::Running => "running",
            RolloutState::Paused => "paused",
            RolloutState::RollingBack => "rolling_back",
            RolloutState::Succeeded => "succeeded",
            RolloutState::RolledBack => "rolled_back",
            RolloutState::Aborted => "aborted",
            RolloutState::Failed => "failed",
        }
    }

    /// Whether the rollout still holds its component (not final).
    pub fn is_active(self) -> bool {
        matches!(
            self,
            RolloutState::Running | RolloutState::Paused | RolloutState::RollingBack
        )
    }
}

impl fmt::Display for RolloutState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RolloutState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        RolloutState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown rollout state `{s}`"))
    }
}

/// A journal entry to append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happens, like `batch_start`, `salt_apply`, `gate`, `rollback`.
    pub kind: String,
    /// The host it concerns, if one.
    pub host: Option<String>,
    /// Anything else, as JSON.
    pub detail: serde_json::Value,
}

impl Event {
    /// An event about the whole rollout.
    pub fn new(kind: impl Into<String>, detail: serde_json::Value) -> Event {
        Event {
            kind: kind.into(),
            host: None,
            detail,
        }
    }

    /// The same event about one host.
    pub fn on_host(mut self, host: impl Into<String>) -> Event {
        self.host = Some(host.into());
        self
    }
}

/// A journal entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Position in the rollout's journal, from 1.
    pub seq: i64,
    /// When it was appended, epoch milliseconds.
    pub at: i64,
    /// The event.
    #[serde(flatten)]
    pub event: Event,
}

/// One component of a rollout and the version it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentVersion {
    /// Which program.
    pub component: Component,
    /// Its target version.
    pub version: String,
}

/// A rollout as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    /// Id.
    pub id: RolloutId,
    /// Component (the first, for a rollout of several).
    pub component: Component,
    /// Target version (of the first component).
    pub version: String,
    /// Every component in rollout order, the first one included.
    #[serde(default)]
    pub components: Vec<ComponentVersion>,
    /// State.
    pub state: RolloutState,
    /// Whether it holds its component.
    pub active: bool,
    /// Creation time, epoch milliseconds.
    pub created_at: i64,
    /// Last change, epoch milliseconds.
    pub updated_at: i64,
    /// Who runs it: the `apply` that started it, or `rollout serve`.
    #[serde(default)]
    pub runner: Runner,
}

impl RolloutSummary {
    /// `edge v2`, or `edge v2 then connector v2`, as `rollout plan` says it.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self
            .components
            .iter()
            .map(|c| format!("{} {}", c.component, c.version))
            .collect();
        if parts.is_empty() {
            format!("{} {}", self.component, self.version)
        } else {
            parts.join(" then ")
        }
    }
}

/// A rollout with its spec and plan.
#[derive(Debug, Clone)]
pub struct RolloutRecord {
    /// The summary.
    pub summary: RolloutSummary,
    /// The spec, re-validated from the stored form.
    pub spec: Spec,
    /// The plan it applies.
    pub plan: Plan,
}

/// A firing alert recorded against a rollout. Also the detail of the
/// rollout's `alert` journal entry, field for field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    /// Alertmanager's fingerprint of the alert's labels.
    pub fingerprint: String,
    /// The alert's labels.
    pub labels: BTreeMap<String, String>,
    /// When the alert started, RFC 3339 as Alertmanager sent it.
    pub starts_at: String,
    /// The same in epoch milliseconds, when it could be read.
    pub starts_at_ms: Option<i64>,
    /// How it arrived: `webhook` or `poll`.
    pub source: String,
    /// The spec's rollback selector it matched, as written.
    pub selector: String,
    /// When the controller received it, epoch milliseconds.
    pub received_at_ms: i64,
}

/// The store. Cheap to clone (a pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    sqlite: bool,
}

/// The default database: `$XDG_DATA_HOME/warren/rollout.db`, else
/// `~/.local/share/warren/rollout.db`, as a `sqlite://` URL.
pub fn default_url() -> String {
    let dir = std::env::var_os("XDG_DATA_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")))
        .unwrap_or_else(|| PathBuf::from("."));
    format!(
        "sqlite://{}?mode=rwc",
        dir.join("warren").join("rollout.db").display()
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn is_sqlite(url: &str) -> bool {
    url.starts_with("sqlite:")
}

/// A SQLite database in a file: its path, and the URL to open it with.
#[derive(Debug, PartialEq, Eq)]
struct SqliteFile {
    path: PathBuf,
    url: String,
}

/// The file of a `sqlite:` URL (not an in-memory one), with `mode=rwc`
/// added when the URL sets no mode, so a new file is created as the
/// default store's is.
fn sqlite_file(url: &str) -> Option<SqliteFile> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if path.is_empty() || path.starts_with(':') || params.contains(&"mode=memory") {
        return None;
    }
    let url = if params.iter().any(|p| p.starts_with("mode=")) {
        url.to_string()
    } else if query.is_empty() {
        format!("{}?mode=rwc", url.trim_end_matches('?'))
    } else {
        format!("{url}&mode=rwc")
    };
    Some(SqliteFile {
        path: PathBuf::from(path),
        url,
    })
}

impl Store {
    /// Connects (`sqlite://PATH` or `postgres://...`) and applies the
    /// migrations. A SQLite file that does not exist is created, with its
    /// folder (unless the URL sets its own `mode=`), and any failure to open
    /// it names the file.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let sqlite = sqlite_file(url);
        let url = match &sqlite {
            Some(file) => {
                if let Some(parent) = file.path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    std::fs::create_dir_all(parent).map_err(|source| StoreError::Folder {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                file.url.clone()
            }
            None => url.to_string(),
        };
        // SQLite has one writer anyway; one connection avoids lock upgrades
        // failing with SQLITE_BUSY inside this process.
        let max = if is_sqlite(&url) { 1 } else { 8 };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .map_err(|source| match &sqlite {
                Some(file) => StoreError::Open {
                    path: file.path.clone(),
                    source,
                },
                None => StoreError::Database(source),
            })?;
        let store = Store {
            pool,
            sqlite: is_sqlite(&url),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// A transaction that will write. On SQLite it takes the write lock at
    /// once (`BEGIN IMMEDIATE`): two processes that both read first and then
    /// both try to write would otherwise fail with "database is locked"
    /// instead of waiting for each other.
    async fn write_tx(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        if self.sqlite {
            self.pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            self.pool.begin().await
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS warren_migrations (
                version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await
        .or_else(|e| {
            // Two controllers creating the table at once on PostgreSQL.
            if is_unique_violation(&e) {
                Ok(Default::default())
            } else {
                Err(e)
            }
        })?;
        for &(version, name, sql) in MIGRATIONS {
            let err = |source| StoreError::Migration {
                version,
                name,
                source,
            };
            let mut tx = self.write_tx().await.map_err(err)?;
            if !self.sqlite {
                // Serialises migrations of several controllers; released at commit.
                sqlx::query("SELECT COUNT(*) AS n FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                    .bind(MIGRATION_LOCK)
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            let done = sqlx::query("SELECT version FROM warren_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err)?;
            if done.is_some() {
                continue;
            }
            for statement in split_statements(sql) {
                // Our own embedded migration text, not outside input.
                sqlx::query(sqlx::AssertSqlSafe(statement))
                    .execute(&mut *tx)
                    .await
                    .map_err(err)?;
            }
            sqlx::query(
                "INSERT INTO warren_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(err)?;
            tx.commit().await.map_err(err)?;
        }
        Ok(())
    }

    /// Starts a rollout of the spec's component with this plan, and journals
    /// `begin`, in one transaction. Fails with [`StoreError::AlreadyActive`]
    /// when another rollout of the component is active, here or in another
    /// controller sharing the database.
    pub async fn begin_rollout(&self, spec: &Spec, plan: &Plan) -> Result<RolloutId, StoreError> {
        self.begin_rollout_as(spec, plan, Runner::Cli).await
    }

    /// [`Store::begin_rollout`], run by `runner`.
    pub async fn begin_rollout_as(
        &self,
        spec: &Spec,
        plan: &Plan,
        runner: Runner,
    ) -> Result<RolloutId, StoreError> {
        let plan_json = serde_json::to_string(plan).map_err(|e| StoreError::Corrupt {
            what: "plan",
            reason: e.to_string(),
        })?;
        for _ in 0..3 {
            match self.try_begin(spec, &plan_json, runner).await {
                Err(StoreError::Database(e)) if is_unique_violation(&e) => {
                    if let Some(active) = self.active(spec.component).await? {
                        return Err(StoreError::AlreadyActive {
                            component: spec.component,
                            id: active.id,
                        });
                    }
                    // The other rollout ended in between: try again.
                }
                other => return other,
            }
        }
        Err(StoreError::Corrupt {
            what: "active rollout",
            reason: "the unique index refused the rollout but no active one is listed".into(),
        })
    }

    async fn try_begin(
        &self,
        spec: &Spec,
        plan_json: &str,
        runner: Runner,
    ) -> Result<RolloutId, StoreError> {
        let now = now_ms();
        let id = RolloutId::generate(now);
        let mut tx = self.write_tx().await?;
        if !self.sqlite {
            // Serialises the check below with other controllers' begins
            // (SQLite's `BEGIN IMMEDIATE` already does); released at commit.
            sqlx::query("SELECT COUNT(*) AS n FROM (SELECT pg_advisory_xact_lock($1)) AS l")
                .bind(BEGIN_LOCK)
                .execute(&mut *tx)
                .await?;
        }
        // The unique index holds one active row per `component` column (the
        // first component); a rollout of several components also holds the
        // others, which only its spec names.
        for component in spec.components() {
            if let Some(active) = holder(&mut tx, component).await? {
                return Err(StoreError::AlreadyActive {
                    component,
                    id: active.id,
                });
            }
        }
        sqlx::query(
            "INSERT INTO rollouts
                (id, component, version, spec, plan, state, active, created_at, updated_at, runner)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(id.as_str())
        .bind(spec.component.as_str())
        .bind(spec.version.as_str())
        .bind(spec.to_json())
        .bind(plan_json)
        .bind(RolloutState::Running.as_str())
        .bind(1i64)
        .bind(now)
        .bind(now)
        .bind(runner.as_str())
        .execute(&mut *tx)
        .await?;
        let components: Vec<serde_json::Value> = spec
            .parts
            .iter()
            .map(|p| serde_json::json!({"component": p.component, "version": p.version}))
            .collect();
        let begin = Event::new(
            "begin",
            serde_json::json!({"component": spec.component, "version": spec.version, "components": components}),
        );
        append(&mut tx, &id, &begin, now).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Appends an event to the rollout's journal; returns its sequence number.
    pub async fn journal(&self, id: &RolloutId, event: &Event) -> Result<i64, StoreError> {
        let mut tx = self.write_tx().await?;
        self.require(&mut tx, id).await?;
        let seq = append(&mut tx, id, event, now_ms()).await?;
        tx.commit().await?;
        Ok(seq)
    }

    /// Moves the rollout to a state, journaling `state` first in the same
    /// transaction. A final state releases the component.
    pub async fn set_state(&self, id: &RolloutId, state: RolloutState) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let from = self.require(&mut tx, id).await?;
        let event = Event::new(
            "state",
            serde_json::json!({"from": from.as_str(), "to": state.as_str()}),
        );
        append(&mut tx, id, &event, now).await?;
        sqlx::query("UPDATE rollouts SET state = $1, active = $2, updated_at = $3 WHERE id = $4")
            .bind(state.as_str())
            .bind(i64::from(state.is_active()))
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records that batch `batch` of stage `stage` finished (journaling
    /// `batch_done` in the same transaction). Recording it twice is harmless.
    pub async fn finish_batch(
        &self,
        id: &RolloutId,
        stage: usize,
        batch: usize,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        self.require(&mut tx, id).await?;
        let inserted = sqlx::query(
            "INSERT INTO batches_done (rollout_id, stage, batch, finished_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (rollout_id, stage, batch) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(stage as i64)
        .bind(batch as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            let event = Event::new(
                "batch_done",
                serde_json::json!({"stage": stage, "batch": batch}),
            );
            append(&mut tx, id, &event, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The finished `(stage, batch)` pairs of a rollout.
    pub async fn batches_done(
        &self,
        id: &RolloutId,
    ) -> Result<BTreeSet<(usize, usize)>, StoreError> {
        let rows = sqlx::query("SELECT stage, batch FROM batches_done WHERE rollout_id = $1")
            .bind(id.as_str())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let stage: i64 = r.try_get("stage")?;
                let batch: i64 = r.try_get("batch")?;
                Ok((stage as usize, batch as usize))
            })
            .collect()
    }

    /// Assigns a release of a component to a host (the Salt pillar's source).
    pub async fn assign(
        &self,
        host: &str,
        component: Component,
        release: &Release,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO assignments (host, component, version, source, sha256, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (host, component)
             DO UPDATE SET version = excluded.version, source = excluded.source,
                 sha256 = excluded.sha256, updated_at = excluded.updated_at",
        )
        .bind(host)
        .bind(component.as_str())
        .bind(&release.version)
        .bind(&release.source)
        .bind(&release.sha256)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a host's assignment of a component (the pillar then has none,
    /// and the Salt states keep what the host runs).
    pub async fn unassign(&self, host: &str, component: Component) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM assignments WHERE host = $1 AND component = $2")
            .bind(host)
            .bind(component.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The releases assigned to a host, by component.
    pub async fn assignments_for(
        &self,
        host: &str,
    ) -> Result<BTreeMap<Component, Release>, StoreError> {
        let rows = sqlx::query(
            "SELECT component, version, source, sha256 FROM assignments WHERE host = $1",
        )
        .bind(host)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let component: String = r.try_get("component")?;
                let version = Release {
                    version: r.try_get("version")?,
                    source: r.try_get("source")?,
                    sha256: r.try_get("sha256")?,
                };
                let component = component.parse().map_err(|reason| StoreError::Corrupt {
                    what: "assignment component",
                    reason,
                })?;
                Ok((component, version))
            })
            .collect()
    }

    /// Records a firing alert against a rollout once per fingerprint (the
    /// first delivery wins: webhook retries and later polls change nothing)
    /// and, when new, journals `alert` with the record as detail in the same
    /// transaction. `true` when recorded now. Only a running or paused
    /// rollout records alerts: once it rolls back or has ended there is
    /// nothing left for an alert to stop, so this returns `false`.
    pub async fn record_rollout_alert(
        &self,
        id: &RolloutId,
        alert: &AlertRecord,
    ) -> Result<bool, StoreError> {
        let detail = serde_json::to_value(alert).map_err(|e| StoreError::Corrupt {
            what: "alert",
            reason: e.to_string(),
        })?;
        let event = Event::new("alert", detail);
        let mut attempt = 1;
        loop {
            match self.try_record_alert(id, alert, &event).await {
                // Another connection appended to this journal at the same
                // moment (PostgreSQL) and took our sequence number: again.
                Err(StoreError::Database(e)) if is_unique_violation(&e) && attempt < 3 => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_record_alert(
        &self,
        id: &RolloutId,
        alert: &AlertRecord,
        event: &Event,
    ) -> Result<bool, StoreError> {
        let labels = serde_json::to_string(&alert.labels).map_err(|e| StoreError::Corrupt {
            what: "alert labels",
            reason: e.to_string(),
        })?;
        let mut tx = self.write_tx().await?;
        let state = self.require(&mut tx, id).await?;
        if !matches!(state, RolloutState::Running | RolloutState::Paused) {
            return Ok(false);
        }
        let inserted = sqlx::query(
            "INSERT INTO rollout_alerts (rollout_id, fingerprint, labels, starts_at,
                 starts_at_ms, source, selector, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (rollout_id, fingerprint) DO NOTHING",
        )
        .bind(id.as_str())
        .bind(&alert.fingerprint)
        .bind(labels)
        .bind(&alert.starts_at)
        .bind(alert.starts_at_ms)
        .bind(&alert.source)
        .bind(&alert.selector)
        .bind(alert.received_at_ms)
        .execute(&mut *tx)
        .await?;
        let new = inserted.rows_affected() == 1;
        if new {
            append(&mut tx, id, event, now_ms()).await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    /// The alerts recorded against a rollout, first received first (none
    /// for an unknown rollout).
    pub async fn rollout_alerts(&self, id: &RolloutId) -> Result<Vec<AlertRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT fingerprint, labels, starts_at, starts_at_ms, source, selector, received_at
             FROM rollout_alerts WHERE rollout_id = $1 ORDER BY received_at, fingerprint",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let labels: String = r.try_get("labels")?;
                Ok(AlertRecord {
                    fingerprint: r.try_get("fingerprint")?,
                    labels: serde_json::from_str(&labels).map_err(|e| StoreError::Corrupt {
                        what: "alert labels",
                        reason: e.to_string(),
                    })?,
                    starts_at: r.try_get("starts_at")?,
                    starts_at_ms: r.try_get("starts_at_ms")?,
                    source: r.try_get("source")?,
                    selector: r.try_get("selector")?,
                    received_at_ms: r.try_get("received_at")?,
                })
            })
            .collect()
    }

    /// The rollout's journal, in order.
    pub async fn history(&self, id: &RolloutId) -> Result<Vec<Step>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, kind, host, detail, at FROM steps WHERE rollout_id = $1 ORDER BY seq",
        )
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            // Every rollout has at least `begin`.
            return Err(StoreError::NotFound(id.clone()));
        }
        rows.iter().map(step).collect()
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<RolloutSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, component, version, state, active, created_at, updated_at, runner, spec
             FROM rollouts ORDER BY created_at DESC, id DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(summary).collect()
    }

    /// The active rollout that holds a component, if any: a rollout of that
    /// component, or one of several components that lists it.
    pub async fn active(&self, component: Component) -> Result<Option<RolloutSummary>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        holder(&mut conn, component).await
    }

    /// A rollout with its spec and plan.
    pub async fn get(&self, id: &RolloutId) -> Result<RolloutRecord, StoreError> {
        let row = sqlx::query(
            "SELECT id, component, version, state, active, created_at, updated_at, runner, spec, plan
             FROM rollouts WHERE id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?
        .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        record(&row)
    }

    /// The rollouts that are running or paused (those a firing alert rolls
    /// back), with their specs, oldest first.
    pub async fn running_or_paused(&self) -> Result<Vec<RolloutRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, component, version, state, active, created_at, updated_at, runner, spec, plan
             FROM rollouts WHERE active = 1 AND (state = $1 OR state = $2)
             ORDER BY created_at, id",
        )
        .bind(RolloutState::Running.as_str())
        .bind(RolloutState::Paused.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record).collect()
    }

    /// The rollout's state, or `NotFound`.
    async fn require(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        id: &RolloutId,
    ) -> Result<RolloutState, StoreError> {
        let row = sqlx::query("SELECT state FROM rollouts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.clone()))?;
        let state: String = row.try_get("state")?;
        state.parse().map_err(|reason| StoreError::Corrupt {
            what: "state",
            reason,
        })
    }
}

/// Appends one journal entry with the next sequence number.
async fn append(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    id: &RolloutId,
    event: &Event,
    at: i64,
) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COALESCE(MAX(seq), 0) AS last FROM steps WHERE rollout_id = $1")
        .bind(id.as_str())
        .fetch_one(&mut **tx)
        .await?;
    let last: i64 = row.try_get("last")?;
    let seq = last + 1;
    sqlx::query(
        "INSERT INTO steps (rollout_id, seq, kind, host, detail, at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.as_str())
    .bind(seq)
    .bind(event.kind.as_str())
    .bind(event.host.clone())
    .bind(event.detail.to_string())
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(seq)
}

/// The active rollout holding `component`: by its `component` column, or
/// by a `components:` entry of its spec.
async fn holder(
    conn: &mut sqlx::AnyConnection,
    component: Component,
) -> Result<Option<RolloutSummary>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, component, version, state, active, created_at, updated_at, runner, spec
         FROM rollouts WHERE active = 1 ORDER BY created_at, id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in &rows {
        let held = summary(row)?;
        if held.components.iter().any(|c| c.component == component) {
            return Ok(Some(held));
        }
    }
    Ok(None)
}

/// A row's summary; every query that makes one selects the spec too, for
/// the components of a rollout of several.
fn summary(row: &AnyRow) -> Result<RolloutSummary, StoreError> {
    let component: String = row.try_get("component")?;
    let component: Component = component.parse().map_err(|reason| StoreError::Corrupt {
        what: "component",
        reason,
    })?;
    let version: String = row.try_get("version")?;
    let state: String = row.try_get("state")?;
    let active: i64 = row.try_get("active")?;
    let spec: String = row.try_get("spec")?;
    let mut components = components_of(&spec)?;
    if components.is_empty() {
        components.push(ComponentVersion {
            component,
            version: version.clone(),
        });
    }
    Ok(RolloutSummary {
        id: RolloutId(row.try_get("id")?),
        component,
        version,
        components,
        state: state.parse().map_err(|reason| StoreError::Corrupt {
            what: "state",
            reason,
        })?,
        active: active == 1,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        runner: {
            let runner: String = row.try_get("runner")?;
            runner.parse().map_err(|reason| StoreError::Corrupt {
                what: "runner",
                reason,
            })?
        },
    })
}

/// The `components:` of a stored spec (none for the one-component form).
fn components_of(spec: &str) -> Result<Vec<ComponentVersion>, StoreError> {
    #[derive(Deserialize)]
    struct Listed {
        #[serde(default)]
        components: Vec<ComponentVersion>,
    }
    serde_json::from_str::<Listed>(spec)
        .map(|l| l.components)
        .map_err(|e| StoreError::Corrupt {
            what: "spec",
            reason: e.to_string(),
        })
}

/// A journal row as a step.
fn step(r: &AnyRow) -> Result<Step, StoreError> {
    let detail: String = r.try_get("detail")?;
    Ok(Step {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        event: Event {
            kind: r.try_get("kind")?,
            host: r.try_get("host")?,
            detail: serde_json::from_str(&detail).map_err(|e| StoreError::Corrupt {
                what: "journal detail",
                reason: e.to_string(),
            })?,
        },
    })
}

fn record(row: &AnyRow) -> Result<RolloutRecord, StoreError> {
    let spec: String = row.try_get("spec")?;
    let plan: String = row.try_get("plan")?;
    Ok(RolloutRecord {
        summary: summary(row)?,
        spec: Spec::from_json(&spec).map_err(|e| StoreError::Corrupt {
            what: "spec",
            reason: e.to_string(),
        })?,
        plan: Plan::from_json(&plan).map_err(|e| StoreError::Corrupt {
            what: "plan",
            reason: e.to_string(),
        })?,
    })
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

/// Splits a migration file into statements (on `;` at line ends; comments dropped).
fn split_statements(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or("").trim_end();
        if line.trim().is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if line.ends_with(';') {
            out.push(current.trim().trim_end_matches(';').to_string());
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_string());
    }
    out
}
