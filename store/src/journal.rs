//! The journal (`ledger.effects`: one row per attempt, append-only), admin alerts
//! (`ledger.alerts`) and the operator's commands on them (`replay effects failed|retry|settle`).

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use domain::keys::{EffectKey, EffectKind, MailKey, Outcome, Subject};
use domain::plan::InstanceStatus;

/// One journal row.
#[derive(Debug, Clone)]
pub struct Attempt<'a> {
    /// The idempotency key.
    pub key: &'a EffectKey,
    /// What it acts on.
    pub subject: &'a Subject,
    /// What it did.
    pub kind: EffectKind,
    /// Its number (0: an operator's re-arm).
    pub attempt: i32,
    /// What was asked (method, path, subject); never a token or a secret.
    pub request: String,
    /// The HTTP status answered, if any.
    pub status: Option<u16>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it did not succeed.
    pub error: Option<String>,
}

/// What an admin alert says about a failure.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// A sentence for the admin.
    pub detail: &'a str,
    /// Log position of the intent that asked for the effect (0: none).
    pub position: i64,
}

/// Inserts one journal row.
pub async fn write(conn: &mut PgConnection, a: &Attempt<'_>) -> anyhow::Result<()> {
    sqlx::query!(
        "INSERT INTO ledger.effects (key, kind, attempt, request, response_status, outcome, error, subject_type, subject)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        a.key.to_string(),
        a.kind.as_str(),
        a.attempt,
        a.request,
        a.status.map(i32::from),
        a.outcome.as_str(),
        a.error,
        a.subject.type_str(),
        a.subject.id()
    )
    .execute(&mut *conn)
    .await
    .with_context(|| format!("journaling {}", a.key))?;
    Ok(())
}

