//! Support for Warren's end-to-end tests: real processes of our own binaries
//! on loopback addresses that no other test uses, a test origin, and helpers
//! to read metrics. Every process is killed by pid when its guard drops, also
//! when a test panics.

pub mod bins;
pub mod chromium;
pub mod config_connector;
pub mod dashboards;
pub mod fleet;
pub mod grafana;
pub mod h2_origin;
pub mod hostile_edge;
pub mod http;
pub mod load;
pub mod metrics;
pub mod net;
pub mod origin;
pub mod pattern;
pub mod postgres;
pub mod proc;
pub mod public_certs;
pub mod python;
pub mod recording_origin;
pub mod rollouts;
pub mod sshd;
pub mod tcp_origin;
pub mod tty;
pub mod tunnel_setup;
pub mod workdir;
