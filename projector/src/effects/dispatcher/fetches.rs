//! Fetches: parts an event left out (`ledger.intents`, kind `fetch`: a Checkout Session's line
//! items, an invoice's lines beyond the first page, a subscription's period, a thin event's
//! object), fetched from Stripe (every page of a list) and appended to the log as a fact
//! (`domain::fetched`, source `fetch`), which the fold then reads like any event. The append comes first and is deduplicated by the fact's id (derived from the key), the
//! journal row second: a crash in between re-fetches and appends nothing new.

use chrono::{DateTime, Utc};
use domain::fetched::{self, Fetched, Request};
use futures::StreamExt;
use serde_json::Value;
use shared::log::{NewEvent, Source, append_events};
use shared::stripe_api::{Form, StripeApi, StripeError};

use super::Dispatcher;
use domain::keys::{EffectKey, EffectKind, FetchKey, Outcome, Subject};
use domain::plan::{self, Verdict};
use store::journal::{Attempt, Failure};

/// Most pages of one list (100 items each): a list longer than this is refused, not truncated.
const MAX_PAGES: usize = 100;

/// `received_by` of fetched facts.
const RECEIVED_BY: &str = "projector (fetch)";

/// A fetch intent with no ending journal row.
struct PendingFetch {
    key: FetchKey,
    subject: Subject,
    /// The position of the event it completes.
    position: i64,
    attempts: i64,
    last_at: Option<DateTime<Utc>>,
}

/// Why a fetch did not complete, and whether trying again may help.
struct NotFetched {
    verdict: Verdict,
    status: Option<u16>,
    error: String,
}

impl NotFetched {
    fn failed(error: impl Into<String>) -> Self {
        Self { verdict: Verdict::Failed, status: None, error: error.into() }
    }
}

impl From<StripeError> for NotFetched {
    fn from(error: StripeError) -> Self {
        match &error {
            StripeError::Refused { status, .. } => {
                Self { verdict: Verdict::Failed, status: Some(*status), error: error.to_string() }
            }
            StripeError::Unavailable(_) => Self { verdict: Verdict::Retry, status: None, error: error.to_string() },
        }
    }
}

impl Dispatcher {
    /// Fetches what is due now; returns how many were journaled. Without `STRIPE_API_KEY` the
    /// intents wait (their anomalies say so) and nothing is called.
    pub(super) async fn fetches(&self) -> anyhow::Result<usize> {
        let pending = self.pending_fetches().await?;
        let Some(stripe) = &self.stripe else {
            self.metrics.fetches_waiting.set(i64::try_from(pending.len()).unwrap_or(i64::MAX));
            if !pending.is_empty() {
                tracing::warn!(
                    pending = pending.len(),
                    "STRIPE_API_KEY is unset: parts events left out are not fetched"
                );
            }
            return Ok(0);
        };
        self.metrics.fetches_waiting.set(0);
        let results = futures::stream::iter(pending)
            .map(|p| self.fetch(stripe, p))
            .buffer_unordered(self.settings.concurrency.max(1))
            .collect::<Vec<anyhow::Result<bool>>>()
            .await;
        Ok(self.settle("fetch", results).into_iter().filter(|attempted| *attempted).count())
    }

    /// Fetch intents with no journal row yet, or whose latest row is a `retry`.
    async fn pending_fetches(&self) -> anyhow::Result<Vec<PendingFetch>> {
        let rows = sqlx::query!(
            r#"SELECT i.key AS "key!", i.position AS "position!", i.subject_type AS "subject_type!",
                      i.subject AS "subject!", a.attempts AS "attempts!", a.last_at
               FROM ledger.pending_effects p
               JOIN ledger.intents i ON i.key = p.key
               CROSS JOIN LATERAL (
                 SELECT count(*) FILTER (WHERE e.attempt > 0) AS attempts,
                        max(e.at) FILTER (WHERE e.attempt > 0) AS last_at
                 FROM ledger.effects e
                 WHERE e.key = i.key AND e.id > coalesce(
                   (SELECT max(t.id) FROM ledger.effects t WHERE t.key = i.key AND t.outcome <> 'retry'), 0)) a
               WHERE i.kind = 'fetch'
                 AND coalesce((SELECT e.outcome FROM ledger.effects e WHERE e.key = i.key ORDER BY e.id DESC LIMIT 1),
                              'retry') = 'retry'
               ORDER BY i.position, i.key"#
        )
        .fetch_all(&self.pool)
        .await?;
        let mut pending = Vec::with_capacity(rows.len());
        for r in rows {
            match (r.key.parse::<EffectKey>(), Subject::from_columns(&r.subject_type, r.subject)) {
                (Ok(EffectKey::Fetch(key)), Some(subject)) => pending.push(PendingFetch {
                    key,
                    subject,
                    position: r.position,
                    attempts: r.attempts,
                    last_at: r.last_at,
                }),
                _ => tracing::error!(key = r.key, "a pending fetch with an unreadable key or subject: skipped"),
            }
        }
        Ok(pending)
    }

