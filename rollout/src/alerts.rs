//! Alerts that roll a rollout back: read from Alertmanager's webhook (push)
//! or its API (pull, so a lost webhook cannot hide one), then routed to the
//! running or paused rollouts whose spec selects them. Routing only records:
//! the engine watches the store and rolls back.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::store::{AlertRecord, RolloutId, Store, StoreError};

/// Longest wait for Alertmanager's API: the poll runs beside a rollout and
/// must not hold it up; the webhook still delivers when Alertmanager is slow.
const API_TIMEOUT: Duration = Duration::from_secs(2);

/// One alert, from a webhook or from the Alertmanager API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Alertmanager's fingerprint of the labels: the same alert keeps it
    /// across deliveries.
    pub fingerprint: String,
    /// Labels, `alertname` included.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing, RFC 3339 as sent.
    pub starts_at: String,
    /// Firing (else resolved).
    pub firing: bool,
}

impl Alert {
    /// [`Alert::starts_at`] in epoch milliseconds; `None` when it cannot be
    /// read or is before 1970 (Go's zero time `0001-01-01T00:00:00Z`).
    pub fn starts_at_ms(&self) -> Option<i64> {
        rfc3339_ms(&self.starts_at)
    }

    /// `alertname{label="value",...}`, like
    /// `EdgeReleaseErrorRatioHigh{component="edge",version="v3"}`.
    pub fn describe(&self) -> String {
        describe(&self.labels)
    }
}

/// `alertname{other labels}`, values quoted and escaped as in PromQL.
fn describe(labels: &BTreeMap<String, String>) -> String {
    let mut out = labels.get("alertname").cloned().unwrap_or_default();
    out.push('{');
    let rest = labels.iter().filter(|(k, _)| *k != "alertname");
    for (i, (k, v)) in rest.enumerate() {
        let v = v
            .replace('\\', r"\\")
            .replace('"', "\\\"")
            .replace('\n', r"\n");
        let sep = if i == 0 { "" } else { "," };
        let _ = write!(out, "{sep}{k}=\"{v}\"");
    }
    out.push('}');
    out
}

/// RFC 3339 with any number of fractional digits (Alertmanager sends
/// nanoseconds) and a `Z` or `±hh:mm` offset, in epoch milliseconds.
/// humantime reads the UTC part; the offset is ours, as it reads only `Z`.
fn rfc3339_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    let (local, offset_minutes) = match t.strip_suffix(['Z', 'z']) {
        Some(local) => (local, 0),
        None => {
            let at = t.len().checked_sub(6)?;
            let (local, offset) = (t.get(..at)?, t.get(at..)?.as_bytes());
            let sign = match offset[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits = [offset[1], offset[2], offset[4], offset[5]];
            if offset[3] != b':' || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let [h1, h2, m1, m2] = digits.map(|d| i64::from(d - b'0'));
            (local, sign * ((h1 * 10 + h2) * 60 + m1 * 10 + m2))
        }
    };
    let utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    let ms = i64::try_from(utc.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(ms - offset_minutes * 60_000)
}

/// How an alert reached the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Alertmanager's webhook (`POST /v1/alerts/alertmanager` of `rollout serve`).
    Webhook,
    /// The controller's poll of Alertmanager's API.
    Poll,
}

impl Source {
    /// `webhook` or `poll`, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Poll => "poll",
        }
    }
}

/// Why a webhook body was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// Not JSON, or JSON without what we need (`alerts`, and in each alert
    /// `fingerprint`, `labels`, `status`, `startsAt`).
    #[error("not an Alertmanager webhook payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// An alert has an empty fingerprint, so retries could not be told apart.
    #[error("alerts[{0}] has an empty fingerprint")]
    EmptyFingerprint(usize),
}

/// Alertmanager's webhook payload (version 4). Only what we use; the other
/// fields (`version`, `groupKey`, `receiver`, ...) are ignored.
#[derive(Deserialize)]
struct Payload {
    alerts: Vec<WireAlert>,
}

/// An alert as Alertmanager sends it to webhooks.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireAlert {
    status: WireStatus,
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    fingerprint: String,
}

