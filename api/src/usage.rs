//! `POST /v1/usage`: the product counts what a customer uses. A quota metric is counted in every
//! window its tier names (period, day, hour, minute) by `ledger.count_usage_batch`, all or none,
//! never past a quota, requests arriving together in one commit ([`super::counter`]); metric
//! `credits` debits the balance under a per-customer lock. A repeated `idempotency_key` returns the
//! first answer and counts nothing. The model and the answers: docs/usage.md.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use domain::catalog::{CREDITS_METRIC, Catalog, Quota, Window};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::PgPool;

use super::access::AccessState;
use super::access_cache::{AccessCache, Dropped, Notifier};
use super::auth::{Authenticator, Caller};
use super::commands::idempotency_key;
use super::counter::{CountRequest, UsageBatcher};
use super::error::{ApiError, Code};
use domain::access::Answer;
use domain::clock::Clock;
use domain::usage::{self, WindowCount};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectedLabel {
    metric: String,
    reason: &'static str,
}

/// What `/v1/usage` needs. It runs on the access checks' pool: it is as hot and as short.
#[derive(Clone)]
pub struct UsageState {
    /// The database.
    pub pool: PgPool,
    /// Quotas come from it.
    pub catalog: Arc<Catalog>,
    /// The day a request counts in.
    pub clock: Arc<dyn Clock>,
    /// Who may call.
    pub auth: Authenticator,
    /// A customer's cached access answers go when its usage is counted (they show today's usage).
    access_cache: Arc<AccessCache<Answer>>,
    /// Other replicas' access caches are told through it.
    notifier: Notifier,
    counter: UsageBatcher,
    recorded: Family<MetricLabel, Counter>,
    rejected: Family<RejectedLabel, Counter>,
}

impl UsageState {
    /// The state, its metrics registered: the database, catalog, clock and cache of `access`.
    pub fn new(access: &AccessState, auth: Authenticator, registry: &mut Registry) -> Self {
        let (pool, catalog, clock) = (access.pool.clone(), access.catalog.clone(), access.clock.clone());
        let recorded = Family::<MetricLabel, Counter>::default();
        registry.register("usage_recorded", "Usage requests counted, by metric", recorded.clone());
        let rejected = Family::<RejectedLabel, Counter>::default();
        registry.register("usage_rejected", "Usage requests refused, by metric and reason", rejected.clone());
        // Half the pool writes batches; the other half stays for access checks and credits.
        let writers = (pool.options().get_max_connections() as usize / 2).max(1);
        let notifier = Notifier::start(pool.clone());
        let counter = UsageBatcher::start(pool.clone(), catalog.clone(), writers, notifier.clone());
        Self { pool, catalog, clock, auth, access_cache: access.cache.clone(), notifier, counter, recorded, rejected }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageRequest {
    customer: Option<String>,
    metric: String,
    /// 1 to [`MAX_QUANTITY`].
    quantity: i64,
    /// 1 to 255 printable ASCII characters (or the `Idempotency-Key` header).
    idempotency_key: Option<String>,
}

/// One request, checked: who, for whom, what, under which key, at what moment.
struct Usage {
    caller: Caller,
    customer: String,
    metric: String,
    quantity: i64,
    key: String,
    now: DateTime<Utc>,
}

/// The handler.
pub async fn record(State(state): State<UsageState>, headers: HeaderMap, body: Bytes) -> Response {
    let (metric, result) = match checked(&state, &headers, &body).await {
        Ok(usage) => {
            let metric = usage.metric.clone();
            let result =
                if metric == CREDITS_METRIC { debit(&state, &usage).await } else { count(&state, &usage).await };
            // The notification of the write comes too, later: the caller's next check on this
            // replica must already show it. (A refused request wrote nothing.)
            if result.is_ok() {
                state.access_cache.invalidate(&Dropped::Customers(vec![usage.customer]));
            }
            (metric, result)
        }
        Err(error) => ("-".to_owned(), Err(error)),
    };
    match result {
        Ok(answer) => {
            state.recorded.get_or_create(&MetricLabel { metric }).inc();
            super::error::with_headers(axum::Json(answer.body).into_response(), &answer.headers)
        }
        Err(error) => {
            tracing::info!(metric, code = error.code.as_str(), status = error.status.as_u16(), "usage refused");
            state.rejected.get_or_create(&RejectedLabel { metric, reason: error.code.as_str() }).inc();
            error.into_response()
        }
    }
}

/// Largest `quantity` one request may count: far above any real request, far enough below
/// `i64::MAX` that no counter of an unlimited metric can overflow.
pub const MAX_QUANTITY: i64 = 1_000_000_000;

async fn checked(state: &UsageState, headers: &HeaderMap, body: &[u8]) -> Result<Usage, ApiError> {
    let caller = state.auth.caller(&state.pool, headers, state.clock.now()).await?;
    let request: UsageRequest = serde_json::from_slice(body)
        .map_err(|error| ApiError::new(Code::InvalidRequest, format!("the body is not a valid request: {error}")))?;
    let customer = caller
        .customer(request.customer.as_deref())?
        .ok_or_else(|| ApiError::new(Code::CustomerRequired, "the backend names the `customer` it counts for"))?;
    if !super::is_stripe_id(&customer) {
        return Err(unknown_customer(&customer));
    }
    if !state.catalog.knows_metric(&request.metric) {
        return Err(ApiError::new(Code::UnknownMetric, format!("the catalog has no metric {}", request.metric)));
    }
    if !(1..=MAX_QUANTITY).contains(&request.quantity) {
        return Err(invalid_request(format!("quantity must be from 1 to {MAX_QUANTITY}")));
    }
    let key = match request.idempotency_key {
        Some(key) => key,
        None => idempotency_key(headers)?,
    };
    if !is_usage_key(&key) {
        return Err(invalid_request("idempotency_key must be 1 to 255 printable ASCII characters".to_owned()));
    }
    Ok(Usage { caller, customer, metric: request.metric, quantity: request.quantity, key, now: state.clock.now() })
}

/// A usage idempotency key: 1 to 255 printable ASCII characters (space to `~`). Nothing else
/// reaches a batch (a NUL, which PostgreSQL refuses in text, failed every request beside it).
fn is_usage_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| (b' '..=b'~').contains(&b))
}

