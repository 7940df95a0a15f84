//! The Warren rollout controller: stages a version of `edge` or `connector`
//! across data-center cohorts through Salt, gated on Prometheus, and rolls
//! back by itself.
#![warn(missing_docs)]

pub mod alerts;
pub mod annotations;
pub mod api;
pub mod auth;
pub mod cli;
pub mod client;
pub mod controller;
pub mod engine;
pub mod grafana;
pub mod https;
pub mod prometheus;
pub mod salt;
pub mod tls;
pub mod worker;

pub mod gate;
pub mod inventory;
pub mod minion;
pub mod plan;
pub mod planfile;
pub mod progress;
pub mod spec;
pub mod status;
pub mod store;
