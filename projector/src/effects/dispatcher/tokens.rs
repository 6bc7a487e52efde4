//! API tokens: one live token per paying customer, issued and mailed once, renewed before it
//! expires, re-tiered with the customer's plan and revoked when the customer stops paying.

use chrono::{DateTime, Utc};
use futures::StreamExt;

use super::Dispatcher;
use super::pending::{Pages, Pending, Scope};
use domain::keys::{EffectKey, EffectKind, MailKey, Outcome, Subject, TokenKey};
use domain::plan::{self, LiveToken, TokenOp, Verdict};
use domain::token::{new_token, token_hash};
use store::journal::{Attempt, Failure};

/// A sweep's page of customers: every token want.
const SWEEP: &str =
    "SELECT stripe_customer_id FROM projection.tokens WHERE stripe_customer_id > $1 ORDER BY 1 LIMIT $2";

/// One customer's token work in this pass.
struct TokenWork {
    customer: String,
    email: Option<String>,
    op: TokenOp,
    live: Option<LiveToken>,
}

impl Dispatcher {
    /// Does the token work due now; returns how many customers had an attempt.
    /// `scope`: the pending customers and the tokens due with time, or all (a sweep); those found
    /// in sync stop being pending.
    pub(super) async fn tokens(&self, scope: Scope) -> anyhow::Result<usize> {
        let pending = Pending::read(&self.pool, "token").await?;
        let renew_from = self.clock.now() + plan::TOKEN_RENEW_BEFORE;
        let due: Vec<String> = match scope {
            Scope::All => Vec::new(),
            Scope::Pending => {
                sqlx::query_scalar!(
                    "SELECT stripe_customer_id FROM ledger.api_tokens
                     WHERE revoked_at IS NULL AND (expires_at <= $1 OR delivered_at IS NULL)",
                    renew_from
                )
                .fetch_all(&self.pool)
                .await?
            }
        };
        let candidates: std::collections::BTreeSet<String> = pending.subjects().cloned().chain(due).collect();
        let mut pages = Pages::new(scope, candidates.into_iter().collect(), SWEEP);
        let (mut work, mut still) = (Vec::new(), std::collections::BTreeSet::new());
        while let Some(candidates) = pages.next(&self.pool).await? {
            let (page_work, page_still) = self.token_work(&candidates).await?;
            work.extend(page_work);
            still.extend(page_still);
        }
        pending.settle(&self.pool, &still).await?;
        // Customers are independent of each other: several at once (issuing mails a token).
        let done = futures::stream::iter(work)
            .map(|w| async move {
                match (&w.op, &w.live) {
                    (TokenOp::Issue { tier }, live) => {
                        let email = w.email.as_deref().unwrap_or_default();
                        self.issue_token(&w.customer, email, tier, live.as_ref()).await
                    }
                    (op, Some(live)) => self.change_token(&w.customer, live, op).await.map(|()| true),
                    (_, None) => Ok(false),
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<bool>>>()
            .await;
        Ok(self.settle("token", done).into_iter().filter(|attempted| *attempted).count())
    }

    /// Customers among `candidates` whose live token differs from what the projections want: the
    /// work due now, and every customer with work (now, or waiting for an address).
    async fn token_work(
        &self,
        candidates: &[String],
    ) -> anyhow::Result<(Vec<TokenWork>, std::collections::BTreeSet<String>)> {
        let now = self.clock.now();
        let renew_from = now + plan::TOKEN_RENEW_BEFORE;
        let rows = sqlx::query!(
            r#"SELECT tk.stripe_customer_id AS "customer!", tk.tier, a.email AS "email?",
                      EXISTS (SELECT 1 FROM projection.subscriptions s
                              WHERE s.stripe_customer_id = tk.stripe_customer_id AND s.entitled_until > $1)
                        AS "eligible!",
                      lt.key AS "live_key?", lt.tier AS "live_tier?", lt.expires_at AS "live_expires?",
                      lt.delivered_at AS "live_delivered?"
               FROM unnest($3::text[]) AS c (id)
               JOIN projection.tokens tk ON tk.stripe_customer_id = c.id
               LEFT JOIN projection.accounts a USING (stripe_customer_id)
               LEFT JOIN ledger.api_tokens lt ON lt.stripe_customer_id = tk.stripe_customer_id AND lt.revoked_at IS NULL
               WHERE (tk.wanted OR lt.key IS NOT NULL)
                 AND NOT (tk.wanted AND lt.tier IS NOT DISTINCT FROM tk.tier AND lt.expires_at > $2
                          AND lt.delivered_at IS NOT NULL
                          AND NOT EXISTS (SELECT 1 FROM projection.subscriptions s
                                          WHERE s.stripe_customer_id = tk.stripe_customer_id
                                            AND s.entitled_until <= $1))
               ORDER BY tk.stripe_customer_id"#,
            now,
            renew_from,
            candidates
        )
        .fetch_all(&self.pool)
        .await?;
        let (mut work, mut still) = (Vec::new(), std::collections::BTreeSet::new());
        for r in rows {
            let wanted = r.tier.as_deref().filter(|_| r.eligible);
            let live = match (r.live_key.map(|k| k.parse::<EffectKey>()), r.live_tier, r.live_expires) {
                (Some(Ok(key)), Some(tier), Some(expires_at)) => {
                    Some(LiveToken { key, tier, expires_at, delivered: r.live_delivered.is_some() })
                }
                (Some(Err(error)), ..) => {
                    tracing::error!(customer = r.customer, %error, "a live token with an unreadable key: skipped");
                    still.insert(r.customer);
                    continue;
                }
                _ => None,
            };
            let Some(op) = plan::plan_token(wanted, live.as_ref(), now) else { continue };
            still.insert(r.customer.clone());
            if matches!(op, TokenOp::Issue { .. }) && r.email.is_none() {
                tracing::debug!(customer = r.customer, "token wanted but no email address yet");
                continue;
            }
            work.push(TokenWork { customer: r.customer, email: r.email, op, live });
        }
        Ok((work, still))
    }

    async fn change_token(&self, customer: &str, live: &LiveToken, op: &TokenOp) -> anyhow::Result<()> {
        let EffectKey::Token(token) = &live.key else { anyhow::bail!("{} is not a token key", live.key) };
        let (now, stored) = (self.clock.now(), live.key.to_string());
        let mut tx = self.pool.begin().await?;
        // Each change applies to a token still live: one revoked meanwhile (re-armed) is left alone.
        let (changed, key, request) = match op {
            TokenOp::Revoke => {
                let changed = sqlx::query!(
                    "UPDATE ledger.api_tokens SET revoked_at = $2 WHERE key = $1 AND revoked_at IS NULL",
                    stored,
                    now
                )
                .execute(&mut *tx)
                .await?;
                (changed, EffectKey::Revoke(token.clone()), format!("revoke the token of {customer}"))
            }
            TokenOp::Retier { tier } => {
                let changed = sqlx::query!(
                    "UPDATE ledger.api_tokens SET tier = $2 WHERE key = $1 AND revoked_at IS NULL",
                    stored,
                    tier
                )
                .execute(&mut *tx)
                .await?;
                let key = EffectKey::Retier { token: token.clone(), tier: tier.clone() };
                (changed, key, format!("tier of the token of {customer}: {tier}"))
            }
            TokenOp::Renew => {
                let until = now + plan::TOKEN_LIFETIME;
                let changed = sqlx::query!(
                    "UPDATE ledger.api_tokens SET expires_at = $2 WHERE key = $1 AND revoked_at IS NULL",
                    stored,
                    until
                )
                .execute(&mut *tx)
                .await?;
                let key = EffectKey::Renew { token: token.clone(), until: until.timestamp() };
                (changed, key, format!("renew the token of {customer} until {until}"))
            }
            TokenOp::Issue { .. } => return Ok(()),
        };
        if changed.rows_affected() == 0 {
            return Ok(()); // revoked since the plan: the next pass re-plans
        }
        let subject = Subject::Customer(customer.to_owned());
        self.journal(&mut tx, &token_attempt(&key, &subject, request)).await?;
        tx.commit().await?;
        tracing::info!(key = %key, "token changed");
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
        let Some(failures) = self.token_mail_failures(customer).await? else { return Ok(false) };
        let token = self.next_token_key(customer).await?;
        let key = EffectKey::Token(token.clone());
        let subject = Subject::Customer(customer.to_owned());
        let now = self.clock.now();
        let expires_at = now + plan::TOKEN_LIFETIME;
        let plaintext = new_token()?;
        let mut tx = self.pool.begin().await?;
        if let Some(old) = replace
            && !self.revoke_as_planned(&mut tx, old, now).await?
        {
            return Ok(false); // changed since the plan (settled, re-armed): the next pass re-plans
        }
        sqlx::query!(
            "INSERT INTO ledger.api_tokens (token_sha256, stripe_customer_id, tier, key, issued_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            token_hash(&plaintext),
            customer,
            tier,
            key.to_string(),
            now,
            expires_at
        )
        .execute(&mut *tx)
        .await?;
        let request = match replace {
            Some(old) => format!("issue a {tier} token for {customer}, replacing {}", old.key),
            None => format!("issue a {tier} token for {customer}"),
        };
        self.journal(&mut tx, &token_attempt(&key, &subject, request)).await?;
        tx.commit().await?;

        let mail_key = EffectKey::Mail(MailKey::Token(token));
        let crate::effects::mail::Delivery { verdict, error } =
            self.mailer.send(&mail_key.to_string(), &domain::mail::token(email, tier, &plaintext, expires_at)).await;
        drop(plaintext);
        let attempt = failures + 1;
        let outcome = plan::outcome(verdict, attempt, self.settings.max_attempts);
        self.record_token_mail(&key, &mail_key, (&subject, tier), attempt, verdict, error).await?;
        tracing::info!(key = %key, customer, outcome = outcome.as_str(), "token issued");
        Ok(true)
    }

    /// Revokes the token `issue_token` replaces, only if it is still as the plan saw it (live, and
    /// delivered or not): an operator who settled it meanwhile (`replay effects settle`) keeps the
    /// customer's token. The row lock orders this against `settle` and `rearm`.
    async fn revoke_as_planned(
        &self,
        tx: &mut sqlx::PgConnection,
        old: &LiveToken,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let revoked = sqlx::query!(
            "UPDATE ledger.api_tokens SET revoked_at = $2
             WHERE key = $1 AND revoked_at IS NULL AND (delivered_at IS NOT NULL) = $3",
            old.key.to_string(),
            now,
            old.delivered
        )
        .execute(&mut *tx)
        .await?;
        Ok(revoked.rows_affected() == 1)
    }

    /// Consecutive failed token mails of `customer` since the last success or an operator's re-arm
    /// (attempt 0); `None` when the next one is not due, or they failed for good (an admin was
    /// alerted; `replay effects retry` re-arms).
    async fn token_mail_failures(&self, customer: &str) -> anyhow::Result<Option<u32>> {
        // Token mails are the customer's `email` journal rows (other mails concern subscriptions).
        let recent = sqlx::query!(
            "SELECT outcome, at, attempt FROM ledger.effects
             WHERE subject_type = 'customer' AND subject = $1 AND kind = 'email' ORDER BY id DESC LIMIT $2",
            customer,
            i64::from(self.settings.max_attempts) + 1
        )
        .fetch_all(&self.pool)
        .await?;
        if recent.first().is_some_and(|r| r.outcome == Outcome::Failed.as_str()) {
            return Ok(None);
        }
        let failures = recent.iter().take_while(|r| r.outcome != Outcome::Succeeded.as_str() && r.attempt > 0).count();
        let failures = u32::try_from(failures).unwrap_or(u32::MAX);
        // Backoff jitter drawn from the customer's token mails, whatever token they carried.
        let jitter =
            EffectKey::Mail(MailKey::Token(TokenKey { customer: customer.to_owned(), position: 0, reissue: None }));
        if let Some(last) = recent.first().filter(|_| failures > 0)
            && !self.due(last.at, i32::try_from(failures).unwrap_or(i32::MAX), &jitter)
        {
            return Ok(None);
        }
        Ok(Some(failures))
    }

    /// The key of the next token of `customer`: its latest token intent's, or the customer's n-th
    /// when that one was used already.
    async fn next_token_key(&self, customer: &str) -> anyhow::Result<TokenKey> {
        let row = sqlx::query!(
            r#"SELECT (SELECT i.key FROM ledger.intents i WHERE i.kind = 'token' AND i.subject = $1
                        ORDER BY i.position DESC LIMIT 1) AS latest,
                      (SELECT count(*) FROM ledger.api_tokens WHERE stripe_customer_id = $1) AS "issued!""#,
            customer
        )
        .fetch_one(&self.pool)
        .await?;
        let base = match row.latest.map(|k| k.parse::<EffectKey>()).transpose()? {
            Some(EffectKey::Token(token)) => token,
            _ => TokenKey { customer: customer.to_owned(), position: 0, reissue: None },
        };
        let used: bool = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM ledger.api_tokens WHERE key = $1) AS "used!""#,
            EffectKey::Token(base.clone()).to_string()
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(if used { TokenKey { reissue: Some(row.issued), ..base } } else { base })
    }

    /// Records how the token mail went: delivered, or the token revoked (its plaintext is gone)
    /// and the mail journaled as a retry or a failure.
    async fn record_token_mail(
        &self,
        key: &EffectKey,
        mail_key: &EffectKey,
        (subject, tier): (&Subject, &str),
        attempt: u32,
        verdict: Verdict,
        error: Option<String>,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let outcome = plan::outcome(verdict, attempt, self.settings.max_attempts);
        let mut tx = self.pool.begin().await?;
        if verdict == Verdict::Succeeded {
            sqlx::query!("UPDATE ledger.api_tokens SET delivered_at = now() WHERE key = $1", key.to_string())
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query!("UPDATE ledger.api_tokens SET revoked_at = $2 WHERE key = $1", key.to_string(), now)
                .execute(&mut *tx)
                .await?;
        }
        let customer = subject.id();
        let row = Attempt {
            key: mail_key,
            subject,
            kind: EffectKind::Email,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            request: format!("mail the {tier} token of {customer} to its account address"),
            status: None,
            outcome,
            error: error.clone(),
        };
        let detail = format!("the token of {customer} could not be mailed: {}", error.as_deref().unwrap_or("-"));
        self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: 0 }).await?;
        tx.commit().await?;
        Ok(())
    }

    /// At takeover: a token whose mail a previous leader was sending when it stopped may or may
    /// not have reached the customer (the plaintext is gone, so it cannot be sent again). Revoking
    /// it would cut off a customer who holds it; it is kept, and its mail is failed for good with
    /// an admin alert. If the customer never got it, `replay effects retry email:<token key>`
    /// revokes it and the next pass issues and mails a new one.
    pub(super) async fn recover(&self) -> anyhow::Result<()> {
        let mut tx = self.pool.begin().await?;
        let undelivered = sqlx::query!(
            "SELECT key, stripe_customer_id FROM ledger.api_tokens WHERE delivered_at IS NULL AND revoked_at IS NULL"
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut kept = 0;
        for token in undelivered {
            let key: EffectKey = token.key.parse()?;
            let Some(mail_key) = key.token_mail() else { anyhow::bail!("{key} is not a token key") };
            let failed: bool = sqlx::query_scalar!(
                r#"SELECT EXISTS (SELECT 1 FROM ledger.effects WHERE key = $1 AND outcome = 'failed') AS "failed!""#,
                mail_key.to_string()
            )
            .fetch_one(&mut *tx)
            .await?;
            if failed {
                continue; // already told
            }
            let customer = token.stripe_customer_id;
            let row = Attempt {
                key: &mail_key,
                subject: &Subject::Customer(customer.clone()),
                kind: EffectKind::Email,
                attempt: 1,
                request: format!("mail the token of {customer} (interrupted by a restart)"),
                status: None,
                outcome: Outcome::Failed,
                error: Some("delivery unknown: the previous dispatcher stopped while mailing it".to_owned()),
            };
            let detail = format!(
                "the token of {customer} may not have reached the customer; it was kept. If it did not arrive, `replay effects retry {mail_key}` revokes it and mails a new one"
            );
            self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: 0 }).await?;
            kept += 1;
        }
        tx.commit().await?;
        if kept > 0 {
            tracing::warn!(count = kept, "tokens whose delivery was interrupted: kept, admin alerted");
        }
        Ok(())
    }
}

/// The journal row of a token change done in one transaction (it cannot fail half-way).
fn token_attempt<'a>(key: &'a EffectKey, subject: &'a Subject, request: String) -> Attempt<'a> {
    Attempt {
        key,
        subject,
        kind: EffectKind::Token,
        attempt: 1,
        request,
        status: None,
        outcome: Outcome::Succeeded,
        error: None,
    }
}