fn invalid_request(message: String) -> ApiError {
    ApiError::new(Code::InvalidRequest, message)
}

fn unknown_customer(customer: &str) -> ApiError {
    ApiError::new(Code::UnknownCustomer, format!("no customer {customer} is known"))
}

/// Counts against every quota window of the metric under the customer's highest live tier, with
/// the requests queued beside it ([`UsageBatcher`]: one commit for them all).
async fn count(state: &UsageState, usage: &Usage) -> Result<Counted, ApiError> {
    let request = CountRequest {
        customer: usage.customer.clone(),
        metric: usage.metric.clone(),
        quantity: usage.quantity,
        key: usage.key.clone(),
        caller: usage.caller.journal_name(),
        at: usage.now,
    };
    let row = state.counter.count(request).await?;
    let stored = Stored::from(&row);
    let now = state.clock.now();
    match row.outcome.as_str() {
        "replayed" => stored.replayed(usage, row.balance, now),
        "unknown_customer" => Err(unknown_customer(&usage.customer)),
        "no_live_subscription" => Err(ApiError::new(Code::NoLiveSubscription, "the customer has no live subscription")),
        "refused" => Err(refused(usage, &stored.windows(), now)),
        _ => Ok(Counted::windowed(&stored.metric, &stored.windows(), now)),
    }
}

/// 429 `quota_exceeded`: the window that refused (of several, the one that resets last), its
/// `Retry-After`, every window in the body and the tightest in the `RateLimit` fields.
fn refused(usage: &Usage, windows: &[WindowCount], now: DateTime<Utc>) -> ApiError {
    let quantity = u64::try_from(usage.quantity).unwrap_or(u64::MAX);
    let by = usage::refusing(windows, quantity).or_else(|| usage::tightest(windows));
    let window = by.map_or("day", |w| w.span.window.as_str());
    let retry = by.map_or(1, |w| usage::retry_after(w.span.resets_at, now));
    let mut body = usage::answer(&usage.metric, windows);
    if let Some(object) = body.as_object_mut() {
        object.insert("window".to_owned(), json!(window));
    }
    let mut error = ApiError::new(
        Code::QuotaExceeded,
        format!("the {window} quota of {} is used up; it resets in {retry} s", usage.metric),
    )
    .with(body)
    .header("retry-after", retry.to_string());
    for (name, value) in usage::headers(&usage.metric, windows, now) {
        error = error.header(name, value);
    }
    error
}

/// A 200 answer: its body and its `RateLimit` fields.
pub struct Counted {
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Counted {
    /// The answer for `metric`'s `windows`: every window in the body, the tightest in the fields.
    fn windowed(metric: &str, windows: &[WindowCount], now: DateTime<Utc>) -> Self {
        Self { body: usage::answer(metric, windows), headers: usage::headers(metric, windows, now) }
    }

    fn plain(body: Value) -> Self {
        Self { body, headers: Vec::new() }
    }
}

/// A usage row as `ledger.usage` holds it: enough to give the first answer again.
struct Stored {
    metric: String,
    quantity: i64,
    day: NaiveDate,
    used: i64,
    quota: Option<i64>,
    windows: Vec<WindowCount>,
}

impl From<&super::counter::Counted> for Stored {
    fn from(row: &super::counter::Counted) -> Self {
        Self {
            metric: row.metric.clone(),
            quantity: row.quantity,
            day: row.day,
            used: row.used,
            quota: row.quota,
            windows: row.windows.clone(),
        }
    }
}

impl Stored {
    /// Its windows; a row counted before windows existed had one: its day.
    fn windows(&self) -> Vec<WindowCount> {
        if !self.windows.is_empty() {
            return self.windows.clone();
        }
        let quota = self.quota.map_or(Quota::Unlimited, |q| Quota::Max(u64::try_from(q).unwrap_or(0)));
        let day = self.day.and_time(chrono::NaiveTime::MIN).and_utc();
        let span = usage::span(Window::Day, day, (None, None));
        vec![WindowCount { span, used: u64::try_from(self.used).unwrap_or(0), quota }]
    }

