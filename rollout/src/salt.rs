//! A salt-api client (`rest_cherrypy`, `sharedsecret` eauth) and the
//! classification of each host's return.
//!
//! Salt's own exit codes are not a verdict (a failed state can exit 0 and a
//! silent minion is simply missing), so every call names the hosts it expects
//! and each host's return is judged from its per-state `result` fields:
//! success, failed state, render error, or no return.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

/// A salt-api password. `Debug` never shows it.
#[derive(Clone)]
pub struct SaltSecret(pub String);

impl fmt::Debug for SaltSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SaltSecret(***)")
    }
}

/// Why a salt-api call failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum SaltError {
    /// salt-api could not be reached.
    #[error("cannot reach salt-api at {url}: {reason}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Login was refused: wrong user or secret.
    #[error(
        "salt-api refused the login for user `{0}`: check SALT_API_USER and the secret, and the master's external_auth"
    )]
    Auth(String),
    /// salt-api answered with an error status.
    #[error("salt-api answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer was not what salt-api sends.
    #[error("unexpected answer from salt-api: {0}")]
    BadResponse(String),
    /// A host to target has an id the controller does not send to Salt.
    #[error("not sent to salt-api: {0}")]
    InvalidTarget(#[from] crate::minion::InvalidMinionId),
}

impl SaltError {
    /// A failure that asking again may cure: salt-api unreachable or
    /// timing out, or a 5xx from it (or a proxy in front of it).
    pub fn is_transient(&self) -> bool {
        match self {
            SaltError::Unreachable { .. } => true,
            SaltError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Pause before a job lookup that failed is asked again.
const LOOKUP_RETRY: Duration = Duration::from_secs(1);

/// A `list` target as salt-api takes it: a JSON array of minion ids, each
/// checked first. Never a comma-joined string, where an id holding a comma
/// would name other minions.
fn list_target(hosts: &[String]) -> Result<Value, SaltError> {
    for id in hosts {
        crate::minion::check(id)?;
    }
    Ok(json!(hosts))
}

/// How one host's state run went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum HostOutcome {
    /// Every state succeeded.
    Success {
        /// How many states changed something.
        changed: usize,
    },
    /// At least one state failed; the comments of the failed states.
    FailedState {
        /// `state id: comment` of each failed state.
        failures: Vec<String>,
    },
    /// The SLS did not render; Salt's error lines.
    RenderError {
        /// The errors.
        errors: Vec<String>,
    },
    /// The host did not answer within the timeout.
    NoReturn,
}

impl HostOutcome {
    /// Whether the host converged.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Success { .. })
    }

    /// A one-line description for people.
    pub fn describe(&self) -> String {
        match self {
            Self::Success { changed } => format!("success ({changed} changed)"),
            Self::FailedState { failures } => format!("failed state: {}", failures.join("; ")),
            Self::RenderError { errors } => format!("render error: {}", errors.join("; ")),
            Self::NoReturn => "no return (minion did not answer in time)".into(),
        }
    }
}

/// The outcome of a state run on a set of expected hosts.
#[derive(Debug, Clone, Serialize)]
pub struct ApplyReport {
    /// The job id, if salt-api reported one.
    pub jid: Option<String>,
    /// Every expected host, with its outcome.
    pub hosts: BTreeMap<String, HostOutcome>,
}

impl ApplyReport {
    /// Hosts that did not succeed.
    pub fn failures(&self) -> Vec<(&str, &HostOutcome)> {
        self.hosts
            .iter()
            .filter(|(_, o)| !o.is_success())
            .map(|(h, o)| (h.as_str(), o))
            .collect()
    }
}

/// A host's identifying grains.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Grains {
    /// `datacenter` grain.
    pub datacenter: String,
    /// `cohort` grain.
    pub cohort: String,
    /// `role` grain.
    pub role: String,
}

/// A salt-api client.
pub struct SaltApi {
    base: String,
    user: String,
    secret: SaltSecret,
    client: reqwest::Client,
    token: Mutex<Option<String>>,
}

