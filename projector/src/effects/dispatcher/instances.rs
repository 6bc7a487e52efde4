//! Instances: what the projections want against what the provisioner last reported
//! (`ledger.instances_observed`), one call per instance that differs, and its recorded outcome.

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::Dispatcher;
use super::pending::{Due, Pages, Pending, Scope};
use crate::effects::provisioner::{Provisioned, Provisioner};
use domain::keys::{EffectKey, Outcome, Subject};
use domain::plan::{self, InstanceOp, InstanceStatus, Observed, Target, Verdict};
use store::journal::{Attempt, Failure};
use store::{LimitColumns, desired_from};

/// A sweep's page of instances: every target that is not absent.
const SWEEP: &str = "SELECT stripe_subscription_id FROM projection.instance_targets
                     WHERE desired <> 'absent' AND stripe_subscription_id > $1 ORDER BY 1 LIMIT $2";

/// How often the answer of a call is written before the pass gives up on it.
const RECORD_TRIES: u32 = 5;

/// One instance as the pass query sees it: the target, the observed side and its intents.
struct InstanceRow {
    subscription: String,
    customer: Option<String>,
    desired: String,
    tier: String,
    limits: LimitColumns,
    grace_until: Option<DateTime<Utc>>,
    o_status: Option<String>,
    o_app: Option<String>,
    o_limits: LimitColumns,
    o_key: Option<String>,
    o_attempts: Option<i32>,
    o_grace: Option<DateTime<Utc>>,
    o_updated: Option<DateTime<Utc>>,
    latest_key: Option<String>,
    latest_position: Option<i64>,
    first_key: Option<String>,
}

/// A call to make in this pass.
struct InstanceWork {
    target: Target,
    customer: Option<String>,
    op: InstanceOp,
    /// The number of this attempt.
    attempt: i32,
    /// Log position of the latest intent (for the alert).
    position: i64,
}

/// A provisioner's answer, judged.
struct Called {
    request: String,
    status: Option<u16>,
    outcome: Outcome,
    error: Option<String>,
    provisioned: Option<Provisioned>,
}

fn key(text: Option<String>) -> anyhow::Result<Option<EffectKey>> {
    text.map(|t| t.parse().with_context(|| format!("stored key `{t}`"))).transpose()
}

impl InstanceRow {
    fn target(&self) -> anyhow::Result<Target> {
        Ok(Target {
            subscription: self.subscription.clone(),
            desired: desired_from(&self.desired),
            tier: self.tier.clone(),
            limits: self.limits.into(),
            grace_until: self.grace_until,
            latest_key: key(self.latest_key.clone())?,
            first_key: key(self.first_key.clone())?,
        })
    }

    fn observed(&self) -> anyhow::Result<Option<Observed>> {
        let status = self.o_status.as_deref().and_then(InstanceStatus::parse);
        let (Some(status), Some(key), Some(updated_at)) = (status, key(self.o_key.clone())?, self.o_updated) else {
            return Ok(None);
        };
        Ok(Some(Observed {
            status,
            app_name: self.o_app.clone(),
            limits: self.o_limits.into(),
            key,
            attempts: self.o_attempts.unwrap_or(0),
            torn_down_by_grace: self.o_grace,
            updated_at,
        }))
    }
}

impl Dispatcher {
    /// Makes the calls due now, several at once; returns how many were made and recorded.
    /// `scope`: the pending instances, or all (a sweep); those found in sync stop being pending.
    pub(super) async fn instances(&self, scope: Scope) -> anyhow::Result<usize> {
        let now = self.clock.now();
        let pending = Pending::read(&self.pool, "instance").await?;
        let mut pages = Pages::new(scope, pending.subjects().cloned().collect(), SWEEP);
        let (mut work, mut still) = (Vec::new(), std::collections::BTreeSet::new());
        while let Some(candidates) = pages.next(&self.pool).await? {
            for row in self.instance_rows(now, &candidates).await? {
                match self.instance_work(&row, now) {
                    Ok(Due::Now(w)) => work.push(w),
                    Ok(Due::Later) => {}
                    Ok(Due::Nothing) => continue,
                    Err(error) => {
                        tracing::error!(subscription = row.subscription, error = format!("{error:#}"), "skipped");
                    }
                }
                still.insert(row.subscription);
            }
        }
        pending.settle(&self.pool, &still).await?;
        // Instances are independent of each other: several calls in flight at once.
        // Every call runs to its end and is recorded on its own: one failure (a database blip
        // while recording, a bug) neither cancels the calls in flight nor stops the others.
        let results = futures::stream::iter(work)
            .map(|w| self.instance_attempt(w))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<()>>>()
            .await;
        Ok(self.settle("instance", results).len())
    }

