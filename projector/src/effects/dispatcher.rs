//! The dispatcher: one active instance (a session advisory lock) reconciles what the projections
//! want with what it observed, calls the provisioner, issues tokens and sends mails, and journals
//! every attempt in `ledger.effects`.
//!
//! Order within a pass: instances, then tokens, then mails (a welcome carries the instance URL).
//! A call happens before its journal row: a crash between the two leaves the observed state as it
//! was, so the next pass makes the same call with the same idempotency key.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::{PgConnection, PgPool};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::mail::{self, Mail, Mailer};
use super::plan::{self, InstanceOp, LiveToken, Observed, Status, Target, TokenOp, Verdict};
use super::provisioner::Provisioner;
use super::{Clock, EffectSettings};
use crate::api::token::{new_token, token_hash};
use crate::leader::{self, LeaderLock};
use crate::store::{EFFECT_FAILED, desired_from, limit_columns, limits_from};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EffectLabel {
    kind: &'static str,
    outcome: &'static str,
}

/// The dispatcher's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    attempts: Family<EffectLabel, Counter>,
    failed: Counter,
    leader: Gauge,
    pass_errors: Counter,
    passes: Counter,
    waiting: Gauge,
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
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
}

/// One journal row.
struct Attempt<'a> {
    key: &'a str,
    kind: &'static str,
    attempt: i32,
    request: String,
    status: Option<u16>,
    outcome: &'static str,
    error: Option<String>,
}

/// How often the answer of a call is written before the pass gives up on it.
const RECORD_TRIES: u32 = 5;

/// A provisioner answer, ready to be recorded.
#[derive(Clone, Copy)]
struct InstanceRecord<'a> {
    target: &'a Target,
    op: &'a InstanceOp,
    attempt: i32,
    position: i64,
    request: &'a str,
    status: Option<u16>,
    outcome: &'static str,
    error: Option<&'a str>,
    provisioned: Option<&'a super::provisioner::Provisioned>,
}

async fn journal(conn: &mut PgConnection, a: Attempt<'_>, metrics: &Metrics) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO ledger.effects (key, kind, attempt, request, response_status, outcome, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        a.key,
        a.kind,
        a.attempt,
        a.request,
        a.status.map(i32::from),
        a.outcome,
        a.error
    )
    .execute(&mut *conn)
    .await?;
    metrics.attempts.get_or_create(&EffectLabel { kind: a.kind, outcome: a.outcome }).inc();
    Ok(())
}

