//! The Dokku-style provisioner: `POST /provision`, `PUT /update`, `DELETE /deprovision`, with
//! `X-API-Key` and the effect's `Idempotency-Key` on every request.

use std::time::Duration;

use domain::catalog::Limits;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use shared::outbound::describe;

/// Where the provisioner is and how to talk to it.
#[derive(Debug, Clone)]
pub struct ProvisionerConfig {
    /// Base URL (`PROVISIONER_URL`).
    pub url: String,
    /// `PROVISIONER_API_KEY` (sent as `X-API-Key`).
    pub api_key: Option<SecretString>,
    /// Timeout of one request.
    pub timeout: Duration,
}

/// What `POST /provision` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Provisioned {
    /// The app.
    pub app_name: String,
    /// Its subdomain.
    #[serde(default)]
    pub subdomain: Option<String>,
    /// Frontend URL.
    #[serde(default)]
    pub frontend_url: Option<String>,
    /// Backend URL.
    #[serde(default)]
    pub backend_url: Option<String>,
}

/// One call's result: the HTTP status (None when no answer came) and the body or the error.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status, if any answer came.
    pub status: Option<u16>,
    /// Body of a 2xx, parsed.
    pub body: Option<Value>,
    /// What went wrong, for the journal.
    pub error: Option<String>,
}

/// The client.
#[derive(Debug, Clone)]
pub struct Provisioner {
    http: reqwest::Client,
    config: ProvisionerConfig,
}

/// The limits as the provisioner takes them: numbers, -1 for unlimited.
pub fn limits_json(limits: Option<Limits>) -> Value {
    match limits {
        None => Value::Null,
        Some(l) => json!({
            "agents": f64::from(l.agents),
            "messages_per_day": f64::from(l.messages_per_day),
            "memory_mb": f64::from(l.memory_mb),
            "cpu": f64::from(l.cpu),
        }),
    }
}

impl Provisioner {
    /// A client with the configured timeout.
    pub fn new(config: ProvisionerConfig) -> anyhow::Result<Self> {
        let http = shared::outbound::client(config.timeout)?;
        Ok(Self { http, config })
    }

    /// `POST /provision`.
    pub async fn provision(
        &self,
        key: &str,
        subscription: &str,
        customer: Option<&str>,
        tier: &str,
        limits: Option<Limits>,
    ) -> Answer {
        let body = json!({
            "subscription_id": subscription,
            "account_id": customer,
            "tier": tier,
            "limits": limits_json(limits),
        });
        self.call(reqwest::Method::POST, "/provision", key, body).await
    }

    /// `PUT /update`.
    pub async fn update(&self, key: &str, app_name: &str, tier: &str, limits: Option<Limits>) -> Answer {
        let body = json!({ "app_name": app_name, "tier": tier, "limits": limits_json(limits) });
        self.call(reqwest::Method::PUT, "/update", key, body).await
    }

    /// `DELETE /deprovision`.
    pub async fn deprovision(&self, key: &str, app_name: &str) -> Answer {
        self.call(reqwest::Method::DELETE, "/deprovision", key, json!({ "app_name": app_name })).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, key: &str, body: Value) -> Answer {
        let url = format!("{}{path}", self.config.url.trim_end_matches('/'));
        let mut request = self.http.request(method, url).header("Idempotency-Key", key).json(&body);
        if let Some(api_key) = &self.config.api_key {
            request = request.header("X-API-Key", api_key.expose_secret());
        }
        match request.send().await {
            Err(error) => Answer { status: None, body: None, error: Some(describe(&error)) },
            Ok(response) => {
                let status = response.status();
                let text = match response.text().await {
                    Ok(text) => text,
                    // An answer cut off mid-body is no answer: retried under the same key.
                    Err(error) if status.is_success() => {
                        let error = format!("HTTP {status}, but its body could not be read: {}", describe(&error));
                        return Answer { status: None, body: None, error: Some(error) };
                    }
                    Err(error) => format!("(body unreadable: {})", describe(&error)),
                };
                if status.is_success() {
                    let body = serde_json::from_str(&text).ok();
                    Answer { status: Some(status.as_u16()), body, error: None }
                } else {
                    let excerpt: String = text.chars().take(300).collect();
                    Answer {
                        status: Some(status.as_u16()),
                        body: None,
                        error: Some(format!("HTTP {status}: {excerpt}")),
                    }
                }
            }
        }
    }
}
