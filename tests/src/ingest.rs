//! An ingest instance under test, serving on 127.0.0.1:0.

use std::net::SocketAddr;
use std::time::Duration;

use domain::signature::Tolerance;
use ingest::{Application, IngestSettings};
use secrecy::SecretString;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::stripe;

/// Settings for a test instance: port 0, the test secret, 300 s tolerance, 1 MiB limit.
pub fn settings(instance_id: &str) -> IngestSettings {
    IngestSettings {
        addr: "127.0.0.1:0".parse().expect("valid address"),
        admin_addr: "127.0.0.1:0".parse().expect("valid address"),
        secrets: vec![SecretString::from(stripe::SECRET)],
        tolerance: Tolerance::Secs(300),
        body_limit: 1024 * 1024,
        max_batch: 512,
        appenders: 2,
        instance_id: instance_id.to_owned(),
        server: shared::server::Limits::default(),
    }
}

/// A running instance.
pub struct TestIngest {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub admin_addr: SocketAddr,
    /// An HTTP client for it.
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestIngest {
    /// Starts an instance with `settings` on `pool`.
    pub async fn spawn(settings: IngestSettings, pool: PgPool) -> Self {
        let app = Application::build(settings, pool).await.expect("ingest builds");
        let (addr, admin_addr) = (app.local_addr(), app.admin_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
        Self { addr, admin_addr, client, shutdown, task }
    }

    /// Starts an instance with the default test settings.
    pub async fn start(pool: PgPool) -> Self {
        Self::spawn(settings("test-ingest"), pool).await
    }

    /// `http://addr/path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to the webhook endpoint with `signature` (or none).
    pub async fn post(&self, body: impl Into<reqwest::Body>, signature: Option<&str>) -> reqwest::Response {
        let mut request = self.client.post(self.url("/webhooks/stripe")).header("content-type", "application/json");
        if let Some(signature) = signature {
            request = request.header("stripe-signature", signature);
        }
        request.body(body).send().await.expect("request completes")
    }

    /// POSTs `body` signed with the test secret.
    pub async fn post_signed(&self, body: &[u8]) -> reqwest::Response {
        self.post(body.to_vec(), Some(&stripe::sign(body))).await
    }

    /// GETs `path` of the admin listener (`/metrics`) and returns (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response =
            self.client.get(format!("http://{}{path}", self.admin_addr)).send().await.expect("request completes");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// GETs `path` and returns (status, body).
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("request completes");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// The token that stops the instance.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the instance gracefully and returns how `run_until_stopped` ended.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("ingest task did not panic")
    }
}
