//! Mails: what the fold asked for (`ledger.intents`, kind `email`) and the admin alerts
//! (`ledger.alerts`), composed from the current projections when they go out.

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::Dispatcher;
use domain::keys::{EffectKey, EffectKind, MailKey, Outcome, Subject};
use domain::mail::Mail;
use domain::plan;
use store::journal::{self, Attempt, Failure};

/// How long a mail waits for a missing fact before it fails: Stripe retries a webhook for up to
/// three days, so an address that has not arrived by then will not.
const MISSING_FACT_HORIZON: chrono::TimeDelta = chrono::TimeDelta::days(3);

/// A mail with no ending journal row.
struct PendingMail {
    key: MailKey,
    subject: Subject,
    detail: String,
    position: i64,
    /// Attempts since the last ending row (or an operator's re-arm).
    attempts: i64,
    last_at: Option<DateTime<Utc>>,
    recorded_at: DateTime<Utc>,
    /// Its latest journal row is `sending`: a dispatcher stopped between the SMTP call and its
    /// answer's row, and nobody knows whether it went out.
    interrupted: bool,
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

/// What a pending mail can be now.
enum Compose {
    Ready(Mail),
    /// Not yet: nothing is journaled (the welcome waits for its instance).
    Wait,
    /// A fact not arrived yet (no recipient): waits, up to [`MISSING_FACT_HORIZON`].
    Missing(String),
    /// Not needed any more: journaled as skipped.
    Skip(String),
}

impl PendingMail {
    fn journal_kind(&self) -> EffectKind {
        match self.key {
            MailKey::Alert { .. } => EffectKind::Alert,
            _ => EffectKind::Email,
        }
    }

    fn attempt<'a>(
        &'a self,
        key: &'a EffectKey,
        request: String,
        outcome: Outcome,
        error: Option<String>,
    ) -> Attempt<'a> {
        let attempt = i32::try_from(self.attempts).unwrap_or(i32::MAX).saturating_add(1);
        Attempt {
            key,
            subject: &self.subject,
            kind: self.journal_kind(),
            attempt,
            request,
            status: None,
            outcome,
            error,
        }
    }
}

impl Dispatcher {
    /// Sends the mails due now; returns how many were journaled.
    pub(super) async fn mails(&self) -> anyhow::Result<usize> {
        let pending = self.pending_mails().await?;
        let results = futures::stream::iter(pending)
            .map(|p| self.mail(p))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<MailStep>>>()
            .await;
        let steps = self.settle("mail", results);
        let waiting = steps.iter().filter(|s| **s == MailStep::Waiting).count();
        self.metrics.waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        Ok(steps.into_iter().filter(|s| *s == MailStep::Attempted).count())
    }