impl fmt::Debug for SaltApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaltApi")
            .field("base", &self.base)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl SaltApi {
    /// A client for salt-api at `base` (e.g. `http://127.0.0.1:8000`).
    pub fn new(base: &str, user: &str, secret: SaltSecret) -> Result<Self, SaltError> {
        crate::tls::ensure_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| SaltError::Unreachable {
                url: base.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            user: user.to_string(),
            secret,
            client,
            token: Mutex::new(None),
        })
    }

    fn unreachable(&self, e: reqwest::Error) -> SaltError {
        SaltError::Unreachable {
            url: self.base.clone(),
            reason: e.without_url().to_string(),
        }
    }

    async fn login(&self) -> Result<String, SaltError> {
        let resp = self
            .client
            .post(format!("{}/login", self.base))
            .header("accept", "application/json")
            .json(
                &json!({"username": self.user, "password": self.secret.0, "eauth": "sharedsecret"}),
            )
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status() == 401 {
            return Err(SaltError::Auth(self.user.clone()));
        }
        let body: Value = checked_json(resp).await?;
        let token = body["return"][0]["token"]
            .as_str()
            .ok_or_else(|| SaltError::BadResponse("login answer has no token".into()))?
            .to_string();
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        Ok(token)
    }

    /// Runs one lowstate chunk and returns its `return[0]`, logging in (again)
    /// when needed.
    pub async fn call(&self, lowstate: Value, timeout: Duration) -> Result<Value, SaltError> {
        for attempt in 0..2 {
            let cached = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let token = match cached {
                Some(t) => t,
                None => self.login().await?,
            };
            let resp = self
                .client
                .post(&self.base)
                .header("accept", "application/json")
                .header("x-auth-token", token)
                .timeout(timeout + Duration::from_secs(10))
                .json(&json!([lowstate]))
                .send()
                .await
                .map_err(|e| self.unreachable(e))?;
            if resp.status() == 401 && attempt == 0 {
                *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
                continue;
            }
            let body: Value = checked_json(resp).await?;
            return Ok(body["return"][0].clone());
        }
        Err(SaltError::Auth(self.user.clone()))
    }

    /// `test.ping` on a compound target: which minions answered (`true`).
    pub async fn ping(
        &self,
        target: &str,
        timeout: Duration,
    ) -> Result<BTreeMap<String, bool>, SaltError> {
        let ret = self
            .call(
                json!({"client": "local", "tgt": target, "tgt_type": "compound", "fun": "test.ping", "timeout": timeout.as_secs().max(1)}),
                timeout,
            )
            .await?;
        let map = ret
            .as_object()
            .ok_or_else(|| SaltError::BadResponse(format!("test.ping returned {ret}")))?;
        Ok(map
            .iter()
            .map(|(k, v)| (k.clone(), v.as_bool() == Some(true)))
            .collect())
    }

    /// `test.ping` on exactly `ids`: which answered.
    pub async fn ping_list(
        &self,
        ids: &[String],
        timeout: Duration,
    ) -> Result<BTreeMap<String, bool>, SaltError> {
        let tgt = list_target(ids)?;
        let ret = self
            .call(
                json!({"client": "local", "tgt": tgt, "tgt_type": "list", "fun": "test.ping", "timeout": timeout.as_secs().max(1)}),
                timeout,
            )
            .await?;
        let map = ret
            .as_object()
            .ok_or_else(|| SaltError::BadResponse(format!("test.ping returned {ret}")))?;
        Ok(ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    map.get(id).and_then(Value::as_bool) == Some(true),
                )
            })
            .collect())
    }

    /// The `datacenter`, `cohort` and `role` grains of every minion matching
    /// a compound target, as the master's cache knows them (answers even
    /// for minions that are down, so they can be flagged unreachable).
    pub async fn grains(&self, target: &str) -> Result<BTreeMap<String, Grains>, SaltError> {
        let ret = self
            .call(
                json!({"client": "runner", "fun": "cache.grains", "tgt": target, "tgt_type": "compound"}),
                Duration::from_secs(30),
            )
            .await?;
        let map = ret
            .as_object()
            .ok_or_else(|| SaltError::BadResponse(format!("cache.grains returned {ret}")))?;
        let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        Ok(map
            .iter()
            .map(|(id, g)| {
                (
                    id.clone(),
                    Grains {
                        datacenter: text(g, "datacenter"),
                        cohort: text(g, "cohort"),
                        role: text(g, "role"),
                    },
                )
            })
            .collect())
    }

    /// Starts `state.apply` of `state` on exactly `hosts` without waiting,
    /// and returns the job id (so a controller killed while the job runs can
    /// wait for that same job instead of starting another).
    ///
    /// The caller picks the job id ([`new_jid`]) and records it first, so
    /// there is no moment when a job runs that the journal does not name.
    pub async fn apply_async(
        &self,
        hosts: &[String],
        state: &str,
        jid: &str,
    ) -> Result<(), SaltError> {
        let tgt = list_target(hosts)?;
        let ret = self
            .call(
                json!({
                    "client": "local_async",
                    "tgt": tgt,
                    "tgt_type": "list",
                    "fun": "state.apply",
                    "arg": [state],
                    "kwarg": {"queue": true},
                    "jid": jid,
                }),
                Duration::from_secs(30),
            )
            .await?;
        match ret["jid"].as_str() {
            Some(j) if j == jid => Ok(()),
            _ => Err(SaltError::BadResponse(format!(
                "local_async did not start job {jid}: {ret}"
            ))),
        }
    }

    /// Whether the master knows job `jid` (it was published).
    pub async fn job_known(&self, jid: &str) -> Result<bool, SaltError> {
        let ret = self
            .call(
                json!({"client": "runner", "fun": "jobs.list_job", "jid": jid}),
                Duration::from_secs(30),
            )
            .await?;
        let ret = unwrap_runner_data(ret);
        Ok(ret.get("Function").is_some() || ret.get("Minions").is_some())
    }

    /// Waits for job `jid` until every host in `hosts` returned or `timeout`
    /// passed, then classifies each host's return (missing: no return).
    pub async fn wait_job(
        &self,
        jid: &str,
        hosts: &[String],
        timeout: Duration,
    ) -> Result<ApplyReport, SaltError> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let lookup = self
                .call(
                    json!({"client": "runner", "fun": "jobs.lookup_jid", "jid": jid}),
                    Duration::from_secs(30),
                )
                .await;
            let ret = match lookup {
                Ok(ret) => ret,
                // The job runs on the master whether or not one lookup is
                // answered: a salt-api that is slow or restarting for a
                // moment must not fail a rollout mid-batch. Asked again
                // until the job's own deadline.
                Err(e) if e.is_transient() && std::time::Instant::now() < deadline => {
                    tracing::warn!(jid, error = %e, "salt-api did not answer a job lookup; asking again");
                    tokio::time::sleep(LOOKUP_RETRY).await;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let ret = unwrap_runner_data(ret);
            let all_in = hosts
                .iter()
                .all(|h| ret.get(h).is_some_and(|v| !v.is_null()));
            if all_in || std::time::Instant::now() >= deadline {
                let mut report = classify(hosts, &ret);
                report.jid = Some(jid.to_string());
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs `state.apply` of `state` (empty for a highstate) on exactly
    /// `hosts`, and classifies each host's return.
    pub async fn apply(
        &self,
        hosts: &[String],
        state: Option<&str>,
        timeout: Duration,
    ) -> Result<ApplyReport, SaltError> {
        // `queue`: a state run already going on a host (a scheduled
        // highstate) delays this one instead of failing it.
        let mut low = json!({
            "client": "local",
            "tgt": list_target(hosts)?,
            "tgt_type": "list",
            "fun": "state.apply",
            "kwarg": {"queue": true},
            "full_return": true,
            "timeout": timeout.as_secs().max(1),
        });
        if let Some(s) = state {
            low["arg"] = json!([s]);
        }
        let ret = self.call(low, timeout).await?;
        Ok(classify(hosts, &ret))
    }
}

/// A Salt job id for now: `YYYYMMDDhhmmssffffff` (UTC), as Salt makes them.
pub fn new_jid() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_micros()
    )
}

