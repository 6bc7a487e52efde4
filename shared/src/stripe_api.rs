//! The client of Stripe's HTTP API for the few calls stripe-ledger makes (`docs/billing-api.md`):
//! form-encoded requests, JSON answers, the API version pinned, every POST under an
//! `Idempotency-Key`, so retrying one after a timeout or a 5xx is safe.

use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};
use serde_json::Value;

/// The Stripe API version every call is made with (`Stripe-Version`), defined beside the model
/// that reads its shapes.
pub use domain::stripe::API_VERSION;

/// How often a call that got no usable answer (timeout, connection error, 429, 5xx) is made.
const ATTEMPTS: u32 = 3;

/// Form parameters in Stripe's bracket notation (`line_items[0][price]`), in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// An empty form.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value`.
    pub fn set(mut self, key: impl Into<String>, value: impl ToString) -> Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    /// Adds `key=value` when `value` is present.
    pub fn set_opt(self, key: impl Into<String>, value: Option<impl ToString>) -> Self {
        match value {
            Some(value) => self.set(key, value),
            None => self,
        }
    }

    /// The pairs.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}

/// A successful answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Value,
    /// Stripe's `Request-Id`, for support and the command journal.
    pub request_id: Option<String>,
}

/// A call that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// Stripe refused the request (4xx other than 429): retrying will not help.
    #[error("Stripe refused the request ({status}, {code:?}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// Stripe's error code (`resource_missing`, `card_declined`...).
        code: Option<String>,
        /// Stripe's message.
        message: String,
        /// Stripe's `Request-Id`.
        request_id: Option<String>,
    },
    /// No usable answer after every attempt (timeout, connection error, 429, 5xx).
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
}

/// The client.
#[derive(Debug, Clone)]
pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    key: SecretString,
    backoff: Duration,
}

/// How long one Stripe API call may take before it is retried (with the same idempotency key).
pub const TIMEOUT: Duration = Duration::from_secs(15);

impl StripeApi {
    /// A client of `base` (`STRIPE_API_BASE`) with `key` (`STRIPE_API_KEY`); each attempt gives
    /// up after `timeout`.
    pub fn new(base: &str, key: SecretString, timeout: Duration) -> anyhow::Result<Self> {
        let http = crate::outbound::client(timeout)?;
        Ok(Self { http, base: base.trim_end_matches('/').to_owned(), key, backoff: Duration::from_millis(250) })
    }

    /// `POST {path}` with `form`, under `idempotency_key` (the same on every attempt).
    pub async fn post(&self, path: &str, form: &Form, idempotency_key: &str) -> Result<Answer, StripeError> {
        self.call(reqwest::Method::POST, path, form, Some(idempotency_key)).await
    }

    /// `POST {path}` with `form` and no `Idempotency-Key`: only for calls that create nothing
    /// (`/v1/invoices/create_preview`), which are safe to repeat with other parameters (a key
    /// would make Stripe refuse a retry whose `proration_date` moved on).
    pub async fn post_without_key(&self, path: &str, form: &Form) -> Result<Answer, StripeError> {
        self.call(reqwest::Method::POST, path, form, None).await
    }

    /// `DELETE {path}` with `form`, under `idempotency_key`.
    pub async fn delete(&self, path: &str, form: &Form, idempotency_key: &str) -> Result<Answer, StripeError> {
        self.call(reqwest::Method::DELETE, path, form, Some(idempotency_key)).await
    }

    /// `GET {path}?{query}` (reads are safe to retry).
    pub async fn get(&self, path: &str, query: &Form) -> Result<Answer, StripeError> {
        self.call(reqwest::Method::GET, path, query, None).await
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &Form,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, StripeError> {
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                tokio::time::sleep(self.backoff * 2_u32.pow(attempt - 2)).await;
            }
            match self.once(method.clone(), path, form, idempotency_key).await {
                Ok(answer) => return Ok(answer),
                Err(StripeError::Unavailable(why)) => {
                    tracing::warn!(path, attempt, why, "Stripe call without a usable answer");
                    last = why;
                }
                Err(refused) => return Err(refused),
            }
        }
        Err(StripeError::Unavailable(format!("{last} (after {ATTEMPTS} attempts)")))
    }

    async fn once(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &Form,
        idempotency_key: Option<&str>,
    ) -> Result<Answer, StripeError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method.clone(), url)
            .bearer_auth(self.key.expose_secret())
            .header("Stripe-Version", API_VERSION);
        request = if method == reqwest::Method::GET { request.query(form.pairs()) } else { request.form(form.pairs()) };
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.map_err(|e| StripeError::Unavailable(crate::outbound::describe(&e)))?;
        let status = response.status().as_u16();
        let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = response.text().await.map_err(|e| StripeError::Unavailable(crate::outbound::describe(&e)))?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Answer { status, body, request_id }),
            429 | 500.. => Err(StripeError::Unavailable(format!("HTTP {status}"))),
            _ => {
                let error = &body["error"];
                Err(StripeError::Refused {
                    status,
                    code: error["code"].as_str().map(str::to_owned),
                    message: error["message"].as_str().unwrap_or("no message").to_owned(),
                    request_id,
                })
            }
        }
    }
}
