//! The dispatcher: one active instance (a leader lock) reconciles what the projections want with
//! what it observed, calls the provisioner, issues tokens and sends mails, and journals every
//! attempt in `ledger.effects`.
//!
//! Order within a pass: instances, then tokens, then mails (a welcome carries the instance URL),
//! then fetches.
//! A call happens before its journal row: a crash between the two leaves the observed state as it
//! was, so the next pass makes the same call with the same idempotency key.
//!
//! - [`instances`]: provisioner calls and what they change in `ledger.instances_observed`.
//! - [`tokens`]: issuing, mailing, renewing and revoking API tokens.
//! - [`mails`]: the mails the fold asked for and the admin alerts.
//! - [`fetches`]: parts events left out, fetched from Stripe and appended to the log as facts.
//! - `store::journal` (in the `store` crate, shared with the console and `replay`):
//!   `ledger.effects` and `ledger.alerts`, and the operator's view of them.

mod fetches;
mod instances;
mod mails;
mod pending;
mod tokens;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use shared::stripe_api::StripeApi;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::EffectSettings;
use super::mail::Mailer;
use super::provisioner::Provisioner;
use domain::clock::Clock;
use domain::keys::{EffectKey, Outcome};
use domain::plan;
use store::journal::{self, Attempt, Failure};
use store::leader::{self, LeaderLock};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EffectLabel {
    kind: &'static str,
    outcome: &'static str,
}

/// A full sweep that succeeded: when, and the build of the projections it looked at.
type Sweep = (DateTime<Utc>, String);

/// The dispatcher's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    attempts: Family<EffectLabel, Counter>,
    failed: Counter,
    leader: Gauge,
    pass_errors: Counter,
    passes: Counter,
    waiting: Gauge,
    fetches_waiting: Gauge,
}

impl Metrics {
    /// Registers them.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("effects_attempts", "Effect attempts journaled, by kind and outcome", self.attempts.clone());
        registry.register("effects_failed", "Effects failed for good (an admin was alerted)", self.failed.clone());
        registry.register("dispatcher_leader", "1 while this instance is the active dispatcher", self.leader.clone());
        registry.register(
            "effects_waiting_for_facts",
            "Mails waiting for a fact that has not arrived (a customer's address), as of the last pass",
            self.waiting.clone(),
        );
        registry.register(
            "fetches_waiting_for_api_key",
            "Parts events left out that wait because STRIPE_API_KEY is unset, as of the last pass",
            self.fetches_waiting.clone(),
        );
        registry.register(
            "dispatcher_pass_errors",
            "Dispatcher passes that failed and were retried",
            self.pass_errors.clone(),
        );
        registry.register("dispatcher_passes", "Dispatcher passes completed", self.passes.clone());
    }
}

/// What one pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Calls and mails attempted.
    pub attempts: usize,
}

/// The dispatcher.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    pool: PgPool,
    settings: EffectSettings,
    provisioner: Option<Provisioner>,
    mailer: Mailer,
    /// Fetches parts events left out; None without `STRIPE_API_KEY`.
    stripe: Option<StripeApi>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    /// The last full sweep under this leadership.
    sweep: Arc<std::sync::Mutex<Option<Sweep>>>,
    /// The name its leader session carries.
    session: leader::Session,
}

impl Dispatcher {
    /// A dispatcher; `registry` gets its metrics.
    pub fn new(
        pool: PgPool,
        settings: EffectSettings,
        clock: Arc<dyn Clock>,
        registry: &mut Registry,
    ) -> anyhow::Result<Self> {
        let provisioner = settings.provisioner.clone().map(Provisioner::new).transpose()?;
        if provisioner.is_none() {
            tracing::warn!("PROVISIONER_URL is unset: instance intents are kept and wait for a provisioner");
        }
        let mailer = Mailer::new(&settings.mail)?;
        let metrics = Arc::new(Metrics::default());
        metrics.register(registry);
        Ok(Self {
            pool,
            settings,
            provisioner,
            mailer,
            stripe: None,
            clock,
            metrics,
            sweep: Default::default(),
            session: leader::Session::new(),
        })
    }

    /// Names its leader session `session` (the projector's, beside its runner's).
    pub fn with_session(mut self, session: leader::Session) -> Self {
        self.session = session;
        self
    }

    /// Fetches what events left out from Stripe with `stripe` (`STRIPE_API_KEY`).
    pub fn with_stripe(mut self, stripe: Option<StripeApi>) -> Self {
        self.stripe = stripe;
        self
    }

    /// Runs until `shutdown`: waits for leadership, then makes passes on `wake` or every poll interval.
    pub async fn run(self, wake: Arc<Notify>, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            if let Err(error) = self.lead(&wake, &shutdown).await {
                self.metrics.pass_errors.inc();
                tracing::error!(error = format!("{error:#}"), "dispatcher stopped leading, will retry");
            }
            self.metrics.leader.set(0);
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        tracing::info!("dispatcher stopped");
    }

