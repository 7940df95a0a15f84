//! The edge's Prometheus metrics. Every name starts with `edge_`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// All edge metrics, registered in one registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// `edge_requests_total{tunnel, status_class}`; `status_class` is `2xx`..`5xx`,
    /// or `client_closed` when the client left before the response head.
    pub requests: IntCounterVec,
    /// `edge_request_duration_seconds{tunnel}`: until the response head (or
    /// until the client left).
    pub request_duration: HistogramVec,
    /// `edge_requests_in_flight`.
    pub in_flight: IntGauge,
    /// `edge_tunnel_connections{tunnel}`: live registered connections.
    pub tunnel_connections: IntGaugeVec,
    /// `edge_registrations_total`.
    pub registrations: IntCounter,
    /// `edge_registration_failures_total{reason}`.
    pub registration_failures: IntCounterVec,
    /// `edge_tunnels_configured`.
    pub tunnels_configured: IntGauge,
    /// `edge_tunnels_reload_errors_total`.
    pub reload_errors: IntCounter,
    /// `edge_public_connections`: open public TCP connections.
    pub public_connections: IntGauge,
    /// `edge_draining`: 1 while shutting down.
    pub draining: IntGauge,
    /// `edge_fault_injected_total`: requests failed on purpose by a test release.
    pub faults_injected: IntCounter,
    /// `edge_stream_open_duration_seconds`: time to open a tunnel stream.
    pub stream_open: Histogram,
    /// `edge_limit_rejections_total{limit}`: requests and connections
    /// refused because a cap was reached.
    pub limit_rejections: IntCounterVec,
    /// `edge_timeouts_total{stage}`: waits on a peer that ran out.
    pub timeouts: IntCounterVec,
    /// `edge_pending_registrations`: QUIC connections not registered yet.
    pub pending_registrations: IntGauge,
    /// `edge_websockets_open{tunnel}`: upgraded WebSockets being relayed.
    pub websockets_open: IntGaugeVec,
    /// `edge_public_requests_total{protocol, tls}`: public requests by HTTP
    /// version and listener.
    pub public_requests: IntCounterVec,
    /// The four series of `public_requests`, looked up once: see
    /// [`Metrics::public_request`].
    public_request_series: [[IntCounter; 2]; 2],
    /// `edge_tls_handshake_failures_total{reason}`.
    pub tls_handshake_failures: IntCounterVec,
    /// `edge_public_certificates`: certificate pairs served on the HTTPS listener.
    pub certificates_loaded: IntGauge,
    /// `edge_public_certificate_errors_total`: certificate pairs skipped as
    /// unusable, and directory scans that failed.
    pub cert_reload_errors: IntCounter,
    /// `edge_tcp_streams_open{tunnel, via}`: TCP connections being relayed;
    /// `via` is `port` (a public TCP port) or `access` (a WebSocket).
    pub tcp_streams_open: IntGaugeVec,
    /// `edge_tcp_bytes_total{tunnel, direction}`: `to_origin` or `to_client`.
    pub tcp_bytes: IntCounterVec,
    /// `edge_tcp_connections_total{tunnel, via}`: TCP connections admitted.
    pub tcp_connections: IntCounterVec,
    /// `edge_tcp_refused_total{reason}`: TCP connections closed or refused
    /// before any byte was relayed (see [`TCP_REFUSALS`]).
    pub tcp_refused: IntCounterVec,
    /// `edge_tcp_ports_bound`: public TCP ports listening.
    pub tcp_ports_bound: IntGauge,
    /// `edge_tcp_port_bind_errors_total`: public TCP ports that could not be
    /// bound (retried at the next tunnels file reload).
    pub tcp_port_bind_errors: IntCounter,
}

/// The `reason` labels of `edge_tcp_refused_total`.
pub const TCP_REFUSALS: [&str; 6] = [
    "client_limit",
    "tunnel_limit",
    "no_connector",
    "no_tcp_service",
    "origin_error",
    "tunnel_error",
];

/// The `limit` labels of `edge_limit_rejections_total`.
pub const LIMITS: [&str; 4] = [
    "requests_per_tunnel",
    "connections_per_ip",
    "pending_registrations",
    "pending_registrations_per_ip",
];

/// The `stage` labels of `edge_timeouts_total`.
pub const TIMEOUT_STAGES: [&str; 7] = [
    "registration",
    "stream_open",
    "request_body_idle",
    "upload_stalled",
    "response_head",
    "response_body_idle",
    "client_write_idle",
];