/// Records that `failed` failed for good: an admin alert (`email:alert:<key>`, `#<n>` from the
/// second failure of a key an operator re-armed), which the mail pass sends. Alerts do not alert.
pub async fn failed_for_good(
    conn: &mut PgConnection,
    failed: &Attempt<'_>,
    failure: Failure<'_>,
) -> anyhow::Result<()> {
    let key = failed.key.to_string();
    let failures = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM ledger.effects WHERE key = $1 AND outcome = 'failed'"#,
        key
    )
    .fetch_one(&mut *conn)
    .await?;
    let Some(alert) = failed.key.alert(failures) else { return Ok(()) };
    sqlx::query!(
        "INSERT INTO ledger.alerts (key, subject_type, subject, detail, position) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key) DO NOTHING",
        alert.to_string(),
        failed.subject.type_str(),
        failed.subject.id(),
        failure.detail,
        failure.position
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
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

/// Effects failed for good and not settled since, oldest first (`replay effects failed`; the
/// `ledger.effect_failures` view).
pub async fn failed(pool: &PgPool) -> anyhow::Result<Vec<FailedEffect>> {
    Ok(sqlx::query_as!(
        FailedEffect,
        r#"SELECT key AS "key!", kind AS "kind!", attempt AS "attempt!", error, at AS "at!"
           FROM ledger.effect_failures ORDER BY at, id"#
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
    /// The fetch under this key will be attempted again, from attempt 1.
    Fetch,
}

/// An operator's retry of an effect that failed for good (`replay effects retry <key>`): journals
/// a `retry` row (attempt 0, "re-armed by an operator") and makes the key pending again, so the
/// dispatcher makes the same call with the same idempotency key. Refuses keys that are not failed.
pub async fn rearm(pool: &PgPool, key: &str) -> anyhow::Result<Rearmed> {
    rearm_by(pool, key, "an operator").await
}

/// [`rearm`], saying who re-armed it in the journal row (`re-armed by <actor>`): the console's
/// Retry button names its HTTP Basic user.
pub async fn rearm_by(pool: &PgPool, key: &str, actor: &str) -> anyhow::Result<Rearmed> {
    let parsed: EffectKey = key.parse().with_context(|| format!("`{key}` is not an effect key"))?;
    let mut tx = pool.begin().await?;
    let last = sqlx::query!(
        "SELECT kind, outcome, subject_type, subject FROM ledger.effects WHERE key = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE",
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last.filter(|l| l.outcome == Outcome::Failed.as_str()) else {
        anyhow::bail!("{key} has not failed (its last journal row is not `failed`): nothing to retry");
    };
    let subject = Subject::from_columns(&last.subject_type, last.subject).context("journal subject")?;
    let kind = EffectKind::parse(&last.kind).with_context(|| format!("journal kind `{}`", last.kind))?;
    let rearmed = match kind {
        EffectKind::Email | EffectKind::Alert => {
            rearm_mail(&mut tx, key, &parsed).await?;
            Rearmed::Mail
        }
        EffectKind::Provision | EffectKind::Update | EffectKind::Deprovision => {
            let pending = match kind {
                EffectKind::Provision => InstanceStatus::Provisioning,
                EffectKind::Update => InstanceStatus::Updating,
                _ => InstanceStatus::Deprovisioning,
            };
            let updated = sqlx::query!(
                "UPDATE ledger.instances_observed SET status = $3, attempts = 0, last_error = NULL, updated_at = now()
                 WHERE key = $1 AND status = $2",
                key,
                InstanceStatus::Failed.as_str(),
                pending.as_str()
            )
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                anyhow::bail!("the instance has moved on from {key} (a newer operation or state): nothing to retry");
            }
            Rearmed::Instance
        }
        // A fetch intent is pending while its latest journal row is a `retry`.
        EffectKind::Fetch => Rearmed::Fetch,
        EffectKind::Token => anyhow::bail!("effects of kind `token` are retried by the dispatcher itself"),
    };
    let row = Attempt {
        key: &parsed,
        subject: &subject,
        kind,
        attempt: 0,
        request: format!("re-armed by {actor}"),
        status: None,
        outcome: Outcome::Retry,
        error: None,
    };
    write(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(rearmed)
}

/// An operator's word that a token whose delivery a crash interrupted did reach its customer
/// (`replay effects settle email:<token key>`): the kept token is marked delivered and its mail
/// journaled `succeeded` (attempt 0, "settled by <actor>"), so it is no longer a failure and no
/// later leader flags it again. Refuses anything but a failed token mail whose token is kept.
pub async fn settle(pool: &PgPool, key: &str, actor: &str) -> anyhow::Result<()> {
    let parsed: EffectKey = key.parse().with_context(|| format!("`{key}` is not an effect key"))?;
    let EffectKey::Mail(MailKey::Token(token)) = &parsed else {
        anyhow::bail!("{key} is not a token mail: only a token's interrupted delivery is settled (others are retried)");
    };
    let mut tx = pool.begin().await?;
    let last = sqlx::query!(
        "SELECT outcome, subject_type, subject FROM ledger.effects WHERE key = $1 ORDER BY id DESC LIMIT 1 FOR UPDATE",
        key
    )
    .fetch_optional(&mut *tx)
    .await?;
    let Some(last) = last.filter(|l| l.outcome == Outcome::Failed.as_str()) else {
        anyhow::bail!("{key} has not failed (its last journal row is not `failed`): nothing to settle");
    };
    let delivered = sqlx::query!(
        "UPDATE ledger.api_tokens SET delivered_at = now() WHERE key = $1 AND revoked_at IS NULL AND delivered_at IS NULL",
        EffectKey::Token(token.clone()).to_string()
    )
    .execute(&mut *tx)
    .await?;
    if delivered.rows_affected() == 0 {
        anyhow::bail!("{key}: no kept, undelivered token to settle (revoked or replaced since)");
    }
    let subject = Subject::from_columns(&last.subject_type, last.subject).context("journal subject")?;
    let row = Attempt {
        key: &parsed,
        subject: &subject,
        kind: EffectKind::Email,
        attempt: 0,
        request: format!("settled by {actor}: the customer has the token"),
        status: None,
        outcome: Outcome::Succeeded,
        error: None,
    };
    write(&mut tx, &row).await?;
    tx.commit().await?;
    Ok(())
}

/// A mail intent or an alert is simply pending again; a token mail is not an intent: re-armed,
/// its undelivered token is given up and the token pass issues and mails a new one.
async fn rearm_mail(tx: &mut PgConnection, key: &str, parsed: &EffectKey) -> anyhow::Result<()> {
    if let EffectKey::Mail(MailKey::Token(token)) = parsed {
        sqlx::query!(
            "UPDATE ledger.api_tokens SET revoked_at = now() WHERE key = $1 AND revoked_at IS NULL AND delivered_at IS NULL",
            EffectKey::Token(token.clone()).to_string()
        )
        .execute(&mut *tx)
        .await?;
        return Ok(());
    }
    let pending: bool = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM ledger.intents WHERE key = $1)
                  OR EXISTS (SELECT 1 FROM ledger.alerts WHERE key = $1) AS "exists!""#,
        key
    )
    .fetch_one(&mut *tx)
    .await?;
    if !pending {
        anyhow::bail!("{key} is neither a mail intent, an alert nor a token mail");
    }
    Ok(())
}