    /// Targets among `candidates` that differ from what was observed (in-sync rows are filtered
    /// out here; the plan decides on the rest).
    async fn instance_rows(&self, now: DateTime<Utc>, candidates: &[String]) -> anyhow::Result<Vec<InstanceRow>> {
        let rows = sqlx::query!(
            r#"SELECT t.stripe_subscription_id AS "subscription!", t.stripe_customer_id, t.desired AS "desired!",
                      t.tier AS "tier!", t.limit_agents, t.limit_messages_per_day, t.limit_memory_mb, t.limit_cpu,
                      s.grace_until,
                      o.status AS "o_status?", o.app_name AS "o_app?", o.limit_agents AS "o_agents?",
                      o.limit_messages_per_day AS "o_messages?", o.limit_memory_mb AS "o_memory?",
                      o.limit_cpu AS "o_cpu?", o.key AS "o_key?", o.attempts AS "o_attempts?",
                      o.torn_down_by_grace AS "o_grace?", o.updated_at AS "o_updated?",
                      li.key AS "latest_key?", li.position AS "latest_position?", fi.key AS "first_key?"
               FROM unnest($2::text[]) AS c (id)
               JOIN projection.instance_targets t ON t.stripe_subscription_id = c.id
               LEFT JOIN projection.subscriptions s USING (stripe_subscription_id)
               LEFT JOIN ledger.instances_observed o USING (stripe_subscription_id)
               LEFT JOIN LATERAL (
                 SELECT i.key, i.position FROM ledger.intents i
                 WHERE i.kind = 'instance' AND i.subject = t.stripe_subscription_id
                 ORDER BY i.position DESC LIMIT 1) li ON true
               LEFT JOIN LATERAL (
                 SELECT i.key FROM ledger.intents i
                 WHERE i.kind = 'instance' AND i.subject = t.stripe_subscription_id
                 ORDER BY i.position LIMIT 1) fi ON true
               WHERE t.desired <> 'absent'
                 AND NOT (t.desired = 'running' AND o.status = 'running'
                          AND s.entitled_until > $1
                          AND o.limit_agents IS NOT DISTINCT FROM t.limit_agents
                          AND o.limit_messages_per_day IS NOT DISTINCT FROM t.limit_messages_per_day
                          AND o.limit_memory_mb IS NOT DISTINCT FROM t.limit_memory_mb
                          AND o.limit_cpu IS NOT DISTINCT FROM t.limit_cpu)
                 AND NOT (t.desired = 'deprovisioned' AND (o.status IS NULL OR o.status = 'deprovisioned'))
               ORDER BY t.stripe_subscription_id"#,
            now,
            candidates
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| InstanceRow {
                subscription: r.subscription,
                customer: r.stripe_customer_id,
                desired: r.desired,
                tier: r.tier,
                limits: LimitColumns {
                    limit_agents: r.limit_agents,
                    limit_messages_per_day: r.limit_messages_per_day,
                    limit_memory_mb: r.limit_memory_mb,
                    limit_cpu: r.limit_cpu,
                },
                grace_until: r.grace_until,
                o_status: r.o_status,
                o_app: r.o_app,
                o_limits: LimitColumns {
                    limit_agents: r.o_agents,
                    limit_messages_per_day: r.o_messages,
                    limit_memory_mb: r.o_memory,
                    limit_cpu: r.o_cpu,
                },
                o_key: r.o_key,
                o_attempts: r.o_attempts,
                o_grace: r.o_grace,
                o_updated: r.o_updated,
                latest_key: r.latest_key,
                latest_position: r.latest_position,
                first_key: r.first_key,
            })
            .collect())
    }

    /// The call one instance needs now, if any and if due.
    fn instance_work(&self, row: &InstanceRow, now: DateTime<Utc>) -> anyhow::Result<Due<InstanceWork>> {
        let target = row.target()?;
        let observed = row.observed()?;
        let Some(op) = plan::plan_instance(&target, observed.as_ref(), now) else { return Ok(Due::Nothing) };
        let previous = observed.as_ref().filter(|o| o.key == *op.key());
        if let Some(o) = previous
            && !self.due(o.updated_at, o.attempts, &o.key)
        {
            return Ok(Due::Later);
        }
        let attempt = previous.map_or(0, |o| o.attempts) + 1;
        let position = row.latest_position.unwrap_or(0);
        Ok(Due::Now(InstanceWork { target, customer: row.customer.clone(), op, attempt, position }))
    }

    /// Marks the call under way, makes it and records its answer.
    async fn instance_attempt(&self, w: InstanceWork) -> anyhow::Result<()> {
        let Some(provisioner) = &self.provisioner else { return Ok(()) };
        let key = w.op.key().to_string();
        // Mark the call under way (visible in projection.instances) before making it.
        sqlx::query!(
            "INSERT INTO ledger.instances_observed (stripe_subscription_id, status, key, attempts, updated_at)
             VALUES ($1, $2, $3, 0, now())
             ON CONFLICT (stripe_subscription_id) DO UPDATE
               SET status = EXCLUDED.status,
                   attempts = CASE WHEN ledger.instances_observed.key = EXCLUDED.key
                                   THEN ledger.instances_observed.attempts ELSE 0 END,
                   key = EXCLUDED.key",
            w.target.subscription,
            w.op.pending_status().as_str(),
            key
        )
        .execute(&self.pool)
        .await?;
        let called = self.call(provisioner, &w).await;
        // The answer came: record it, riding out a short database blip, so a done call is not
        // forgotten (were it lost anyway, the next pass re-sends it under the same key).
        let mut tries = 0_u32;
        while let Err(error) = self.record_instance(&w, &called).await {
            tries += 1;
            if tries >= RECORD_TRIES {
                return Err(error.context(format!("recording the answer to {}", called.request)));
            }
            tracing::warn!(key, error = format!("{error:#}"), "recording a provisioner answer failed, retrying");
            tokio::time::sleep(std::time::Duration::from_millis(100) * 2_u32.pow(tries)).await;
        }
        let (request, outcome) = (&called.request, called.outcome.as_str());
        tracing::info!(key, request, outcome, attempt = w.attempt, status = ?called.status, "instance effect");
        Ok(())
    }

    /// The provisioner call of `w`, and how its answer is judged.
    async fn call(&self, provisioner: &Provisioner, w: &InstanceWork) -> Called {
        let (sub, tier, key) = (w.target.subscription.as_str(), w.target.tier.as_str(), w.op.key().to_string());
        let (request, answer) = match &w.op {
            InstanceOp::Provision { .. } => (
                format!("POST /provision {sub} tier={tier}"),
                provisioner.provision(&key, sub, w.customer.as_deref(), tier, w.target.limits).await,
            ),
            InstanceOp::Update { app_name, .. } => (
                format!("PUT /update {app_name} tier={tier}"),
                provisioner.update(&key, app_name, tier, w.target.limits).await,
            ),
            InstanceOp::Deprovision { app_name, .. } => {
                (format!("DELETE /deprovision {app_name}"), provisioner.deprovision(&key, app_name).await)
            }
        };
        let mut verdict = plan::verdict(answer.status);
        let mut error = answer.error;
        if matches!(w.op, InstanceOp::Deprovision { .. }) && answer.status == Some(404) {
            verdict = Verdict::Succeeded; // already gone
        }
        let provisioned = match w.op {
            InstanceOp::Provision { .. } if verdict == Verdict::Succeeded => {
                match answer.body.map(serde_json::from_value::<Provisioned>) {
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
        let outcome = plan::outcome(verdict, u32::try_from(w.attempt).unwrap_or(u32::MAX), self.settings.max_attempts);
        Called { request, status: answer.status, outcome, error, provisioned }
    }

    /// Journals one provisioner answer and what it changes in `ledger.instances_observed`, in one
    /// transaction.
    async fn record_instance(&self, w: &InstanceWork, c: &Called) -> anyhow::Result<()> {
        let sub = w.target.subscription.as_str();
        let subject = Subject::Subscription(sub.to_owned());
        let mut tx = self.pool.begin().await?;
        let row = Attempt {
            key: w.op.key(),
            subject: &subject,
            kind: w.op.kind(),
            attempt: w.attempt,
            request: c.request.clone(),
            status: c.status,
            outcome: c.outcome,
            error: c.error.clone(),
        };
        let detail =
            format!("{} failed after {} attempt(s): {}", c.request, w.attempt, c.error.as_deref().unwrap_or("-"));
        self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: w.position }).await?;
        let LimitColumns {
            limit_agents: agents,
            limit_messages_per_day: messages,
            limit_memory_mb: memory,
            limit_cpu: cpu,
        } = w.target.limits.into();
        match (c.outcome, &w.op) {
            (Outcome::Succeeded, InstanceOp::Provision { .. }) => {
                let p = c.provisioned.as_ref().context("provisioned")?;
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
                    w.target.tier,
                    agents,
                    messages,
                    memory,
                    cpu,
                    w.attempt
                )
                .execute(&mut *tx)
                .await?;
            }
            (Outcome::Succeeded, InstanceOp::Update { .. }) => {
                sqlx::query!(
                    "UPDATE ledger.instances_observed
                     SET status = 'running', tier = $2, limit_agents = $3, limit_messages_per_day = $4,
                         limit_memory_mb = $5, limit_cpu = $6, attempts = $7, last_error = NULL, updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    w.target.tier,
                    agents,
                    messages,
                    memory,
                    cpu,
                    w.attempt
                )
                .execute(&mut *tx)
                .await?;
            }
            (Outcome::Succeeded, InstanceOp::Deprovision { grace, .. }) => {
                sqlx::query!(
                    "UPDATE ledger.instances_observed
                     SET status = 'deprovisioned', attempts = $2, last_error = NULL, torn_down_by_grace = $3,
                         updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    w.attempt,
                    *grace
                )
                .execute(&mut *tx)
                .await?;
            }
            (outcome, op) => {
                let status = if outcome == Outcome::Failed { InstanceStatus::Failed } else { op.pending_status() };
                sqlx::query!(
                    "UPDATE ledger.instances_observed SET status = $2, attempts = $3, last_error = $4, updated_at = now()
                     WHERE stripe_subscription_id = $1",
                    sub,
                    status.as_str(),
                    w.attempt,
                    c.error
                )
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}