#[derive(Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum WireStatus {
    Firing,
    Resolved,
}

/// Reads an Alertmanager webhook body (payload version 4: `{version,
/// groupKey, status, receiver, groupLabels, commonLabels, commonAnnotations,
/// externalURL, truncatedAlerts, alerts: [{status, labels, annotations,
/// startsAt, endsAt, generatorURL, fingerprint}]}`). Strict about what we
/// need, lenient about the rest.
pub fn parse_webhook(body: &[u8]) -> Result<Vec<Alert>, WebhookError> {
    let payload: Payload = serde_json::from_slice(body)?;
    payload
        .alerts
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            if a.fingerprint.trim().is_empty() {
                return Err(WebhookError::EmptyFingerprint(i));
            }
            Ok(Alert {
                fingerprint: a.fingerprint,
                labels: a.labels,
                annotations: a.annotations,
                starts_at: a.starts_at,
                firing: a.status == WireStatus::Firing,
            })
        })
        .collect()
}

/// Why Alertmanager's API gave no alerts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AlertmanagerError {
    /// The base URL is not an http(s) URL.
    #[error("`{0}` is not an http:// or https:// URL")]
    BadUrl(String),
    /// Alertmanager could not be reached or did not answer in time.
    #[error("cannot reach Alertmanager at {url}: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The answer was not what Alertmanager sends.
    #[error("unexpected answer from Alertmanager: {0}")]
    BadResponse(String),
}

/// An alert as Alertmanager's API v2 lists it (`gettableAlert`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: String,
    fingerprint: String,
    status: ApiStatus,
}

#[derive(Deserialize)]
struct ApiStatus {
    /// `active`, `suppressed` or `unprocessed`.
    state: String,
}

/// Client of Alertmanager's API v2.
#[derive(Debug, Clone)]
pub struct Alertmanager {
    base: String,
    client: reqwest::Client,
}

