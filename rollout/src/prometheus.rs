//! A Prometheus HTTP API client: instant queries, and which version each
//! host really runs (from `*_build_info`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

/// Why a query produced no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PromError {
    /// Prometheus could not be reached.
    #[error("cannot reach Prometheus at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Prometheus refused the query (for example a syntax error).
    #[error("Prometheus rejected the query: {0}")]
    Query(String),
    /// The answer was not what Prometheus sends.
    #[error("unexpected answer from Prometheus: {0}")]
    BadResponse(String),
}

/// One sample of an instant vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The series' labels.
    pub labels: BTreeMap<String, String>,
    /// Its value.
    pub value: f64,
}

/// A Prometheus client.
#[derive(Debug, Clone)]
pub struct Prometheus {
    base: String,
    client: reqwest::Client,
}

impl Prometheus {
    /// A client for Prometheus at `base` (e.g. `http://127.0.0.1:9090`).
    pub fn new(base: &str) -> Self {
        crate::tls::ensure_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .build()
            .expect("a client with these settings builds");
        Self {
            base: base.trim_end_matches('/').to_string(),
            client,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// Runs an instant query. A scalar result becomes one sample without
    /// labels; an empty vector is an empty list (no data).
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, PromError> {
        let resp = self
            .client
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| PromError::Unreachable {
                url: self.base.clone(),
                reason: e.without_url().to_string(),
            })?;
        let status = resp.status();
        let body: Value = resp
            .json()
            .await
            .map_err(|e| PromError::BadResponse(e.to_string()))?;
        if body["status"] != "success" {
            let msg = body["error"]
                .as_str()
                .unwrap_or("unknown error")
                .to_string();
            return Err(if status.is_client_error() {
                PromError::Query(msg)
            } else {
                PromError::BadResponse(format!("{status}: {msg}"))
            });
        }
        parse_result(&body["data"])
    }

    /// `host -> version` from `{component}_build_info`, for every host that
    /// is being scraped right now.
    pub async fn versions(&self, component: &str) -> Result<BTreeMap<String, String>, PromError> {
        let samples = self.query(&format!("{component}_build_info == 1")).await?;
        Ok(samples
            .into_iter()
            .filter_map(|s| {
                let host = s.labels.get("host")?.clone();
                let version = s.labels.get("version")?.clone();
                Some((host, version))
            })
            .collect())
    }
}

fn parse_result(data: &Value) -> Result<Vec<Sample>, PromError> {
    let value_of = |v: &Value| -> Result<f64, PromError> {
        v[1].as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .ok_or_else(|| PromError::BadResponse(format!("bad sample value {v}")))
    };
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or_else(|| PromError::BadResponse("vector without result".into()))?
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Sample {
                    labels,
                    value: value_of(&s["value"])?,
                })
            })
            .collect(),
        Some("scalar") => Ok(vec![Sample {
            labels: BTreeMap::new(),
            value: value_of(&data["result"])?,
        }]),
        other => Err(PromError::BadResponse(format!(
            "result type {other:?} is not an instant vector or scalar"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_vectors_and_scalars() {
        let v = json!({"resultType": "vector", "result": [
            {"metric": {"host": "edge-ams-1", "version": "v1"}, "value": [1.0, "1"]}]});
        let s = parse_result(&v).unwrap();
        assert_eq!(s[0].labels["host"], "edge-ams-1");
        assert_eq!(s[0].value, 1.0);
        let sc = json!({"resultType": "scalar", "result": [1.0, "0.25"]});
        assert_eq!(parse_result(&sc).unwrap()[0].value, 0.25);
        let nan =
            json!({"resultType": "vector", "result": [{"metric": {}, "value": [1.0, "NaN"]}]});
        assert!(parse_result(&nan).unwrap()[0].value.is_nan());
        assert!(parse_result(&json!({"resultType": "matrix", "result": []})).is_err());
    }
}
