//! `replay reconcile`: compares Stripe's current customers and subscriptions with the projections
//! and, with `--apply`, repairs the difference the event-sourced way: each drifted object is
//! appended to the log as a snapshot event (source `reconcile`) and the projector folds it like any
//! other. Docs: docs/auditing.md ("Repairing data").
//!
//! - Lists with `status=all` (Stripe omits canceled subscriptions otherwise), 100 per page, through
//!   [`Reader`] (rate-limited, `Retry-After` honoured); resumable from `ledger.reconcile_runs`.
//! - A snapshot event's id is derived from the object's bytes (`evt_reconcile_<sha256>`), so the
//!   same object is appended once however often reconcile runs; its `created` is the fetch time,
//!   so a webhook about an older state can never overwrite it and a newer one does.
//! - An object whose projection comes from an event created at or after the fetch is "newer here":
//!   Stripe's listing is the stale side, nothing is reported or appended.
//! - Ours that the listing did not show are fetched one by one: a deleted customer's stub is a
//!   snapshot like any other; a 404 is "missing in Stripe" (reported; nothing to append).

use std::collections::{BTreeMap, HashMap};

use anyhow::Context;
use bytes::Bytes;
use domain::catalog::{Catalog, Product};
use domain::stripe::Object;
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use shared::log::{AppendOutcome, NewEvent, Source, append_events};
use sqlx::PgPool;

use crate::stripe_read::{ReadSettings, Reader};

/// Which objects to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    /// Stripe customers against `projection.accounts`.
    Customers,
    /// Stripe subscriptions against `projection.subscriptions`.
    Subscriptions,
    /// Stripe prices against `projection.prices` (what the pricing page and revenue read).
    Prices,
}

impl Kind {
    /// As stored and listed (`/v1/<kind>`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customers => "customers",
            Self::Subscriptions => "subscriptions",
            Self::Prices => "prices",
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Self::Customers => "customer",
            Self::Subscriptions => "subscription",
            Self::Prices => "price",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Self::Customers, Self::Subscriptions, Self::Prices].into_iter().find(|k| k.as_str() == text)
    }
}

/// What to compare and how.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where and how to read Stripe.
    pub read: ReadSettings,
    /// Customers, subscriptions, or both (in this order).
    pub objects: Vec<Kind>,
    /// Only objects created at or after this time (`created[gte]`); ours missing in Stripe are
    /// then not looked for (a partial listing proves nothing absent).
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Append drifted objects as snapshot events.
    pub apply: bool,
    /// Objects per page (Stripe allows 1 to 100).
    pub page_size: u32,
    /// Start a new run even if one with the same settings is unfinished.
    pub restart: bool,
}

/// What differs about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drift {
    /// Stripe has it, the projections do not.
    MissingHere,
    /// The projections have it, Stripe does not.
    MissingInStripe,
    /// A field differs.
    Field {
        /// `status`, `price`, `current_period_end`, `cancel_at_period_end`, `email`.
        field: &'static str,
        /// Ours.
        ours: String,
        /// Stripe's.
        stripe: String,
    },
}

impl Drift {
    /// The kind counted in the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MissingHere => "missing_here",
            Self::MissingInStripe => "missing_in_stripe",
            Self::Field { field, .. } => field,
        }
    }
}

/// A subscription as the projections hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurSubscription {
    /// Status.
    pub status: String,
    /// Price id.
    pub price_id: Option<String>,
    /// Tier.
    pub tier: String,
    /// Period end (unix seconds).
    pub current_period_end: Option<i64>,
    /// Pending cancellation.
    pub cancel_at_period_end: bool,
    /// The `created` of the event it was last set from.
    pub version_created: Option<i64>,
}

/// A price as the projections hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurPrice {
    /// Per unit, minor units.
    pub unit_amount: Option<i64>,
    /// Currency.
    pub currency: Option<String>,
    /// Billing interval (`None`: one-time).
    pub interval: Option<String>,
    /// Sellable.
    pub active: bool,
    /// The `created` of the event it was last set from.
    pub version_created: Option<i64>,
}

