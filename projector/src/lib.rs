//! `projector`: folds the event log, in position order, into the projection tables.
//!
//! - [`fold`]: the pure fold `(state, event) -> Delta` (rules in `docs/projector.md`).
//! - [`store`]: the SQL image of the projections, the intents outbox and the checkpoint.
//! - [`runner`]: leadership, batches and wake-ups.
//! - [`rebuild`]: the same fold from position 1 into a new schema, swapped in atomically.
//! - [`effects`]: the dispatcher that carries out the intents exactly once, and `/v1/access`.
//!
//! [`Application`] serves `/healthz`, `/readyz` (database reachable and projections built with the
//! configured catalog), `/metrics` and `GET /v1/access` on `PROJECTOR_ADDR`, and runs the runner
//! and the dispatcher until shutdown.

pub mod effects;
pub mod fold;
pub mod leader;
pub mod rebuild;
pub mod runner;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use shared::catalog::Catalog;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::effects::access::{self, AccessState};
use crate::effects::dispatcher::Dispatcher;
use crate::effects::{Clock, EffectSettings};
use crate::runner::{RunnerSettings, Status};

/// The example catalog, used when `CATALOG_PATH` is unset (local development only).
pub const EXAMPLE_CATALOG: &str = include_str!("../../catalog.example.toml");

#[derive(Clone)]
struct AppState {
    readiness: shared::db::Readiness,
    registry: Arc<Registry>,
    status: Arc<Status>,
}

/// A bound projector.
pub struct Application {
    listener: TcpListener,
    pool: PgPool,
    catalog: Arc<Catalog>,
    settings: RunnerSettings,
    status: Arc<Status>,
    registry: Arc<Registry>,
    dispatcher: Dispatcher,
    access: AccessState,
}

impl Application {
    /// Binds `addr`; `clock` decides grace deadlines and token expiry.
    pub async fn build(
        addr: SocketAddr,
        pool: PgPool,
        catalog: Catalog,
        settings: RunnerSettings,
        effects: EffectSettings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding PROJECTOR_ADDR {addr}"))?;
        let status = Arc::new(Status::default());
        let mut registry = Registry::default();
        status.register(&mut registry);
        let catalog = Arc::new(catalog);
        let dispatcher = Dispatcher::new(pool.clone(), effects, clock.clone(), &mut registry)?;
        // Bots call /v1/access on every request: its own connections, never the fold's.
        let access = AccessState::new(shared::db::side_pool(&pool, 8), catalog.clone(), clock, &mut registry);
        Ok(Self { listener, pool, catalog, settings, status, registry: Arc::new(registry), dispatcher, access })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// What the runner reports (leader, checkpoint, catalog mismatch).
    pub fn status(&self) -> Arc<Status> {
        self.status.clone()
    }

    /// Serves and projects until `shutdown`; a batch in progress is finished first. When the runner
    /// or the dispatcher ends on its own (a panic, a bug), `/readyz` fails, everything stops and
    /// this returns an error, so the process exits non-zero and its orchestrator restarts it.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(addr = %self.local_addr(), catalog = self.catalog.hash(), "projector listening");
        // Our own child token: a dead task stops this application without touching the caller's.
        let shutdown = shutdown.child_token();
        let wake = Arc::new(Notify::new());
        let runner = tokio::spawn(runner::run(
            self.pool.clone(),
            self.catalog.clone(),
            self.settings.clone(),
            self.status.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
        let dispatcher = tokio::spawn(self.dispatcher.run(wake, shutdown.clone()));
        let status = self.status.clone();
        let state = AppState {
            readiness: shared::db::Readiness::new(&self.pool),
            registry: self.registry,
            status: self.status,
        };
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state)
            .merge(Router::new().route("/v1/access", get(access::check)).with_state(self.access));
        let serve = tokio::spawn(shared::server::serve(
            self.listener,
            app,
            shared::server::Limits::default(),
            shutdown.clone(),
        ));
        let supervised = supervise(vec![("runner", runner), ("dispatcher", dispatcher)], &shutdown, &status).await;
        serve.await.context("HTTP server task")?;
        supervised
    }
}

/// Waits until `shutdown`, then for every task to finish. A task that ends before `shutdown`
/// (it panicked, or returned by mistake) marks the process dead for `/readyz`, cancels
/// `shutdown` so the others stop, and makes this an error naming it.
pub async fn supervise(
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    shutdown: &CancellationToken,
    status: &Status,
) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let mut joins: futures::stream::FuturesUnordered<_> =
        tasks.into_iter().map(|(name, handle)| async move { (name, handle.await) }).collect();
    let mut died = None;
    while let Some((name, result)) = joins.next().await {
        if !shutdown.is_cancelled() && died.is_none() {
            let cause = match result {
                Err(error) if error.is_panic() => "panicked".to_owned(),
                Err(error) => format!("failed: {error}"),
                Ok(()) => "returned".to_owned(),
            };
            tracing::error!(task = name, cause, "a projector task ended on its own: stopping the process");
            status.dead.store(true, Ordering::Relaxed);
            shutdown.cancel();
            died = Some((name, cause));
        }
    }
    match died {
        Some((task, cause)) => anyhow::bail!("the {task} task {cause}; the projector stopped"),
        None => Ok(()),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.status.dead.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "a projector task died: the process is stopping").into_response();
    }
    if let Err(error) = state.readiness.check().await {
        tracing::warn!(%error, "not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response();
    }
    if state.status.catalog_mismatch.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "projections were built with another catalog: run `replay rebuild`")
            .into_response();
    }
    let role = if state.status.leader.load(Ordering::Relaxed) { "active" } else { "standby" };
    (StatusCode::OK, format!("ready ({role})")).into_response()
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = shared::telemetry::encode_metrics(&state.registry);
    ([(header::CONTENT_TYPE, shared::telemetry::METRICS_CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_dies_stops_the_others_fails_readiness_and_is_named() {
        let shutdown = CancellationToken::new();
        let status = Status::default();
        let waiting = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        let dying = tokio::spawn(async {
            let values: Vec<u8> = Vec::new();
            let _ = values[1]; // a bug: an index out of bounds
        });
        let error = supervise(vec![("runner", waiting), ("dispatcher", dying)], &shutdown, &status)
            .await
            .expect_err("a task died");
        assert_eq!(error.to_string(), "the dispatcher task panicked; the projector stopped");
        assert!(shutdown.is_cancelled(), "the other task was told to stop, and did");
        assert!(status.dead.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn tasks_that_end_on_shutdown_are_a_clean_stop() {
        let shutdown = CancellationToken::new();
        let status = Status::default();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        shutdown.cancel();
        supervise(vec![("runner", task)], &shutdown, &status).await.expect("clean");
        assert!(!status.dead.load(Ordering::Relaxed));
    }
}
