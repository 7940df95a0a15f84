//! `GET /v1/openapi.json`: the API's OpenAPI 3.1 description, kept beside
//! the routes. A unit test holds it to the router's routes, and
//! `rollout/tests/api.rs` calls every operation it lists against a real
//! `rollout serve` and checks each answer against it.

use axum::http::header;
use axum::response::{IntoResponse, Response};

/// The document.
pub const DOCUMENT: &str = include_str!("openapi.json");

/// The document, as JSON.
pub async fn document() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The paths `router` routes, read from its source.
    fn routed() -> BTreeSet<String> {
        let source = include_str!("mod.rs");
        let mut paths = BTreeSet::new();
        for chunk in source.split(".route(").skip(1) {
            let chunk = chunk.trim_start();
            let path = if let Some(rest) = chunk.strip_prefix('"') {
                rest.split('"').next().unwrap_or_default().to_string()
            } else if chunk.starts_with("WEBHOOK_PATH") {
                super::super::WEBHOOK_PATH.to_string()
            } else {
                panic!("a route whose path is not a literal: {chunk:.40}");
            };
            paths.insert(path);
        }
        paths
    }

    #[test]
    fn the_document_describes_every_route_and_no_other() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let documented: BTreeSet<String> = doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .cloned()
            .collect();
        let mut routed = routed();
        // The page's own router serves `/` (and its assets, not API).
        routed.insert("/".into());
        assert_eq!(documented, routed);
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {path} documents no response"
                );
            }
        }
    }
}
