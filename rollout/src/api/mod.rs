//! The HTTP API of `rollout serve` and its page.

pub mod page;
