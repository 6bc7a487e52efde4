//! Building and running one ingest instance.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use domain::signature::Tolerance;
use secrecy::SecretString;
use shared::config::{Config, ConfigError, IngestConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::appender;
use crate::metrics::Metrics;
use crate::routes::{AppState, admin_router, router};

/// What one ingest instance needs besides its pool.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Where to listen (port 0 picks a free port, as tests do).
    pub addr: SocketAddr,
    /// Where `/metrics` is served (`INGEST_ADMIN_ADDR`).
    pub admin_addr: SocketAddr,
    /// Signing secrets (rotation: several).
    pub secrets: Vec<SecretString>,
    /// Signature timestamp tolerance.
    pub tolerance: Tolerance,
    /// Largest accepted body in bytes.
    pub body_limit: usize,
    /// Most events per group commit.
    pub max_batch: usize,
    /// Concurrent group commits (appender tasks).
    pub appenders: usize,
    /// Stored as `received_by`.
    pub instance_id: String,
    /// Connection, header, body and request limits of the HTTP server.
    pub server: shared::server::Limits,
}

impl IngestSettings {
    /// The settings from the validated config; fails when no webhook secret is configured.
    pub fn from_config(config: &Config, ingest: &IngestConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            addr: ingest.ingest_addr,
            admin_addr: ingest.ingest_admin_addr,
            secrets: config.require_webhook_secrets()?.to_vec(),
            tolerance: Tolerance::Secs(ingest.webhook_tolerance.as_secs()),
            body_limit: ingest.ingest_body_limit,
            max_batch: ingest.ingest_max_batch,
            appenders: ingest.ingest_appenders,
            instance_id: ingest.ingest_instance_id.clone(),
            server: shared::server::Limits::default(),
        })
    }
}

/// A bound, ready-to-serve ingest instance.
pub struct Application {
    listener: TcpListener,
    admin: TcpListener,
    limits: shared::server::Limits,
    state: AppState,
    appenders: tokio::task::JoinSet<()>,
}

impl Application {
    /// Binds the listener and starts the appender.
    pub async fn build(settings: IngestSettings, pool: PgPool) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind(settings.addr).await.with_context(|| format!("binding INGEST_ADDR {}", settings.addr))?;
        let admin = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding INGEST_ADMIN_ADDR {}", settings.admin_addr))?;
        let metrics = Arc::new(Metrics::default());
        let (handle, appenders) = appender::spawn(
            pool.clone(),
            settings.appenders,
            settings.max_batch,
            settings.instance_id.clone(),
            metrics.clone(),
        );
        let state = AppState {
            secrets: settings.secrets.into(),
            tolerance: settings.tolerance,
            body_limit: settings.body_limit,
            appender: handle,
            readiness: shared::db::Readiness::new(&pool),
            metrics,
        };
        Ok(Self { listener, admin, limits: settings.server, state, appenders })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The bound admin address (`/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.admin.local_addr().expect("bound listener has an address")
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, lets in-flight requests finish
    /// (their events are appended and answered) and waits for the appender to drain.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (addr, admin_addr) = (self.local_addr(), self.admin_addr());
        tracing::info!(%addr, %admin_addr, "ingest listening");
        let admin = shared::server::serve(self.admin, admin_router(self.state.clone()), self.limits, shutdown.clone());
        let public = shared::server::serve(self.listener, router(self.state), self.limits, shutdown);
        tokio::join!(public, admin);
        // The router (and with it every appender handle) is gone: the appender drains and ends.
        let mut appenders = self.appenders;
        while let Some(done) = appenders.join_next().await {
            done.context("appender task")?;
        }
        tracing::info!("ingest stopped");
        Ok(())
    }
}
