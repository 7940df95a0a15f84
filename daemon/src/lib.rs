//! Process plumbing shared by `edge`, `connector` and `rollout`: logging, the
//! admin listener (`/metrics`, `/ready`, `/healthz`), shutdown signals,
//! release information, duration parsing, and config files checked whole.
#![warn(missing_docs)]

pub mod admin;
pub mod config_check;
pub mod duration;
pub mod logging;
pub mod metrics;
pub mod release;
pub mod runtime;
pub mod signal;

/// The exit code for a configuration that cannot work (EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// The exit code for bad command-line usage (EX_USAGE).
pub const EXIT_USAGE: i32 = 64;