    /// The first answer under this key, or 422 when the key came with another request.
    fn replayed(&self, usage: &Usage, balance: Option<i64>, now: DateTime<Utc>) -> Result<Counted, ApiError> {
        if self.metric != usage.metric || self.quantity != usage.quantity {
            return Err(ApiError::new(
                Code::IdempotencyKeyReused,
                "this idempotency_key was used with another metric or quantity",
            ));
        }
        Ok(match balance {
            Some(balance) => Counted::plain(credits_answer(self.used, balance)),
            None => Counted::windowed(&self.metric, &self.windows(), now),
        })
    }
}

fn credits_answer(used_today: i64, balance: i64) -> Value {
    json!({
        "metric": CREDITS_METRIC, "used": used_today, "limit": null, "remaining": balance, "resets_at": null,
        "balance": balance,
    })
}

/// Debits the credit balance: under the customer's lock, the balance from its grants and earlier
/// debits, then the debit, or 402 when the balance is short. Never negative.
async fn debit(state: &UsageState, usage: &Usage) -> Result<Counted, ApiError> {
    let mut tx = state.pool.begin().await?;
    for lock in [format!("{}/{}", usage.customer, usage.key), format!("{}/{CREDITS_METRIC}", usage.customer)] {
        sqlx::query!("SELECT pg_advisory_xact_lock(hashtextextended($1, 12))", lock).execute(&mut *tx).await?;
    }
    let prior = sqlx::query!(
        "SELECT metric, quantity, day, used_after, quota, balance_after FROM ledger.usage
         WHERE stripe_customer_id = $1 AND idempotency_key = $2",
        usage.customer,
        usage.key
    )
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(p) = prior {
        let stored = Stored {
            metric: p.metric,
            quantity: p.quantity,
            day: p.day,
            used: p.used_after,
            quota: p.quota,
            windows: Vec::new(),
        };
        return stored.replayed(usage, p.balance_after, usage.now);
    }
    let mut account = super::reads::credit_account(&mut tx, &usage.customer).await?;
    let quantity = u64::try_from(usage.quantity).unwrap_or(u64::MAX);
    let balance = account.balance();
    if balance < quantity
        && super::reads::known_customers(&mut *tx, std::slice::from_ref(&usage.customer)).await?.is_empty()
    {
        return Err(unknown_customer(&usage.customer));
    }
    if balance < quantity {
        return Err(ApiError::new(
            Code::InsufficientCredits,
            format!("the balance is {balance} credits, {quantity} were asked for"),
        )
        .with(json!({ "balance": balance })));
    }
    let at = account.applies_at(usage.now);
    account.add_debit(at, quantity);
    let balance_after = account.balance();
    let day = usage::day(usage.now);
    let [day_start, ..] = usage::current_starts(usage.now);
    let used = sqlx::query_scalar!(
        "INSERT INTO ledger.usage_counters AS c (stripe_customer_id, metric, quota_window, starts_at, day, used)
         VALUES ($1, $2, 'day', $3, $4, $5)
         ON CONFLICT (stripe_customer_id, metric, quota_window, starts_at) DO UPDATE SET used = c.used + excluded.used
         RETURNING c.used",
        usage.customer,
        CREDITS_METRIC,
        day_start,
        day,
        usage.quantity
    )
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query!(
        "INSERT INTO ledger.usage (stripe_customer_id, metric, quantity, idempotency_key, caller, day, recorded_at,
           applies_at, used_after, consumed_after, balance_after)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        usage.customer,
        CREDITS_METRIC,
        usage.quantity,
        usage.key,
        usage.caller.journal_name(),
        day,
        usage.now,
        at,
        used,
        i64::try_from(account.consumed).unwrap_or(i64::MAX),
        i64::try_from(balance_after).unwrap_or(i64::MAX)
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    state.notifier.changed(&usage.customer);
    Ok(Counted::plain(credits_answer(used, i64::try_from(balance_after).unwrap_or(i64::MAX))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_keys_are_printable_ascii_of_1_to_255_characters() {
        assert!(is_usage_key("a"));
        assert!(is_usage_key("order 42/line-7 ~"));
        assert!(is_usage_key(&"k".repeat(255)));
        for bad in ["", "nul\0inside", "tab\there", "caf\u{e9}", "new\nline", "\u{7f}"] {
            assert!(!is_usage_key(bad), "{bad:?}");
        }
        assert!(!is_usage_key(&"k".repeat(256)));
    }
}
