//! Group commit for quota counts: requests that arrive while earlier ones are being
//! written wait in a queue and are counted together, in one call of `ledger.count_usage_batch` and
//! one commit (one WAL flush for all of them), as ingest does with webhooks. Each request is still
//! counted by the one conditional write and gets its own answer. A batch forms from what is queued
//! when a writer is free; nothing waits on a timer. A batch that fails for any reason but the
//! database being unavailable is retried request by request (as ingest's appender and the
//! projector's quarantine do), so whatever one request does, the others get their own answer.

use std::sync::Arc;

use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use domain::catalog::{Catalog, Quota};
use domain::usage::{Span, WindowCount};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::access_cache::Notifier;
use super::error::ApiError;
use super::reads::{known_customers, live_plans};
use domain::usage;

/// Requests counted in one call at most.
const MAX_BATCH: usize = 64;

/// One request to count.
#[derive(Debug, Clone)]
pub struct CountRequest {
    /// The customer.
    pub customer: String,
    /// The metric (a quota metric of the catalog).
    pub metric: String,
    /// How much.
    pub quantity: i64,
    /// Its idempotency key.
    pub key: String,
    /// Who asked (`backend`, `customer:cus_...`).
    pub caller: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// What `ledger.count_usage_batch` answered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// `counted`, `replayed`, `refused`, `no_live_subscription` or `unknown_customer`.
    pub outcome: String,
    /// The metric of the (first) request under this key.
    pub metric: String,
    /// Its quantity.
    pub quantity: i64,
    /// Its UTC day.
    pub day: NaiveDate,
    /// The tightest window's count after it (or now, when refused).
    pub used: i64,
    /// The tightest window's quota (`None`: unlimited).
    pub quota: Option<i64>,
    /// For a replayed credit debit: the balance it left.
    pub balance: Option<i64>,
    /// Every window of the metric, as counted (empty for rows counted before windows existed).
    pub windows: Vec<WindowCount>,
}

impl Counted {
    /// Whether this request changed the day's count (not replayed, refused or without a tier).
    pub fn counted(&self) -> bool {
        self.outcome == "counted"
    }
}

type Reply = oneshot::Sender<Result<Counted, ApiError>>;

/// The queue's sending side; the writer tasks end when every clone is dropped.
#[derive(Debug, Clone)]
pub struct UsageBatcher {
    queue: mpsc::UnboundedSender<(CountRequest, Reply)>,
}

impl UsageBatcher {
    /// Starts the batcher: at most `writers` batches in flight (one pool connection each); every
    /// customer whose count was written is passed to `notifier`.
    pub fn start(pool: PgPool, catalog: Arc<Catalog>, writers: usize, notifier: Notifier) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<(CountRequest, Reply)>();
        let permits = Arc::new(Semaphore::new(writers.max(1)));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else { return };
                let Some(first) = pending.recv().await else { return };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH
                    && let Ok(next) = pending.try_recv()
                {
                    batch.push(next);
                }
                let (pool, catalog, notifier) = (pool.clone(), catalog.clone(), notifier.clone());
                tokio::spawn(async move {
                    let (requests, replies): (Vec<CountRequest>, Vec<Reply>) = batch.into_iter().unzip();
                    let answers = write_isolated(&pool, &catalog, &requests).await;
                    for ((answer, request), reply) in answers.into_iter().zip(&requests).zip(replies) {
                        if answer.as_ref().is_ok_and(Counted::counted) {
                            notifier.changed(&request.customer);
                        }
                        let _ = reply.send(answer);
                    }
                    drop(permit);
                });
            }
        });
        Self { queue }
    }

    /// Counts one request with whatever else is queued.
    pub async fn count(&self, request: CountRequest) -> Result<Counted, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send((request, reply)).map_err(|_| ApiError::unavailable())?;
        answer.await.map_err(|_| ApiError::unavailable())?
    }
}

/// One answer per request: the batch in one call and commit, or, when that fails for a reason
/// that is not an outage, each request alone (one bad request fails only itself).
async fn write_isolated(pool: &PgPool, catalog: &Catalog, requests: &[CountRequest]) -> Vec<Result<Counted, ApiError>> {
    match write(pool, catalog, requests).await {
        Ok(rows) => rows.into_iter().map(Ok).collect(),
        Err(error) if requests.len() == 1 || error.status == StatusCode::SERVICE_UNAVAILABLE => {
            requests.iter().map(|_| Err(error.clone())).collect()
        }
        Err(_) => {
            tracing::warn!(requests = requests.len(), "usage batch failed: counting its requests one by one");
            let mut answers = Vec::with_capacity(requests.len());
            for request in requests {
                let answer = write(pool, catalog, std::slice::from_ref(request)).await;
                answers.push(answer.and_then(|mut rows| rows.pop().ok_or_else(ApiError::unavailable)));
            }
            answers
        }
    }
}