/// Records a failed-for-good effect: an anomaly, a metric and an admin alert (itself an intent).
async fn failed_for_good(
    conn: &mut PgConnection,
    key: &str,
    detail: &str,
    position: i64,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    tracing::error!(key, detail, "effect failed for good; alerting the admin");
    metrics.failed.inc();
    sqlx::query!(
        "INSERT INTO projection.anomalies (key, kind, detail, position) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET detail = EXCLUDED.detail",
        format!("{EFFECT_FAILED}:{key}"),
        EFFECT_FAILED,
        format!("{key}: {detail}"),
        position
    )
    .execute(&mut *conn)
    .await?;
    if !key.starts_with("email:alert:") {
        // One alert per failure: a key an operator re-armed and that failed again alerts again.
        let failures = sqlx::query_scalar!(
            r#"SELECT count(*) AS "n!" FROM ledger.effects WHERE key = $1 AND outcome = 'failed'"#,
            key
        )
        .fetch_one(&mut *conn)
        .await?;
        let alert = if failures > 1 { format!("email:alert:{key}#{failures}") } else { format!("email:alert:{key}") };
        sqlx::query!(
            "INSERT INTO ledger.intents (key, kind, detail, position) VALUES ($1, 'email', $2, $3) ON CONFLICT (key) DO NOTHING",
            alert,
            detail,
            position
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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
        Ok(Self { pool, settings, provisioner, mailer, clock, metrics })
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
        let Some(mut lock) = LeaderLock::try_acquire(&self.pool, leader::DISPATCHER).await? else {
            return Ok(()); // standby
        };
        self.metrics.leader.set(1);
        tracing::info!("this dispatcher is now the active one");
        self.recover().await?;
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

    /// At takeover: a token whose mail a previous leader was sending when it stopped may or may
    /// not have reached the customer (the plaintext is gone, so it cannot be sent again). Revoking
    /// it would cut off a customer who holds it; it is kept, and its mail is failed for good with
    /// an admin alert. If the customer never got it, `replay effects retry email:<token key>`
    /// revokes it and the next pass issues and mails a new one.
    async fn recover(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let unknown = sqlx::query!(
            "SELECT t.key, t.stripe_customer_id FROM ledger.api_tokens t
             WHERE t.delivered_at IS NULL AND t.revoked_at IS NULL
               AND NOT EXISTS (SELECT 1 FROM ledger.effects e WHERE e.key = 'email:' || t.key AND e.outcome = 'failed')"
        )
        .fetch_all(&mut *tx)
        .await?;
        for token in &unknown {
            let mail_key = format!("email:{}", token.key);
            let attempt = Attempt {
                key: &mail_key,
                kind: "email",
                attempt: 1,
                request: format!("mail the token of {} (interrupted by a restart)", token.stripe_customer_id),
                status: None,
                outcome: "failed",
                error: Some("delivery unknown: the previous dispatcher stopped while mailing it".to_owned()),
            };
            journal(&mut tx, attempt, &self.metrics).await?;
            let detail = format!(
                "the token of {} may not have reached the customer; it was kept. If it did not arrive, `replay effects retry {mail_key}` revokes it and mails a new one",
                token.stripe_customer_id
            );
            failed_for_good(&mut tx, &mail_key, &detail, 0, &self.metrics).await?;
        }
        tx.commit().await?;
        if !unknown.is_empty() {
            tracing::warn!(count = unknown.len(), "tokens whose delivery was interrupted: kept, admin alerted");
        }
        Ok(())
    }

    /// One pass over everything due now. Instances, tokens and mails are independent: a failure
    /// in one (token revocation must not wait for a broken instance) is logged and counted, and the
    /// others still run. Only work that completed counts as an attempt, so a failing unit is
    /// retried on the next poll, not in a tight loop.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let mut pass = Pass::default();
        if self.provisioner.is_some() {
            pass.attempts += self.settle("instances", [self.instances().await]).into_iter().sum::<usize>();
        }
        pass.attempts += self.settle("tokens", [self.tokens().await]).into_iter().sum::<usize>();
        pass.attempts += self.settle("mails", [self.mails().await]).into_iter().sum::<usize>();
        self.metrics.passes.inc();
        Ok(pass)
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

    fn due(&self, updated_at: DateTime<Utc>, attempts: i32, key: &str) -> bool {
        let attempts = u32::try_from(attempts).unwrap_or(0);
        Utc::now() >= plan::next_attempt_at(updated_at, attempts, self.settings.backoff, key)
    }

    async fn instances(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        // In-sync rows are filtered out here; the plan decides on the rest.
        let rows = sqlx::query!(
            r#"SELECT t.stripe_subscription_id AS "subscription!", t.stripe_customer_id, t.desired AS "desired!",
                      t.tier AS "tier!", t.limit_agents, t.limit_messages_per_day, t.limit_memory_mb, t.limit_cpu,
                      s.grace_until,
                      o.status AS "o_status?", o.app_name AS "o_app?", o.limit_agents AS "o_agents?",
                      o.limit_messages_per_day AS "o_messages?", o.limit_memory_mb AS "o_memory?",
                      o.limit_cpu AS "o_cpu?", o.key AS "o_key?", o.attempts AS "o_attempts?",
                      o.torn_down_by_grace AS "o_grace?", o.updated_at AS "o_updated?",
                      li.key AS "latest_key?", li.position AS "latest_position?", fi.key AS "first_key?"
               FROM projection.instance_targets t
               LEFT JOIN projection.subscriptions s USING (stripe_subscription_id)
               LEFT JOIN ledger.instances_observed o USING (stripe_subscription_id)
               LEFT JOIN LATERAL (
                 SELECT i.key, i.position FROM ledger.intents i
                 WHERE i.kind = 'instance' AND split_part(i.key, ':', 2) = t.stripe_subscription_id
                 ORDER BY i.position DESC LIMIT 1) li ON true
               LEFT JOIN LATERAL (
                 SELECT i.key FROM ledger.intents i
                 WHERE i.kind = 'instance' AND split_part(i.key, ':', 2) = t.stripe_subscription_id
                 ORDER BY i.position LIMIT 1) fi ON true
               WHERE t.desired <> 'absent'
                 AND NOT (t.desired = 'running' AND o.status = 'running'
                          AND (s.grace_until IS NULL OR s.grace_until > $1)
                          AND o.limit_agents IS NOT DISTINCT FROM t.limit_agents
                          AND o.limit_messages_per_day IS NOT DISTINCT FROM t.limit_messages_per_day
                          AND o.limit_memory_mb IS NOT DISTINCT FROM t.limit_memory_mb
                          AND o.limit_cpu IS NOT DISTINCT FROM t.limit_cpu)
                 AND NOT (t.desired = 'deprovisioned' AND (o.status IS NULL OR o.status = 'deprovisioned'))
               ORDER BY t.stripe_subscription_id"#,
            now
        )
        .fetch_all(&self.pool)
        .await?;
        let mut work = Vec::new();
        for r in rows {
            let target = Target {
                subscription: r.subscription.clone(),
                desired: desired_from(&r.desired),
                tier: r.tier.clone(),
                limits: limits_from([r.limit_agents, r.limit_messages_per_day, r.limit_memory_mb, r.limit_cpu]),
                grace_until: r.grace_until,
                latest_key: r.latest_key,
                first_key: r.first_key,
            };
            let observed = match (r.o_status.as_deref().and_then(Status::parse), r.o_key, r.o_updated) {
                (Some(status), Some(key), Some(updated_at)) => Some(Observed {
                    status,
                    app_name: r.o_app,
                    limits: limits_from([r.o_agents, r.o_messages, r.o_memory, r.o_cpu]),
                    key,
                    attempts: r.o_attempts.unwrap_or(0),
                    torn_down_by_grace: r.o_grace,
                    updated_at,
                }),
                _ => None,
            };
            let Some(op) = plan::plan_instance(&target, observed.as_ref(), now) else { continue };
            let previous = observed.as_ref().filter(|o| o.key == op.key());
            let done = previous.map_or(0, |o| o.attempts);
            if let Some(o) = previous
                && !self.due(o.updated_at, o.attempts, &o.key)
            {
                continue;
            }
            work.push((target, r.stripe_customer_id, op, done + 1, r.latest_position.unwrap_or(0)));
        }
        // Instances are independent of each other: several calls in flight at once.
        // Every call runs to its end and is recorded on its own: one failure (a database blip
        // while recording, a bug) neither cancels the calls in flight nor stops the others.
        let results = futures::stream::iter(work)
            .map(|(target, customer, op, attempt, position)| async move {
                self.instance_attempt(&target, customer.as_deref(), &op, attempt, position).await
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<()>>>()
            .await;
        Ok(self.settle("instance", results).len())
    }

    async fn instance_attempt(
        &self,
        target: &Target,
        customer: Option<&str>,
        op: &InstanceOp,
        attempt: i32,
        position: i64,
    ) -> anyhow::Result<()> {
        let Some(provisioner) = &self.provisioner else { return Ok(()) };
        let sub = target.subscription.as_str();
        let key = op.key();
        // Mark the call under way (visible in projection.instances) before making it.
        sqlx::query!(
            "INSERT INTO ledger.instances_observed (stripe_subscription_id, status, key, attempts, updated_at)
             VALUES ($1, $2, $3, 0, now())
             ON CONFLICT (stripe_subscription_id) DO UPDATE
               SET status = EXCLUDED.status,
                   attempts = CASE WHEN ledger.instances_observed.key = EXCLUDED.key
                                   THEN ledger.instances_observed.attempts ELSE 0 END,
                   key = EXCLUDED.key",
            sub,
            op.pending_status().as_str(),
            key
        )
        .execute(&self.pool)
        .await?;
        let (request, answer) = match op {
            InstanceOp::Provision { .. } => (
                format!("POST /provision {sub} tier={}", target.tier),
                provisioner.provision(key, sub, customer, &target.tier, target.limits).await,
            ),
            InstanceOp::Update { app_name, .. } => (
                format!("PUT /update {app_name} tier={}", target.tier),
                provisioner.update(key, app_name, &target.tier, target.limits).await,
            ),
            InstanceOp::Deprovision { app_name, .. } => {
                (format!("DELETE /deprovision {app_name}"), provisioner.deprovision(key, app_name).await)
            }
        };
        let mut verdict = plan::verdict(answer.status);
        let mut error = answer.error;
        if matches!(op, InstanceOp::Deprovision { .. }) && answer.status == Some(404) {
            verdict = Verdict::Succeeded; // already gone
        }
        let provisioned = match op {
            InstanceOp::Provision { .. } if verdict == Verdict::Succeeded => {
                match answer.body.map(serde_json::from_value::<super::provisioner::Provisioned>) {
                    Some(Ok(p)) => Some(p),
                    _ => {
                        verdict = Verdict::Failed;
                        error = Some("the provisioner answered 2xx without an app_name".to_owned());
                        None
                    }
                }
            }
            _ => None,
        };
        let max = self.settings.max_attempts;
        let outcome = plan::outcome(verdict, u32::try_from(attempt).unwrap_or(u32::MAX), max);
        let record = InstanceRecord {
            target,
            op,
            attempt,
            position,
            request: &request,
            status: answer.status,
            outcome,
            error: error.as_deref(),
            provisioned: provisioned.as_ref(),
        };
        // The answer came: record it, riding out a short database blip, so a done call is not
        // forgotten (were it lost anyway, the next pass re-sends it under the same key).
        let mut tries = 0_u32;
        while let Err(error) = self.record_instance(&record).await {
            tries += 1;
            if tries >= RECORD_TRIES {
                return Err(error.context(format!("recording the answer to {request}")));
            }
            tracing::warn!(key, error = format!("{error:#}"), "recording a provisioner answer failed, retrying");
            tokio::time::sleep(std::time::Duration::from_millis(100) * 2_u32.pow(tries)).await;
        }
        tracing::info!(key, request, outcome, attempt, status = ?answer.status, "instance effect");
        Ok(())
    }

    /// Journals one provisioner answer and what it changes in `ledger.instances_observed`, in one
    /// transaction.
    async fn record_instance(&self, r: &InstanceRecord<'_>) -> anyhow::Result<()> {
        let InstanceRecord { target, op, attempt, position, request, status, outcome, error, provisioned } = *r;
        let (sub, key) = (target.subscription.as_str(), op.key());
        let error = error.map(str::to_owned);
        let mut tx = self.pool.begin().await?;
        let row = Attempt {
            key,
            kind: op.kind(),
            attempt,
            request: request.to_owned(),
            status,
            outcome,
            error: error.clone(),
        };
        journal(&mut tx, row, &self.metrics).await?;
        let [agents, messages, memory, cpu] = limit_columns(target.limits);
        match (outcome, op) {
            ("succeeded", InstanceOp::Provision { .. }) => {
                let p = provisioned.context("provisioned")?.clone();
                sqlx::query!(
                    "UPDATE ledger.instances_observed
                     SET status = 'running', app_name = $2, subdomain = $3, frontend_url = $4, backend_url = $5,
                         tier = $6, limit_agents = $7, limit_messages_per_day = $8, limit_memory_mb = $9,
                         limit_cpu = $10, attempts = $11, last_error = NULL, torn_down_by_grace = NULL,
                         updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    p.app_name,
                    p.subdomain,
                    p.frontend_url,
                    p.backend_url,
                    target.tier,
                    agents,
                    messages,
                    memory,
                    cpu,
                    attempt
                )
                .execute(&mut *tx)
                .await?;
            }
            ("succeeded", InstanceOp::Update { .. }) => {
                sqlx::query!(
                    "UPDATE ledger.instances_observed
                     SET status = 'running', tier = $2, limit_agents = $3, limit_messages_per_day = $4,
                         limit_memory_mb = $5, limit_cpu = $6, attempts = $7, last_error = NULL, updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    target.tier,
                    agents,
                    messages,
                    memory,
                    cpu,
                    attempt
                )
                .execute(&mut *tx)
                .await?;
            }
            ("succeeded", InstanceOp::Deprovision { grace, .. }) => {
                sqlx::query!(
                    "UPDATE ledger.instances_observed
                     SET status = 'deprovisioned', attempts = $2, last_error = NULL, torn_down_by_grace = $3,
                         updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    attempt,
                    *grace
                )
                .execute(&mut *tx)
                .await?;
            }
            (outcome, _) => {
                let status = if outcome == "failed" { Status::Failed } else { op.pending_status() };
                sqlx::query!(
                    "UPDATE ledger.instances_observed SET status = $2, attempts = $3, last_error = $4, updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    status.as_str(),
                    attempt,
                    error
                )
                .execute(&mut *tx)
                .await?;
                if outcome == "failed" {
                    let detail =
                        format!("{request} failed after {attempt} attempt(s): {}", error.as_deref().unwrap_or("-"));
                    failed_for_good(&mut tx, key, &detail, position, &self.metrics).await?;
                }
            }
        }
        if outcome == "succeeded" {
            // A later success settles earlier failures of this instance.
            sqlx::query!(
                "DELETE FROM projection.anomalies WHERE kind = $1 AND key LIKE $2",
                EFFECT_FAILED,
                format!("{EFFECT_FAILED}:%:{sub}:%")
            )
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn tokens(&self) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let renew_from = now + plan::TOKEN_RENEW_BEFORE;
        let rows = sqlx::query!(
            r#"SELECT tk.stripe_customer_id AS "customer!", tk.tier, a.email AS "email?",
                      EXISTS (SELECT 1 FROM projection.subscriptions s
                              JOIN projection.instance_targets t USING (stripe_subscription_id)
                              WHERE s.stripe_customer_id = tk.stripe_customer_id AND t.desired = 'running'
                                AND (s.grace_until IS NULL OR s.grace_until > $1)) AS "eligible!",
                      lt.key AS "live_key?", lt.tier AS "live_tier?", lt.expires_at AS "live_expires?",
                      lt.delivered_at AS "live_delivered?"
               FROM projection.tokens tk
               LEFT JOIN projection.accounts a USING (stripe_customer_id)
               LEFT JOIN ledger.api_tokens lt ON lt.stripe_customer_id = tk.stripe_customer_id AND lt.revoked_at IS NULL
               WHERE (tk.wanted OR lt.key IS NOT NULL)
                 AND NOT (tk.wanted AND lt.tier IS NOT DISTINCT FROM tk.tier AND lt.expires_at > $2
                          AND lt.delivered_at IS NOT NULL
                          AND (SELECT bool_and(s.grace_until IS NULL OR s.grace_until > $1)
                               FROM projection.subscriptions s WHERE s.stripe_customer_id = tk.stripe_customer_id))
               ORDER BY tk.stripe_customer_id"#,
            now,
            renew_from
        )
        .fetch_all(&self.pool)
        .await?;
        let mut work = Vec::new();
        for r in rows {
            let wanted = r.tier.as_deref().filter(|_| r.eligible);
            let live = match (r.live_key, r.live_tier, r.live_expires) {
                (Some(key), Some(tier), Some(expires_at)) => {
                    Some(LiveToken { key, tier, expires_at, delivered: r.live_delivered.is_some() })
                }
                _ => None,
            };
            let Some(op) = plan::plan_token(wanted, live.as_ref(), now) else { continue };
            if matches!(op, TokenOp::Issue { .. }) && r.email.is_none() {
                tracing::debug!(customer = r.customer, "token wanted but no email address yet");
                continue;
            }
            work.push((r.customer, r.email, op, live));
        }
        // Customers are independent of each other: several at once (issuing mails a token).
        let done = futures::stream::iter(work)
            .map(|(customer, email, op, live)| async move {
                match (op, live) {
                    (TokenOp::Issue { tier, .. }, live) => {
                        let email = email.unwrap_or_default();
                        self.issue_token(&customer, &email, &tier, live.as_ref()).await
                    }
                    (op, Some(live)) => self.change_token(&customer, &live, &op).await.map(|()| true),
                    (_, None) => Ok(false),
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<bool>>>()
            .await;
        Ok(self.settle("token", done).into_iter().filter(|attempted| *attempted).count())
    }

    async fn change_token(&self, customer: &str, live: &LiveToken, op: &TokenOp) -> anyhow::Result<()> {
        let now = self.clock.now();
        let mut tx = self.pool.begin().await?;
        let (key, request) = match op {
            TokenOp::Revoke => {
                sqlx::query!("UPDATE ledger.api_tokens SET revoked_at = $2 WHERE key = $1", live.key, now)
                    .execute(&mut *tx)
                    .await?;
                (format!("revoke:{}", live.key), format!("revoke the token of {customer}"))
            }
            TokenOp::Retier { tier } => {
                sqlx::query!("UPDATE ledger.api_tokens SET tier = $2 WHERE key = $1", live.key, tier)
                    .execute(&mut *tx)
                    .await?;
                (format!("retier:{}:{tier}", live.key), format!("tier of the token of {customer}: {tier}"))
            }
            TokenOp::Renew => {
                let until = now + plan::TOKEN_LIFETIME;
                sqlx::query!("UPDATE ledger.api_tokens SET expires_at = $2 WHERE key = $1", live.key, until)
                    .execute(&mut *tx)
                    .await?;
                (
                    format!("renew:{}:{}", live.key, until.timestamp()),
                    format!("renew the token of {customer} until {until}"),
                )
            }
            TokenOp::Issue { .. } => return Ok(()),
        };
        let row =
            Attempt { key: &key, kind: "token", attempt: 1, request, status: None, outcome: "succeeded", error: None };
        journal(&mut tx, row, &self.metrics).await?;
        tx.commit().await?;
        tracing::info!(key, "token changed");
        Ok(())
    }

    /// Issues a token and mails it; returns false when a retry is not due yet or delivery failed
    /// for good. A token whose mail fails is revoked (its plaintext is gone).
    async fn issue_token(
        &self,
        customer: &str,
        email: &str,
        tier: &str,
        replace: Option<&LiveToken>,
    ) -> anyhow::Result<bool> {
        // Token mails are keyed `email:<token key>`, token keys `token:<customer>:...`.
        let prefix = format!("email:token:{customer}:");
        let recent = sqlx::query!(
            "SELECT outcome, at, attempt FROM ledger.effects WHERE key LIKE $1 || '%' ORDER BY id DESC LIMIT $2",
            prefix,
            i64::from(self.settings.max_attempts) + 1
        )
        .fetch_all(&self.pool)
        .await?;
        if recent.first().is_some_and(|r| r.outcome == "failed") {
            return Ok(false); // failed for good: an admin was alerted; `replay effects retry` re-arms
        }
        // Consecutive failed deliveries since the last success or an operator's re-arm (attempt 0).
        let failures = recent.iter().take_while(|r| r.outcome != "succeeded" && r.attempt > 0).count();
        if let Some(last) = recent.first().filter(|_| failures > 0)
            && !self.due(last.at, i32::try_from(failures).unwrap_or(i32::MAX), &prefix)
        {
            return Ok(false);
        }
        let (latest, issued) = sqlx::query!(
            r#"SELECT (SELECT i.key FROM ledger.intents i WHERE i.kind = 'token' AND split_part(i.key, ':', 2) = $1
                        ORDER BY i.position DESC LIMIT 1) AS latest,
                      (SELECT count(*) FROM ledger.api_tokens WHERE stripe_customer_id = $1) AS "issued!""#,
            customer
        )
        .fetch_one(&self.pool)
        .await
        .map(|r| (r.latest, r.issued))?;
        let base = latest.unwrap_or_else(|| format!("token:{customer}:0"));
        let used: bool =
            sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM ledger.api_tokens WHERE key = $1) AS "used!""#, base)
                .fetch_one(&self.pool)
                .await?;
        let key = if used { format!("{base}/{issued}") } else { base };

        let now = self.clock.now();
        let expires_at = now + plan::TOKEN_LIFETIME;
        let plaintext = new_token()?;
        let mut tx = self.pool.begin().await?;
        if let Some(old) = replace {
            sqlx::query!("UPDATE ledger.api_tokens SET revoked_at = $2 WHERE key = $1", old.key, now)
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query!(
            "INSERT INTO ledger.api_tokens (token_sha256, stripe_customer_id, tier, key, issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            token_hash(&plaintext),
            customer,
            tier,
            key,
            now,
            expires_at
        )
        .execute(&mut *tx)
        .await?;
        let request = match replace {
            Some(old) => format!("issue a {tier} token for {customer}, replacing {}", old.key),
            None => format!("issue a {tier} token for {customer}"),
        };
        let row =
            Attempt { key: &key, kind: "token", attempt: 1, request, status: None, outcome: "succeeded", error: None };
        journal(&mut tx, row, &self.metrics).await?;
        tx.commit().await?;

        let mail_key = format!("email:{key}");
        let (verdict, error) = self.mailer.send(&mail_key, &mail::token(email, tier, &plaintext, expires_at)).await;
        drop(plaintext);
        let attempt = u32::try_from(failures).unwrap_or(u32::MAX) + 1;
        let outcome = plan::outcome(verdict, attempt, self.settings.max_attempts);
        let mut tx = self.pool.begin().await?;
        if verdict == Verdict::Succeeded {
            sqlx::query!("UPDATE ledger.api_tokens SET delivered_at = now() WHERE key = $1", key)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query!("UPDATE ledger.api_tokens SET revoked_at = $2 WHERE key = $1", key, now)
                .execute(&mut *tx)
                .await?;
        }
        let row = Attempt {
            key: &mail_key,
            kind: "email",
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            request: format!("mail the {tier} token of {customer} to its account address"),
            status: None,
            outcome,
            error: error.clone(),
        };
        journal(&mut tx, row, &self.metrics).await?;
        if outcome == "failed" {
            let detail = format!("the token of {customer} could not be mailed: {}", error.as_deref().unwrap_or("-"));
            failed_for_good(&mut tx, &mail_key, &detail, 0, &self.metrics).await?;
        }
        tx.commit().await?;
        tracing::info!(key, customer, outcome, "token issued");
        Ok(true)
    }

    async fn mails(&self) -> anyhow::Result<usize> {
        let pending = sqlx::query!(
            // Pending: no journal row yet, or the latest is a `retry` (an attempt to repeat, or an
            // operator's re-arm after a failure). Attempts count from the last ending row.
            r#"SELECT i.key, i.detail, i.position, i.recorded_at, a.attempts AS "attempts!", a.last_at
               FROM ledger.intents i
               CROSS JOIN LATERAL (
                 SELECT count(*) FILTER (WHERE e.attempt > 0) AS attempts,
                        max(e.at) FILTER (WHERE e.attempt > 0) AS last_at
                 FROM ledger.effects e
                 WHERE e.key = i.key AND e.id > coalesce(
                   (SELECT max(t.id) FROM ledger.effects t WHERE t.key = i.key AND t.outcome <> 'retry'), 0)) a
               WHERE i.kind = 'email'
                 AND coalesce((SELECT e.outcome FROM ledger.effects e WHERE e.key = i.key ORDER BY e.id DESC LIMIT 1),
                              'retry') = 'retry'
               ORDER BY i.position, i.key"#
        )
        .fetch_all(&self.pool)
        .await?;
        let results = futures::stream::iter(pending)
            .map(|p| {
                let (key, detail, position, attempts, last_at) = (p.key, p.detail, p.position, p.attempts, p.last_at);
                self.mail(PendingMail { key, detail, position, attempts, last_at, recorded_at: p.recorded_at })
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<MailStep>>>()
            .await;
        let steps = self.settle("mail", results);
        let waiting = steps.iter().filter(|s| **s == MailStep::Waiting).count();
        self.metrics.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        Ok(steps.into_iter().filter(|s| *s == MailStep::Attempted).count())
    }

    /// One pending mail: composes, sends and journals it if due.
    async fn mail(&self, p: PendingMail) -> anyhow::Result<MailStep> {
        let done = i32::try_from(p.attempts).unwrap_or(i32::MAX);
        if let Some(last_at) = p.last_at
            && !self.due(last_at, done, &p.key)
        {
            return Ok(MailStep::Idle);
        }
        let mail = match self.compose(&p.key, &p.detail).await? {
            Compose::Wait => return Ok(MailStep::Idle),
            // A fact not arrived yet (Stripe may deliver `customer.created` hours later) is not a
            // failure: nothing is counted or journaled, the mail goes out when the fact arrives.
            // Only after Stripe's own retry horizon does waiting become a failure.
            Compose::Missing(reason) if self.clock.now() < p.recorded_at + MISSING_FACT_HORIZON => {
                tracing::debug!(key = p.key, reason, "mail waits for a fact");
                return Ok(MailStep::Waiting);
            }
            Compose::Missing(reason) => {
                let mut tx = self.pool.begin().await?;
                let error = format!("{reason}, still after {} days", MISSING_FACT_HORIZON.num_days());
                let row = Attempt {
                    key: &p.key,
                    kind: "email",
                    attempt: done + 1,
                    request: format!("mail {} (no recipient)", p.key),
                    status: None,
                    outcome: "failed",
                    error: Some(error.clone()),
                };
                journal(&mut tx, row, &self.metrics).await?;
                failed_for_good(&mut tx, &p.key, &format!("mail {} failed: {error}", p.key), p.position, &self.metrics)
                    .await?;
                tx.commit().await?;
                return Ok(MailStep::Attempted);
            }
            Compose::Skip(reason) => {
                let mut conn = self.pool.acquire().await?;
                let row = Attempt {
                    key: &p.key,
                    kind: "email",
                    attempt: done + 1,
                    request: format!("mail {}", p.key),
                    status: None,
                    outcome: "skipped",
                    error: Some(reason),
                };
                journal(&mut conn, row, &self.metrics).await?;
                return Ok(MailStep::Idle);
            }
            Compose::Ready(mail) => mail,
        };
        let (verdict, error) = self.mailer.send(&p.key, &mail).await;
        let attempt = done + 1;
        let outcome = plan::outcome(verdict, u32::try_from(attempt).unwrap_or(u32::MAX), self.settings.max_attempts);
        let mut tx = self.pool.begin().await?;
        let row = Attempt {
            key: &p.key,
            kind: "email",
            attempt,
            request: format!("mail {} to its recipient", p.key),
            status: None,
            outcome,
            error: error.clone(),
        };
        journal(&mut tx, row, &self.metrics).await?;
        if outcome == "failed" {
            let detail = format!("mail {} failed: {}", p.key, error.as_deref().unwrap_or("-"));
            failed_for_good(&mut tx, &p.key, &detail, p.position, &self.metrics).await?;
        }
        tx.commit().await?;
        tracing::info!(key = p.key, outcome, attempt, "mail");
        Ok(MailStep::Attempted)
    }

    /// The mail an email intent asks for, from the current projections and observed state.
    async fn compose(&self, key: &str, detail: &str) -> anyhow::Result<Compose> {
        let mut parts = key.splitn(3, ':');
        let (_, template, subject) = (parts.next(), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if template == "alert" {
            return Ok(match &self.settings.admin_email {
                Some(admin) => {
                    let failed = subject.split_once('#').map_or(subject, |(key, _)| key);
                    Compose::Ready(mail::alert(admin, failed, detail))
                }
                None => {
                    tracing::error!(key, detail, "ADMIN_EMAIL is unset: this alert goes to the log only");
                    Compose::Skip("ADMIN_EMAIL is unset".to_owned())
                }
            });
        }
        let sub_id = match template {
            "payment_failed" => crate::fold::payment_failed_subscription(detail).map(str::to_owned),
            _ => Some(subject.to_owned()),
        };
        let Some(sub_id) = sub_id else { return Ok(Compose::Skip(format!("cannot read the subscription of {key}"))) };
        let row = sqlx::query!(
            r#"SELECT s.tier, s.grace_until, a.email AS "email?", t.desired AS "desired?",
                      o.status AS "o_status?", o.frontend_url AS "url?"
               FROM projection.subscriptions s
               LEFT JOIN projection.accounts a ON a.stripe_customer_id = s.stripe_customer_id
               LEFT JOIN projection.instance_targets t ON t.stripe_subscription_id = s.stripe_subscription_id
               LEFT JOIN ledger.instances_observed o ON o.stripe_subscription_id = s.stripe_subscription_id
               WHERE s.stripe_subscription_id = $1"#,
            sub_id
        )
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(Compose::Missing(format!("subscription {sub_id} not projected yet"))) };
        let Some(to) = row.email else {
            return Ok(Compose::Missing(format!("no email address for {sub_id}'s customer")));
        };
        Ok(match template {
            "welcome" => {
                let running = row.o_status.as_deref() == Some("running");
                if row.desired.as_deref() != Some("running") && !running {
                    Compose::Skip("the subscription stopped before its instance ran".to_owned())
                } else if self.provisioner.is_some() && !running {
                    Compose::Wait // the welcome carries the instance URL
                } else {
                    Compose::Ready(mail::welcome(&to, &row.tier, row.url.as_deref()))
                }
            }
            "payment_failed" if row.grace_until.is_none() => Compose::Skip("paid since".to_owned()),
            "payment_failed" => Compose::Ready(mail::payment_failed(&to, row.grace_until)),
            "canceled" => Compose::Ready(mail::canceled(&to, &sub_id)),
            other => Compose::Skip(format!("unknown mail template `{other}`")),
        })
    }
}

/// An effect whose last attempt failed for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedEffect {
    /// Its key.
    pub key: String,
    /// Its kind.
    pub kind: String,
    /// The failing attempt.
    pub attempt: i32,
    /// Why.
    pub error: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Effects whose last journal row is `failed`, oldest first (`replay effects failed`).
pub async fn failed(pool: &PgPool) -> anyhow::Result<Vec<FailedEffect>> {
    Ok(sqlx::query_as!(
        FailedEffect,
        r#"SELECT key AS "key!", kind AS "kind!", attempt AS "attempt!", error, at AS "at!"
           FROM (SELECT DISTINCT ON (key) key, kind, attempt, outcome, error, at
                 FROM ledger.effects ORDER BY key, id DESC) last
           WHERE outcome = 'failed' ORDER BY at"#
    )
    .fetch_all(pool)
    .await?)
}

/// What [`rearm`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rearmed {
    /// The instance operation under this key will be attempted again, from attempt 1.
    Instance,
    /// The mail under this key will be attempted again, from attempt 1.
    Mail,
}

/// An operator's retry of an effect that failed for good (`replay effects retry <key>`): journals
/// a `retry` row (attempt 0, "re-armed by an operator") and makes the key pending again, so the
/// dispatcher makes the same call with the same idempotency key. Refuses keys that are not failed.
pub async fn rearm(pool: &PgPool, key: &str) -> anyhow::Result<Rearmed> {
    let mut tx = pool.begin().await?;
    let last = sqlx::query!(
        "SELECT kind, outcome FROM ledger.effects WHERE key = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE",
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last.filter(|l| l.outcome == "failed") else {
        anyhow::bail!("{key} has not failed (its last journal row is not `failed`): nothing to retry");
    };
    let kind: &'static str = match last.kind.as_str() {
        "provision" => "provision",
        "update" => "update",
        "deprovision" => "deprovision",
        "email" => "email",
        other => anyhow::bail!("effects of kind `{other}` are retried by the dispatcher itself"),
    };
    let rearmed = if kind == "email" {
        let intent: bool =
            sqlx::query_scalar!(r#"SELECT EXISTS (SELECT 1 FROM ledger.intents WHERE key = $1) AS "exists!""#, key)
                .fetch_one(&mut *tx)
                .await?;
        // A token mail is not an intent: re-armed, the token pass issues and mails a new token.
        if !intent && !key.starts_with("email:token:") {
            anyhow::bail!("{key} is neither a mail intent nor a token mail");
        }
        // A token kept after an interrupted delivery is given up, so a new one goes out.
        if let Some(token_key) = key.strip_prefix("email:") {
            sqlx::query!(
                "UPDATE ledger.api_tokens SET revoked_at = now() WHERE key = $1 AND revoked_at IS NULL AND delivered_at IS NULL",
                token_key
            )
            .execute(&mut *tx)
            .await?;
        }
        Rearmed::Mail
    } else {
        let pending = match kind {
            "provision" => Status::Provisioning,
            "update" => Status::Updating,
            _ => Status::Deprovisioning,
        };
        let updated = sqlx::query!(
            "UPDATE ledger.instances_observed SET status = $3, attempts = 0, last_error = NULL, updated_at = now()
             WHERE key = $1 AND status = $2",
            key,
            Status::Failed.as_str(),
            pending.as_str()
        )
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            anyhow::bail!("the instance has moved on from {key} (a newer operation or state): nothing to retry");
        }
        Rearmed::Instance
    };
    let metrics = Metrics::default();
    let row = Attempt {
        key,
        kind,
        attempt: 0,
        request: "re-armed by an operator".to_owned(),
        status: None,
        outcome: "retry",
        error: None,
    };
    journal(&mut tx, row, &metrics).await?;
    sqlx::query!("DELETE FROM projection.anomalies WHERE key = $1", format!("{EFFECT_FAILED}:{key}"))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(rearmed)
}

struct PendingMail {
    key: String,
    detail: String,
    position: i64,
    attempts: i64,
    last_at: Option<DateTime<Utc>>,
    recorded_at: DateTime<Utc>,
}

/// What one pending mail did in a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MailStep {
    /// Sent, failed or skipped: journaled.
    Attempted,
    /// Not due, or waiting for its instance.
    Idle,
    /// Waiting for a fact (the customer's address) that has not arrived.
    Waiting,
}

/// How long a mail waits for a missing fact before it fails: Stripe retries a webhook for up to
/// three days, so an address that has not arrived by then will not.
const MISSING_FACT_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(3);

enum Compose {
    Ready(Mail),
    /// Not yet: nothing is journaled (the welcome waits for its instance).
    Wait,
    /// A fact not arrived yet (no recipient): waits, up to [`MISSING_FACT_HORIZON`].
    Missing(String),
    /// Not needed any more: journaled as skipped.
    Skip(String),
}
