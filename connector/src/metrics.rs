//! The connector's Prometheus metrics. Every name starts with `connector_`.

use prometheus::{
    Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use tunnel::message::StreamErrorKind;

/// All connector metrics, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// `connector_requests_total{tunnel, status_class}`.
    pub requests: IntCounterVec,
    /// `connector_request_duration_seconds{tunnel}`: to the origin's response head.
    pub request_duration: HistogramVec,
    /// `connector_streams_in_flight`.
    pub in_flight: IntGauge,
    /// `connector_tunnel_connections{edge}`: registered connections per edge.
    pub tunnel_connections: IntGaugeVec,
    /// `connector_registration_failures_total{edge, reason}`.
    pub registration_failures: IntCounterVec,
    /// `connector_reconnects_total{edge}`: dials after a connection was lost or drained.
    pub reconnects: IntCounterVec,
    /// `connector_connect_errors_total{edge}`: dials that failed before registration.
    pub connect_errors: IntCounterVec,
    /// `connector_origin_errors_total{kind}`.
    pub origin_errors: IntCounterVec,
    /// `connector_drains_total{edge}`: drain requests received from edges.
    pub drains: IntCounterVec,
    /// `connector_bad_requests_total{reason}`: requests refused because of
    /// what the edge sent (a target that is not origin-form, a dot-segment,
    /// a stalled or aborted request body).
    pub bad_requests: IntCounterVec,
    /// `connector_websockets_open{tunnel}`: upgraded WebSockets being relayed.
    pub websockets_open: IntGaugeVec,
    /// `connector_tcp_streams_open{tunnel}`: `tcp` streams relayed to their
    /// origins, from the 200 to the end.
    pub tcp_streams_open: IntGaugeVec,
    /// `connector_tcp_bytes_total{tunnel, direction}`: bytes of `tcp`
    /// streams, `to_origin` or `to_client`, counted as they move.
    pub tcp_bytes: IntCounterVec,
    /// `connector_tcp_errors_total{tunnel, kind}`: `tcp` streams answered
    /// with an error, by [`StreamErrorKind`] label.
    pub tcp_errors: IntCounterVec,
    /// `connector_config_reloads_total`: config file reloads that put new
    /// ingress rules and origin options in force.
    pub config_reloads: IntCounter,
    /// `connector_config_reload_errors_total`: reloads refused because the
    /// new config was invalid (the running one stayed).
    pub config_reload_errors: IntCounter,
    /// `connector_config_last_reload_successful`: 1 when the last reload
    /// (or the start) succeeded, 0 when it was refused.
    pub config_last_reload_successful: IntGauge,
    /// `connector_config_last_reload_success_timestamp_seconds`: when the
    /// config in force was loaded (the start, then each successful reload).
    pub config_last_reload_success: Gauge,
    /// `connector_config_restart_required`: 1 when the config file changes
    /// a setting that only a restart applies (edges, token, ...).
    pub config_restart_required: IntGauge,
}

/// The `kind` label of `connector_tcp_errors_total`: the error kind in
/// snake case, as label values are (`StreamErrorKind::as_str` is the text
/// of a response body, with spaces).
pub fn error_kind_label(kind: StreamErrorKind) -> &'static str {
    match kind {
        StreamErrorKind::OriginUnreachable => "origin_unreachable",
        StreamErrorKind::OriginTimeout => "origin_timeout",
        StreamErrorKind::OriginTls => "origin_tls",
        StreamErrorKind::OriginProtocol => "origin_protocol",
        StreamErrorKind::BadRequest => "bad_request",
        StreamErrorKind::Internal => "internal",
        StreamErrorKind::Other(_) => "other",
    }
}

/// The kinds of error a `tcp` stream can be answered with.
const TCP_ERROR_KINDS: [StreamErrorKind; 3] = [
    StreamErrorKind::OriginUnreachable,
    StreamErrorKind::OriginTimeout,
    StreamErrorKind::BadRequest,
];

