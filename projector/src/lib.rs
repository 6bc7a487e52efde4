//! `projector`: reads the event log in position order and folds it into projections.
//!
//! This is the running skeleton of the foundation issue: it follows the head of the log (woken by
//! the `ledger_events` NOTIFY, polling as the fallback because notifications are lost while the
//! listener reconnects) and serves `/healthz`, `/readyz` and `/metrics` on `PROJECTOR_ADDR`. The
//! checkpoint, leadership and SQL tables come next; the pure [`fold`] is here (`docs/projector.md`).

pub mod fold;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicI64;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How often the log head is read even without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct AppState {
    pool: PgPool,
    registry: Arc<Registry>,
}

/// What the follower reports.
#[derive(Debug, Clone, Default)]
pub struct Follower {
    head: Gauge<i64, AtomicI64>,
    errors: Counter,
}

/// A bound projector.
pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    follower: Follower,
    registry: Arc<Registry>,
}

impl Application {
    /// Binds `addr`.
    pub async fn build(addr: SocketAddr, pool: PgPool) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding PROJECTOR_ADDR {addr}"))?;
        let follower = Follower::default();
        let mut registry = Registry::default();
        registry.register(
            "projector_log_head_position",
            "Highest position seen in ledger.events",
            follower.head.clone(),
        );
        registry.register("projector_read_errors", "Failed reads of the log head", follower.errors.clone());
        Ok(Self { listener, pool, follower, registry: Arc::new(registry) })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// Serves and follows the log until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), "projector listening");
        let follow = tokio::spawn(follow(self.pool.clone(), self.follower.clone(), shutdown.clone()));
        let state = AppState { pool: self.pool, registry: self.registry };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state);
        axum::serve(self.listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await?;
        follow.await.context("follower task")?;
        Ok(())
    }
}

async fn follow(pool: PgPool, follower: Follower, shutdown: CancellationToken) {
    let mut listener = match PgListener::connect_with(&pool).await {
        Ok(mut listener) => match listener.listen("ledger_events").await {
            Ok(()) => Some(listener),
            Err(error) => {
                tracing::warn!(%error, "LISTEN failed, polling only");
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "cannot open a LISTEN connection, polling only");
            None
        }
    };
    let mut last = 0;
    loop {
        match sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM ledger.events"#)
            .fetch_one(&pool)
            .await
        {
            Ok(head) => {
                if head != last {
                    tracing::info!(position = head, "log head advanced");
                    last = head;
                }
                follower.head.set(head);
            }
            Err(error) => {
                follower.errors.inc();
                tracing::warn!(%error, "reading the log head failed");
            }
        }
        let wake = async {
            match listener.as_mut() {
                Some(l) => {
                    if let Err(error) = l.recv().await {
                        tracing::warn!(%error, "notification listener failed, it reconnects on the next receive");
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = wake => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match shared::db::check_ready(&state.pool).await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(error) => {
            tracing::warn!(%error, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
        }
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = shared::telemetry::encode_metrics(&state.registry);
    ([(header::CONTENT_TYPE, shared::telemetry::METRICS_CONTENT_TYPE)], body).into_response()
}