/// The windows of one batch's requests, flattened: each window's request (1-based, ascending),
/// name, start, reset and quota (`None`: unlimited).
#[derive(Default)]
struct Windows {
    ords: Vec<i32>,
    names: Vec<&'static str>,
    starts: Vec<DateTime<Utc>>,
    resets: Vec<DateTime<Utc>>,
    quotas: Vec<Option<i64>>,
}

impl Windows {
    fn push(&mut self, ord: usize, span: Span, quota: Quota) {
        self.ords.push(i32::try_from(ord).unwrap_or(i32::MAX));
        self.names.push(span.window.as_str());
        self.starts.push(span.starts_at);
        self.resets.push(span.resets_at);
        self.quotas.push(match quota {
            Quota::Unlimited => None,
            Quota::Max(limit) => Some(i64::try_from(limit).unwrap_or(i64::MAX)),
        });
    }
}

/// One batch: the customers' live plans (one read), then every count in one call and commit.
/// A request of a customer without a live tier whom the projections do not know at all is
/// answered `unknown_customer` (404), not `no_live_subscription` (402).
async fn write(pool: &PgPool, catalog: &Catalog, requests: &[CountRequest]) -> Result<Vec<Counted>, ApiError> {
    let now = requests.iter().map(|r| r.at).max().unwrap_or_else(Utc::now);
    let customers: Vec<String> = requests.iter().map(|r| r.customer.clone()).collect();
    let live = live_plans(pool, &customers, now).await?;
    let mut windows = Windows::default();
    let mut lives = Vec::with_capacity(requests.len());
    for (i, r) in requests.iter().enumerate() {
        let plan = usage::highest(catalog, live.get(&r.customer).map_or(&[], |t| t));
        lives.push(plan.is_some());
        if let Some((tier, period)) = plan {
            for (span, quota) in usage::windows(Some(tier), &r.metric, r.at, period) {
                windows.push(i + 1, span, quota);
            }
        }
    }
    let column = |f: fn(&CountRequest) -> String| requests.iter().map(f).collect::<Vec<String>>();
    let lapsed: Vec<String> = customers.iter().filter(|c| !live.contains_key(*c)).cloned().collect();
    let known = if lapsed.is_empty() { Default::default() } else { known_customers(pool, &lapsed).await? };
    let rows = sqlx::query!(
        r#"SELECT ord AS "ord!", outcome AS "outcome!", r_metric AS "metric!", r_quantity AS "quantity!",
                  r_day AS "day!", r_used AS "used!", r_quota AS quota, r_balance AS balance,
                  r_windows::text AS windows
           FROM ledger.count_usage_batch($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
        &customers,
        &column(|r| r.metric.clone()),
        &requests.iter().map(|r| r.quantity).collect::<Vec<_>>(),
        &column(|r| r.key.clone()),
        &column(|r| r.caller.clone()),
        &requests.iter().map(|r| usage::day(r.at)).collect::<Vec<_>>(),
        &requests.iter().map(|r| r.at).collect::<Vec<_>>(),
        &lives,
        &windows.ords,
        &windows.names as &[&str],
        &windows.starts,
        &windows.resets,
        &windows.quotas as &[Option<i64>]
    )
    .fetch_all(pool)
    .await?;
    let mut answers = vec![None; requests.len()];
    for r in rows {
        let unknown = |ord: i32| {
            let customer = usize::try_from(ord).ok().and_then(|o| customers.get(o.wrapping_sub(1)));
            customer.is_some_and(|c| !live.contains_key(c) && !known.contains(c))
        };
        let outcome =
            if r.outcome == "no_live_subscription" && unknown(r.ord) { "unknown_customer".into() } else { r.outcome };
        let counted = Counted {
            outcome,
            metric: r.metric,
            quantity: r.quantity,
            day: r.day,
            used: r.used,
            quota: r.quota,
            balance: r.balance,
            windows: r.windows.as_deref().map(usage::parse_windows).unwrap_or_default(),
        };
        if let Some(slot) = usize::try_from(r.ord).ok().and_then(|o| answers.get_mut(o.wrapping_sub(1))) {
            *slot = Some(counted);
        }
    }
    answers.into_iter().map(|a| a.ok_or_else(ApiError::unavailable)).collect()
}
