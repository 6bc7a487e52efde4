//! Auditors' commands: `timeline` (the merged story of one customer or subscription: Stripe events
//! in order, what each changed in the projections, the effects it caused) and `export` (events
//! as JSON Lines with the exact raw bodies, or CSV).
//!
//! The timeline is a replay: the customer's events are folded again with the catalog, so each
//! event's changes are computed by the same fold the projector runs, not reconstructed from logs.

use base64::Engine as _;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use domain::catalog::Catalog;
use domain::fold::{self, FoldConfig};
use domain::state::{Delta, Projections};
use futures::TryStreamExt;
use serde_json::json;
use sqlx::PgPool;

#[derive(Debug, sqlx::FromRow)]
struct EventRow {
    position: i64,
    stripe_event_id: String,
    event_type: String,
    created: DateTime<Utc>,
    received_at: DateTime<Utc>,
    source: String,
    customer_id: Option<String>,
    object_type: Option<String>,
    object_id: Option<String>,
    body_sha256: Vec<u8>,
    /// Exact bytes from `ledger.events`; redacted JSON from `audit.events` (None where the stored
    /// body is not JSON the database can hold).
    raw_body: Option<Vec<u8>>,
}

#[derive(Debug, sqlx::FromRow)]
struct EffectRow {
    key: String,
    kind: String,
    attempt: i32,
    request: String,
    response_status: Option<i32>,
    outcome: String,
    error: Option<String>,
    at: DateTime<Utc>,
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn unix(secs: Option<i64>) -> String {
    secs.and_then(|s| DateTime::from_timestamp(s, 0)).map_or_else(|| "-".to_owned(), time)
}

/// What one event changed, one line per row (the state before it is `state`).
pub fn describe(state: &Projections, delta: &Delta) -> Vec<String> {
    let mut lines = Vec::new();
    for a in &delta.accounts {
        let before = state.accounts.get(&a.stripe_customer_id);
        let what =
            if a.deleted { "deleted".to_owned() } else { format!("email {}", a.email.as_deref().unwrap_or("-")) };
        let verb = if before.is_none() { "new" } else { "now" };
        lines.push(format!("account {}: {verb} {what}", a.stripe_customer_id));
    }
    for s in &delta.subscriptions {
        let before = state.subscriptions.get(&s.stripe_subscription_id);
        let was = before.map_or_else(|| "new".to_owned(), |b| format!("was {} {}", b.status, b.tier));
        let mut line = format!("subscription {}: {} {} ({was})", s.stripe_subscription_id, s.status, s.tier);
        if s.grace_until.is_some() {
            let _ = write!(line, ", grace until {}", unix(s.grace_until));
        }
        if before.is_some_and(|b| b.last_paid_at != s.last_paid_at) {
            let _ = write!(line, ", paid at {}", unix(s.last_paid_at));
        }
        lines.push(line);
    }
    for i in &delta.instances {
        lines.push(format!("instance {}: desired {} ({})", i.stripe_subscription_id, i.desired.as_str(), i.tier));
    }
    for t in &delta.tokens {
        let what =
            if t.wanted { format!("wanted ({})", t.tier.as_deref().unwrap_or("-")) } else { "not wanted".into() };
        lines.push(format!("token {}: {what}", t.stripe_customer_id));
    }
    for g in &delta.credit_grants {
        let kind = if g.rollover_cap.is_some() { "cycle grant" } else { "pack grant" };
        lines.push(format!("credits {}: {kind} +{} ({})", g.stripe_customer_id, g.credits, g.key));
    }
    for a in &delta.anomalies {
        lines.push(format!("anomaly {} ({}): {}", a.key, a.kind, a.detail));
    }
    for key in &delta.resolved {
        lines.push(format!("anomaly {key} resolved"));
    }
    lines
}

fn effect_line(e: &EffectRow) -> String {
    let status = e.response_status.map(|s| format!(" HTTP {s}")).unwrap_or_default();
    let error = e.error.as_deref().map(|s| format!(" ({s})")).unwrap_or_default();
    format!("effect {} #{} {}: {}{status} at {}{error}", e.kind, e.attempt, e.outcome, e.request, time(e.at))
}

/// The journal without the `sending` rows an outcome row followed (that row tells the attempt); a
/// `sending` row left last (its sender stopped: delivery unknown) stays.
fn without_answered_sending(effects: Vec<EffectRow>) -> Vec<EffectRow> {
    let mut answered = std::collections::HashSet::new();
    let mut kept: Vec<EffectRow> = effects
        .into_iter()
        .rev()
        .filter(|e| {
            let keep = e.outcome != "sending" || !answered.contains(&e.key);
            answered.insert(e.key.clone());
            keep
        })
        .collect();
    kept.reverse();
    kept
}

/// A billing API command as the timeline shows it.
#[derive(Debug, sqlx::FromRow)]
struct CommandRow {
    endpoint: String,
    caller: String,
    response_status: i32,
    stripe_status: Option<i32>,
    at: DateTime<Utc>,
}

/// A credit debit (`POST /v1/usage` metric `credits`) as the timeline shows it.
#[derive(Debug, sqlx::FromRow)]
struct DebitRow {
    quantity: i64,
    idempotency_key: String,
    caller: String,
    balance_after: Option<i64>,
    recorded_at: DateTime<Utc>,
}

/// The product's own facts about a customer (commands and credit debits), oldest first, as
/// (time, line).
async fn product_facts(pool: &PgPool, id: &str) -> anyhow::Result<Vec<(DateTime<Utc>, String)>> {
    // Not compile-checked: audit views' columns are ones sqlx cannot prove non-null.
    let customer_of = "SELECT s.stripe_customer_id FROM audit.subscriptions s WHERE s.stripe_subscription_id = $1";
    let commands: Vec<CommandRow> = sqlx::query_as(&format!(
        "SELECT endpoint, caller, response_status, stripe_status, at FROM audit.commands
         WHERE customer = $1 OR customer IN ({customer_of}) ORDER BY id"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    let debits: Vec<DebitRow> = sqlx::query_as(&format!(
        "SELECT quantity, idempotency_key, caller, balance_after, recorded_at FROM audit.usage
         WHERE metric = 'credits' AND (stripe_customer_id = $1 OR stripe_customer_id IN ({customer_of})) ORDER BY id"
    ))
    .bind(id)
    .fetch_all(pool)
    .await?;
    let mut facts: Vec<(DateTime<Utc>, String)> = commands
        .iter()
        .map(|c| {
            let stripe = c.stripe_status.map(|s| format!(", Stripe {s}")).unwrap_or_default();
            (c.at, format!("command {} by {} at {}: {}{stripe}", c.endpoint, c.caller, time(c.at), c.response_status))
        })
        .collect();
    facts.extend(debits.iter().map(|d| {
        let left = d.balance_after.map(|b| format!(", balance {b}")).unwrap_or_default();
        let line = format!(
            "credits debited {} by {} at {} (key {}){left}",
            d.quantity,
            d.caller,
            time(d.recorded_at),
            d.idempotency_key
        );
        (d.recorded_at, line)
    }));
    facts.sort_by_key(|(at, _)| *at);
    Ok(facts)
}

/// The timeline of a `cus_...` or `sub_...` as text lines.
pub async fn timeline(pool: &PgPool, id: &str, catalog: &Catalog, config: &FoldConfig) -> anyhow::Result<Vec<String>> {
    // Not compile-checked: the columns are read into FromRow structs shared by both filters.
    let columns = "e.position, e.stripe_event_id, e.event_type, e.created, e.received_at, e.source, e.customer_id, \
                   e.object_type, e.object_id, e.body_sha256, e.raw_body";
    let sql = if id.starts_with("sub_") {
        format!(
            "SELECT {columns} FROM audit.events e
             WHERE e.object_id = $1 OR e.subscription_id = $1
             ORDER BY e.position"
        )
    } else {
        format!("SELECT {columns} FROM audit.events e WHERE e.customer_id = $1 ORDER BY e.position")
    };
    let events: Vec<EventRow> = sqlx::query_as(&sql).bind(id).fetch_all(pool).await?;
    if events.is_empty() {
        anyhow::bail!("no event in the log names {id}: unknown id");
    }
    let effects: Vec<EffectRow> = sqlx::query_as(
        "SELECT key, kind, attempt, request, response_status, outcome, error, at FROM audit.effects
         WHERE stripe_subscription_id = $1 OR stripe_customer_id = $1 OR stripe_subscription_id IN (
           SELECT s.stripe_subscription_id FROM audit.subscriptions s WHERE s.stripe_customer_id = $1)
         ORDER BY id",
    )
    .bind(id)
    .fetch_all(pool)
    .await?;
    let effects = without_answered_sending(effects);
    let facts = product_facts(pool, id).await?;
    let mut facts = facts.into_iter().peekable();
    let mut by_key: BTreeMap<&str, Vec<&EffectRow>> = BTreeMap::new();
    for e in &effects {
        by_key.entry(e.key.as_str()).or_default().push(e);
    }
    let mut shown = std::collections::BTreeSet::new();
    let mut out = vec![format!(
        "timeline of {id}: {} commands and debits, {} events, {} effect attempts",
        facts.len(),
        events.len(),
        effects.len()
    )];
    let mut state = Projections::default();
    for e in &events {
        // The product's facts in time order among the events (a checkout before its webhooks).
        while let Some((_, line)) = facts.next_if(|(at, _)| *at <= e.received_at) {
            out.push(line);
        }
        out.push(format!(
            "#{} {} {} {} ({}, received {})",
            e.position,
            time(e.created),
            e.event_type,
            e.stripe_event_id,
            e.source,
            time(e.received_at)
        ));
        let mut delta = fold::fold(&state, e.position, e.raw_body.as_deref().unwrap_or_default(), catalog, config);
        out.extend(describe(&state, &delta).into_iter().map(|l| format!("    {l}")));
        for intent in std::mem::take(&mut delta.intents) {
            out.push(format!("    intent {} ({})", intent.key, intent.detail));
            let key = intent.key.to_string();
            for effect in by_key.get(key.as_str()).into_iter().flatten() {
                out.push(format!("      {}", effect_line(effect)));
            }
            shown.insert(key);
        }
        state.apply(delta);
    }
    out.extend(facts.map(|(_, line)| line));
    let rest: Vec<&EffectRow> = effects.iter().filter(|e| !shown.contains(&e.key)).collect();
    if !rest.is_empty() {
        out.push("effects not caused by one event (deadlines, token lifecycle, alerts):".to_owned());
        out.extend(rest.iter().map(|e| format!("    {} {}", e.key, effect_line(e))));
    }
    Ok(out)
}

/// Export format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line; `raw_body` holds the body as a JSON string (`raw_body_base64`
    /// instead for a body that is not UTF-8).
    Jsonl,
    /// RFC 4180 CSV with a header row; `raw_body` is the body text (`base64:...` for a body that
    /// is not UTF-8).
    Csv,
}

