//! `replay backfill`: copies events the log lacks from Stripe's `GET /v1/events` (the last 30
//! days, newest first, paginated with `starting_after`) through the same append path as webhooks
//! (same order, chain and dedupe rules), with source `backfill`.
//!
//! Resumable: each page's cursor is saved in `ledger.backfill_runs` after its events are
//! appended; a run that stopped (crash, Ctrl-C, Stripe down) continues from there. Events are
//! identified by their id, never by a payload hash: a backfilled copy may differ in shape from the
//! webhook copy and is then simply "already present".

use anyhow::Context;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::value::RawValue;
use shared::log::{AppendOutcome, NewEvent, Source, append_events};
use sqlx::PgPool;

use crate::stripe_read::{ReadSettings, Reader};

/// What to fetch and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where and how to read.
    pub read: ReadSettings,
    /// Only events created at or after this time (`created[gte]`).
    pub since: Option<DateTime<Utc>>,
    /// Only these types (`types[]`).
    pub types: Vec<String>,
    /// Events per page (Stripe allows 1 to 100).
    pub page_size: u32,
    /// Start a new run even if one with the same filters is unfinished.
    pub restart: bool,
}

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// The run's id in `ledger.backfill_runs`.
    pub run: i64,
    /// Events received from Stripe (this invocation and the resumed ones before it).
    pub fetched: i64,
    /// Events the log lacked, now appended.
    pub appended: i64,
    /// Events already in the log.
    pub present: i64,
    /// Whether this invocation resumed an unfinished run.
    pub resumed: bool,
}

#[derive(Debug, Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

#[derive(Debug, Deserialize)]
struct EventId {
    id: String,
}

/// The query string of one page request.
pub fn page_query(settings: &Settings, cursor: Option<&str>) -> Vec<(String, String)> {
    let mut query = vec![("limit".to_owned(), settings.page_size.to_string())];
    if let Some(cursor) = cursor {
        query.push(("starting_after".to_owned(), cursor.to_owned()));
    }
    if let Some(since) = settings.since {
        query.push(("created[gte]".to_owned(), since.timestamp().to_string()));
    }
    for t in &settings.types {
        query.push(("types[]".to_owned(), t.clone()));
    }
    query
}

/// Runs (or resumes) a backfill; `progress` gets (fetched, appended, present) after each page and
/// `on_retry` a line per retry.
pub async fn run(
    pool: &PgPool,
    settings: &Settings,
    progress: &mut dyn FnMut(Summary),
    on_retry: &mut dyn FnMut(String),
) -> anyhow::Result<Summary> {
    let mut reader = Reader::new(settings.read.clone())?;
    let types: Vec<String> = settings.types.clone();
    let unfinished = if settings.restart {
        None
    } else {
        sqlx::query!(
            r#"SELECT id, cursor, fetched, appended, present FROM ledger.backfill_runs
               WHERE finished_at IS NULL AND since IS NOT DISTINCT FROM $1 AND types = $2
               ORDER BY id DESC LIMIT 1"#,
            settings.since,
            &types
        )
        .fetch_optional(pool)
        .await?
    };
    let (mut summary, mut cursor) = match unfinished {
        Some(r) => (
            Summary { run: r.id, fetched: r.fetched, appended: r.appended, present: r.present, resumed: true },
            r.cursor,
        ),
        None => {
            let id = sqlx::query_scalar!(
                "INSERT INTO ledger.backfill_runs (since, types) VALUES ($1, $2) RETURNING id",
                settings.since,
                &types
            )
            .fetch_one(pool)
            .await?;
            (Summary { run: id, ..Summary::default() }, None)
        }
    };
    let received_by = format!("replay-backfill:{}", summary.run);
    loop {
        let query = page_query(settings, cursor.as_deref());
        let body = reader.get("/v1/events", &query, on_retry).await?.context("GET /v1/events: 404")?;
        let page: Page<'_> = serde_json::from_slice(&body).context("GET /v1/events: not a list of events")?;
        let mut events = Vec::with_capacity(page.data.len());
        for raw in &page.data {
            let bytes = Bytes::copy_from_slice(raw.get().as_bytes());
            let event = NewEvent::decode(bytes, None)
                .with_context(|| format!("GET /v1/events returned something that is not an event: {}", raw.get()))?;
            events.push(event);
        }
        let last_id = match page.data.last() {
            Some(raw) => Some(serde_json::from_str::<EventId>(raw.get())?.id),
            None => None,
        };
        // Oldest first within the page, so a page lands in Stripe's order.
        events.reverse();
        let outcomes = append_events(pool, &events, Source::Backfill, &received_by).await?;
        let appended = outcomes.iter().filter(|o| matches!(o, AppendOutcome::Appended { .. })).count() as i64;
        summary.fetched += events.len() as i64;
        summary.appended += appended;
        summary.present += events.len() as i64 - appended;
        if last_id.is_some() {
            cursor = last_id;
        }
        let done = !page.has_more || page.data.is_empty();
        sqlx::query!(
            "UPDATE ledger.backfill_runs SET cursor = $2, fetched = $3, appended = $4, present = $5,
                    finished_at = CASE WHEN $6 THEN now() END
             WHERE id = $1",
            summary.run,
            cursor,
            summary.fetched,
            summary.appended,
            summary.present,
            done
        )
        .execute(pool)
        .await?;
        progress(summary);
        if done {
            return Ok(summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            read: ReadSettings {
                api_base: "http://127.0.0.1:1".into(),
                api_key: secrecy::SecretString::from("sk_test"),
                max_attempts: 5,
                backoff: std::time::Duration::from_millis(500),
                requests_per_second: 0,
            },
            since: DateTime::from_timestamp(1_700_000_000, 0),
            types: vec!["invoice.paid".into(), "customer.created".into()],
            page_size: 100,
            restart: false,
        }
    }

    #[test]
    fn pages_ask_for_the_filters_and_continue_after_the_cursor() {
        let q = page_query(&settings(), Some("evt_9"));
        let get = |k: &str| q.iter().filter(|(key, _)| key == k).map(|(_, v)| v.as_str()).collect::<Vec<_>>();
        assert_eq!(get("limit"), ["100"]);
        assert_eq!(get("starting_after"), ["evt_9"]);
        assert_eq!(get("created[gte]"), ["1700000000"]);
        assert_eq!(get("types[]"), ["invoice.paid", "customer.created"]);
        assert!(page_query(&settings(), None).iter().all(|(k, _)| k != "starting_after"));
    }
}
