//! `replay erase <cus_...> --reason TEXT [--yes]` (issue 32, docs/auditing.md "Erasure"): every
//! stored event about the customer (the customer object itself, and every object whose `customer`
//! is it) gets its personal values replaced (`ledger.redact_body`, migration 0037), through the one database
//! function allowed to write a body, `ledger.redact_event`, for the positions an append-only
//! `ledger.erasures` row and its `ledger.redactions` rows record first. Then the customer's tokens
//! are revoked and the projections are refolded by a rebuild (so rebuild == live holds after it).

use sqlx::{PgConnection, PgPool};

/// What an erasure will redact.
#[derive(Debug)]
pub struct Plan {
    /// `cus_...`.
    pub customer: String,
    /// Events about the customer.
    pub events: usize,
    /// Their positions with personal data still readable, and each one's redacted body.
    pub redactions: Vec<(i64, Vec<u8>)>,
}

/// Finds the events about `customer` and what `ledger.redact_body` (the redaction rule, kept
/// once, in the database) makes of each; nothing is written.
pub async fn plan(db: &mut PgConnection, customer: &str) -> anyhow::Result<Plan> {
    let rows: Vec<(i64, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT position, ledger.redact_body(raw_body) FROM ledger.events
         WHERE customer_id = $1 OR object_id = $1 ORDER BY position",
    )
    .bind(customer)
    .fetch_all(db)
    .await?;
    let events = rows.len();
    let redactions = rows.into_iter().filter_map(|(position, body)| body.map(|b| (position, b))).collect();
    Ok(Plan { customer: customer.to_owned(), events, redactions })
}

/// Records the erasure and redacts its bodies in one transaction, and revokes the customer's
/// tokens; returns the erasure's id and what it redacted.
///
/// The transaction holds the log's append lock from its start, so the plan it makes covers every
/// event stored before it, and any event appended after it commits sees the erasure and is
/// redacted on arrival (migration 0037): none falls between the two.
pub async fn apply(pool: &PgPool, customer: &str, reason: &str, requested_by: &str) -> anyhow::Result<(i64, Plan)> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('ledger.events/append', 0))").execute(&mut *tx).await?;
    let plan = plan(&mut tx, customer).await?;
    let (positions, bodies): (Vec<i64>, Vec<&[u8]>) =
        plan.redactions.iter().map(|(p, body)| (*p, body.as_slice())).unzip();
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO ledger.erasures (stripe_customer_id, reason, requested_by, positions) VALUES ($1, $2, $3, $4)
         RETURNING id",
    )
    .bind(customer)
    .bind(reason)
    .bind(requested_by)
    .bind(&positions)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO ledger.redactions (erasure_id, position, redacted_sha256)
         SELECT $1, p, sha256(b) FROM unnest($2::bigint[], $3::bytea[]) AS r (p, b)",
    )
    .bind(id)
    .bind(&positions)
    .bind(&bodies)
    .execute(&mut *tx)
    .await?;
    sqlx::query("SELECT ledger.redact_event($1, p, b) FROM unnest($2::bigint[], $3::bytea[]) AS r (p, b)")
        .bind(id)
        .bind(&positions)
        .bind(&bodies)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE ledger.api_tokens SET revoked_at = now() WHERE stripe_customer_id = $1 AND revoked_at IS NULL")
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok((id, plan))
}

/// The customer's address as the projections hold it before the erasure (what their mail files
/// were sent to).
pub async fn address(pool: &PgPool, customer: &str) -> anyhow::Result<Option<String>> {
    let email: Option<Option<String>> =
        sqlx::query_scalar("SELECT email FROM projection.accounts WHERE stripe_customer_id = $1")
            .bind(customer)
            .fetch_optional(pool)
            .await?;
    Ok(email.flatten())
}

/// Deletes the `.eml` files of `dir` (the projector's `MAIL_DIR`, local development's outbox)
/// that name `address` (any case); returns how many.
pub fn delete_mail_files(dir: &std::path::Path, address: &str) -> std::io::Result<usize> {
    let needle = address.to_lowercase();
    let mut deleted = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "eml") {
            continue;
        }
        if String::from_utf8_lossy(&std::fs::read(&path)?).to_lowercase().contains(&needle) {
            std::fs::remove_file(&path)?;
            deleted += 1;
        }
    }
    Ok(deleted)
}