/// Some runners answer `{"data": ..., "outputter": ...}` through salt-api;
/// the job's returns are in `data`.
fn unwrap_runner_data(ret: Value) -> Value {
    let wrapped = ret.as_object().is_some_and(|o| {
        o.contains_key("data") && o.keys().all(|k| k == "data" || k == "outputter")
    });
    if wrapped { ret["data"].clone() } else { ret }
}

async fn checked_json(resp: reqwest::Response) -> Result<Value, SaltError> {
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(SaltError::Status {
            status: status.as_u16(),
            body: text.chars().take(300).collect(),
        });
    }
    serde_json::from_str(&text).map_err(|e| {
        SaltError::BadResponse(format!(
            "not JSON ({e}): {}",
            text.chars().take(200).collect::<String>()
        ))
    })
}

/// Classifies a `state.apply` return (with `full_return`) for the hosts
/// that were expected; a host missing from the return gets `NoReturn`.
pub fn classify(expected: &[String], ret: &Value) -> ApplyReport {
    let mut hosts = BTreeMap::new();
    let mut jid = None;
    for host in expected {
        let outcome = match ret.get(host) {
            None | Some(Value::Null) => HostOutcome::NoReturn,
            Some(v) => {
                if jid.is_none() {
                    jid = v["jid"].as_str().map(str::to_string);
                }
                classify_host(v.get("ret").unwrap_or(v))
            }
        };
        hosts.insert(host.clone(), outcome);
    }
    ApplyReport { jid, hosts }
}

