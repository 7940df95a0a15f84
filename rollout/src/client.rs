//! The CLI's client of `rollout serve`'s API (`--server URL`): submit a
//! plan, read a rollout, ask for a pause, resume or abort. The token comes
//! from a file and goes only into the Authorization header; errors carry
//! the server's JSON message, never the token.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::plan::Plan;
use crate::spec::Spec;
use crate::store::{AlertRecord, RolloutRecord, RolloutSummary, Step};

/// Where the controller service is, and how to reach it.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Base URL, e.g. http://127.0.0.1:9099.
    pub url: String,
    /// File holding the API's bearer token.
    pub token_file: Option<PathBuf>,
    /// PEM CA to trust for an https server (else the system's roots).
    pub ca_file: Option<PathBuf>,
}

/// Why a call to the server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A setting is wrong.
    #[error("{0}")]
    Config(String),
    /// The server could not be reached or did not answer.
    #[error("controller at {url} unreachable: {reason}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// Why (reqwest's words, without the token).
        reason: String,
    },
    /// The server refused, with its message.
    #[error("controller answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's `error`.
        message: String,
    },
    /// The answer is not what this version expects.
    #[error("controller's answer is unreadable: {0}")]
    Unreadable(String),
}

/// A rollout as the server shows it.
#[derive(Debug, Clone)]
pub struct Remote {
    /// Summary, spec and plan.
    pub record: RolloutRecord,
    /// The journal.
    pub steps: Vec<Step>,
    /// Alerts matched.
    pub alerts: Vec<AlertRecord>,
}

/// A client of one server.
#[derive(Debug, Clone)]
pub struct Client {
    base: reqwest::Url,
    http: reqwest::Client,
    token: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
}

impl Client {
    /// Builds the client; reads the token and the CA now, so a bad file is
    /// said before anything is sent.
    pub fn new(settings: &ServerSettings) -> Result<Client, ClientError> {
        crate::tls::ensure_provider();
        let base = reqwest::Url::parse(&settings.url).map_err(|e| {
            ClientError::Config(format!("--server {}: not a URL: {e}", settings.url))
        })?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "--server {}: use http:// or https://",
                settings.url
            )));
        }
        let token = settings.token_file.as_deref().map(read_token).transpose()?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = &settings.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                ClientError::Config(format!("cannot read --server-ca {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .map_err(|e| ClientError::Config(format!("--server-ca {}: {e}", ca.display())))?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(Client { base, http, token })
    }

    /// The server's base URL as given.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<serde_json::Value, ClientError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| ClientError::Config(format!("{path}: {e}")))?;
        let mut req = self.http.request(method, url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.url().to_string(),
            reason: e.without_url().to_string(),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Unreachable {
            url: self.url().to_string(),
            reason: e.without_url().to_string(),
        })?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|b| b.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string());
            let hint = if status.as_u16() == 401 {
                " (give the API token with --token-file FILE or ROLLOUT_TOKEN_FILE)"
            } else {
                ""
            };
            return Err(ClientError::Refused {
                status: status.as_u16(),
                message: format!("{message}{hint}"),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unreadable(e.to_string()))
    }

    /// Submits a plan file's text; the id of the started rollout.
    pub async fn submit(&self, plan_file: Vec<u8>) -> Result<String, ClientError> {
        let v = self
            .call(reqwest::Method::POST, "v1/rollouts", Some(plan_file))
            .await?;
        v["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ClientError::Unreadable("no `id` in the answer".into()))
    }

    /// Every rollout, newest first.
    pub async fn list(&self) -> Result<Vec<RolloutSummary>, ClientError> {
        let v = self.call(reqwest::Method::GET, "v1/rollouts", None).await?;
        serde_json::from_value(v).map_err(|e| ClientError::Unreadable(e.to_string()))
    }

    /// One rollout with its journal.
    pub async fn get(&self, id: &str) -> Result<Remote, ClientError> {
        let v = self
            .call(reqwest::Method::GET, &format!("v1/rollouts/{id}"), None)
            .await?;
        let bad = |e: String| ClientError::Unreadable(e);
        let summary: RolloutSummary =
            serde_json::from_value(v["rollout"].clone()).map_err(|e| bad(e.to_string()))?;
        let spec = Spec::from_json(&v["spec"].to_string()).map_err(|e| bad(e.to_string()))?;
        let plan = Plan::from_json(&v["plan"].to_string()).map_err(|e| bad(e.to_string()))?;
        Ok(Remote {
            record: RolloutRecord {
                summary,
                spec,
                plan,
            },
            steps: serde_json::from_value(v["steps"].clone()).map_err(|e| bad(e.to_string()))?,
            alerts: serde_json::from_value(v["alerts"].clone()).map_err(|e| bad(e.to_string()))?,
        })
    }

    /// Asks for `pause`, `resume` or `abort`; the rollout after it.
    pub async fn request(&self, id: &str, action: &str) -> Result<RolloutSummary, ClientError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("v1/rollouts/{id}/{action}"),
                None,
            )
            .await?;
        serde_json::from_value(v["rollout"].clone())
            .map_err(|e| ClientError::Unreadable(e.to_string()))
    }
}

fn read_token(path: &Path) -> Result<String, ClientError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ClientError::Config(format!("cannot read token file {}: {e}", path.display()))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ClientError::Config(format!(
            "token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}
