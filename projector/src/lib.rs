//! `projector`: the service. It folds the event log, in position order, into the projection
//! tables (the pure fold of the `domain` crate, written through the `store` crate), carries out
//! the effects the fold asks for, and serves the `api` crate's routers, each per
//! `PROJECTOR_ROLES`.
//!
//! - [`runner`]: leadership, batches and wake-ups of the fold.
//! - [`effects`]: the dispatcher that carries out the intents exactly once (provisioner, tokens,
//!   mails, fetches).
//! - [`settings`]: the one mapping from the config to all of the above.
//!
//! [`Application`] runs the roles this process has until shutdown: the runner (`fold`), the
//! dispatcher (`effects`), the product API (`api`: `/v1/...` on `PROJECTOR_ADDR`); the probes,
//! `/metrics` and the console are served whatever the roles.

pub mod effects;
pub mod runner;
pub mod settings;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use domain::catalog::Catalog;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::effects::dispatcher::Dispatcher;
use crate::runner::{RunnerSettings, RunnerStatus};
pub use crate::settings::ProjectorSettings;
use api::health::Health;
use api::{AccessState, ApiState, UsageState, console};
use domain::clock::Clock;

/// A bound projector.
pub struct Application {
    listener: TcpListener,
    admin: TcpListener,
    pool: PgPool,
    catalog: Arc<Catalog>,
    settings: RunnerSettings,
    status: Arc<RunnerStatus>,
    dispatcher: Dispatcher,
    api: ApiState,
    console: console::ConsoleState,
    health: Health,
    roles: shared::config::Roles,
}

