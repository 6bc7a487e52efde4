//! Reading Stripe's API for the operators' commands (backfill, reconcile, check-catalog): one
//! request at a time, at most `requests_per_second`, the API version pinned, and a request that
//! got no usable answer (429, 5xx, timeout, connection error) retried after the server's
//! `Retry-After` or an exponential delay, up to `max_attempts`; then the command stops, resumable.

use std::time::{Duration, Instant};

use bytes::Bytes;
use secrecy::{ExposeSecret, SecretString};

/// How to read.
#[derive(Debug, Clone)]
pub struct ReadSettings {
    /// `STRIPE_API_BASE`.
    pub api_base: String,
    /// `STRIPE_API_KEY` (a restricted read-only key is enough).
    pub api_key: SecretString,
    /// Attempts per request before giving up.
    pub max_attempts: u32,
    /// First retry delay without a `Retry-After` (doubles, at most 30 s).
    pub backoff: Duration,
    /// At most this many requests per second (Stripe allows 100/s live, 25/s in test mode); 0: no
    /// limit.
    pub requests_per_second: u32,
}

/// A reader: the settings, an HTTP client and the time of the last request.
#[derive(Debug)]
pub struct Reader {
    settings: ReadSettings,
    http: reqwest::Client,
    last: Option<Instant>,
}

/// How long to wait before retrying: the server's `Retry-After` (seconds) if any, else exponential.
pub fn retry_delay(retry_after: Option<&str>, attempt: u32, base: Duration) -> Duration {
    retry_after
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| Duration::from_secs(secs.min(600)))
        .unwrap_or_else(|| base.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(Duration::from_secs(30)))
}

impl Reader {
    /// A reader over the shared outbound client (TLS, no redirects, 60 s per request).
    pub fn new(settings: ReadSettings) -> anyhow::Result<Self> {
        Ok(Self { settings, http: shared::outbound::client(Duration::from_secs(60))?, last: None })
    }

    /// `GET {path}?{query}`: the body, or `None` for a 404 (the object does not exist).
    pub async fn get(
        &mut self,
        path: &str,
        query: &[(String, String)],
        on_retry: &mut dyn FnMut(String),
    ) -> anyhow::Result<Option<Bytes>> {
        let url = format!("{}{path}", self.settings.api_base.trim_end_matches('/'));
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pace().await;
            let sent = self
                .http
                .get(&url)
                .bearer_auth(self.settings.api_key.expose_secret())
                .header("Stripe-Version", shared::stripe_api::API_VERSION)
                .query(query)
                .send()
                .await;
            let (why, retry_after) = match sent {
                Ok(response) if response.status().is_success() => return Ok(Some(response.bytes().await?)),
                Ok(response) if response.status() == reqwest::StatusCode::NOT_FOUND => return Ok(None),
                Ok(response) => {
                    let status = response.status();
                    let retry_after =
                        response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
                    let body: String = response.text().await.unwrap_or_default().chars().take(300).collect();
                    if status.as_u16() != 429 && !status.is_server_error() {
                        anyhow::bail!("GET {path} answered {status}: {body}");
                    }
                    (format!("{status}"), retry_after)
                }
                Err(error) => {
                    let (cause, detail) = shared::outbound::classify(&error);
                    if !cause.is_transient() {
                        anyhow::bail!("GET {path}: {cause}: {detail}");
                    }
                    (format!("{cause}: {detail}"), None)
                }
            };
            if attempt >= self.settings.max_attempts {
                anyhow::bail!("GET {path} failed {attempt} times (last: {why}); run the command again to resume");
            }
            let delay = retry_delay(retry_after.as_deref(), attempt, self.settings.backoff);
            on_retry(format!("GET {path}: {why}; retrying in {delay:?}"));
            tokio::time::sleep(delay).await;
        }
    }

    /// Waits until the next request keeps the rate under `requests_per_second`.
    async fn pace(&mut self) {
        if self.settings.requests_per_second > 0
            && let Some(last) = self.last
        {
            let gap = Duration::from_secs(1) / self.settings.requests_per_second;
            tokio::time::sleep_until((last + gap).into()).await;
        }
        self.last = Some(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_honoured_else_the_delay_doubles_up_to_a_cap() {
        let base = Duration::from_millis(500);
        assert_eq!(retry_delay(Some("3"), 1, base), Duration::from_secs(3));
        assert_eq!(retry_delay(None, 1, base), Duration::from_millis(500));
        assert_eq!(retry_delay(None, 3, base), Duration::from_secs(2));
        assert_eq!(retry_delay(Some("soon"), 2, base), Duration::from_secs(1));
        assert_eq!(retry_delay(None, 20, base), Duration::from_secs(30));
    }
}