/// A customer as the projections hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OurCustomer {
    /// Email.
    pub email: Option<String>,
    /// Deleted in Stripe.
    pub deleted: bool,
    /// The `created` of the event it was last set from.
    pub version_created: Option<i64>,
}

fn show<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

fn field(field: &'static str, ours: String, stripe: String) -> Option<Drift> {
    (ours != stripe).then_some(Drift::Field { field, ours, stripe })
}

/// How Stripe's subscription differs from ours (status, price and tier, period end, pending
/// cancellation).
pub fn subscription_drift(
    ours: Option<&OurSubscription>,
    stripe: &domain::stripe::Subscription,
    catalog: &Catalog,
) -> Vec<Drift> {
    let Some(ours) = ours else { return vec![Drift::MissingHere] };
    let tier = |price: Option<&str>| match price.and_then(|p| catalog.product(p)) {
        Some(Product::Tier { tier, .. }) => tier.name.clone(),
        _ => domain::catalog::UNKNOWN_TIER.to_owned(),
    };
    let price = |price: Option<&str>, tier: &str| format!("{} ({tier})", show(price));
    [
        field("status", ours.status.clone(), stripe.status.as_str().to_owned()),
        field("price", price(ours.price_id.as_deref(), &ours.tier), price(stripe.price_id(), &tier(stripe.price_id()))),
        field("current_period_end", show(ours.current_period_end), show(stripe.current_period_end)),
        field("cancel_at_period_end", ours.cancel_at_period_end.to_string(), stripe.cancel_at_period_end.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// How Stripe's price differs from ours (amount, currency, interval, whether it is active).
pub fn price_drift(ours: Option<&OurPrice>, stripe: &domain::stripe::Price) -> Vec<Drift> {
    let Some(ours) = ours else { return vec![Drift::MissingHere] };
    let interval = stripe.recurring.as_ref().map(|r| r.interval.as_str());
    [
        field("unit_amount", show(ours.unit_amount), show(stripe.unit_amount)),
        field("currency", show(ours.currency.as_deref()), show(stripe.currency.as_deref())),
        field("interval", show(ours.interval.as_deref()), show(interval)),
        field("active", ours.active.to_string(), stripe.active.to_string()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// How Stripe's customer differs from ours (email, deletion).
pub fn customer_drift(ours: Option<&OurCustomer>, stripe: &domain::stripe::Customer) -> Vec<Drift> {
    let Some(ours) = ours else { return vec![Drift::MissingHere] };
    if stripe.deleted || ours.deleted {
        return field("deleted", ours.deleted.to_string(), stripe.deleted.to_string()).into_iter().collect();
    }
    field("email", show(ours.email.as_deref()), show(stripe.email.as_deref())).into_iter().collect()
}

#[derive(Debug, Deserialize)]
struct Head {
    id: String,
    #[serde(default)]
    livemode: bool,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    deleted: bool,
}

/// The snapshot event of `object` (as Stripe sent it) fetched at `fetched_at`: the type Stripe
/// would have sent for that state, an id derived from the object's bytes.
pub fn snapshot_event(kind: Kind, object: &str, fetched_at: i64) -> anyhow::Result<Bytes> {
    let head: Head = serde_json::from_str(object).context("a Stripe object without an id")?;
    let event_type = match kind {
        Kind::Customers if head.deleted => "customer.deleted",
        Kind::Customers => "customer.updated",
        Kind::Subscriptions if head.status.as_deref() == Some("canceled") => "customer.subscription.deleted",
        Kind::Subscriptions => "customer.subscription.updated",
        Kind::Prices => "price.updated",
    };
    let digest = Sha256::digest(object.as_bytes());
    let id = format!("evt_reconcile_{}", &hex::encode(digest)[..32]);
    let body = format!(
        "{{\"id\":\"{id}\",\"object\":\"event\",\"api_version\":\"{}\",\"created\":{fetched_at},\"data\":{{\"object\":{object}}},\"livemode\":{},\"pending_webhooks\":0,\"request\":{{\"id\":null,\"idempotency_key\":null}},\"type\":\"{event_type}\"}}",
        shared::stripe_api::API_VERSION,
        head.livemode
    );
    debug_assert!(!head.id.is_empty());
    Ok(Bytes::from(body))
}

/// One object examined: its id, what drifted, and the snapshot to append when something did.
#[derive(Debug)]
pub struct Examined {
    /// `cus_...` or `sub_...`.
    pub id: String,
    /// What drifted (empty: in sync, or newer here).
    pub drifts: Vec<Drift>,
    /// Ours is newer than the fetch.
    pub newer_here: bool,
    /// The snapshot event.
    pub snapshot: NewEvent,
}

/// Ours for a page of ids.
#[derive(Debug, Default)]
pub struct Ours {
    /// By subscription id.
    pub subscriptions: HashMap<String, OurSubscription>,
    /// By customer id.
    pub customers: HashMap<String, OurCustomer>,
    /// By price id.
    pub prices: HashMap<String, OurPrice>,
}

impl Ours {
    fn version(&self, kind: Kind, id: &str) -> Option<i64> {
        match kind {
            Kind::Customers => self.customers.get(id).and_then(|c| c.version_created),
            Kind::Subscriptions => self.subscriptions.get(id).and_then(|s| s.version_created),
            Kind::Prices => self.prices.get(id).and_then(|p| p.version_created),
        }
    }
}

/// Compares one Stripe object (its JSON) with ours.
pub fn examine(kind: Kind, object: &str, fetched_at: i64, ours: &Ours, catalog: &Catalog) -> anyhow::Result<Examined> {
    let bytes = snapshot_event(kind, object, fetched_at)?;
    let event =
        domain::stripe::decode(&bytes).map_err(|e| anyhow::anyhow!("Stripe sent an object we cannot read: {e}"))?;
    let (id, drifts) = match event.object {
        Object::Subscription(s) => {
            let drifts = subscription_drift(ours.subscriptions.get(&s.id), &s, catalog);
            (s.id, drifts)
        }
        Object::Customer(c) => {
            let drifts = customer_drift(ours.customers.get(&c.id), &c);
            (c.id, drifts)
        }
        Object::Price(p) => {
            let drifts = price_drift(ours.prices.get(&p.id), &p);
            (p.id, drifts)
        }
        _ => anyhow::bail!("GET /v1/{} returned something else: {object}", kind.as_str()),
    };
    let newer_here = ours.version(kind, &id).is_some_and(|created| created >= fetched_at);
    let snapshot = NewEvent::decode(bytes, None)?;
    let drifts = if newer_here { Vec::new() } else { drifts };
    Ok(Examined { id, drifts, newer_here, snapshot })
}

/// The line a person reads for one drifted object.
pub fn drift_line(kind: Kind, id: &str, drifts: &[Drift]) -> String {
    let parts: Vec<String> = drifts
        .iter()
        .map(|d| match d {
            Drift::MissingHere => "missing here".to_owned(),
            Drift::MissingInStripe => "missing in Stripe".to_owned(),
            Drift::Field { field, ours, stripe } => format!("{field}: ours {ours}, Stripe {stripe}"),
        })
        .collect();
    format!("{} {id}: {}", kind.singular(), parts.join("; "))
}

/// What a run found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The run's id in `ledger.reconcile_runs`.
    pub run: i64,
    /// Objects compared.
    pub compared: i64,
    /// Objects whose projection is newer than Stripe's listing (skipped).
    pub newer_here: i64,
    /// Objects with any drift.
    pub drifted: i64,
    /// Snapshot events appended (`--apply`).
    pub appended: i64,
    /// Drifts by kind.
    pub by_kind: BTreeMap<String, i64>,
    /// Whether this invocation resumed an unfinished run.
    pub resumed: bool,
}

impl Summary {
    fn add(&mut self, examined: &[(Kind, String, Vec<Drift>, bool)]) {
        for (_, _, drifts, newer) in examined {
            self.compared += 1;
            self.newer_here += i64::from(*newer);
            self.drifted += i64::from(!drifts.is_empty());
            for d in drifts {
                *self.by_kind.entry(d.kind().to_owned()).or_default() += 1;
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct Page<'a> {
    #[serde(borrow)]
    data: Vec<&'a RawValue>,
    has_more: bool,
}

/// Where a run is.
struct Position {
    kind: Kind,
    cursor: Option<String>,
    listed: bool,
}

/// Where a run reports: each drifted object's line and each retry, and the counts after each page.
pub struct Report<'a> {
    /// A line a person reads.
    pub line: &'a mut dyn FnMut(String),
    /// The counts so far.
    pub progress: &'a mut dyn FnMut(&Summary),
}

/// Runs (or resumes) a reconcile.
pub async fn run(pool: &PgPool, settings: &Settings, catalog: &Catalog, report: Report<'_>) -> anyhow::Result<Summary> {
    let Report { line, progress } = report;
    let mut reader = Reader::new(settings.read.clone())?;
    let (mut summary, mut at) = start(pool, settings).await?;
    let kinds: Vec<Kind> = settings.objects.iter().copied().filter(|k| *k >= at.kind).collect();
    for kind in kinds {
        if kind != at.kind {
            at = Position { kind, cursor: None, listed: false };
        }
        while !at.listed {
            let fetched_at = chrono::Utc::now().timestamp();
            let query = list_query(settings, kind, at.cursor.as_deref());
            let body = reader.get(&format!("/v1/{}", kind.as_str()), &query, line).await?;
            let body = body.with_context(|| format!("GET /v1/{}: 404", kind.as_str()))?;
            let page: Page<'_> = serde_json::from_slice(&body).context("not a Stripe list")?;
            let objects: Vec<&str> = page.data.iter().map(|raw| raw.get()).collect();
            let last = objects.last().map(|o| serde_json::from_str::<Head>(o).map(|h| h.id)).transpose()?;
            at.cursor = last.or(at.cursor.take());
            at.listed = !page.has_more || objects.is_empty();
            let examined = compare(pool, kind, &objects, fetched_at, catalog).await?;
            settle(pool, settings, &mut summary, &at, examined, line).await?;
            progress(&summary);
        }
        if settings.since.is_none() {
            unlisted(pool, settings, &mut reader, catalog, &mut summary, kind, line).await?;
        }
    }
    sqlx::query!("UPDATE ledger.reconcile_runs SET finished_at = now() WHERE id = $1", summary.run)
        .execute(pool)
        .await?;
    Ok(summary)
}

fn list_query(settings: &Settings, kind: Kind, cursor: Option<&str>) -> Vec<(String, String)> {
    let mut query = vec![("limit".to_owned(), settings.page_size.to_string())];
    if kind == Kind::Subscriptions {
        query.push(("status".to_owned(), "all".to_owned()));
    }
    if let Some(cursor) = cursor {
        query.push(("starting_after".to_owned(), cursor.to_owned()));
    }
    if let Some(since) = settings.since {
        query.push(("created[gte]".to_owned(), since.timestamp().to_string()));
    }
    query
}

/// The unfinished run with the same settings, or a new one.
async fn start(pool: &PgPool, settings: &Settings) -> anyhow::Result<(Summary, Position)> {
    let objects: Vec<String> = settings.objects.iter().map(|k| k.as_str().to_owned()).collect();
    let first = *settings.objects.first().context("reconcile needs at least one kind of object")?;
    if !settings.restart
        && let Some(r) = sqlx::query!(
            r#"SELECT id, kind, cursor, listed, compared, newer_here, drifted, appended, drift::text AS "drift!"
               FROM ledger.reconcile_runs
               WHERE finished_at IS NULL AND objects = $1 AND since IS NOT DISTINCT FROM $2 AND apply = $3
               ORDER BY id DESC LIMIT 1"#,
            &objects,
            settings.since,
            settings.apply
        )
        .fetch_optional(pool)
        .await?
    {
        let summary = Summary {
            run: r.id,
            compared: r.compared,
            newer_here: r.newer_here,
            drifted: r.drifted,
            appended: r.appended,
            by_kind: serde_json::from_str(&r.drift).unwrap_or_default(),
            resumed: true,
        };
        let kind = r.kind.as_deref().and_then(Kind::parse).unwrap_or(first);
        return Ok((summary, Position { kind, cursor: r.cursor, listed: r.listed }));
    }
    let id = sqlx::query_scalar!(
        "INSERT INTO ledger.reconcile_runs (objects, since, apply, kind) VALUES ($1, $2, $3, $4) RETURNING id",
        &objects,
        settings.since,
        settings.apply,
        first.as_str()
    )
    .fetch_one(pool)
    .await?;
    Ok((Summary { run: id, ..Summary::default() }, Position { kind: first, cursor: None, listed: false }))
}

/// Examines a page of Stripe objects against ours.
async fn compare(
    pool: &PgPool,
    kind: Kind,
    objects: &[&str],
    fetched_at: i64,
    catalog: &Catalog,
) -> anyhow::Result<Vec<(Kind, Examined)>> {
    let ids: Vec<String> =
        objects.iter().map(|o| serde_json::from_str::<Head>(o).map(|h| h.id)).collect::<Result<_, _>>()?;
    let ours = load_ours(pool, kind, &ids).await?;
    objects.iter().map(|o| Ok((kind, examine(kind, o, fetched_at, &ours, catalog)?))).collect()
}

/// Records a batch of examined objects: their ids as seen, the drifted ones' lines and (with
/// `--apply`) snapshots, the counts and the position, in one transaction.
async fn settle(
    pool: &PgPool,
    settings: &Settings,
    summary: &mut Summary,
    at: &Position,
    examined: Vec<(Kind, Examined)>,
    line: &mut dyn FnMut(String),
) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let seen: Vec<String> = examined.iter().map(|(_, e)| e.id.clone()).collect();
    sqlx::query!(
        "INSERT INTO ledger.reconcile_seen (run, object_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING",
        summary.run,
        &seen
    )
    .execute(&mut *tx)
    .await?;
    let mut snapshots = Vec::new();
    let mut counted = Vec::new();
    for (kind, e) in examined {
        if !e.drifts.is_empty() {
            line(drift_line(kind, &e.id, &e.drifts));
            snapshots.push(e.snapshot);
        }
        counted.push((kind, e.id, e.drifts, e.newer_here));
    }
    summary.add(&counted);
    if settings.apply && !snapshots.is_empty() {
        let received_by = format!("replay-reconcile:{}", summary.run);
        let outcomes = append_events(&mut *tx, &snapshots, Source::Reconcile, &received_by).await?;
        summary.appended += outcomes.iter().filter(|o| matches!(o, AppendOutcome::Appended { .. })).count() as i64;
    }
    sqlx::query!(
        "UPDATE ledger.reconcile_runs SET kind = $2, cursor = $3, listed = $4, compared = $5, newer_here = $6,
                drifted = $7, appended = $8, drift = $9::text::jsonb
         WHERE id = $1",
        summary.run,
        at.kind.as_str(),
        at.cursor,
        at.listed,
        summary.compared,
        summary.newer_here,
        summary.drifted,
        summary.appended,
        serde_json::to_string(&summary.by_kind)?
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ours that Stripe's listing did not show: fetched one by one (a 404 is missing in Stripe).
async fn unlisted(
    pool: &PgPool,
    settings: &Settings,
    reader: &mut Reader,
    catalog: &Catalog,
    summary: &mut Summary,
    kind: Kind,
    line: &mut dyn FnMut(String),
) -> anyhow::Result<()> {
    let ids = not_seen(pool, kind, summary.run).await?;
    for id in ids {
        let fetched_at = chrono::Utc::now().timestamp();
        let path = format!("/v1/{}/{id}", kind.as_str());
        let at = Position { kind, cursor: None, listed: true };
        match reader.get(&path, &[], line).await? {
            Some(body) => {
                let object = std::str::from_utf8(&body).context("not UTF-8")?;
                let examined = compare(pool, kind, &[object], fetched_at, catalog).await?;
                settle(pool, settings, summary, &at, examined, line).await?;
            }
            None => {
                let drifts = vec![Drift::MissingInStripe];
                line(drift_line(kind, &id, &drifts));
                summary.add(&[(kind, id.clone(), drifts, false)]);
                sqlx::query!(
                    "INSERT INTO ledger.reconcile_seen (run, object_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    summary.run,
                    id
                )
                .execute(pool)
                .await?;
            }
        }
    }
    Ok(())
}

/// Our ids of `kind` (live ones: not deleted customers) the run has not seen.
async fn not_seen(pool: &PgPool, kind: Kind, run: i64) -> sqlx::Result<Vec<String>> {
    match kind {
        Kind::Customers => {
            sqlx::query_scalar!(
                "SELECT a.stripe_customer_id FROM projection.accounts a
                 WHERE NOT a.deleted AND NOT EXISTS (
                   SELECT 1 FROM ledger.reconcile_seen s WHERE s.run = $1 AND s.object_id = a.stripe_customer_id)
                 ORDER BY 1",
                run
            )
            .fetch_all(pool)
            .await
        }
        Kind::Subscriptions => {
            sqlx::query_scalar!(
                "SELECT s.stripe_subscription_id FROM projection.subscriptions s
                 WHERE NOT EXISTS (
                   SELECT 1 FROM ledger.reconcile_seen r WHERE r.run = $1 AND r.object_id = s.stripe_subscription_id)
                 ORDER BY 1",
                run
            )
            .fetch_all(pool)
            .await
        }
        Kind::Prices => {
            sqlx::query_scalar!(
                "SELECT p.price_id FROM projection.prices p
                 WHERE NOT EXISTS (SELECT 1 FROM ledger.reconcile_seen r WHERE r.run = $1 AND r.object_id = p.price_id)
                 ORDER BY 1",
                run
            )
            .fetch_all(pool)
            .await
        }
    }
}

/// Ours among `ids`.
async fn load_ours(pool: &PgPool, kind: Kind, ids: &[String]) -> sqlx::Result<Ours> {
    let mut ours = Ours::default();
    match kind {
        Kind::Subscriptions => {
            let rows = sqlx::query!(
                "SELECT stripe_subscription_id, status, price_id, tier, current_period_end, cancel_at_period_end,
                        version_created
                 FROM projection.subscriptions WHERE stripe_subscription_id = ANY($1)",
                ids
            )
            .fetch_all(pool)
            .await?;
            for r in rows {
                let row = OurSubscription {
                    status: r.status,
                    price_id: r.price_id,
                    tier: r.tier,
                    current_period_end: r.current_period_end.map(|t| t.timestamp()),
                    cancel_at_period_end: r.cancel_at_period_end,
                    version_created: r.version_created,
                };
                ours.subscriptions.insert(r.stripe_subscription_id, row);
            }
        }
        Kind::Customers => {
            let rows = sqlx::query!(
                "SELECT stripe_customer_id, email, deleted, version_created FROM projection.accounts
                 WHERE stripe_customer_id = ANY($1)",
                ids
            )
            .fetch_all(pool)
            .await?;
            for r in rows {
                let row = OurCustomer { email: r.email, deleted: r.deleted, version_created: r.version_created };
                ours.customers.insert(r.stripe_customer_id, row);
            }
        }
        Kind::Prices => {
            let rows = sqlx::query!(
                "SELECT price_id, unit_amount, currency, interval, active, version_created FROM projection.prices
                 WHERE price_id = ANY($1)",
                ids
            )
            .fetch_all(pool)
            .await?;
            for r in rows {
                let row = OurPrice {
                    unit_amount: r.unit_amount,
                    currency: r.currency,
                    interval: r.interval,
                    active: r.active,
                    version_created: r.version_created,
                };
                ours.prices.insert(r.price_id, row);
            }
        }
    }
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn catalog() -> Catalog {
        Catalog::example().expect("catalog")
    }

    fn subscription(status: &str, price: &str, end: i64, cancel: bool) -> String {
        json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": status,
                "cancel_at_period_end": cancel, "livemode": false,
                "items": { "object": "list", "data": [{ "id": "si_1", "object": "subscription_item",
                  "price": { "id": price, "object": "price" }, "quantity": 1,
                  "current_period_start": end - 100, "current_period_end": end }] } })
        .to_string()
    }

    fn ours(status: &str, price: &str, tier: &str, end: i64, version: i64) -> Ours {
        let mut ours = Ours::default();
        ours.subscriptions.insert(
            "sub_1".into(),
            OurSubscription {
                status: status.into(),
                price_id: Some(price.into()),
                tier: tier.into(),
                current_period_end: Some(end),
                cancel_at_period_end: false,
                version_created: Some(version),
            },
        );
        ours
    }

    #[test]
    fn each_field_that_differs_is_named_with_both_values() {
        let stripe = subscription("canceled", "price_professional_monthly", 2_000, true);
        let ours = ours("active", "price_starter_monthly", "starter", 1_000, 50);
        let e = examine(Kind::Subscriptions, &stripe, 100, &ours, &catalog()).expect("examined");
        let kinds: Vec<&str> = e.drifts.iter().map(Drift::kind).collect();
        assert_eq!(kinds, ["status", "price", "current_period_end", "cancel_at_period_end"]);
        let line = drift_line(Kind::Subscriptions, &e.id, &e.drifts);
        assert!(line.starts_with("subscription sub_1: status: ours active, Stripe canceled;"), "{line}");
        assert!(
            line.contains(
                "price: ours price_starter_monthly (starter), Stripe price_professional_monthly (professional)"
            )
        );
        assert_eq!(e.snapshot.envelope.event_type, "customer.subscription.deleted");
        assert_eq!(e.snapshot.envelope.created, 100);
    }

    #[test]
    fn in_sync_is_no_drift_and_newer_here_is_not_reported() {
        let stripe = subscription("active", "price_starter_monthly", 1_000, false);
        let same = ours("active", "price_starter_monthly", "starter", 1_000, 50);
        assert!(examine(Kind::Subscriptions, &stripe, 100, &same, &catalog()).expect("e").drifts.is_empty());
        let newer = ours("past_due", "price_starter_monthly", "starter", 1_000, 100);
        let e = examine(Kind::Subscriptions, &stripe, 100, &newer, &catalog()).expect("e");
        assert!(e.newer_here && e.drifts.is_empty(), "our state comes from an event of the fetch's second");
        let missing = examine(Kind::Subscriptions, &stripe, 100, &Ours::default(), &catalog()).expect("e");
        assert_eq!(missing.drifts, [Drift::MissingHere]);
    }

    #[test]
    fn the_snapshot_id_follows_the_object_not_the_fetch_time() {
        let a = snapshot_event(Kind::Subscriptions, &subscription("active", "p", 1, false), 100).expect("a");
        let b = snapshot_event(Kind::Subscriptions, &subscription("active", "p", 1, false), 900).expect("b");
        let c = snapshot_event(Kind::Subscriptions, &subscription("past_due", "p", 1, false), 100).expect("c");
        let id = |b: &Bytes| NewEvent::decode(b.clone(), None).expect("event").envelope.id;
        assert_eq!(id(&a), id(&b));
        assert_ne!(id(&a), id(&c));
        assert!(id(&a).starts_with("evt_reconcile_"));
    }

    #[test]
    fn customers_compare_email_and_deletion() {
        let mut ours = Ours::default();
        let customer = OurCustomer { email: Some("a@x.test".into()), deleted: false, version_created: Some(1) };
        ours.customers.insert("cus_1".into(), customer);
        let stripe = json!({ "id": "cus_1", "object": "customer", "email": "b@x.test" }).to_string();
        let e = examine(Kind::Customers, &stripe, 100, &ours, &catalog()).expect("e");
        assert_eq!(e.drifts.iter().map(Drift::kind).collect::<Vec<_>>(), ["email"]);
        let deleted = json!({ "id": "cus_1", "object": "customer", "deleted": true }).to_string();
        let e = examine(Kind::Customers, &deleted, 100, &ours, &catalog()).expect("e");
        assert_eq!(e.drifts.iter().map(Drift::kind).collect::<Vec<_>>(), ["deleted"]);
        assert_eq!(e.snapshot.envelope.event_type, "customer.deleted");
    }
}
