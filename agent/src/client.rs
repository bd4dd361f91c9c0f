//! HTTP client for the controller's agent endpoints.

use std::time::Duration;

use sdp_spec::wire::{AgentReport, Assignments, ErrorBody};

use crate::config::AgentConfig;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller at {url} is unreachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("controller refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("controller sent an unreadable answer: {0}")]
    Decode(String),
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    agent: String,
    advertise: String,
}

impl Client {
    pub fn new(cfg: &AgentConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with default TLS-less settings builds");
        Self {
            http,
            base: cfg.controller.clone(),
            agent: cfg.name.clone(),
            advertise: cfg.advertise.clone(),
        }
    }

    /// Long-polls for this agent's work: answers when it differs from `etag`,
    /// or after `wait`.
    pub async fn poll(
        &self,
        etag: Option<&str>,
        wait: Duration,
    ) -> Result<Assignments, ClientError> {
        let url = format!("{}/v1/agents/{}/assignments", self.base, self.agent);
        let mut query = vec![
            ("advertise", self.advertise.clone()),
            ("wait", wait.as_secs().to_string()),
        ];
        if let Some(e) = etag {
            query.push(("etag", e.to_string()));
        }
        let resp = self
            .http
            .get(&url)
            .query(&query)
            .timeout(wait + Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        decode(resp).await
    }

    pub async fn report(&self, report: &AgentReport) -> Result<(), ClientError> {
        let url = format!("{}/v1/agents/{}/report", self.base, self.agent);
        let resp = self
            .http
            .post(&url)
            .json(report)
            .timeout(Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(refused(resp).await)
        }
    }

    fn unreachable(&self, e: reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            message: e.without_url().to_string(),
        }
    }
}

async fn decode<T: serde::de::DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    if !resp.status().is_success() {
        return Err(refused(resp).await);
    }
    resp.json()
        .await
        .map_err(|e| ClientError::Decode(e.without_url().to_string()))
}

async fn refused(resp: reqwest::Response) -> ClientError {
    let status = resp.status().as_u16();
    let message = match resp.json::<ErrorBody>().await {
        Ok(b) => b.error,
        Err(_) => "no details".into(),
    };
    ClientError::Refused { status, message }
}
