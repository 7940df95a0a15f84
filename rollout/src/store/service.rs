//! What `rollout serve` keeps in the store to run rollouts as a service:
//! who runs each rollout, the lease that makes one serve process the
//! runner, the requests people make through the API (pause, resume,
//! abort), and the journal read by time for the API's event stream.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{
    Event, RolloutId, RolloutRecord, RolloutState, Step, Store, StoreError, append, now_ms,
};

/// Who runs a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Runner {
    /// The `rollout apply` (or `resume`) process that started it.
    #[default]
    Cli,
    /// The worker of the `rollout serve` that holds the lease.
    Serve,
}

impl Runner {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Runner::Cli => "cli",
            Runner::Serve => "serve",
        }
    }
}

impl fmt::Display for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Runner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cli" => Ok(Runner::Cli),
            "serve" => Ok(Runner::Serve),
            other => Err(format!("unknown runner `{other}`")),
        }
    }
}

/// What a person asks of a rollout through the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Stop at the next step.
    Pause,
    /// Go on from where it stopped; the service runs it from now on.
    Resume,
    /// Stop for good and put every touched host back; the service does it.
    Abort,
}

/// What the service's worker has to do with a rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Run (or resume, or finish rolling back) it.
    Run,
    /// Abort it: it is paused and a person asked for the abort.
    Abort,
}

/// The lease as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// The serve process that holds it (`host:pid:random`).
    pub holder: String,
    /// When this holder took it, epoch ms (the database's clock).
    pub acquired_at: i64,
    /// Its last renewal.
    pub renewed_at: i64,
    /// When another process may take it.
    pub expires_at: i64,
}

fn lease_of(row: &sqlx::any::AnyRow) -> Result<Lease, StoreError> {
    Ok(Lease {
        holder: row.try_get("holder")?,
        acquired_at: row.try_get("acquired_at")?,
        renewed_at: row.try_get("renewed_at")?,
        expires_at: row.try_get("expires_at")?,
    })
}

