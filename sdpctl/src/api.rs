//! The controller's HTTP API as sdpctl uses it.

use std::time::Duration;

use anyhow::{Context, anyhow};
use sdp_spec::record::Kind;
use sdp_spec::wire::{ApplyRequest, ApplyResponse, ErrorBody, SandboxStatus, StoredRecord};
use serde::de::DeserializeOwned;

pub struct Api {
    http: reqwest::Client,
    base: String,
    user: String,
}

/// An error the controller returned, shown as it said it.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub body: ErrorBody,
}

impl Refused {
    pub fn not_found(&self) -> bool {
        self.status == 404
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.body.error)
    }
}

impl std::error::Error for Refused {}

impl Api {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client builds");
        // Who applied what, for history: SDP_USER, else the login name.
        let user = ["SDP_USER", "USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
            .or_else(user_of_this_process)
            .unwrap_or_else(|| "unknown".into());
        Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            user,
        }
    }

    async fn send<T: DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> anyhow::Result<T> {
        let resp = req
            .header("x-sdp-user", &self.user)
            .send()
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach the controller at {}: {} (is it running? set --controller or SDP_CONTROLLER)",
                    self.base,
                    e.without_url()
                )
            })?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .context("reading the controller's answer")?;
        if !status.is_success() {
            let body = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
                error: format!(
                    "controller answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ),
                field: None,
                details: vec![],
            });
            return Err(Refused {
                status: status.as_u16(),
                body,
            }
            .into());
        }
        serde_json::from_slice(&bytes).context("the controller's answer is not what sdpctl expects")
    }

    pub async fn apply(&self, req: &ApplyRequest) -> anyhow::Result<ApplyResponse> {
        self.send(self.http.post(format!("{}/v1/apply", self.base)).json(req))
            .await
    }

    pub async fn list(&self, kind: Kind) -> anyhow::Result<Vec<StoredRecord>> {
        self.send(self.http.get(format!("{}/v1/records/{kind}", self.base)))
            .await
    }

    pub async fn get(&self, kind: Kind, name: &str) -> anyhow::Result<StoredRecord> {
        self.send(
            self.http
                .get(format!("{}/v1/records/{kind}/{name}", self.base)),
        )
        .await
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> anyhow::Result<serde_json::Value> {
        self.send(
            self.http
                .delete(format!("{}/v1/records/{kind}/{name}", self.base)),
        )
        .await
    }

    pub async fn history(&self, kind: Kind, name: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        self.send(
            self.http
                .get(format!("{}/v1/records/{kind}/{name}/history", self.base)),
        )
        .await
    }

    pub async fn status(&self, name: &str) -> anyhow::Result<SandboxStatus> {
        self.send(
            self.http
                .get(format!("{}/v1/sandboxes/{name}/status", self.base)),
        )
        .await
    }

    pub async fn statuses(&self) -> anyhow::Result<Vec<SandboxStatus>> {
        self.send(self.http.get(format!("{}/v1/sandboxes", self.base)))
            .await
    }
}

/// The name of the process's user, from /proc and /etc/passwd (as `whoami`).
fn user_of_this_process() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        (f.nth(1)? == uid).then(|| name.to_string())
    });
    Some(name.unwrap_or_else(|| format!("uid {uid}")))
}
