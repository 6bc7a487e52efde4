//! What the API reads of the projections and the usage journal, shared by its handlers: the
//! customers' entitled tiers, whether a customer is known, a day's counts. One place per read, so
//! the usage handler and its batcher import it instead of each other.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use domain::catalog::{Catalog, Tier};
use domain::credits::{CreditAccount, Grant};
use domain::usage;
use sqlx::PgConnection;

use super::error::ApiError;

/// The customer's highest live tier and its billing period ([`live_plans`]).
pub async fn live_tier<'a>(
    conn: &mut PgConnection,
    catalog: &'a Catalog,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<Option<(&'a Tier, usage::Period)>, ApiError> {
    let live = live_plans(&mut *conn, &[customer.to_owned()], now).await?;
    Ok(usage::highest(catalog, live.get(customer).map_or(&[], |t| t)))
}

/// The subscriptions that entitle each customer at `now` (the fold's `entitled_until`, as
/// `/v1/access` reads it): tier and billing period.
pub async fn live_plans(
    executor: impl sqlx::PgExecutor<'_>,
    customers: &[String],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Vec<usage::Live>>, ApiError> {
    let mut live: HashMap<String, Vec<usage::Live>> = HashMap::new();
    for row in sqlx::query!(
        r#"SELECT stripe_customer_id AS "customer!", tier,
                  extract(epoch FROM current_period_start)::bigint AS period_start,
                  extract(epoch FROM current_period_end)::bigint AS period_end
           FROM projection.subscriptions WHERE stripe_customer_id = ANY($1) AND entitled_until > $2"#,
        customers,
        now
    )
    .fetch_all(executor)
    .await?
    {
        live.entry(row.customer)
            .or_default()
            .push(usage::Live { tier: row.tier, period: (row.period_start, row.period_end) });
    }
    Ok(live)
}

/// Which of `customers` the projections know at all (an account or a subscription names them).
pub async fn known_customers(
    executor: impl sqlx::PgExecutor<'_>,
    customers: &[String],
) -> Result<HashSet<String>, ApiError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT stripe_customer_id AS "customer!" FROM projection.accounts WHERE stripe_customer_id = ANY($1)
           UNION SELECT stripe_customer_id FROM projection.subscriptions WHERE stripe_customer_id = ANY($1)"#,
        customers
    )
    .fetch_all(executor)
    .await?
    .into_iter()
    .collect())
}

/// The customer's counters an answer at `now` may show (`ledger.current_counters`).
pub async fn counters(
    conn: &mut PgConnection,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<Vec<usage::Counter>, ApiError> {
    let [day, hour, minute] = usage::current_starts(now);
    let json = sqlx::query_scalar!(
        r#"SELECT ledger.current_counters($1, $2, $3, $4)::text AS "counters!""#,
        customer,
        day,
        hour,
        minute
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(usage::parse_counters(&json))
}

/// A customer's credit account: one row per grant (its consumption an index probe), one for the
/// latest debit.
pub async fn credit_account(conn: &mut PgConnection, customer: &str) -> Result<CreditAccount, ApiError> {
    let grants = sqlx::query!(
        r#"SELECT g.key, g.granted_for, g.credits, g.rollover_cap,
                  COALESCE((SELECT u.consumed_after FROM ledger.usage u
                            WHERE u.stripe_customer_id = g.stripe_customer_id AND u.metric = 'credits'
                              AND u.applies_at < g.granted_for
                            ORDER BY u.applies_at DESC, u.consumed_after DESC LIMIT 1), 0) AS "consumed_before!"
           FROM projection.credit_grants g WHERE g.stripe_customer_id = $1"#,
        customer
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|g| Grant {
        key: g.key,
        at: g.granted_for,
        credits: u64::try_from(g.credits).unwrap_or(0),
        rollover_cap: g.rollover_cap.map(|c| u64::try_from(c).unwrap_or(0)),
        consumed_before: u64::try_from(g.consumed_before).unwrap_or(0),
    })
    .collect();
    let last = sqlx::query!(
        r#"SELECT consumed_after AS "consumed!", applies_at AS "applies_at!" FROM ledger.usage
           WHERE stripe_customer_id = $1 AND metric = 'credits'
           ORDER BY applies_at DESC, consumed_after DESC LIMIT 1"#,
        customer
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(CreditAccount {
        grants,
        consumed: last.as_ref().map_or(0, |l| u64::try_from(l.consumed).unwrap_or(0)),
        last_debit: last.map(|l| l.applies_at),
    })
}