    async fn lead(&self, wake: &Notify, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let Some(mut lock) = LeaderLock::try_acquire(&self.pool, leader::DISPATCHER, &self.session).await? else {
            return Ok(()); // standby
        };
        self.metrics.leader.set(1);
        tracing::info!("this dispatcher is now the active one");
        self.recover().await?;
        self.forget_sweep(); // a new leader sweeps first
        while !shutdown.is_cancelled() {
            lock.check().await?;
            match self.pass().await {
                // Work was done: what it unblocked (a welcome after its instance) goes next.
                Ok(pass) if pass.attempts > 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    self.metrics.pass_errors.inc();
                    tracing::error!(error = format!("{error:#}"), "dispatcher pass failed, retrying");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        lock.release().await;
        Ok(())
    }

    /// One pass over everything due now. Instances, tokens and mails are independent: a failure
    /// in one (token revocation must not wait for a broken instance) is logged and counted, and the
    /// others still run. Only work that completed counts as an attempt, so a failing unit is
    /// retried on the next poll, not in a tight loop.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let mut pass = Pass::default();
        let (scope, build) = self.scope().await?;
        let mut swept = true;
        if self.provisioner.is_some() {
            let done = self.settle("instances", [self.instances(scope).await]);
            swept &= !done.is_empty();
            pass.attempts += done.into_iter().sum::<usize>();
        }
        let done = self.settle("tokens", [self.tokens(scope).await]);
        swept &= !done.is_empty();
        pass.attempts += done.into_iter().sum::<usize>();
        if scope == pending::Scope::All && swept {
            *self.sweep.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((self.clock.now(), build));
        }
        pass.attempts += self.settle("mails", [self.mails().await]).into_iter().sum::<usize>();
        pass.attempts += self.settle("fetches", [self.fetches().await]).into_iter().sum::<usize>();
        self.metrics.passes.inc();
        Ok(pass)
    }

    /// What this pass's instance and token work looks at: everything when no sweep succeeded
    /// under this leadership, the last one is `sweep_interval` old, or the projections were
    /// rebuilt since; else what is pending. Also the projections' build.
    async fn scope(&self) -> anyhow::Result<(pending::Scope, String)> {
        let build: String =
            sqlx::query_scalar!("SELECT build_id FROM projection.checkpoint WHERE name = $1", store::CHECKPOINT)
                .fetch_optional(&self.pool)
                .await?
                .unwrap_or_default();
        let now = self.clock.now();
        let last = self.sweep.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let sweep = last.is_none_or(|(at, swept_build)| {
            swept_build != build
                || now.signed_duration_since(at).to_std().unwrap_or_default() >= self.settings.sweep_interval
        });
        Ok((if sweep { pending::Scope::All } else { pending::Scope::Pending }, build))
    }

    fn forget_sweep(&self) {
        *self.sweep.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// The results of units of work that stand alone: each error is logged and counted, the
    /// successes are kept.
    fn settle<T>(&self, what: &'static str, results: impl IntoIterator<Item = anyhow::Result<T>>) -> Vec<T> {
        results
            .into_iter()
            .filter_map(|result| match result {
                Ok(value) => Some(value),
                Err(error) => {
                    self.metrics.pass_errors.inc();
                    tracing::error!(
                        what,
                        error = format!("{error:#}"),
                        "effect work failed; the rest of the pass goes on"
                    );
                    None
                }
            })
            .collect()
    }

    /// True when attempt `attempts + 1` of `key`, whose last attempt was at `last_at`, is due on
    /// the dispatcher's clock.
    fn due(&self, last_at: DateTime<Utc>, attempts: i32, key: &EffectKey) -> bool {
        let attempts = u32::try_from(attempts).unwrap_or(0);
        self.clock.now() >= plan::next_attempt_at(last_at, attempts, self.settings.backoff, key)
    }

    /// Journals `attempt` in `conn`'s transaction and counts it.
    async fn journal(&self, conn: &mut PgConnection, attempt: &Attempt<'_>) -> anyhow::Result<()> {
        journal::write(conn, attempt).await?;
        let label = EffectLabel { kind: attempt.kind.as_str(), outcome: attempt.outcome.as_str() };
        self.metrics.attempts.get_or_create(&label).inc();
        Ok(())
    }

    /// Journals `attempt`; when it failed for good, also records the failure (an admin alert) and
    /// counts it. One transaction of the caller's.
    async fn journal_outcome(
        &self,
        conn: &mut PgConnection,
        attempt: &Attempt<'_>,
        failure: Failure<'_>,
    ) -> anyhow::Result<()> {
        self.journal(conn, attempt).await?;
        if attempt.outcome == Outcome::Failed {
            tracing::error!(key = %attempt.key, detail = failure.detail, "effect failed for good; alerting the admin");
            self.metrics.failed.inc();
            journal::failed_for_good(conn, attempt, failure).await?;
        }
        Ok(())
    }
}