impl Application {
    /// Binds `settings.addr`; `clock` decides grace deadlines and token expiry.
    pub async fn build(settings: ProjectorSettings, pool: PgPool, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        let addr = settings.addr;
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding PROJECTOR_ADDR {addr}"))?;
        let admin_addr = settings.admin_addr;
        let admin = TcpListener::bind(admin_addr)
            .await
            .with_context(|| format!("binding PROJECTOR_ADMIN_ADDR {admin_addr}"))?;
        let status = Arc::new(RunnerStatus::default());
        let mut registry = Registry::default();
        status.register(&mut registry);
        let catalog = Arc::new(settings.catalog);
        // Bots call /v1/access on every request: its own connections, never the fold's.
        let api_pool = shared::db::side_pool(&pool, settings.api_connections);
        let access = AccessState::new(
            api_pool.clone(),
            catalog.clone(),
            clock.clone(),
            settings.access_cache_rows,
            &mut registry,
        );
        // Billing commands hold a connection across their Stripe call: a pool of their own, so a
        // slow Stripe never makes bots' access checks wait.
        let commands_pool = shared::db::side_pool(&pool, settings.api_connections);
        let billing = settings.billing;
        let stripe = billing
            .stripe
            .map(|(base, key)| shared::stripe_api::StripeApi::new(&base, key, billing.stripe_timeout))
            .transpose()?;
        // The same key fetches what events leave out (a session's line items, an invoice's lines).
        let dispatcher = Dispatcher::new(pool.clone(), settings.effects, clock.clone(), &mut registry)?
            .with_stripe(stripe.clone())
            .with_session(status.session.clone());
        let auth = api::auth::Authenticator::new(&billing.api_keys, &mut registry);
        let portal_configuration = billing.portal_configuration;
        if billing.redirects.origins.is_empty() && !billing.redirects.local {
            tracing::warn!(
                "BILLING_REDIRECT_ORIGINS is unset: checkout and portal sessions are refused (422 redirect_not_allowed)"
            );
        }
        let limiter = api::limiter::CommandLimiter::new(billing.token_commands_per_minute, &mut registry);
        // Counting usage is as short and as hot as an access check: the same pool.
        let usage = UsageState::new(&access, auth.clone(), &mut registry);
        let billing = api::BillingState {
            pool: commands_pool,
            catalog: catalog.clone(),
            clock: clock.clone(),
            auth,
            stripe,
            portal_configuration,
            redirects: billing.redirects,
            limiter,
        };
        let readiness = shared::db::Readiness::new(&pool);
        let roles = settings.roles;
        let health =
            Health::new(api_pool, catalog.hash().to_owned(), settings.runner.fold.hash(), status.session.clone());
        // The console reads on two connections of its own: a slow page never holds up the API.
        let shared =
            console::Shared { health: health.clone(), readiness: readiness.clone(), catalog: catalog.clone(), clock };
        let console = console::ConsoleState::new(console::pool(&pool), settings.console, shared)?;
        let too_large = prometheus_client::metrics::counter::Counter::default();
        registry.register("api_body_too_large", "API requests refused for a body above 2 MiB", too_large.clone());
        let api = ApiState {
            too_large,
            readiness,
            registry: Arc::new(registry),
            health: health.clone(),
            access,
            billing,
            usage,
            roles,
        };
        Ok(Self {
            listener,
            admin,
            pool,
            catalog,
            settings: settings.runner,
            status,
            dispatcher,
            api,
            console,
            health,
            roles,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The bound admin address (console, `/metrics`).
    pub fn admin_addr(&self) -> SocketAddr {
        // A bound TcpListener always has a local address.
        self.admin.local_addr().expect("bound listener has an address")
    }

    /// What this process's runner reports (leader, checkpoint, catalog mismatch).
    pub fn status(&self) -> Arc<RunnerStatus> {
        self.status.clone()
    }

    /// Serves and projects until `shutdown`; a batch in progress is finished first. When the runner
    /// or the dispatcher ends on its own (a panic, a bug), `/readyz` fails, everything stops and
    /// this returns an error, so the process exits non-zero and its orchestrator restarts it.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let (addr, admin_addr) = (self.local_addr(), self.admin_addr());
        tracing::info!(%addr, %admin_addr, catalog = self.catalog.hash(), "projector listening");
        // Our own child token: a dead task stops this application without touching the caller's.
        let shutdown = shutdown.child_token();
        let roles = self.roles;
        tracing::info!(fold = roles.fold, effects = roles.effects, api = roles.api, "projector roles");
        let wake = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        if roles.fold {
            let runner = runner::run(
                self.pool.clone(),
                self.catalog.clone(),
                self.settings.clone(),
                self.status.clone(),
                wake.clone(),
                shutdown.clone(),
            );
            tasks.push(("runner", tokio::spawn(runner)));
        }
        if roles.effects {
            // Without a runner beside it, the dispatcher finds new intents by polling.
            tasks.push(("dispatcher", tokio::spawn(self.dispatcher.run(wake, shutdown.clone()))));
        }
        // Without it nothing is cached: checks read the database (it retries on its own).
        let access_listener = roles.api.then(|| self.api.access.listen(self.pool.clone(), shutdown.clone()));
        let admin = tokio::spawn(shared::server::serve(
            self.admin,
            api::admin_router(self.api.clone()).merge(console::router(self.console)),
            shared::server::Limits::default(),
            shutdown.clone(),
        ));
        let public = if roles.api { api::router(self.api) } else { api::probe_router(self.api) };
        let serve = tokio::spawn(shared::server::serve(
            self.listener,
            public,
            shared::server::Limits::default(),
            shutdown.clone(),
        ));
        let supervised = supervise(tasks, &shutdown, &self.health).await;
        serve.await.context("HTTP server task")?;
        admin.await.context("admin HTTP server task")?;
        if let Some(listener) = access_listener {
            listener.await.context("access cache listener")?;
        }
        supervised
    }
}

/// Waits until `shutdown`, then for every task to finish. A task that ends before `shutdown`
/// (it panicked, or returned by mistake) marks the process stopping for `/readyz`, cancels
/// `shutdown` so the others stop, and makes this an error naming it.
pub async fn supervise(
    tasks: Vec<(&'static str, tokio::task::JoinHandle<()>)>,
    shutdown: &CancellationToken,
    health: &Health,
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
            health.set_stopping();
            shutdown.cancel();
            died = Some((name, cause));
        }
    }
    match died {
        Some((task, cause)) => anyhow::bail!("the {task} task {cause}; the projector stopped"),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Health over a pool that never connects: the supervisor only marks it stopping.
    fn health() -> Health {
        let pool = sqlx::postgres::PgPoolOptions::new().connect_lazy("postgres://127.0.0.1:1/none").expect("lazy pool");
        Health::new(pool, "catalog".to_owned(), "settings".to_owned(), store::leader::Session::new())
    }

    #[tokio::test]
    async fn a_task_that_dies_stops_the_others_fails_readiness_and_is_named() {
        let shutdown = CancellationToken::new();
        let health = health();
        let waiting = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        let dying = tokio::spawn(async {
            let values: Vec<u8> = Vec::new();
            let _ = values[1]; // a bug: an index out of bounds
        });
        let error = supervise(vec![("runner", waiting), ("dispatcher", dying)], &shutdown, &health)
            .await
            .expect_err("a task died");
        assert_eq!(error.to_string(), "the dispatcher task panicked; the projector stopped");
        assert!(shutdown.is_cancelled(), "the other task was told to stop, and did");
        assert!(health.is_stopping());
    }

    #[tokio::test]
    async fn tasks_that_end_on_shutdown_are_a_clean_stop() {
        let shutdown = CancellationToken::new();
        let health = health();
        let task = {
            let shutdown = shutdown.clone();
            tokio::spawn(async move { shutdown.cancelled().await })
        };
        shutdown.cancel();
        supervise(vec![("runner", task)], &shutdown, &health).await.expect("clean");
        assert!(!health.is_stopping());
    }
}
