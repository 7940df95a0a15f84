//! The timeline of a rollback caused by an alert: the first bad sample in
//! Prometheus, then what the controller journaled (the alert's start, when
//! the webhook or the poll brought it, the rollback's start and end).

use rollout::store::{RolloutId, Step};

use super::Fleet;

/// Moments of an alert rollback, epoch milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// The first 5xx counted by an edge running the bad version.
    pub first_bad_sample: Option<i64>,
    /// The alert's `startsAt` (Prometheus: when it began firing).
    pub alert_firing: Option<i64>,
    /// When the controller recorded it.
    pub alert_received: Option<i64>,
    /// `webhook` or `poll`.
    pub received_by: Option<String>,
    /// The rollback's start.
    pub rollback_started: Option<i64>,
    /// Every touched host back on its previous release.
    pub rolled_back: Option<i64>,
}

impl Timeline {
    /// Reads the journal of rollout `id` and asks Prometheus for the first
    /// bad sample of edge `version`.
    pub async fn of(fleet: &Fleet, id: &RolloutId, version: &str) -> Timeline {
        let steps = fleet.store.history(id).await.expect("rollout history");
        let mut t = Timeline::from_steps(&steps);
        let query = format!(
            "min(min_over_time(timestamp((edge_requests_total{{status_class=\"5xx\"}} > 0) \
             * on (job, instance) group_left (version) edge_build_info{{version=\"{version}\"}})[15m:1s]))"
        );
        t.first_bad_sample = fleet
            .prometheus
            .query(&query)
            .await
            .ok()
            .and_then(|s| s.first().map(|s| (s.value * 1000.0) as i64));
        t
    }

    /// The journaled moments.
    pub fn from_steps(steps: &[Step]) -> Timeline {
        let first = |kind: &str| steps.iter().find(|s| s.event.kind == kind);
        let alert = first("alert");
        Timeline {
            first_bad_sample: None,
            alert_firing: alert.and_then(|s| s.event.detail["starts_at_ms"].as_i64()),
            alert_received: alert.and_then(|s| s.event.detail["received_at_ms"].as_i64()),
            received_by: alert
                .and_then(|s| s.event.detail["source"].as_str())
                .map(str::to_string),
            rollback_started: first("rollback_started").map(|s| s.at),
            rolled_back: first("rolled_back").map(|s| s.at),
        }
    }

    /// Seconds from the first bad sample to the end of the rollback.
    pub fn bad_sample_to_rolled_back(&self) -> Option<f64> {
        Some((self.rolled_back? - self.first_bad_sample?) as f64 / 1000.0)
    }

    /// One line per moment, in seconds after the first bad sample.
    pub fn render(&self) -> String {
        let zero = self
            .first_bad_sample
            .or(self.alert_firing)
            .unwrap_or_default();
        let received = format!(
            "alert received by {}",
            self.received_by.as_deref().unwrap_or("?")
        );
        let rows = [
            (
                "first bad sample (a 5xx from the new release)",
                self.first_bad_sample,
            ),
            ("alert firing (its startsAt)", self.alert_firing),
            (received.as_str(), self.alert_received),
            ("rollback started", self.rollback_started),
            (
                "every touched host back on the good release",
                self.rolled_back,
            ),
        ];
        let mut out = String::new();
        for (what, at) in rows {
            match at {
                Some(t) => out.push_str(&format!(
                    "  {:>+7.1} s  {what}\n",
                    (t - zero) as f64 / 1000.0
                )),
                None => out.push_str(&format!("  {:>9}  {what}\n", "(none)")),
            }
        }
        out
    }
}