    /// Mail intents and alerts with no journal row yet, or whose latest row is a `retry` (an
    /// attempt to repeat, or an operator's re-arm after a failure). Attempts count from the last
    /// ending row.
    async fn pending_mails(&self) -> anyhow::Result<Vec<PendingMail>> {
        let rows = sqlx::query!(
            r#"WITH mails AS (
                 SELECT i.key, i.detail, i.position, i.recorded_at, i.subject_type, i.subject
                 FROM ledger.pending_effects p JOIN ledger.intents i ON i.key = p.key WHERE i.kind = 'email'
                 UNION ALL
                 SELECT a.key, a.detail, a.position, a.recorded_at, a.subject_type, a.subject
                 FROM ledger.pending_effects p JOIN ledger.alerts a ON a.key = p.key)
               SELECT m.key AS "key!", m.detail AS "detail!", m.position AS "position!",
                      m.recorded_at AS "recorded_at!", m.subject_type AS "subject_type!", m.subject AS "subject!",
                      a.attempts AS "attempts!", a.last_at, coalesce(l.outcome, 'retry') = 'sending' AS "interrupted!"
               FROM mails m
               LEFT JOIN LATERAL (SELECT e.outcome FROM ledger.effects e WHERE e.key = m.key ORDER BY e.id DESC LIMIT 1) l
                 ON true
               CROSS JOIN LATERAL (
                 SELECT count(*) FILTER (WHERE e.attempt > 0 AND e.outcome <> 'sending') AS attempts,
                        max(e.at) FILTER (WHERE e.attempt > 0) AS last_at
                 FROM ledger.effects e
                 WHERE e.key = m.key AND e.id > coalesce(
                   (SELECT max(t.id) FROM ledger.effects t
                    WHERE t.key = m.key AND t.outcome NOT IN ('retry', 'sending')), 0)) a
               WHERE coalesce(l.outcome, 'retry') IN ('retry', 'sending')
               ORDER BY m.position, m.key"#
        )
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for r in rows {
            let (key, subject) = match (r.key.parse::<EffectKey>(), Subject::from_columns(&r.subject_type, r.subject)) {
                (Ok(EffectKey::Mail(key)), Some(subject)) => (key, subject),
                _ => {
                    tracing::error!(key = r.key, "a pending mail with an unreadable key or subject: skipped");
                    continue;
                }
            };
            let (detail, position, attempts, last_at, recorded_at, interrupted) =
                (r.detail, r.position, r.attempts, r.last_at, r.recorded_at, r.interrupted);
            pending.push(PendingMail { key, subject, detail, position, attempts, last_at, recorded_at, interrupted });
        }
        Ok(pending)
    }

    /// One pending mail: composes, sends and journals it if due.
    async fn mail(&self, p: PendingMail) -> anyhow::Result<MailStep> {
        let key = EffectKey::Mail(p.key.clone());
        if p.interrupted {
            return self.delivery_unknown(&p, &key).await;
        }
        let done = i32::try_from(p.attempts).unwrap_or(i32::MAX);
        if let Some(last_at) = p.last_at
            && !self.due(last_at, done, &key)
        {
            return Ok(MailStep::Idle);
        }
        let mail = match self.compose(&p).await? {
            Compose::Wait => return Ok(MailStep::Idle),
            // A fact not arrived yet (Stripe may deliver `customer.created` hours later) is not a
            // failure: nothing is counted or journaled, the mail goes out when the fact arrives.
            // Only after Stripe's own retry horizon does waiting become a failure.
            Compose::Missing(reason) if self.clock.now() < p.recorded_at + MISSING_FACT_HORIZON => {
                tracing::debug!(key = %key, reason, "mail waits for a fact");
                return Ok(MailStep::Waiting);
            }
            Compose::Missing(reason) => {
                let error = format!("{reason}, still after {} days", MISSING_FACT_HORIZON.num_days());
                let detail = format!("mail {key} failed: {error}");
                let row = p.attempt(&key, format!("mail {key} (no recipient)"), Outcome::Failed, Some(error));
                let mut tx = self.pool.begin().await?;
                self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: p.position }).await?;
                tx.commit().await?;
                return Ok(MailStep::Attempted);
            }
            Compose::Skip(reason) => {
                let row = p.attempt(&key, format!("mail {key}"), Outcome::Skipped, Some(reason));
                let mut conn = self.pool.acquire().await?;
                self.journal(&mut conn, &row).await?;
                return Ok(MailStep::Idle);
            }
            Compose::Ready(mail) => mail,
        };
        // Journaled before the call: if this process dies before the answer's row, the next leader
        // knows the mail may have gone out.
        let sending = p.attempt(&key, format!("mail {key} to its recipient"), Outcome::Sending, None);
        journal::write(&mut *self.pool.acquire().await?, &sending).await?;
        let crate::effects::mail::Delivery { verdict, error } = self.mailer.send(&key.to_string(), &mail).await;
        let attempt = u32::try_from(done).unwrap_or(u32::MAX).saturating_add(1);
        let outcome = plan::outcome(verdict, attempt, self.settings.max_attempts);
        let detail = format!("mail {key} failed: {}", error.as_deref().unwrap_or("-"));
        let row = p.attempt(&key, format!("mail {key} to its recipient"), outcome, error);
        let mut tx = self.pool.begin().await?;
        self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: p.position }).await?;
        tx.commit().await?;
        tracing::info!(key = %key, outcome = outcome.as_str(), attempt, "mail");
        Ok(MailStep::Attempted)
    }

    /// A mail a stopped dispatcher was sending: it may or may not have reached its recipient, and
    /// sending it again could send it twice. Failed for good with an admin alert, never judged
    /// "no longer needed"; `replay effects retry` sends it again if it did not arrive.
    async fn delivery_unknown(&self, p: &PendingMail, key: &EffectKey) -> anyhow::Result<MailStep> {
        let error = "delivery unknown: the previous dispatcher stopped while sending it".to_owned();
        let detail = format!("mail {key} may or may not have gone out; if it did not, `replay effects retry {key}`");
        let row = p.attempt(key, format!("mail {key} (interrupted by a restart)"), Outcome::Failed, Some(error));
        let mut tx = self.pool.begin().await?;
        self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: p.position }).await?;
        tx.commit().await?;
        tracing::warn!(key = %key, "a mail whose sending was interrupted: delivery unknown, admin alerted");
        Ok(MailStep::Attempted)
    }

    /// The mail a pending mail asks for, from the current projections and observed state.
    async fn compose(&self, p: &PendingMail) -> anyhow::Result<Compose> {
        if let MailKey::Alert { failed, .. } = &p.key {
            return Ok(match &self.settings.admin_email {
                Some(admin) => Compose::Ready(domain::mail::alert(admin, &failed.to_string(), &p.detail)),
                None => {
                    tracing::error!(failed = %failed, detail = p.detail, "ADMIN_EMAIL is unset: this alert goes to the log only");
                    Compose::Skip("ADMIN_EMAIL is unset".to_owned())
                }
            });
        }
        let Subject::Subscription(sub_id) = &p.subject else {
            return Ok(Compose::Skip(format!(
                "a mail intent about customer {} (token mails are sent with their token)",
                p.subject.id()
            )));
        };
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
        Ok(match &p.key {
            MailKey::Welcome { .. } => {
                let running = row.o_status.as_deref() == Some("running");
                if row.desired.as_deref() != Some("running") && !running {
                    Compose::Skip("the subscription stopped before its instance ran".to_owned())
                } else if self.provisioner.is_some() && !running {
                    Compose::Wait // the welcome carries the instance URL
                } else {
                    Compose::Ready(domain::mail::welcome(
                        &to,
                        &row.tier,
                        row.url.as_deref(),
                        self.settings.dashboard_url.as_deref(),
                    ))
                }
            }
            MailKey::PaymentFailed { .. } if row.grace_until.is_none() => Compose::Skip("paid since".to_owned()),
            MailKey::PaymentFailed { .. } => Compose::Ready(domain::mail::payment_failed(&to, row.grace_until)),
            MailKey::Canceled { .. } => Compose::Ready(domain::mail::canceled(&to, sub_id)),
            MailKey::Token(_) | MailKey::Alert { .. } => Compose::Skip("not a mail intent".to_owned()),
        })
    }
}