impl Metrics {
    /// Creates and registers every metric; `version` goes in `edge_build_info`.
    pub fn new(version: &str) -> Self {
        let registry = Registry::new();
        daemon::metrics::register_build_info(&registry, "edge_build_info", version);
        let public_requests = IntCounterVec::new(
            Opts::new(
                "edge_public_requests_total",
                "Public requests by HTTP version (http1.1 includes 1.0) and whether they came over TLS.",
            ),
            &["protocol", "tls"],
        )
        .expect("valid metric");
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "edge_requests_total",
                    "Public requests by tunnel and response status class (client_closed: the client left before the response head).",
                ),
                &["tunnel", "status_class"],
            )
            .expect("valid metric"),
            request_duration: HistogramVec::new(
                HistogramOpts::new(
                    "edge_request_duration_seconds",
                    "Time from a public request to its response head, or to its client leaving.",
                )
                .buckets(vec![
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ]),
                &["tunnel"],
            )
            .expect("valid metric"),
            in_flight: IntGauge::new("edge_requests_in_flight", "Requests being proxied.")
                .expect("valid metric"),
            tunnel_connections: IntGaugeVec::new(
                Opts::new(
                    "edge_tunnel_connections",
                    "Registered connector connections by tunnel.",
                ),
                &["tunnel"],
            )
            .expect("valid metric"),
            registrations: IntCounter::new(
                "edge_registrations_total",
                "Connector connections registered.",
            )
            .expect("valid metric"),
            registration_failures: IntCounterVec::new(
                Opts::new(
                    "edge_registration_failures_total",
                    "Refused connector registrations by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            tunnels_configured: IntGauge::new(
                "edge_tunnels_configured",
                "Tunnels in the tunnels file.",
            )
            .expect("valid metric"),
            reload_errors: IntCounter::new(
                "edge_tunnels_reload_errors_total",
                "Tunnels file changes that were invalid and not applied.",
            )
            .expect("valid metric"),
            websockets_open: IntGaugeVec::new(
                Opts::new(
                    "edge_websockets_open",
                    "Upgraded WebSockets being relayed, by tunnel.",
                ),
                &["tunnel"],
            )
            .expect("valid metric"),
            public_connections: IntGauge::new(
                "edge_public_connections",
                "Open public TCP connections.",
            )
            .expect("valid metric"),
            draining: IntGauge::new("edge_draining", "1 while the edge drains for shutdown.")
                .expect("valid metric"),
            faults_injected: IntCounter::new(
                "edge_fault_injected_total",
                "Requests answered 500 on purpose by a fault-injection release.",
            )
            .expect("valid metric"),
            stream_open: Histogram::with_opts(
                HistogramOpts::new(
                    "edge_stream_open_duration_seconds",
                    "Time to open a stream to a connector.",
                )
                .buckets(vec![
                    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                ]),
            )
            .expect("valid metric"),
            limit_rejections: IntCounterVec::new(
                Opts::new(
                    "edge_limit_rejections_total",
                    "Requests and connections refused because a cap was reached, by limit.",
                ),
                &["limit"],
            )
            .expect("valid metric"),
            timeouts: IntCounterVec::new(
                Opts::new(
                    "edge_timeouts_total",
                    "Waits on a connector or a client that ran out, by stage.",
                ),
                &["stage"],
            )
            .expect("valid metric"),
            pending_registrations: IntGauge::new(
                "edge_pending_registrations",
                "Connector QUIC connections accepted but not registered yet.",
            )
            .expect("valid metric"),
            public_requests: public_requests.clone(),
            public_request_series: [false, true].map(|h2| {
                [false, true].map(|tls| {
                    public_requests.with_label_values(&[
                        if h2 { "h2" } else { "http1.1" },
                        if tls { "true" } else { "false" },
                    ])
                })
            }),
            tls_handshake_failures: IntCounterVec::new(
                Opts::new(
                    "edge_tls_handshake_failures_total",
                    "Failed TLS handshakes on the public HTTPS listener, by reason (no_certificate: no certificate for the SNI name, or no SNI).",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            certificates_loaded: IntGauge::new(
                "edge_public_certificates",
                "Certificate pairs served on the public HTTPS listener.",
            )
            .expect("valid metric"),
            cert_reload_errors: IntCounter::new(
                "edge_public_certificate_errors_total",
                "Certificate pairs in the public certificate directory skipped as unusable, and failed scans of it.",
            )
            .expect("valid metric"),
            tcp_streams_open: IntGaugeVec::new(
                Opts::new(
                    "edge_tcp_streams_open",
                    "TCP connections being relayed, by tunnel and way in (port: a public TCP port, access: a WebSocket).",
                ),
                &["tunnel", "via"],
            )
            .expect("valid metric"),
            tcp_bytes: IntCounterVec::new(
                Opts::new(
                    "edge_tcp_bytes_total",
                    "Bytes relayed on TCP connections, by tunnel and direction (to_origin, to_client).",
                ),
                &["tunnel", "direction"],
            )
            .expect("valid metric"),
            tcp_connections: IntCounterVec::new(
                Opts::new(
                    "edge_tcp_connections_total",
                    "TCP connections admitted, by tunnel and way in (port, access).",
                ),
                &["tunnel", "via"],
            )
            .expect("valid metric"),
            tcp_refused: IntCounterVec::new(
                Opts::new(
                    "edge_tcp_refused_total",
                    "TCP connections refused or closed before relaying, by reason.",
                ),
                &["reason"],
            )
            .expect("valid metric"),
            tcp_ports_bound: IntGauge::new(
                "edge_tcp_ports_bound",
                "Public TCP ports listening.",
            )
            .expect("valid metric"),
            tcp_port_bind_errors: IntCounter::new(
                "edge_tcp_port_bind_errors_total",
                "Public TCP ports that could not be bound (retried at the next tunnels file reload).",
            )
            .expect("valid metric"),
            registry,
        };
        let r = &m.registry;
        for c in [
            Box::new(m.requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.request_duration.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.tunnel_connections.clone()),
            Box::new(m.registrations.clone()),
            Box::new(m.registration_failures.clone()),
            Box::new(m.tunnels_configured.clone()),
            Box::new(m.reload_errors.clone()),
            Box::new(m.public_connections.clone()),
            Box::new(m.draining.clone()),
            Box::new(m.faults_injected.clone()),
            Box::new(m.stream_open.clone()),
            Box::new(m.limit_rejections.clone()),
            Box::new(m.timeouts.clone()),
            Box::new(m.pending_registrations.clone()),
            Box::new(m.websockets_open.clone()),
            Box::new(m.public_requests.clone()),
            Box::new(m.tls_handshake_failures.clone()),
            Box::new(m.certificates_loaded.clone()),
            Box::new(m.cert_reload_errors.clone()),
            Box::new(m.tcp_streams_open.clone()),
            Box::new(m.tcp_bytes.clone()),
            Box::new(m.tcp_connections.clone()),
            Box::new(m.tcp_refused.clone()),
            Box::new(m.tcp_ports_bound.clone()),
            Box::new(m.tcp_port_bind_errors.clone()),
        ] {
            r.register(c).expect("metric names are unique");
        }
        // Reasons exist from the start, so a rate() over them is never empty.
        for reason in [
            "bad_token",
            "unknown_tunnel",
            "unsupported_version",
            "draining",
            "malformed",
        ] {
            m.registration_failures.with_label_values(&[reason]);
        }
        for limit in LIMITS {
            m.limit_rejections.with_label_values(&[limit]);
        }
        for reason in TCP_REFUSALS {
            m.tcp_refused.with_label_values(&[reason]);
        }
        for stage in TIMEOUT_STAGES {
            m.timeouts.with_label_values(&[stage]);
        }
        for reason in crate::public_tls::HandshakeFailure::ALL {
            m.tls_handshake_failures
                .with_label_values(&[reason.as_str()]);
        }
        m
    }
}