impl Metrics {
    /// Creates and registers every metric.
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        daemon::metrics::register_build_info(&registry, "connector_build_info", version);
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let m = Self {
            requests: counter(
                "connector_requests_total",
                "Proxied requests by tunnel and response status class.",
                &["tunnel", "status_class"],
            ),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "connector_request_duration_seconds",
                    "Time from a request stream to the origin's response head.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["tunnel"],
            )
            .expect("valid metric"),
            in_flight: IntGauge::new("connector_streams_in_flight", "Streams being served.")
                .expect("valid metric"),
            websockets_open: IntGaugeVec::new(
                Opts::new(
                    "connector_websockets_open",
                    "Upgraded WebSockets being relayed to origins, by tunnel.",
                ),
                &["tunnel"],
            )
            .expect("valid metric"),
            tunnel_connections: IntGaugeVec::new(
                Opts::new(
                    "connector_tunnel_connections",
                    "Registered tunnel connections by edge.",
                ),
                &["edge"],
            )
            .expect("valid metric"),
            tcp_streams_open: IntGaugeVec::new(
                Opts::new(
                    "connector_tcp_streams_open",
                    "TCP streams being relayed to origins, by tunnel.",
                ),
                &["tunnel"],
            )
            .expect("valid metric"),
            tcp_bytes: counter(
                "connector_tcp_bytes_total",
                "Bytes relayed on TCP streams, by tunnel and direction (to_origin, to_client).",
                &["tunnel", "direction"],
            ),
            tcp_errors: counter(
                "connector_tcp_errors_total",
                "TCP streams answered with an error, by tunnel and kind.",
                &["tunnel", "kind"],
            ),
            registration_failures: counter(
                "connector_registration_failures_total",
                "Registrations refused by an edge, by reason.",
                &["edge", "reason"],
            ),
            reconnects: counter(
                "connector_reconnects_total",
                "Dials after a connection was lost or drained.",
                &["edge"],
            ),
            connect_errors: counter(
                "connector_connect_errors_total",
                "Dials that failed before registration.",
                &["edge"],
            ),
            origin_errors: counter(
                "connector_origin_errors_total",
                "Requests the origin could not answer, by kind.",
                &["kind"],
            ),
            drains: counter(
                "connector_drains_total",
                "Drain requests received from edges.",
                &["edge"],
            ),
            bad_requests: counter(
                "connector_bad_requests_total",
                "Requests refused because of what the edge sent, by reason.",
                &["reason"],
            ),
            config_reloads: IntCounter::new(
                "connector_config_reloads_total",
                "Config file reloads that put new ingress rules and origin options in force.",
            )
            .expect("valid metric"),
            config_reload_errors: IntCounter::new(
                "connector_config_reload_errors_total",
                "Config file reloads refused because the new config was invalid; the running config stayed.",
            )
            .expect("valid metric"),
            config_last_reload_successful: IntGauge::new(
                "connector_config_last_reload_successful",
                "1 when the last config load (start or reload) succeeded, 0 when the last reload was refused.",
            )
            .expect("valid metric"),
            config_last_reload_success: Gauge::new(
                "connector_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load (start or reload).",
            )
            .expect("valid metric"),
            config_restart_required: IntGauge::new(
                "connector_config_restart_required",
                "1 when the config file changes a setting that only a restart applies (edges, token, ha_connections, ...).",
            )
            .expect("valid metric"),
            registry,
        };
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.request_duration.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.tunnel_connections.clone()),
            Box::new(m.registration_failures.clone()),
            Box::new(m.reconnects.clone()),
            Box::new(m.connect_errors.clone()),
            Box::new(m.origin_errors.clone()),
            Box::new(m.drains.clone()),
            Box::new(m.bad_requests.clone()),
            Box::new(m.websockets_open.clone()),
            Box::new(m.tcp_streams_open.clone()),
            Box::new(m.tcp_bytes.clone()),
            Box::new(m.tcp_errors.clone()),
            Box::new(m.config_reloads.clone()),
            Box::new(m.config_reload_errors.clone()),
            Box::new(m.config_last_reload_successful.clone()),
            Box::new(m.config_last_reload_success.clone()),
            Box::new(m.config_restart_required.clone()),
        ] {
            m.registry.register(c).expect("metric names are unique");
        }
        // Every kind exists from the start at zero, so a rate() over them is
        // 0, not empty, while the origin is healthy.
        for kind in [
            StreamErrorKind::OriginUnreachable,
            StreamErrorKind::OriginTimeout,
            StreamErrorKind::OriginTls,
            StreamErrorKind::OriginProtocol,
            StreamErrorKind::BadRequest,
            StreamErrorKind::Internal,
        ] {
            m.origin_errors.with_label_values(&[kind.as_str()]);
        }
        for reason in crate::target::TargetError::ALL {
            m.bad_requests.with_label_values(&[reason.as_str()]);
        }
        for reason in [
            crate::stream::BODY_IDLE,
            crate::stream::BODY_ABORTED,
            crate::stream::NOT_HTTP_SERVICE,
        ] {
            m.bad_requests.with_label_values(&[reason]);
        }
        m
    }

    /// Creates the series labelled with the tunnel id at zero, so that a
    /// rate() over them is 0, not empty, before the first TCP stream.
    pub fn init_tunnel(&self, tunnel: &str) {
        self.tcp_streams_open.with_label_values(&[tunnel]);
        for direction in ["to_origin", "to_client"] {
            self.tcp_bytes.with_label_values(&[tunnel, direction]);
        }
        for kind in TCP_ERROR_KINDS {
            self.tcp_errors
                .with_label_values(&[tunnel, error_kind_label(kind)]);
        }
    }
}
