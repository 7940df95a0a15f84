//! Small helpers shared by the programs' metric sets.

use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};

/// Registers `{name}{version="..."} 1`, the metric the rollout controller
/// reads to confirm which release really runs.
pub fn register_build_info(registry: &Registry, name: &str, version: &str) {
    let g = IntGaugeVec::new(
        Opts::new(name, "Release of the running process; always 1."),
        &["version"],
    )
    .expect("build info metric is valid");
    g.with_label_values(&[version]).set(1);
    registry
        .register(Box::new(g))
        .expect("build info is registered once");
}

/// `2xx`, `4xx`, `5xx`: the status class label.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Holds a gauge one higher while it lives (an open WebSocket, an open TCP
/// connection): lowered however its owner ends, also when a task holding it
/// is dropped at shutdown.
#[derive(Debug)]
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    /// Raises `gauge` until the guard is dropped.
    pub fn new(gauge: IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