impl Alertmanager {
    /// A client for Alertmanager at `base_url` (e.g. `http://alertmanager:9093`).
    pub fn new(base_url: &str) -> Result<Alertmanager, AlertmanagerError> {
        let base = base_url.trim().trim_end_matches('/');
        let parsed =
            reqwest::Url::parse(base).map_err(|_| AlertmanagerError::BadUrl(base.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            return Err(AlertmanagerError::BadUrl(base.to_string()));
        }
        crate::tls::ensure_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(API_TIMEOUT)
            .timeout(API_TIMEOUT)
            .build()
            .map_err(|e| AlertmanagerError::BadUrl(format!("{base}: {e}")))?;
        Ok(Alertmanager {
            base: base.to_string(),
            client,
        })
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The alerts firing now and neither silenced nor inhibited (`GET
    /// /api/v2/alerts?active=true&silenced=false&inhibited=false`).
    pub async fn firing(&self) -> Result<Vec<Alert>, AlertmanagerError> {
        let unreachable = |e: reqwest::Error| AlertmanagerError::Unreachable {
            url: self.base.clone(),
            reason: e.without_url().to_string(),
        };
        let resp = self
            .client
            .get(format!("{}/api/v2/alerts", self.base))
            .query(&[
                ("active", "true"),
                ("silenced", "false"),
                ("inhibited", "false"),
            ])
            .send()
            .await
            .map_err(unreachable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(AlertmanagerError::BadResponse(format!(
                "GET /api/v2/alerts: {status}"
            )));
        }
        let body = resp.bytes().await.map_err(unreachable)?;
        parse_api_alerts(&body)
    }
}

/// Reads `GET /api/v2/alerts`; only `active` entries count (the query
/// already asks for those, the check keeps an old server honest).
fn parse_api_alerts(body: &[u8]) -> Result<Vec<Alert>, AlertmanagerError> {
    let listed: Vec<ApiAlert> = serde_json::from_slice(body)
        .map_err(|e| AlertmanagerError::BadResponse(format!("GET /api/v2/alerts: {e}")))?;
    Ok(listed
        .into_iter()
        .filter(|a| a.status.state == "active" && !a.fingerprint.is_empty())
        .map(|a| Alert {
            fingerprint: a.fingerprint,
            labels: a.labels,
            annotations: a.annotations,
            starts_at: a.starts_at,
            firing: true,
        })
        .collect())
}

/// An alert recorded against a rollout.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    /// The rollout it rolls back.
    pub rollout: RolloutId,
    /// The alert.
    pub alert: Alert,
    /// The spec's rollback selector it matched, as written.
    pub selector: String,
    /// When it was received, epoch milliseconds.
    pub received_at_ms: i64,
    /// How it was received.
    pub source: Source,
}

/// Records every firing alert against every running or paused rollout whose
/// spec has a rollback selector matching it, once per (rollout,
/// fingerprint): the first delivery wins. Returns the newly recorded ones.
/// Resolved alerts are ignored: a rollback is not undone when its alert
/// stops firing.
pub async fn route(
    store: &Store,
    alerts: &[Alert],
    source: Source,
) -> Result<Vec<Matched>, StoreError> {
    let received_at_ms = now_ms();
    let firing: Vec<&Alert> = alerts.iter().filter(|a| a.firing).collect();
    if firing.is_empty() {
        return Ok(Vec::new());
    }
    let rollouts = store.running_or_paused().await?;
    let mut matched = Vec::new();
    // The same alert twice in one delivery is recorded once.
    let mut seen = BTreeSet::new();
    for rollout in &rollouts {
        let spec = &rollout.spec;
        for alert in &firing {
            let Some(i) = spec
                .rollback_alerts
                .iter()
                .position(|s| s.matches(&alert.labels))
            else {
                continue;
            };
            if !seen.insert((&rollout.summary.id, &alert.fingerprint)) {
                continue;
            }
            // Validation keeps the parsed selectors in the written order.
            let selector = spec
                .source
                .rollback
                .alerts
                .get(i)
                .map_or_else(String::new, |s| s.trim().to_string());
            let record = AlertRecord {
                fingerprint: alert.fingerprint.clone(),
                labels: alert.labels.clone(),
                starts_at: alert.starts_at.clone(),
                starts_at_ms: alert.starts_at_ms(),
                source: source.as_str().to_string(),
                selector: selector.clone(),
                received_at_ms,
            };
            if store
                .record_rollout_alert(&rollout.summary.id, &record)
                .await?
            {
                matched.push(Matched {
                    rollout: rollout.summary.id.clone(),
                    alert: (*alert).clone(),
                    selector,
                    received_at_ms,
                    source,
                });
            }
        }
    }
    Ok(matched)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn start_times_are_read_to_the_millisecond() {
        let cases = [
            ("2026-11-27T04:50:01Z", Some(1_795_755_001_000)),
            ("2026-11-27T04:50:01.123456789Z", Some(1_795_755_001_123)),
            ("2026-11-27T04:50:01.5Z", Some(1_795_755_001_500)),
            ("2026-11-27T05:50:01.123+01:00", Some(1_795_755_001_123)),
            ("2026-11-27T00:20:01.123-04:30", Some(1_795_755_001_123)),
            ("2026-11-27T04:50:01+00:00", Some(1_795_755_001_000)),
            // Go's zero time: Alertmanager's "never".
            ("0001-01-01T00:00:00Z", None),
            ("2026-11-27 04:50:01", None),
            ("2026-11-27T04:50:01+1:00", None),
            ("yesterday", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(rfc3339_ms(text), want, "{text}");
        }
    }

    #[test]
    fn alerts_describe_themselves_like_promql() {
        let labels = BTreeMap::from([
            ("version".to_string(), "v3".to_string()),
            (
                "alertname".to_string(),
                "EdgeReleaseErrorRatioHigh".to_string(),
            ),
            ("component".to_string(), "edge".to_string()),
        ]);
        assert_eq!(
            describe(&labels),
            r#"EdgeReleaseErrorRatioHigh{component="edge",version="v3"}"#
        );
        let odd = BTreeMap::from([("x".to_string(), "a\"b\\".to_string())]);
        assert_eq!(describe(&odd), r#"{x="a\"b\\"}"#);
    }

    fn webhook(alerts: serde_json::Value) -> serde_json::Value {
        json!({
            "version": "4", "groupKey": "{}:{alertname=\"X\"}", "status": "firing",
            "receiver": "controller", "groupLabels": {}, "commonLabels": {},
            "commonAnnotations": {}, "externalURL": "http://am:9093",
            "truncatedAlerts": 0, "alerts": alerts,
        })
    }

    fn wire(fingerprint: &str, status: &str) -> serde_json::Value {
        json!({
            "status": status,
            "labels": {"alertname": "EdgeReleaseErrorRatioHigh", "component": "edge"},
            "annotations": {"summary": "5xx"},
            "startsAt": "2026-11-27T04:50:01.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": fingerprint,
            "extra": "ignored",
        })
    }

    #[test]
    fn webhooks_are_read_strictly_where_it_matters() {
        let body = webhook(json!([wire("a1", "firing"), wire("b2", "resolved")]));
        let alerts = parse_webhook(body.to_string().as_bytes()).unwrap();
        assert_eq!(alerts.len(), 2);
        assert_eq!(alerts[0].fingerprint, "a1");
        assert!(alerts[0].firing && !alerts[1].firing);
        assert_eq!(alerts[0].labels["component"], "edge");
        assert_eq!(alerts[0].annotations["summary"], "5xx");
        assert_eq!(alerts[0].starts_at_ms(), Some(1_795_755_001_123));

        let without = |field: &str| {
            let mut a = wire("a1", "firing");
            a.as_object_mut().unwrap().remove(field);
            webhook(json!([a])).to_string()
        };
        let bad = [
            ("not JSON", "{\"alerts\": [".to_string()),
            ("no alerts", json!({"version": "4"}).to_string()),
            ("alerts not a list", webhook(json!({})).to_string()),
            ("an array", json!([wire("a1", "firing")]).to_string()),
            ("no fingerprint", without("fingerprint")),
            ("no labels", without("labels")),
            ("no status", without("status")),
            ("no startsAt", without("startsAt")),
            (
                "odd status",
                webhook(json!([wire("a1", "burning")])).to_string(),
            ),
            (
                "empty fingerprint",
                webhook(json!([wire(" ", "firing")])).to_string(),
            ),
        ];
        for (what, body) in bad {
            assert!(
                parse_webhook(body.as_bytes()).is_err(),
                "{what} was accepted"
            );
        }
        // Annotations are optional; no alerts at all is a valid (empty) delivery.
        assert!(parse_webhook(without("annotations").as_bytes()).is_ok());
        assert_eq!(
            parse_webhook(webhook(json!([])).to_string().as_bytes()).unwrap(),
            []
        );
    }

    #[test]
    fn the_api_lists_only_active_alerts() {
        let entry = |fp: &str, state: &str| {
            json!({
                "labels": {"alertname": "X"}, "annotations": {},
                "startsAt": "2026-11-27T04:50:01Z", "endsAt": "2026-11-27T05:50:01Z",
                "updatedAt": "2026-11-27T04:50:01Z", "generatorURL": "",
                "receivers": [{"name": "c"}],
                "fingerprint": fp,
                "status": {"state": state, "silencedBy": [], "inhibitedBy": []},
            })
        };
        let body = json!([entry("a1", "active"), entry("b2", "suppressed")]).to_string();
        let alerts = parse_api_alerts(body.as_bytes()).unwrap();
        assert_eq!(alerts.len(), 1);
        assert!(alerts[0].firing && alerts[0].fingerprint == "a1");
        assert!(parse_api_alerts(b"{}").is_err());
    }

    #[test]
    fn alertmanager_urls_are_checked() {
        assert!(Alertmanager::new("http://127.0.0.1:9093/").is_ok());
        assert_eq!(
            Alertmanager::new("https://am.example:9093/").unwrap().url(),
            "https://am.example:9093"
        );
        for bad in ["", "127.0.0.1:9093", "ftp://am", "http://"] {
            assert!(Alertmanager::new(bad).is_err(), "{bad}");
        }
    }

    fn spec(component: &str, selectors: &[&str]) -> crate::spec::Spec {
        let alerts: Vec<String> = selectors.iter().map(|s| format!("    - '{s}'")).collect();
        crate::spec::Spec::from_yaml(&format!(
            "component: {component}\nversion: v2\nartifact:\n  url: salt://r/{component}.tar.gz\n  \
             sha256: {}\ncohorts:\n  - name: all\n    target: G@role:{component}\n\
             rollback:\n  alerts:\n{}\n",
            "ab".repeat(32),
            alerts.join("\n")
        ))
        .unwrap()
    }

    async fn begin(store: &Store, spec: &crate::spec::Spec) -> RolloutId {
        let inv = crate::inventory::Inventory::new(vec![]).unwrap();
        let plan = crate::plan::Plan::build(spec, &inv, &BTreeMap::new());
        store.begin_rollout(spec, &plan).await.unwrap()
    }

    fn firing(fingerprint: &str, labels: &[(&str, &str)]) -> Alert {
        Alert {
            fingerprint: fingerprint.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            annotations: BTreeMap::new(),
            starts_at: "2026-11-27T04:50:01.5Z".into(),
            firing: true,
        }
    }

    #[tokio::test]
    async fn firing_alerts_are_routed_to_the_rollouts_that_select_them() {
        let dir =
            std::env::temp_dir().join(format!("warren-route-{}-{}", std::process::id(), now_ms()));
        let url = format!("sqlite://{}?mode=rwc", dir.join("r.db").display());
        let store = Store::connect(&url).await.unwrap();
        let edge = begin(
            &store,
            &spec("edge", &["{alertname=\"Other\"}", " {component=\"edge\"} "]),
        )
        .await;
        let connector = begin(&store, &spec("connector", &["{team=\"tunnel\"}"])).await;

        let edge_alert = firing("e1", &[("alertname", "EdgeDown"), ("component", "edge")]);
        let both = firing("b1", &[("component", "edge"), ("team", "tunnel")]);
        let nobody = firing("n1", &[("component", "origin")]);
        let resolved = Alert {
            firing: false,
            ..firing("r1", &[("component", "edge")])
        };
        let delivery = [
            edge_alert.clone(),
            both.clone(),
            nobody,
            resolved,
            edge_alert.clone(),
        ];
        let matched = route(&store, &delivery, Source::Webhook).await.unwrap();
        let got: Vec<(&str, &str, &str)> = matched
            .iter()
            .map(|m| {
                (
                    m.rollout.as_str(),
                    m.alert.fingerprint.as_str(),
                    m.selector.as_str(),
                )
            })
            .collect();
        let mut want = vec![
            (edge.as_str(), "e1", "{component=\"edge\"}"),
            (edge.as_str(), "b1", "{component=\"edge\"}"),
            (connector.as_str(), "b1", "{team=\"tunnel\"}"),
        ];
        let mut got_sorted = got.clone();
        got_sorted.sort();
        want.sort();
        assert_eq!(got_sorted, want);
        assert!(matched.iter().all(|m| m.source == Source::Webhook));

        // The poll finds the same alerts later: nothing new.
        assert!(
            route(&store, &delivery, Source::Poll)
                .await
                .unwrap()
                .is_empty()
        );
        let recorded = store.rollout_alerts(&edge).await.unwrap();
        assert_eq!(recorded.len(), 2);
        assert!(recorded.iter().all(|r| r.source == "webhook"));
        assert_eq!(recorded[0].starts_at_ms, Some(1_795_755_001_500));

        // A rollout that is rolling back takes no more alerts.
        store
            .set_state(&connector, crate::store::RolloutState::RollingBack)
            .await
            .unwrap();
        let later = firing("l1", &[("team", "tunnel")]);
        assert!(
            route(&store, &[later], Source::Poll)
                .await
                .unwrap()
                .is_empty()
        );
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn sources_have_stored_names() {
        assert_eq!(Source::Webhook.as_str(), "webhook");
        assert_eq!(Source::Poll.as_str(), "poll");
    }
}