impl Store {
    /// The database's clock in epoch ms, as SQL: every process sharing the
    /// database compares lease times on one clock.
    fn db_now(&self) -> &'static str {
        if self.sqlite {
            "CAST((julianday('now') - 2440587.5) * 86400000 AS BIGINT)"
        } else {
            "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
        }
    }

    /// Takes or renews lease `name` for `holder` for `ttl`: it is taken when
    /// nobody holds it, renewed when `holder` does, and taken over when
    /// the last holder let it expire. One statement, so two processes
    /// cannot both win. `None`: another process holds it.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4);
        // `WHERE true` keeps SQLite from reading ON CONFLICT as a join.
        let sql = format!(
            "INSERT INTO controller_lease (name, holder, acquired_at, renewed_at, expires_at)
             SELECT $1, $2, t.now, t.now, t.now + $3 FROM (SELECT {} AS now) AS t WHERE true
             ON CONFLICT (name) DO UPDATE SET
                 holder = excluded.holder,
                 acquired_at = CASE WHEN controller_lease.holder = excluded.holder
                     THEN controller_lease.acquired_at ELSE excluded.acquired_at END,
                 renewed_at = excluded.renewed_at,
                 expires_at = excluded.expires_at
             WHERE controller_lease.holder = excluded.holder
                OR controller_lease.expires_at < excluded.renewed_at
             RETURNING holder, acquired_at, renewed_at, expires_at",
            self.db_now()
        );
        let mut tx = self.write_tx().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(holder)
            .bind(ttl)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        row.as_ref().map(lease_of).transpose()
    }

    /// Gives lease `name` up if `holder` has it, so a standby takes over at
    /// its next try instead of after the expiry.
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM controller_lease WHERE name = $1 AND holder = $2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Lease `name` as it stands, whoever holds it.
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query(
            "SELECT holder, acquired_at, renewed_at, expires_at FROM controller_lease WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(lease_of).transpose()
    }

    /// The service's rollouts that need its worker, oldest first: running or
    /// rolling back ones to run, paused ones with an abort request to abort.
    pub async fn service_work(&self) -> Result<Vec<(RolloutRecord, Work)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, component, version, state, active, created_at, updated_at, runner, spec, plan,
                    EXISTS (SELECT 1 FROM steps s WHERE s.rollout_id = r.id AND s.kind = 'abort_requested')
                        AS abort_requested
             FROM rollouts r WHERE active = 1 AND runner = $1 ORDER BY created_at, id",
        )
        .bind(Runner::Serve.as_str())
        .fetch_all(&self.pool)
        .await?;
        let mut work = Vec::new();
        for row in &rows {
            let rec = super::record(row)?;
            // PostgreSQL answers EXISTS with a boolean, SQLite with 0 or 1.
            let abort = row
                .try_get::<bool, _>("abort_requested")
                .or_else(|_| row.try_get::<i64, _>("abort_requested").map(|n| n != 0))?;
            match rec.summary.state {
                RolloutState::Running | RolloutState::RollingBack => work.push((rec, Work::Run)),
                RolloutState::Paused if abort => work.push((rec, Work::Abort)),
                _ => {}
            }
        }
        Ok(work)
    }

    /// Applies a person's request in one transaction: the state check, the
    /// journal entry and the change, so a refused request changes nothing.
    /// Resume and abort hand the rollout to the service (`runner = serve`):
    /// no `apply` is left running a paused rollout.
    pub async fn request(
        &self,
        id: &RolloutId,
        request: Request,
        by: &str,
    ) -> Result<super::RolloutSummary, StoreError> {
        let now = now_ms();
        let mut tx = self.write_tx().await?;
        let state = self.require(&mut tx, id).await?;
        let aborting = sqlx::query(
            "SELECT COUNT(*) AS n FROM steps WHERE rollout_id = $1 AND kind = 'abort_requested'",
        )
        .bind(id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get::<i64, _>("n")?
            > 0;
        let refuse = |why: String| {
            Err(StoreError::Refused(format!(
                "rollout {id} is {state}: {why}"
            )))
        };
        let (kind, to) = match (request, state) {
            _ if aborting && request != Request::Pause => {
                return refuse("an abort is already under way".into());
            }
            (Request::Pause, RolloutState::Running) => ("pause_requested", RolloutState::Paused),
            (Request::Pause, _) => return refuse("only a running rollout can be paused".into()),
            (Request::Resume, RolloutState::Paused) => ("resumed", RolloutState::Running),
            (Request::Resume, _) => return refuse("only a paused rollout can be resumed".into()),
            // A running rollout stops at its next step first; the worker
            // then rolls it back.
            (Request::Abort, RolloutState::Running | RolloutState::Paused) => {
                ("abort_requested", RolloutState::Paused)
            }
            (Request::Abort, _) => {
                return refuse("only a running or paused rollout can be aborted".into());
            }
        };
        append(
            &mut tx,
            id,
            &Event::new(kind, serde_json::json!({"by": by})),
            now,
        )
        .await?;
        if to != state {
            append(
                &mut tx,
                id,
                &Event::new(
                    "state",
                    serde_json::json!({"from": state.as_str(), "to": to.as_str()}),
                ),
                now,
            )
            .await?;
        }
        let runner_sql = if request == Request::Pause {
            "runner"
        } else {
            "'serve'"
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE rollouts SET state = $1, updated_at = $2, runner = {runner_sql} WHERE id = $3"
        )))
        .bind(to.as_str())
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(self.get(id).await?.summary)
    }

    /// Journal steps of every rollout appended at or after `since` (epoch
    /// ms), in order, at most `limit`.
    pub async fn steps_since(
        &self,
        since: i64,
        limit: i64,
    ) -> Result<Vec<(RolloutId, Step)>, StoreError> {
        let rows = sqlx::query(
            "SELECT rollout_id, seq, kind, host, detail, at FROM steps
             WHERE at >= $1 ORDER BY at, rollout_id, seq LIMIT $2",
        )
        .bind(since)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((RolloutId(row.try_get("rollout_id")?), super::step(row)?)))
            .collect()
    }
}
