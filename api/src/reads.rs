//! What the API reads of the projections and the usage journal, shared by its handlers: the
//! customers' entitled tiers, whether a customer is known, a day's counts. One place per read, so
//! the usage handler and its batcher import it instead of each other.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, NaiveDate, Utc};
use domain::catalog::{Catalog, Tier};
use domain::usage;
use sqlx::PgConnection;

use super::error::ApiError;

/// The customer's highest live tier ([`live_tiers`]).
pub async fn live_tier<'a>(
    conn: &mut PgConnection,
    catalog: &'a Catalog,
    customer: &str,
    now: DateTime<Utc>,
) -> Result<Option<&'a Tier>, ApiError> {
    let live = live_tiers(&mut *conn, &[customer.to_owned()], now).await?;
    Ok(usage::highest_tier(catalog, live.get(customer).map_or(&[], |t| t)))
}

/// The tiers of the subscriptions that entitle each customer at `now` (the fold's
/// `entitled_until`, as `/v1/access` reads it).
pub async fn live_tiers(
    executor: impl sqlx::PgExecutor<'_>,
    customers: &[String],
    now: DateTime<Utc>,
) -> Result<HashMap<String, Vec<String>>, ApiError> {
    let mut live: HashMap<String, Vec<String>> = HashMap::new();
    for row in sqlx::query!(
        "SELECT stripe_customer_id AS \"customer!\", tier FROM projection.subscriptions
         WHERE stripe_customer_id = ANY($1) AND entitled_until > $2",
        customers,
        now
    )
    .fetch_all(executor)
    .await?
    {
        live.entry(row.customer).or_default().push(row.tier);
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

/// The customer's counts on `day`, by metric.
pub async fn counts(
    conn: &mut PgConnection,
    customer: &str,
    day: NaiveDate,
) -> Result<BTreeMap<String, u64>, ApiError> {
    Ok(sqlx::query!(
        "SELECT metric, used FROM ledger.usage_counters WHERE stripe_customer_id = $1 AND day = $2",
        customer,
        day
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|r| (r.metric, u64::try_from(r.used).unwrap_or(0)))
    .collect())
}