impl Metrics {
    /// Counts a request or connection refused by `limit` (one of [`LIMITS`]).
    pub fn limit_hit(&self, limit: &str) {
        self.limit_rejections.with_label_values(&[limit]).inc();
    }

    /// Counts a public request; a cheap clone-free lookup, as it runs for
    /// every request.
    pub fn public_request(&self, version: http::Version, tls: bool) {
        let h2 = version == http::Version::HTTP_2;
        self.public_request_series[usize::from(h2)][usize::from(tls)].inc();
    }

    /// Creates every tunnel's TCP series at zero, so a rate() over them (the
    /// dashboard's TCP panels) has data before the first TCP connection, as
    /// the refusal reasons do from the start. Called at start and on reload.
    pub fn tunnel_tcp_series(&self, table: &crate::tunnels::TunnelTable) {
        for t in table.tunnels() {
            for via in [crate::tcp::Via::Port, crate::tcp::Via::Access] {
                self.tcp_connections
                    .with_label_values(&[&t.label, via.as_str()]);
                self.tcp_streams_open
                    .with_label_values(&[&t.label, via.as_str()]);
            }
            for direction in ["to_origin", "to_client"] {
                self.tcp_bytes.with_label_values(&[&t.label, direction]);
            }
        }
    }

    /// Counts a TCP connection refused for `reason` (one of [`TCP_REFUSALS`]).
    pub fn tcp_refused(&self, reason: &str) {
        self.tcp_refused.with_label_values(&[reason]).inc();
    }

    /// Counts a wait that ran out at `stage` (one of [`TIMEOUT_STAGES`]).
    pub fn timed_out(&self, stage: &str) {
        self.timeouts.with_label_values(&[stage]).inc();
    }
}