/// Which events to export.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Stripe `created` at or after.
    pub from: Option<DateTime<Utc>>,
    /// Stripe `created` before.
    pub to: Option<DateTime<Utc>>,
    /// Only this customer's events.
    pub customer: Option<String>,
}

enum Sink<'a> {
    Json(&'a mut dyn Write),
    Csv(Box<csv::Writer<&'a mut dyn Write>>),
}

/// Writes the matching events, in log order, to `out`; returns how many.
pub async fn export(pool: &PgPool, filter: &Filter, format: Format, out: &mut dyn Write) -> anyhow::Result<u64> {
    // The owner (and the projector role) export the exact bytes; an auditor the redacted view.
    let exact: bool = sqlx::query_scalar(
        "SELECT CASE WHEN has_schema_privilege('ledger', 'USAGE')
                     THEN has_table_privilege('ledger.events', 'SELECT') ELSE false END",
    )
    .fetch_one(pool)
    .await?;
    let source = if exact { "ledger.events" } else { "audit.events" };
    eprintln!("exporting from {source}{}", if exact { " (exact bytes)" } else { " (secrets redacted)" });
    // Not compile-checked: the relation depends on the caller's rights.
    let sql = format!(
        "SELECT position, stripe_event_id, event_type, created, received_at, source, customer_id, object_type,
                object_id, body_sha256, raw_body
         FROM {source}
         WHERE ($1::timestamptz IS NULL OR created >= $1) AND ($2::timestamptz IS NULL OR created < $2)
           AND ($3::text IS NULL OR customer_id = $3)
         ORDER BY position"
    );
    let mut rows = sqlx::query_as::<_, EventRow>(&sql)
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.customer.as_deref())
        .fetch(pool);
    let mut sink = match format {
        Format::Jsonl => Sink::Json(out),
        Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
    };
    if let Sink::Csv(w) = &mut sink {
        w.write_record([
            "position",
            "stripe_event_id",
            "event_type",
            "created",
            "received_at",
            "source",
            "customer_id",
            "object_type",
            "object_id",
            "body_sha256",
            "raw_body",
        ])?;
    }
    let mut n = 0;
    while let Some(e) = rows.try_next().await? {
        // A body that is not UTF-8 (stored because it was signed) travels as base64, exact.
        let (body, body_base64) = match e.raw_body.map(String::from_utf8) {
            Some(Ok(text)) => (Some(text), None),
            Some(Err(bytes)) => (None, Some(base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes()))),
            None => (None, None),
        };
        match &mut sink {
            Sink::Json(out) => {
                let line = json!({
                    "position": e.position,
                    "stripe_event_id": e.stripe_event_id,
                    "event_type": e.event_type,
                    "created": time(e.created),
                    "received_at": e.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    "source": e.source,
                    "customer_id": e.customer_id,
                    "object_type": e.object_type,
                    "object_id": e.object_id,
                    "body_sha256": hex::encode(&e.body_sha256),
                    "raw_body": body,
                    "raw_body_base64": body_base64,
                });
                writeln!(out, "{line}")?;
            }
            Sink::Csv(w) => {
                w.write_record([
                    e.position.to_string(),
                    e.stripe_event_id,
                    e.event_type,
                    time(e.created),
                    e.received_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    e.source,
                    e.customer_id.unwrap_or_default(),
                    e.object_type.unwrap_or_default(),
                    e.object_id.unwrap_or_default(),
                    hex::encode(&e.body_sha256),
                    body.or(body_base64.map(|b| format!("base64:{b}"))).unwrap_or_default(),
                ])?;
            }
        }
        n += 1;
    }
    match &mut sink {
        Sink::Json(out) => out.flush()?,
        Sink::Csv(w) => w.flush()?,
    }
    Ok(n)
}