    /// One pending fetch: fetched, appended and journaled if due; true when journaled.
    async fn fetch(&self, stripe: &StripeApi, p: PendingFetch) -> anyhow::Result<bool> {
        let key = EffectKey::Fetch(p.key.clone());
        let done = i32::try_from(p.attempts).unwrap_or(i32::MAX);
        if let Some(last_at) = p.last_at
            && !self.due(last_at, done, &key)
        {
            return Ok(false);
        }
        let request = format!("GET the {} of {}", p.key.part.field(), p.key.id);
        let result = self.fetch_and_append(stripe, &key, p.position).await?;
        let attempt = u32::try_from(done).unwrap_or(u32::MAX).saturating_add(1);
        let (outcome, status, error, request) = match result {
            Ok(appended) => (Outcome::Succeeded, Some(200), None, appended),
            Err(e) => (plan::outcome(e.verdict, attempt, self.settings.max_attempts), e.status, Some(e.error), request),
        };
        let row = Attempt {
            key: &key,
            subject: &p.subject,
            kind: EffectKind::Fetch,
            attempt: i32::try_from(attempt).unwrap_or(i32::MAX),
            request,
            status,
            outcome,
            error: error.clone(),
        };
        let detail = format!("fetch {key} failed: {}", error.as_deref().unwrap_or("-"));
        let mut tx = self.pool.begin().await?;
        self.journal_outcome(&mut tx, &row, Failure { detail: &detail, position: p.position }).await?;
        tx.commit().await?;
        tracing::info!(key = %key, outcome = outcome.as_str(), attempt, "fetch");
        Ok(true)
    }

    /// Fetches every page of the part, appends the completed event (autocommit: durable once
    /// this returns) and says what was asked and where the fact is. The outer error is the
    /// database's (the pass retries); the inner one Stripe's or the data's (journaled).
    async fn fetch_and_append(
        &self,
        stripe: &StripeApi,
        key: &EffectKey,
        position: i64,
    ) -> anyhow::Result<Result<String, NotFetched>> {
        let EffectKey::Fetch(fetch) = key else { anyhow::bail!("{key} is not a fetch") };
        let part = fetch.part;
        let original: Option<Vec<u8>> =
            sqlx::query_scalar!("SELECT raw_body FROM ledger.events WHERE position = $1", position)
                .fetch_optional(&self.pool)
                .await?;
        let Some(original) = original else {
            return Ok(Err(NotFetched::failed(format!("no event at position {position} to complete"))));
        };
        let request = serde_json::from_slice::<Value>(&original).ok().and_then(|o| part.request(&fetch.id, &o));
        let Some(request) = request else {
            return Ok(Err(NotFetched::failed(format!("no request fetches the {} of {}", part.field(), fetch.id))));
        };
        let fetched = match get_all(stripe, &request).await {
            Ok(fetched) => fetched,
            Err(e) => return Ok(Err(e)),
        };
        let summary = format!("{} ({} items)", fetched.requests.join(", "), fetched.items.len());
        let body = match fetched::event(&original, &key.to_string(), part, fetched, self.clock.now().timestamp()) {
            Ok(body) => body,
            Err(e) => return Ok(Err(NotFetched::failed(format!("the event to complete: {e:#}")))),
        };
        let event = match NewEvent::decode(body, None) {
            Ok(event) => event,
            Err(e) => return Ok(Err(NotFetched::failed(format!("the fetched fact does not decode: {e}")))),
        };
        let appended = append_events(&self.pool, std::slice::from_ref(&event), Source::Fetch, RECEIVED_BY).await?;
        let at = appended.first().map(|o| o.position()).unwrap_or_default();
        Ok(Ok(format!("{summary} -> {} at position {at}", event.envelope.id)))
    }
}

/// The object, or every page of the list, 100 items a page, in order.
async fn get_all(stripe: &StripeApi, request: &Request) -> Result<Fetched, NotFetched> {
    let path = &request.path;
    let mut fetched = Fetched::default();
    let mut after: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let query = if request.list {
            Form::new().set("limit", 100).set_opt("starting_after", after.as_deref())
        } else {
            Form::new().set_opt("expand[]", request.expand)
        };
        let page = stripe.get(path, &query).await?.body;
        let query_text: Vec<String> = query.pairs().iter().map(|(k, v)| format!("{k}={v}")).collect();
        fetched.requests.push(format!("GET {path}?{}", query_text.join("&")).trim_end_matches('?').to_owned());
        if !request.list {
            fetched.items.push(page);
            return Ok(fetched);
        }
        let items = page["data"].as_array().cloned().unwrap_or_default();
        after = items.last().and_then(|item| item["id"].as_str()).map(str::to_owned);
        fetched.items.extend(items);
        if !page["has_more"].as_bool().unwrap_or(false) {
            return Ok(fetched);
        }
        if after.is_none() {
            return Err(NotFetched::failed(format!("{path}: has_more without an item to continue after")));
        }
    }
    Err(NotFetched::failed(format!("{path}: more than {MAX_PAGES} pages")))
}
