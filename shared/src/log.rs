//! The one way into the event log: [`append_events`] calls `ledger.append_events()`, which appends
//! a whole batch under the global append lock in one round trip (see `docs/event-log.md`).
//! Ingest group-commits concurrent webhooks through it; backfill appends with [`Source::Backfill`].

use bytes::Bytes;
use sqlx::PgExecutor;

use domain::envelope::Envelope;

/// Where an event came from (`ledger.events.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A signed webhook delivery.
    Webhook,
    /// Copied from Stripe's `GET /v1/events`.
    Backfill,
    /// A snapshot of Stripe's current object, appended by `replay reconcile --apply`.
    Reconcile,
    /// What Stripe answered when the projector fetched a part an event left out
    /// (`domain::fetched`); appended by the projector's dispatcher.
    Fetch,
}

impl Source {
    /// The stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Backfill => "backfill",
            Self::Reconcile => "reconcile",
            Self::Fetch => "fetch",
        }
    }
}

/// An event to append: its decoded envelope and the exact bytes it was decoded from.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Decoded from `raw_body`.
    pub envelope: Envelope,
    /// The exact body bytes as received (and signed).
    pub raw_body: Bytes,
    /// The `Stripe-Signature` header as received; `None` only for backfilled events.
    pub signature: Option<String>,
}

impl NewEvent {
    /// Decodes the envelope of `raw_body` and keeps the bytes as they are.
    pub fn decode(raw_body: Bytes, signature: Option<String>) -> Result<Self, domain::envelope::EnvelopeError> {
        Ok(Self { envelope: domain::envelope::decode(&raw_body)?, raw_body, signature })
    }
}

/// What happened to one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Newly appended at this position; durable once the call returns.
    Appended {
        /// Its position in the log.
        position: i64,
    },
    /// The id was already in the log (or earlier in the same batch): nothing was added.
    Duplicate {
        /// The position of the stored copy.
        position: i64,
    },
}

impl AppendOutcome {
    /// The event's position, new or existing.
    pub fn position(self) -> i64 {
        match self {
            Self::Appended { position } | Self::Duplicate { position } => position,
        }
    }
}

/// Appends `events` in order, in one call (one lock, one commit when run in autocommit).
///
/// Returns one outcome per input event, in input order. Must run on a plain connection or pool in
/// autocommit under READ COMMITTED: the commit that makes the batch durable is the one that ends
/// the call, and the function refuses other isolation levels.
pub async fn append_events(
    executor: impl PgExecutor<'_>,
    events: &[NewEvent],
    source: Source,
    received_by: &str,
) -> Result<Vec<AppendOutcome>, sqlx::Error> {
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let n = events.len();
    let mut ids = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut api_versions = Vec::with_capacity(n);
    let mut livemodes = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut object_types = Vec::with_capacity(n);
    let mut object_ids = Vec::with_capacity(n);
    let mut customer_ids = Vec::with_capacity(n);
    let mut subscription_ids = Vec::with_capacity(n);
    let mut bodies: Vec<&[u8]> = Vec::with_capacity(n);
    let mut signatures = Vec::with_capacity(n);
    for event in events {
        let e = &event.envelope;
        ids.push(e.id.as_str());
        types.push(e.event_type.as_str());
        api_versions.push(e.api_version.as_deref());
        livemodes.push(e.livemode);
        created.push(e.created);
        object_types.push(e.object_type.as_deref());
        object_ids.push(e.object_id.as_deref());
        customer_ids.push(e.customer_id.as_deref());
        subscription_ids.push(e.subscription_id.as_deref());
        bodies.push(&event.raw_body);
        signatures.push(event.signature.as_deref());
    }
    // Webhooks go through the entry point the ingest role may call (signed rows only), fetched
    // facts through the projector's (source `fetch` only); other unsigned sources through the one
    // only the replay role and the owner may call.
    let rows: Vec<(i32, i64, bool)> = match source {
        Source::Webhook => sqlx::query!(
            r#"SELECT ord AS "ord!", out_position AS "position!", inserted AS "inserted!"
               FROM ledger.append_webhook_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"#,
            &ids as &[&str],
            &types as &[&str],
            &api_versions as &[Option<&str>],
            &livemodes,
            &created,
            &object_types as &[Option<&str>],
            &object_ids as &[Option<&str>],
            &customer_ids as &[Option<&str>],
            &subscription_ids as &[Option<&str>],
            &bodies as &[&[u8]],
            &signatures as &[Option<&str>],
            received_by,
        )
        .fetch_all(executor)
        .await?
        .into_iter()
        .map(|r| (r.ord, r.position, r.inserted))
        .collect(),
        Source::Fetch => sqlx::query!(
            r#"SELECT ord AS "ord!", out_position AS "position!", inserted AS "inserted!"
               FROM ledger.append_fetched_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"#,
            &ids as &[&str],
            &types as &[&str],
            &api_versions as &[Option<&str>],
            &livemodes,
            &created,
            &object_types as &[Option<&str>],
            &object_ids as &[Option<&str>],
            &customer_ids as &[Option<&str>],
            &subscription_ids as &[Option<&str>],
            &bodies as &[&[u8]],
            received_by,
        )
        .fetch_all(executor)
        .await?
        .into_iter()
        .map(|r| (r.ord, r.position, r.inserted))
        .collect(),
        Source::Backfill | Source::Reconcile => sqlx::query!(
            r#"SELECT ord AS "ord!", out_position AS "position!", inserted AS "inserted!"
               FROM ledger.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"#,
            &ids as &[&str],
            &types as &[&str],
            &api_versions as &[Option<&str>],
            &livemodes,
            &created,
            &object_types as &[Option<&str>],
            &object_ids as &[Option<&str>],
            &customer_ids as &[Option<&str>],
            &subscription_ids as &[Option<&str>],
            &bodies as &[&[u8]],
            &signatures as &[Option<&str>],
            source.as_str(),
            received_by,
        )
        .fetch_all(executor)
        .await?
        .into_iter()
        .map(|r| (r.ord, r.position, r.inserted))
        .collect(),
    };

    let mut outcomes = vec![None; n];
    for (ord, position, inserted) in rows {
        let slot = usize::try_from(ord - 1)
            .ok()
            .and_then(|i| outcomes.get_mut(i))
            .ok_or_else(|| sqlx::Error::Protocol(format!("append_events returned ordinal {ord}")))?;
        *slot =
            Some(if inserted { AppendOutcome::Appended { position } } else { AppendOutcome::Duplicate { position } });
    }
    outcomes
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            o.ok_or_else(|| sqlx::Error::Protocol(format!("append_events returned no row for event {}", i + 1)))
        })
        .collect()
}
