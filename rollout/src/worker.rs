//! The worker inside `rollout serve`: runs the rollouts submitted to the
//! service (`runner = serve`) with the same engine as `rollout apply`,
//! journal first, alert watcher included, so a rollout goes on and rolls
//! back with no CLI process anywhere.
//!
//! Several serve processes may share a database; only the one holding the
//! lease runs rollouts. The lease lives in the store (`controller_lease`,
//! one row, times from the database's clock): the holder renews it every
//! third of its time to live; a standby tries as often and takes it once it
//! has expired. A holder that cannot renew stops its rollouts before its
//! lease could expire, so two processes never drive one rollout; the new
//! holder resumes each from its journal (finished batches and returned Salt
//! jobs are not applied again). Takeover after a holder dies therefore
//! comes within the time to live plus one renewal interval.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::controller::Controller;
use crate::engine::{Engine, Outcome};
use crate::progress::Progress;
use crate::store::{Event, RolloutId, Store, Work};

/// The lease's name: one runner per database.
pub const LEASE: &str = "runner";
/// How often the store is asked for work.
const SCAN: Duration = Duration::from_millis(500);
/// How long a rollout whose run failed (store or Salt unreachable) waits
/// before the worker tries it again.
const RETRY: Duration = Duration::from_secs(5);

/// The worker's settings.
pub struct Worker {
    /// The store shared with the API.
    pub store: Store,
    /// Salt, Prometheus, Alertmanager, Grafana.
    pub controller: Arc<Controller>,
    /// This process in the lease (`host:pid:random`).
    pub holder: String,
    /// How long the lease lasts without renewal.
    pub lease_ttl: Duration,
}

/// A rollout being run here.
struct Running {
    task: JoinHandle<()>,
    /// Set when the run stopped on an error (not on an outcome).
    failed: Arc<AtomicBool>,
}

/// This process's name in the lease: host, pid and randomness, so a
/// restarted process never mistakes its predecessor's lease for its own.
pub fn holder_name() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        crate::inventory::hex(&bytes)
    )
}

impl Worker {
    /// Runs until `cancel`: keeps the lease, and while holding it runs
    /// every rollout that needs the service. On the way out it stops its
    /// rollouts (each resumes from its journal in the next holder) and
    /// gives the lease up, so a standby takes over at once.
    pub async fn run(self, cancel: CancellationToken) {
        let renew_every = self.lease_ttl / 3;
        let mut renewed: Option<Instant> = None;
        let mut next_renewal = Instant::now();
        let mut running: HashMap<RolloutId, Running> = HashMap::new();
        let mut retry_at: HashMap<RolloutId, Instant> = HashMap::new();
        loop {
            if Instant::now() >= next_renewal {
                next_renewal = Instant::now() + renew_every;
                match self
                    .store
                    .take_lease(LEASE, &self.holder, self.lease_ttl)
                    .await
                {
                    Ok(Some(_)) => {
                        if renewed.is_none() {
                            tracing::info!(holder = %self.holder, ttl = ?self.lease_ttl, "took the runner lease: this controller runs rollouts");
                        }
                        renewed = Some(Instant::now());
                    }
                    Ok(None) => {
                        if renewed.take().is_some() {
                            tracing::warn!(
                                "lost the runner lease to another controller; stopping rollouts here"
                            );
                            stop_all(&mut running);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot renew the runner lease");
                        // Stop acting well before the lease could expire
                        // and another controller take the rollouts over.
                        if renewed.is_some_and(|at| at.elapsed() >= renew_every * 2) {
                            tracing::warn!(
                                "runner lease not renewed in time; stopping rollouts here"
                            );
                            renewed = None;
                            stop_all(&mut running);
                        }
                    }
                }
            }
            running.retain(|id, r| {
                if !r.task.is_finished() {
                    return true;
                }
                // A run that failed is retried after a while, not at once.
                if r.failed.load(Ordering::Relaxed) {
                    retry_at.insert(id.clone(), Instant::now() + RETRY);
                }
                false
            });
            if renewed.is_some() {
                self.start_work(&mut running, &mut retry_at).await;
            }
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(SCAN) => {}
            }
        }
        stop_all(&mut running);
        if renewed.is_some() {
            match self.store.release_lease(LEASE, &self.holder).await {
                Ok(()) => tracing::info!("gave the runner lease up"),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot give the runner lease up; it expires by itself")
                }
            }
        }
    }

    /// Starts a task for every rollout that needs one and has none.
    async fn start_work(
        &self,
        running: &mut HashMap<RolloutId, Running>,
        retry_at: &mut HashMap<RolloutId, Instant>,
    ) {
        let work = match self.store.service_work().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the rollouts to run");
                return;
            }
        };
        let now = Instant::now();
        retry_at.retain(|_, at| *at > now);
        for (rec, work) in work {
            let id = rec.summary.id.clone();
            if running.contains_key(&id) || retry_at.contains_key(&id) {
                continue;
            }
            let failed = Arc::new(AtomicBool::new(false));
            let task = tokio::spawn(drive(
                self.store.clone(),
                self.controller.clone(),
                self.holder.clone(),
                id.clone(),
                work,
                failed.clone(),
            ));
            running.insert(id, Running { task, failed });
        }
    }
}

fn stop_all(running: &mut HashMap<RolloutId, Running>) {
    for (id, r) in running.drain() {
        tracing::info!(rollout = %id, "stopping the run here; the journal has its place");
        r.task.abort();
    }
}

/// Runs one rollout to its end (or to a pause) here.
async fn drive(
    store: Store,
    controller: Arc<Controller>,
    holder: String,
    id: RolloutId,
    work: Work,
    failed: Arc<AtomicBool>,
) {
    let log_id = id.clone();
    let say = move |p: &Progress| tracing::info!(rollout = %log_id, "{p}");
    let engine = Engine {
        controller: &controller,
        store: &store,
        progress: &say,
    };
    // Which controller ran which part: the journal shows a takeover.
    let action = match work {
        Work::Run => "run",
        Work::Abort => "abort",
    };
    if let Err(e) = store
        .journal(
            &id,
            &Event::new("runner", json!({"holder": holder, "action": action})),
        )
        .await
    {
        tracing::warn!(rollout = %id, error = %e, "cannot journal the runner");
        failed.store(true, Ordering::Relaxed);
        return;
    }
    tracing::info!(rollout = %id, action, "running the rollout");
    let result = match work {
        Work::Run => engine.run(&id).await,
        Work::Abort => engine.abort(&id, "by a person through the API").await,
    };
    match result {
        Ok(Outcome::Succeeded) => tracing::info!(rollout = %id, "rollout succeeded"),
        Ok(Outcome::Paused(why)) => tracing::info!(rollout = %id, reason = %why, "rollout paused"),
        Ok(Outcome::RolledBack(why)) => {
            tracing::warn!(rollout = %id, reason = %why, "rollout rolled back")
        }
        Ok(Outcome::Failed(why)) => {
            tracing::error!(rollout = %id, reason = %why, "rollout failed: hosts need a person")
        }
        Err(e) => {
            failed.store(true, Ordering::Relaxed);
            tracing::error!(rollout = %id, error = %e, "rollout run stopped; retrying from the journal")
        }
    }
}
