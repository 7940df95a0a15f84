//! `GET /metrics`: `rollout_build_info{version}` (the version of
//! `release.json` beside the binary, as the edge and the connector report
//! theirs, so the Salt state can confirm which release runs),
//! `rollout_state`, `rollout_state_duration_seconds`, and
//! `rollout_runner_lease_held` (1 in the serve process that runs rollouts).

use std::sync::Arc;

use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};

use super::{Api, store_error};

/// The version `rollout_build_info` reports: the release manifest's, which
/// [`super::serve`] reads at start.
#[derive(Debug, Clone)]
pub struct BuildVersion(pub Arc<str>);

/// `value` as the inside of a quoted Prometheus label value.
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics in the text exposition format.
pub async fn metrics(State(api): State<Api>, version: Option<Extension<BuildVersion>>) -> Response {
    let all = match api.store.list().await {
        Ok(a) => a,
        Err(e) => return store_error(e),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    // A router served without [`super::serve`] is a development build: the
    // crate's version, as a binary without a manifest reports.
    let version = version.map_or_else(
        || env!("CARGO_PKG_VERSION").to_string(),
        |Extension(v)| v.0.to_string(),
    );
    let mut out = format!(
        "# HELP rollout_build_info The release this controller runs.\n# TYPE rollout_build_info gauge\n\
         rollout_build_info{{version=\"{}\"}} 1\n",
        label_value(&version)
    );
    if let Some(holder) = &api.holder {
        let held = match api.store.lease(crate::worker::LEASE).await {
            Ok(Some(l)) => l.holder == *holder && l.expires_at > now,
            _ => false,
        };
        out.push_str(&format!(
            "# HELP rollout_runner_lease_held 1 when this controller holds the lease and runs rollouts.\n\
             # TYPE rollout_runner_lease_held gauge\nrollout_runner_lease_held {}\n",
            u8::from(held)
        ));
    }
    out.push_str(
        "# HELP rollout_state 1 for the current state of each rollout.\n# TYPE rollout_state gauge\n",
    );
    let mut durations = String::from(
        "# HELP rollout_state_duration_seconds Seconds the rollout has been in its current state.\n# TYPE rollout_state_duration_seconds gauge\n",
    );
    for r in &all {
        let labels = format!(
            "component=\"{}\",rollout_id=\"{}\",state=\"{}\"",
            r.component, r.id, r.state
        );
        out.push_str(&format!("rollout_state{{{labels}}} 1\n"));
        let secs = (now - r.updated_at).max(0) as f64 / 1000.0;
        durations.push_str(&format!(
            "rollout_state_duration_seconds{{{labels}}} {secs}\n"
        ));
    }
    out.push_str(&durations);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        out,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("v1.2+b3"), "v1.2+b3");
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
