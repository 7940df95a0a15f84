//! One module per `rollout` command. Each takes the connection settings and
//! its own arguments (from `rollout::cli`), prints what a person or a
//! program reads, and returns the exit code; what they share is in `shared`.

pub mod abort;
pub mod apply;
pub mod events;
pub mod history;
pub mod pause;
pub mod plan;
pub mod remote;
pub mod resume;
pub mod serve;
pub mod status;
pub mod validate;

pub mod shared;