fn classify_host(ret: &Value) -> HostOutcome {
    match ret {
        Value::Object(states) => {
            let mut failures = Vec::new();
            let mut changed = 0;
            for (id, st) in states {
                match st.get("result") {
                    Some(Value::Bool(true)) => {
                        if st["changes"].as_object().is_some_and(|c| !c.is_empty()) {
                            changed += 1;
                        }
                    }
                    // `None` (test mode) is not a failure; anything else is.
                    Some(Value::Null) => {}
                    _ => {
                        let name = st["__id__"].as_str().unwrap_or(id);
                        let comment = st["comment"].as_str().unwrap_or("").trim();
                        failures.push(format!("{name}: {comment}"));
                    }
                }
            }
            if failures.is_empty() {
                HostOutcome::Success { changed }
            } else {
                failures.sort();
                HostOutcome::FailedState { failures }
            }
        }
        Value::Array(lines) => HostOutcome::RenderError {
            errors: lines
                .iter()
                .map(|l| l.as_str().map_or_else(|| l.to_string(), str::to_string))
                .collect(),
        },
        Value::String(s) => HostOutcome::RenderError {
            errors: vec![s.clone()],
        },
        other => HostOutcome::RenderError {
            errors: vec![format!("unexpected return: {other}")],
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_each_kind_of_return() {
        let ret = json!({
            "ok": {"jid": "1", "retcode": 0, "ret": {
                "file_|-a_|-a_|-managed": {"result": true, "changes": {"diff": "x"}, "comment": "", "__id__": "a"},
                "cmd_|-b_|-b_|-run": {"result": true, "changes": {}, "comment": "", "__id__": "b"}}},
            "bad": {"jid": "1", "retcode": 2, "ret": {
                "archive_|-r_|-r_|-extracted": {"result": false, "changes": {}, "comment": "checksum mismatch", "__id__": "warren-edge-release"}}},
            "render": {"jid": "1", "retcode": 1, "ret": ["Rendering SLS 'base:edge' failed: Jinja variable 'x' is undefined"]},
        });
        let hosts: Vec<String> = ["bad", "gone", "ok", "render"].map(String::from).to_vec();
        let report = classify(&hosts, &ret);
        assert_eq!(report.jid.as_deref(), Some("1"));
        assert_eq!(report.hosts["ok"], HostOutcome::Success { changed: 1 });
        assert_eq!(
            report.hosts["bad"],
            HostOutcome::FailedState {
                failures: vec!["warren-edge-release: checksum mismatch".into()]
            }
        );
        assert!(matches!(
            report.hosts["render"],
            HostOutcome::RenderError { .. }
        ));
        assert_eq!(report.hosts["gone"], HostOutcome::NoReturn);
        assert_eq!(report.failures().len(), 3);
    }

    #[test]
    fn job_ids_look_like_salts() {
        let jid = new_jid();
        assert_eq!(jid.len(), 20, "{jid}");
        assert!(jid.bytes().all(|b| b.is_ascii_digit()), "{jid}");
        assert!(jid.starts_with("20"), "{jid}");
        let month: u32 = jid[4..6].parse().unwrap();
        let day: u32 = jid[6..8].parse().unwrap();
        assert!(
            (1..=12).contains(&month) && (1..=31).contains(&day),
            "{jid}"
        );
    }

    #[test]
    fn the_secret_never_shows_in_debug() {
        let api = SaltApi::new("http://127.0.0.1:1", "u", SaltSecret("hunter2".into())).unwrap();
        assert!(!format!("{api:?}").contains("hunter2"));
        assert!(!format!("{:?}", SaltSecret("hunter2".into())).contains("hunter2"));
    }
}
