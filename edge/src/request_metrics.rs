//! One public request's metrics, recorded by a drop guard.
//!
//! hyper drops a request's future when its client disconnects, so code after
//! an `.await` may never run. [`RequestRecord`] does its bookkeeping in
//! `Drop`: the in-flight gauge always comes back down, and a request whose
//! client left before the response head went out is still counted, with
//! `status_class="client_closed"` (nginx logs these as 499). Its duration is
//! how long the client waited, so a slow tunnel that clients give up on still
//! shows in the latency histogram.

use std::time::Instant;

use http::StatusCode;

use crate::metrics::Metrics;

/// The status class of a request whose client went away before its answer.
pub const CLIENT_CLOSED: &str = "client_closed";

/// Counts one request in flight from creation until it is dropped; on drop
/// records it in `edge_requests_total` and `edge_request_duration_seconds`.
pub struct RequestRecord {
    metrics: Metrics,
    started: Instant,
    /// The `tunnel` label: `none` until the request is routed.
    pub tunnel: String,
    status: Option<StatusCode>,
}

impl RequestRecord {
    /// A request has arrived.
    pub fn start(metrics: &Metrics) -> Self {
        metrics.in_flight.inc();
        Self {
            metrics: metrics.clone(),
            started: Instant::now(),
            tunnel: String::from("none"),
            status: None,
        }
    }

    /// The response head is ready with `status`; records the request.
    pub fn finish(mut self, status: StatusCode) {
        self.status = Some(status);
    }
}

impl Drop for RequestRecord {
    fn drop(&mut self) {
        self.metrics.in_flight.dec();
        let class = match self.status {
            Some(s) => daemon::metrics::status_class(s.as_u16()),
            None => CLIENT_CLOSED,
        };
        self.metrics
            .requests
            .with_label_values(&[&self.tunnel, class])
            .inc();
        self.metrics
            .request_duration
            .with_label_values(&[&self.tunnel])
            .observe(self.started.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_request_leaves_the_gauge_and_is_counted_as_client_closed() {
        let m = Metrics::new("test");
        let mut r = RequestRecord::start(&m);
        r.tunnel = "t1".into();
        assert_eq!(m.in_flight.get(), 1);
        drop(r);
        assert_eq!(m.in_flight.get(), 0);
        assert_eq!(
            m.requests.with_label_values(&["t1", CLIENT_CLOSED]).get(),
            1
        );

        RequestRecord::start(&m).finish(StatusCode::NOT_FOUND);
        assert_eq!(m.in_flight.get(), 0);
        assert_eq!(m.requests.with_label_values(&["none", "4xx"]).get(), 1);
        assert_eq!(
            m.request_duration
                .with_label_values(&["t1"])
                .get_sample_count(),
            1
        );
    }
}
