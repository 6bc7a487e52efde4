//! The pure fold: `(state, event) -> Delta`. No I/O, no clock; see `docs/projector.md`.

use std::collections::BTreeMap;

use crate::catalog::{Catalog, Limits, Product, UNKNOWN_TIER};
use crate::erasure::unless_erased;
use crate::fetched::{self, Part};
use crate::keys::{EffectKey, FetchKey, MailKey, Subject};
use crate::revenue;
use crate::state::{
    Account, Anomaly, Changes, CreditGrant, Delta, Desired, DiscountRow, Instance, Intent, MovementRow, PriceRow,
    Projections, Reads, Revenue, SubscriptionRow, TokenWant, Version, View, desired_instance, movement_key,
};
use crate::stripe::{
    self, CheckoutSession, Customer, Discount, Invoice, Object, Price, Subscription, SubscriptionStatus, ThinReference,
};

/// Fold settings.
#[derive(Debug, Clone, Copy)]
pub struct FoldConfig {
    /// How long an instance keeps running after a failed payment (default 7 days).
    pub grace_period_secs: i64,
    /// `STRIPE_LIVEMODE`: only events of this mode are projected (None: both). Events of the
    /// other mode stay in the log (they are facts) and become a `wrong_mode` anomaly.
    pub livemode: Option<bool>,
}

impl FoldConfig {
    /// What the checkpoint records of these settings (hex SHA-256 of their canonical text): the
    /// rows were folded by other rules when it differs, and a rebuild is needed.
    pub fn hash(&self) -> String {
        use sha2::Digest as _;
        let livemode = match self.livemode {
            None => "any",
            Some(true) => "live",
            Some(false) => "test",
        };
        let text = format!("fold settings v1; grace_period_secs={}; livemode={livemode}", self.grace_period_secs);
        hex::encode(sha2::Sha256::digest(text.as_bytes()))
    }
}

impl Default for FoldConfig {
    fn default() -> Self {
        Self { grace_period_secs: 7 * 24 * 3600, livemode: None }
    }
}

impl Projections {
    /// Folds events in order, applying each; returns the keys changed and the intents with the
    /// position that raised them.
    pub fn fold_batch<'a>(
        &mut self,
        events: impl IntoIterator<Item = (i64, &'a [u8])>,
        catalog: &Catalog,
        config: &FoldConfig,
    ) -> (Changes, Vec<(i64, Intent)>) {
        self.fold_decoded_batch(
            events.into_iter().map(|(position, raw)| (position, stripe::decode(raw))),
            catalog,
            config,
        )
    }

    /// [`Self::fold_batch`] of events decoded elsewhere (a rebuild decodes while it folds).
    pub fn fold_decoded_batch(
        &mut self,
        events: impl IntoIterator<Item = (i64, Decoded)>,
        catalog: &Catalog,
        config: &FoldConfig,
    ) -> (Changes, Vec<(i64, Intent)>) {
        let (changes, intents, _) = self.fold_batch_in(None, events, catalog, config);
        (changes, intents)
    }

    /// [`Self::fold_decoded_batch`] of a window holding the rows of `loaded` (see
    /// [`crate::window`]); also returns the keys the fold asked for that `loaded` lacks (when there
    /// are any, the result is not the fold over the whole state, and is to be dropped).
    pub fn fold_window_batch(
        &mut self,
        loaded: &Reads,
        events: impl IntoIterator<Item = (i64, Decoded)>,
        catalog: &Catalog,
        config: &FoldConfig,
    ) -> (Changes, Vec<(i64, Intent)>, Reads) {
        self.fold_batch_in(Some(loaded), events, catalog, config)
    }

    fn fold_batch_in(
        &mut self,
        loaded: Option<&Reads>,
        events: impl IntoIterator<Item = (i64, Decoded)>,
        catalog: &Catalog,
        config: &FoldConfig,
    ) -> (Changes, Vec<(i64, Intent)>, Reads) {
        let mut changes = Changes::default();
        let mut intents = Vec::new();
        let mut misses = Reads::default();
        for (position, decoded) in events {
            let view = match loaded {
                Some(loaded) => View::window(self, loaded),
                None => View::whole(self),
            };
            let mut delta = fold_viewed(&view, position, decoded, catalog, config);
            misses.extend(view.into_misses());
            intents.extend(std::mem::take(&mut delta.intents).into_iter().map(|i| (position, i)));
            changes.record(&delta);
            self.apply(delta);
        }
        (changes, intents, misses)
    }

    /// Folds one event and applies the result; returns the intents.
    pub fn fold_and_apply(&mut self, position: i64, raw: &[u8], catalog: &Catalog, config: &FoldConfig) -> Vec<Intent> {
        let mut delta = fold(self, position, raw, catalog, config);
        let intents = std::mem::take(&mut delta.intents);
        self.apply(delta);
        intents
    }
}

/// The kind of anomaly of a sellable catalog price whose amount the log has not told yet.
pub const PRICE_AMOUNT_UNKNOWN: &str = "price_amount_unknown";

/// A raw body decoded into the typed model, or why it is not one.
pub type Decoded = Result<stripe::Event, stripe::DecodeError>;

/// The fold: what the event at `position` with body `raw` changes in `state`.
pub fn fold(state: &Projections, position: i64, raw: &[u8], catalog: &Catalog, config: &FoldConfig) -> Delta {
    fold_decoded(state, position, stripe::decode(raw), catalog, config)
}

/// [`fold`] of a body already decoded.
pub fn fold_decoded(
    state: &Projections,
    position: i64,
    decoded: Decoded,
    catalog: &Catalog,
    config: &FoldConfig,
) -> Delta {
    fold_viewed(&View::whole(state), position, decoded, catalog, config)
}

/// [`fold_decoded`] reading the state through `state` (which notes what it reads).
fn fold_viewed(state: &View<'_>, position: i64, decoded: Decoded, catalog: &Catalog, config: &FoldConfig) -> Delta {
    let mut f = Folder {
        state,
        catalog,
        config,
        position,
        event_id: String::new(),
        fetched: None,
        delta: Delta::default(),
        touched: BTreeMap::new(),
    };
    match decoded {
        Err(error) => f.anomaly(format!("undecodable:{position}"), "undecodable", error.to_string()),
        Ok(event) if config.livemode.is_some_and(|mode| mode != event.meta.livemode) => {
            let mode = |live: bool| if live { "live" } else { "test" };
            let detail = format!(
                "{} is a {}-mode event; STRIPE_LIVEMODE projects {}-mode events only",
                event.meta.id,
                mode(event.meta.livemode),
                mode(!event.meta.livemode)
            );
            f.anomaly(format!("wrong_mode:{position}"), "wrong_mode", detail);
        }
        Ok(event) => {
            let created = event.meta.created;
            f.event_id = event.meta.id;
            f.fetched = event.meta.fetched.and_then(|from| match from.key.parse::<EffectKey>() {
                Ok(EffectKey::Fetch(fetch)) => Some((fetch.part, from.completes)),
                _ => None,
            });
            if let Some((Part::ThinObject, completes)) = &f.fetched {
                f.resolve(format!("thin_event:{completes}"));
            }
            match event.object {
                Object::Customer(c) => f.customer(&event.meta.event_type, created, c),
                Object::Subscription(s) => f.subscription(&event.meta.event_type, created, s),
                Object::Invoice(i) => f.invoice(&event.meta.event_type, created, i),
                Object::CheckoutSession(cs) => f.checkout(&event.meta.event_type, created, cs),
                Object::Price(p) => f.price(&event.meta.event_type, created, p),
                Object::Discount(d) => f.discount(&event.meta.event_type, created, d),
                Object::Thin(reference) => f.thin(&event.meta.event_type, reference),
                Object::Other => {}
            }
        }
    }
    f.unknown_price_amounts();
    f.finish()
}

struct Folder<'a> {
    state: &'a View<'a>,
    catalog: &'a Catalog,
    config: &'a FoldConfig,
    position: i64,
    /// The event's id.
    event_id: String,
    /// For a fact fetched from Stripe (`crate::fetched`): what was fetched and the id of the event
    /// it completes. A fact never asks again for what it was fetched for.
    fetched: Option<(Part, String)>,
    delta: Delta,
    /// Subscriptions changed by this event (their instance and token are re-derived at the end).
    touched: BTreeMap<String, SubscriptionRow>,
}

fn subscription_rank(status: &SubscriptionStatus) -> u8 {
    match status {
        SubscriptionStatus::Incomplete => 1,
        SubscriptionStatus::Trialing => 2,
        SubscriptionStatus::Active => 3,
        SubscriptionStatus::PastDue => 4,
        SubscriptionStatus::Paused => 5,
        SubscriptionStatus::Unpaid => 6,
        SubscriptionStatus::Canceled => 7,
        SubscriptionStatus::IncompleteExpired => 8,
        SubscriptionStatus::Unknown | SubscriptionStatus::Other(_) => 0,
    }
}

/// Whether the fold acts on events of this (snapshot) type: what a thin event of the type is
/// fetched for.
fn projected(event_type: &str) -> bool {
    matches!(
        event_type,
        "customer.created"
            | "customer.updated"
            | "customer.deleted"
            | "invoice.paid"
            | "invoice.payment_succeeded"
            | "invoice.payment_failed"
            | "checkout.session.completed"
    ) || event_type.starts_with("customer.subscription.")
        || event_type.starts_with("price.")
        || event_type.starts_with("plan.")
}

/// Ranks of a price's snapshots within one second, lowest first: an invoice's or checkout's line,
/// a subscription item, a price event, a price's deletion.
const PRICE_LINE_RANK: u8 = 0;
const PRICE_ITEM_RANK: u8 = 1;
const PRICE_EVENT_RANK: u8 = 2;
const PRICE_DELETED_RANK: u8 = 3;

/// Ranks of a discount's snapshots within one second: as a subscription carries it, as a discount
/// event states it, its deletion.
const DISCOUNT_CARRIED_RANK: u8 = 0;
const DISCOUNT_EVENT_RANK: u8 = 1;
const DISCOUNT_DELETED_RANK: u8 = 2;

/// Rank of a `customer.subscription.deleted` snapshot: above every status.
const DELETED_RANK: u8 = 9;

impl Folder<'_> {
    fn version(&self, created: i64, rank: u8) -> Version {
        Version { created, rank, position: self.position }
    }

    fn anomaly(&mut self, key: String, kind: &str, detail: String) {
        self.delta.anomalies.push(Anomaly { key, kind: kind.to_owned(), detail, position: self.position });
    }

    fn resolve(&mut self, key: String) {
        if self.state.has_anomaly(&key) {
            self.delta.resolved.push(key);
        }
    }

    /// Resolves every anomaly whose key starts with `prefix`.
    fn resolve_prefix(&mut self, prefix: &str) {
        let keys = self.state.anomalies_with_prefix(prefix);
        self.delta.resolved.extend(keys);
    }

    /// Whether this event may ask for a fetch: a delivered event, or the object fetched for a thin
    /// event (its session's items or invoice's lines may still be incomplete); a fact fetched for
    /// a part asks for nothing.
    fn may_fetch(&self) -> bool {
        matches!(self.fetched, None | Some((Part::ThinObject, _)))
    }

    /// A paid session without items or a price: Stripe's webhook never carries `line_items`, so
    /// they are fetched (once: the fetched fact itself asks for nothing). The anomaly's detail.
    fn checkout_without_items(&mut self, session: &str, customer: &str) -> String {
        let missing = format!("{session} carries neither line items nor metadata.price_id");
        if !self.may_fetch() {
            return format!("{missing}, not even as fetched from Stripe");
        }
        let fetch = FetchKey::new(Part::CheckoutLineItems, session);
        let waiting = format!("{missing}: waiting for {}", EffectKey::Fetch(fetch.clone()));
        self.intent(Intent::fetch(fetch, Subject::Customer(customer.to_owned()), waiting.clone()));
        format!("{waiting} (needs STRIPE_API_KEY)")
    }

    fn intent(&mut self, intent: Intent) {
        self.delta.intents.push(intent);
    }

    /// The account row, or a stub created from its id.
    fn account(&self, id: &str) -> Account {
        self.delta.accounts.iter().rev().find(|a| a.stripe_customer_id == id).cloned().unwrap_or_else(|| {
            self.state.account(id).cloned().unwrap_or_else(|| Account {
                stripe_customer_id: id.to_owned(),
                email: None,
                name: None,
                deleted: false,
                created: None,
                version: None,
            })
        })
    }

    fn ensure_account(&mut self, id: &str) {
        if self.state.account(id).is_none() && !self.delta.accounts.iter().any(|a| a.stripe_customer_id == id) {
            let stub = self.account(id);
            self.delta.accounts.push(stub);
        }
    }

    /// The subscription row as this event sees it, or a stub from its id.
    fn subscription_row(&self, id: &str) -> SubscriptionRow {
        self.touched.get(id).cloned().or_else(|| self.state.subscription(id).cloned()).unwrap_or_else(|| {
            SubscriptionRow {
                stripe_subscription_id: id.to_owned(),
                stripe_customer_id: None,
                price_id: None,
                tier: UNKNOWN_TIER.to_owned(),
                limits: None,
                status: SubscriptionStatus::Unknown,
                current_period_start: None,
                current_period_end: None,
                trial_end: None,
                cancel_at_period_end: false,
                canceled_at: None,
                ended_at: None,
                deleted: false,
                last_paid_at: None,
                last_payment_failed_at: None,
                grace_until: None,
                discount: None,
                version: None,
            }
        })
    }

    fn customer(&mut self, event_type: &str, created: i64, customer: Customer) {
        let deleted = customer.deleted || event_type == "customer.deleted";
        let version = self.version(created, if deleted { 2 } else { 1 });
        let mut account = self.account(&customer.id);
        if account.deleted || account.version.is_some_and(|v| v >= version) {
            return;
        }
        // An erased value (`replay erase`) is no address and no name.
        account.email = unless_erased(customer.email).or(account.email.take().filter(|_| deleted));
        account.name = unless_erased(customer.name).or(account.name.take().filter(|_| deleted));
        account.deleted = deleted;
        account.created = customer.created.or(account.created);
        account.version = Some(version);
        self.delta.accounts.push(account);
    }

    /// A price event: the price as Stripe describes it now (`*.deleted`: no longer sellable).
    fn price(&mut self, event_type: &str, created: i64, mut price: Price) {
        let deleted = event_type.ends_with(".deleted");
        price.active &= !deleted;
        let version = self.version(created, if deleted { PRICE_DELETED_RANK } else { PRICE_EVENT_RANK });
        self.put_price(price, version);
    }

    /// Keeps `price` unless a newer snapshot of it is known. Within one second a price event
    /// outranks a copy a subscription item carries, which outranks an invoice's or a checkout's
    /// line (so copies of one second never tie on the log position alone, which would make the
    /// row depend on delivery order).
    fn put_price(&mut self, price: Price, version: Version) {
        let known = self.delta.prices.iter().rev().find(|p| p.price.id == price.id).map(|p| p.version);
        let known = known.or_else(|| self.state.price(&price.id).map(|p| p.version));
        if known.is_some_and(|v| v >= version) {
            return;
        }
        if self.catalog.product(&price.id).is_some() {
            self.resolve(format!("{PRICE_AMOUNT_UNKNOWN}:{}", price.id));
        }
        self.delta.prices.push(PriceRow { price, version });
    }

    /// Records what this snapshot of `sub` adds to its customer's MRR (every snapshot, applied to
    /// the row or not: the points are a function of the set of events) and rewrites the
    /// customer's movements from their points (`crate::revenue::movements`).
    fn revenue_point(&mut self, sub: &Subscription, row: &SubscriptionRow, created: i64, rank: u8, deleted: bool) {
        let items: Vec<(Price, u64)> = sub
            .items
            .iter()
            .filter_map(|item| {
                let price = item.price.clone().or_else(|| {
                    item.price_id.as_deref().and_then(|id| self.state.price(id)).map(|r| r.price.clone())
                })?;
                Some((price, item.quantity))
            })
            .collect();
        let billed = revenue::Billed {
            items: &items,
            status: &sub.status,
            in_grace: row.grace_until.is_some_and(|until| created < until),
            discount: sub.discount(),
            deleted,
        };
        let policy = self.catalog.analytics();
        let cycle = revenue::cycle(&items);
        let gross = revenue::list_mrr(&billed, policy);
        let mrr = revenue::with_discount(&gross, billed.discount, cycle.as_ref(), created, policy);
        // One currency per subscription (Stripe's rule): the discounted one, or the list price's
        // when a discount takes it all.
        let currency = mrr.keys().next().or_else(|| gross.keys().next()).cloned();
        let of = |mrr: &BTreeMap<String, i64>| currency.as_ref().and_then(|c| mrr.get(c)).copied().unwrap_or(0);
        let named = sub.discounts.iter().filter(|d| d.percent_off.is_none() && d.amount_off.is_none());
        let point = revenue::Point {
            subscription: sub.id.clone(),
            event_id: self.event_id.clone(),
            created,
            position: self.position,
            rank,
            gross: Some(of(&gross)),
            amount: of(&mrr),
            currency,
            deleted,
            own_discount: sub.discount().is_some(),
            discount_ids: sub.discount_ids.iter().cloned().chain(named.filter_map(|d| d.id.clone())).collect(),
            cycle,
        };
        let mut rev = self.revenue_row(&sub.customer);
        if rev.points.iter().any(|p| p.subscription == point.subscription && p.event_id == point.event_id) {
            return;
        }
        rev.points.push(point);
        revenue::sort(&mut rev.points);
        self.rewrite_movements(rev);
    }

    /// `customer`'s revenue row as this batch knows it.
    fn revenue_row(&self, customer: &str) -> Revenue {
        let known = self.delta.revenue.iter().rev().find(|r| r.stripe_customer_id == customer).cloned();
        let known = known.or_else(|| self.state.revenue(customer).cloned());
        known.unwrap_or_else(|| Revenue {
            stripe_customer_id: customer.to_owned(),
            points: Vec::new(),
            discounts: Vec::new(),
            movements: 0,
        })
    }

    /// Rewrites the customer's movements from `rev`'s points, and keeps `rev`.
    fn rewrite_movements(&mut self, mut rev: Revenue) {
        let customer = rev.stripe_customer_id.clone();
        let movements = revenue::movements(&rev.points, &rev.discounts, self.catalog.analytics().discounts);
        self.delta.dropped_movements.extend((movements.len()..rev.movements).map(|n| movement_key(&customer, n)));
        self.delta.mrr_movements.extend(movements.iter().enumerate().map(|(n, movement)| MovementRow {
            key: movement_key(&customer, n),
            stripe_customer_id: customer.clone(),
            movement: movement.clone(),
        }));
        rev.movements = movements.len();
        self.delta.revenue.push(rev);
    }

    /// A `customer.discount.*` event: the discount's row, and (for a customer's discount) a point
    /// of their revenue: it re-prices their subscriptions from its moment on.
    fn discount(&mut self, event_type: &str, created: i64, discount: Discount) {
        let Some(id) = discount.id.clone() else { return };
        let deleted = event_type == "customer.discount.deleted";
        let rank = if deleted { DISCOUNT_DELETED_RANK } else { DISCOUNT_EVENT_RANK };
        if let Some(customer) = discount.customer.clone() {
            self.ensure_account(&customer);
            let point = revenue::DiscountPoint {
                discount: id,
                event_id: self.event_id.clone(),
                created,
                position: self.position,
                rank,
                subscription: discount.subscription.clone(),
                terms: Some(revenue::Terms::from(&discount))
                    .filter(|t| !deleted && (t.percent_off.is_some() || t.amount_off.is_some())),
            };
            let mut rev = self.revenue_row(&customer);
            if !rev.discounts.iter().any(|d| d.discount == point.discount && d.event_id == point.event_id) {
                rev.discounts.push(point);
                revenue::sort_discounts(&mut rev.discounts);
                self.rewrite_movements(rev);
            }
        }
        let version = self.version(created, rank);
        self.put_discount(discount, deleted, version);
    }

    /// Keeps `discount` unless a newer snapshot of it is known (a deletion is final).
    fn put_discount(&mut self, discount: Discount, deleted: bool, version: Version) {
        let Some(id) = discount.id.as_deref() else { return };
        let known = self.delta.discounts.iter().rev().find(|d| d.discount.id.as_deref() == Some(id)).cloned();
        let known = known.or_else(|| self.state.discount(id).cloned());
        if known.is_some_and(|k| k.deleted || k.version >= version) {
            return;
        }
        self.delta.discounts.push(DiscountRow { discount, deleted, version });
    }

    /// Keeps the prices an object carries (a subscription's items, an invoice's lines, a checkout's
    /// line items) as snapshots of the event's moment, at `rank`.
    fn embedded_prices(&mut self, prices: &[Price], created: i64, rank: u8) {
        for price in prices {
            let version = self.version(created, rank);
            self.put_price(price.clone(), version);
        }
    }

    fn subscription(&mut self, event_type: &str, created: i64, sub: Subscription) {
        let carried: Vec<Price> = sub.items.iter().filter_map(|item| item.price.clone()).collect();
        self.embedded_prices(&carried, created, PRICE_ITEM_RANK);
        for discount in &sub.discounts {
            let discount = Discount {
                customer: discount.customer.clone().or_else(|| Some(sub.customer.clone())),
                subscription: discount.subscription.clone().or_else(|| Some(sub.id.clone())),
                ..discount.clone()
            };
            let version = self.version(created, DISCOUNT_CARRIED_RANK);
            self.put_discount(discount, false, version);
        }
        let deleted = event_type == "customer.subscription.deleted";
        let rank = if deleted { DELETED_RANK } else { subscription_rank(&sub.status) };
        let version = self.version(created, rank);
        let mut row = self.subscription_row(&sub.id);
        self.ensure_account(&sub.customer);
        self.revenue_point(&sub, &row, created, rank, deleted);
        if let Some((Part::SubscriptionPeriod, completes)) = &self.fetched {
            let key = format!("subscription_without_period:{completes}");
            match sub.current_period_end {
                Some(_) => self.resolve(key),
                None => {
                    let detail = format!("{} has no period, not even as fetched from Stripe", sub.id);
                    self.anomaly(key, "subscription_without_period", detail);
                }
            }
        }
        if row.deleted || row.version.is_some_and(|v| v >= version) {
            return;
        }
        if !deleted {
            self.subscription_without_period(&sub);
        }
        let was_canceled = row.deleted || row.status == SubscriptionStatus::Canceled;
        row.stripe_customer_id = Some(sub.customer.clone());
        row.price_id = sub.price_id().map(str::to_owned);
        let (tier, limits) = self.tier_of(row.price_id.as_deref(), &sub.id);
        row.tier = tier;
        row.limits = limits;
        row.status = if deleted { SubscriptionStatus::Canceled } else { sub.status.clone() };
        row.current_period_start = sub.current_period_start;
        row.current_period_end = sub.current_period_end;
        row.trial_end = sub.trial_end;
        row.cancel_at_period_end = sub.cancel_at_period_end;
        row.canceled_at = sub.canceled_at;
        row.ended_at = sub.ended_at;
        row.deleted = deleted;
        row.discount = sub.discount().map(revenue::Terms::from);
        row.version = Some(version);
        if !was_canceled && row.status == SubscriptionStatus::Canceled {
            let mail = MailKey::Canceled { subscription: sub.id.clone() };
            self.intent(Intent::mail(mail, &sub.id, format!("canceled {} ({})", sub.id, sub.customer)));
        }
        self.touched.insert(sub.id.clone(), row);
    }

    /// A live snapshot without its period (neither on it nor on its items): the subscription is
    /// fetched, once per event, and the fact carries the period Stripe has then.
    fn subscription_without_period(&mut self, sub: &Subscription) {
        let ended = matches!(sub.status, SubscriptionStatus::Canceled | SubscriptionStatus::IncompleteExpired);
        if sub.current_period_end.is_some() || ended || !self.may_fetch() {
            return;
        }
        let fetch = FetchKey::new(Part::SubscriptionPeriod, self.event_id.clone());
        let waiting =
            format!("{} has no period in {}: waiting for {}", sub.id, self.event_id, EffectKey::Fetch(fetch.clone()));
        self.intent(Intent::fetch(fetch, Subject::Subscription(sub.id.clone()), waiting.clone()));
        let key = format!("subscription_without_period:{}", self.event_id);
        self.anomaly(key, "subscription_without_period", format!("{waiting} (needs STRIPE_API_KEY)"));
    }

    /// A thin event: only a reference. The object is fetched and appended as the snapshot event the
    /// thin one stands for; until then an anomaly says so. References to objects or event types the
    /// fold does not project are stored and change nothing.
    fn thin(&mut self, event_type: &str, reference: ThinReference) {
        let kind = reference.object.unwrap_or_default();
        if !fetched::thin_object_fetched(&kind) || !projected(fetched::snapshot_type(event_type)) {
            return;
        }
        let id = reference.id.unwrap_or_default();
        let subject = match kind.as_str() {
            "customer" => Subject::Customer(id.clone()),
            "subscription" => Subject::Subscription(id.clone()),
            _ => Subject::Event(self.event_id.clone()),
        };
        let fetch = FetchKey::new(Part::ThinObject, self.event_id.clone());
        let waiting = format!(
            "thin event {} ({event_type}) refers to {kind} {id}: waiting for {}",
            self.event_id,
            EffectKey::Fetch(fetch.clone())
        );
        self.intent(Intent::fetch(fetch, subject, waiting.clone()));
        self.anomaly(
            format!("thin_event:{}", self.event_id),
            "thin_event",
            format!("{waiting} (needs STRIPE_API_KEY)"),
        );
    }

    /// Tier and limits of a price; an unknown price raises (or keeps) the anomaly of this object.
    fn tier_of(&mut self, price_id: Option<&str>, object_id: &str) -> (String, Option<Limits>) {
        let key = format!("unknown_price:{object_id}");
        match price_id.and_then(|p| self.catalog.product(p)) {
            Some(Product::Tier { tier, .. }) => {
                self.resolve(key);
                (tier.name.clone(), Some(tier.limits))
            }
            _ => {
                let detail = match price_id {
                    Some(price) => format!("price {price} of {object_id} is not a tier in the catalog"),
                    None => format!("{object_id} has no price"),
                };
                self.anomaly(key, "unknown_price", detail);
                (UNKNOWN_TIER.to_owned(), None)
            }
        }
    }

    fn invoice(&mut self, event_type: &str, created: i64, invoice: Invoice) {
        self.embedded_prices(&invoice.line_prices, created, PRICE_LINE_RANK);
        let paid = matches!(event_type, "invoice.paid" | "invoice.payment_succeeded");
        let failed = event_type == "invoice.payment_failed";
        if !paid && !failed {
            return;
        }
        if let Some(customer) = &invoice.customer {
            self.ensure_account(customer);
        }
        if let Some(sub_id) = &invoice.subscription {
            let mut row = self.subscription_row(sub_id);
            if row.stripe_customer_id.is_none() {
                row.stripe_customer_id = invoice.customer.clone();
            }
            if paid {
                row.last_paid_at = row.last_paid_at.max(Some(created));
            } else {
                row.last_payment_failed_at = row.last_payment_failed_at.max(Some(created));
            }
            row.grace_until = match (row.last_payment_failed_at, row.last_paid_at) {
                (Some(failed_at), paid_at) if paid_at.is_none_or(|p| failed_at > p) => {
                    Some(failed_at.saturating_add(self.config.grace_period_secs).min(stripe::MAX_TIME))
                }
                _ => None,
            };
            if failed && row.grace_until.is_some() && row.last_payment_failed_at == Some(created) {
                let mail = MailKey::PaymentFailed { invoice: invoice.id.clone() };
                let detail =
                    format!("payment failed for {sub_id}; grace until {}", row.grace_until.unwrap_or_default());
                self.intent(Intent::mail(mail, sub_id, detail));
            }
            self.touched.insert(sub_id.clone(), row);
        }
        if paid {
            self.grant_cycle_credits(created, &invoice);
        }
    }

    fn grant_cycle_credits(&mut self, created: i64, invoice: &Invoice) {
        let key = format!("invoice:{}", invoice.id);
        if self.state.has_grant(&key) {
            return;
        }
        let Some(customer) = invoice.customer.clone() else { return };
        let tier = invoice.line_price_ids.iter().find_map(|price| match self.catalog.product(price) {
            Some(Product::Tier { tier, .. }) => Some(tier),
            _ => None,
        });
        let Some(tier) = tier else {
            if let Some(sub_id) = &invoice.subscription {
                // Keyed by position: both paid events of one invoice raise their own row, in any order.
                let key = format!("invoice_without_known_price:{}:{}", invoice.id, self.position);
                let mut detail = format!(
                    "paid invoice {} has no line price in the catalog: {:?}",
                    invoice.id, invoice.line_price_ids
                );
                if invoice.lines_truncated && self.may_fetch() {
                    let fetch = FetchKey::new(Part::InvoiceLines, invoice.id.clone());
                    let waiting = format!(
                        "{}; its lines have more pages: waiting for {}",
                        detail,
                        EffectKey::Fetch(fetch.clone())
                    );
                    self.intent(Intent::fetch(fetch, Subject::Subscription(sub_id.clone()), waiting.clone()));
                    detail = format!("{waiting} (needs STRIPE_API_KEY)");
                }
                self.anomaly(key, "invoice_without_known_price", detail);
            }
            return;
        };
        self.resolve_prefix(&format!("invoice_without_known_price:{}:", invoice.id));
        let grant = CreditGrant {
            key,
            stripe_customer_id: customer,
            credits: tier.credits_per_cycle,
            rollover_cap: Some(tier.rollover_cap),
            at: invoice.period_start.or(invoice.lines_period_end).unwrap_or(created),
        };
        self.add_grant(grant);
    }

    fn checkout(&mut self, event_type: &str, created: i64, session: CheckoutSession) {
        self.embedded_prices(&session.line_prices, created, PRICE_LINE_RANK);
        if event_type != "checkout.session.completed" {
            return;
        }
        if let Some(customer) = &session.customer {
            self.ensure_account(customer);
        }
        match session.mode.as_str() {
            "subscription" => {
                if let (Some(sub_id), Some(customer)) = (&session.subscription, &session.customer) {
                    let mut row = self.subscription_row(sub_id);
                    if row.stripe_customer_id.is_none() {
                        row.stripe_customer_id = Some(customer.clone());
                        self.touched.insert(sub_id.clone(), row);
                    }
                }
            }
            "payment" => {
                let key = format!("checkout:{}", session.id);
                if self.state.has_grant(&key) || session.payment_status.as_deref() == Some("unpaid") {
                    return;
                }
                let Some(customer) = session.customer.clone() else {
                    self.anomaly(
                        format!("checkout_without_customer:{}", session.id),
                        "checkout_without_customer",
                        format!("{} has no customer to credit", session.id),
                    );
                    return;
                };
                let purchased = session.purchased();
                if purchased.is_empty() {
                    let detail = self.checkout_without_items(&session.id, &customer);
                    self.anomaly(format!("checkout_without_items:{}", session.id), "checkout_without_items", detail);
                    return;
                }
                self.resolve(format!("checkout_without_items:{}", session.id));
                let mut credits = 0;
                for (price, quantity) in purchased {
                    match self.catalog.product(&price) {
                        Some(Product::CreditPack(pack)) => {
                            credits = pack.credits.saturating_mul(quantity).saturating_add(credits);
                        }
                        _ => {
                            self.anomaly(
                                format!("unknown_price:{}", session.id),
                                "unknown_price",
                                format!("price {price} of {} is not a credit pack in the catalog", session.id),
                            );
                            return;
                        }
                    }
                }
                self.resolve(format!("unknown_price:{}", session.id));
                self.add_grant(CreditGrant {
                    key,
                    stripe_customer_id: customer,
                    credits,
                    rollover_cap: None,
                    at: created,
                });
            }
            _ => {}
        }
    }

    fn add_grant(&mut self, grant: CreditGrant) {
        self.delta.credit_grants.push(grant);
    }

    /// Every price the catalog sells (its sellable tiers' and its packs') without a row in
    /// `projection.prices` is an open `price_amount_unknown:<price>` anomaly (the pricing page
    /// shows `amount: null`); [`Self::put_price`] resolves it once Stripe's price is folded (an
    /// event carrying it, or `replay reconcile --objects prices`). Checked with every event, a
    /// function of the catalog and the prices alone (position 0: no event raised it), so any fold
    /// ends with the same ones.
    fn unknown_price_amounts(&mut self) {
        let sold = self.catalog.tiers().iter().filter(|t| t.sellable).flat_map(|t| t.price_ids.iter());
        let packs = self.catalog.credit_packs().iter().map(|p| &p.price_id);
        for price in sold.chain(packs) {
            if self.state.price(price).is_some() || self.delta.prices.iter().any(|p| &p.price.id == price) {
                continue;
            }
            let key = format!("{PRICE_AMOUNT_UNKNOWN}:{price}");
            if !self.state.has_anomaly(&key) {
                let detail = format!(
                    "the catalog sells {price}, whose amount no Stripe object in the log states yet \
                     (`replay reconcile --objects prices` fetches it)"
                );
                self.delta.anomalies.push(Anomaly { key, kind: PRICE_AMOUNT_UNKNOWN.to_owned(), detail, position: 0 });
            }
        }
    }

    fn finish(mut self) -> Delta {
        let touched = std::mem::take(&mut self.touched);
        let mut customers = Vec::new();
        for (id, row) in &touched {
            let desired = desired_instance(row);
            let instance = Instance {
                stripe_subscription_id: id.clone(),
                stripe_customer_id: row.stripe_customer_id.clone(),
                desired,
                tier: row.tier.clone(),
                limits: if desired == Desired::Running { row.limits } else { None },
            };
            let previous = self.state.instance(id);
            // An instance never seen counts as absent: a stub asks for no effect.
            let before = previous.map_or((Desired::Absent, None), |p| (p.desired, p.limits));
            if before != (instance.desired, instance.limits) {
                let customer = row.stripe_customer_id.as_deref().unwrap_or("-");
                let detail = format!("{} {} {customer}", desired.as_str(), row.tier);
                self.intent(Intent::instance(id, self.position, detail));
                // Welcome when an instance starts running, not on a resize (the key also keeps a
                // stop and restart from welcoming twice).
                if desired == Desired::Running && before.0 != Desired::Running {
                    let mail = MailKey::Welcome { subscription: id.clone() };
                    self.intent(Intent::mail(mail, id, format!("welcome {customer} to {}", row.tier)));
                }
            }
            if previous != Some(&instance) {
                self.delta.instances.push(instance);
            }
            if let Some(customer) = &row.stripe_customer_id
                && !customers.contains(customer)
            {
                customers.push(customer.clone());
            }
        }
        for customer in customers {
            let token = self.token_for(&customer, &touched);
            let previous = self.state.token(&customer);
            let before = previous.map_or((false, None), |p| (p.wanted, p.tier.as_deref()));
            if before != (token.wanted, token.tier.as_deref()) {
                let action = if token.wanted { "issue" } else { "revoke" };
                let detail = format!("{action} {}", token.tier.as_deref().unwrap_or("-"));
                self.intent(Intent::token(&customer, self.position, detail));
            }
            if previous != Some(&token) {
                self.delta.tokens.push(token);
            }
        }
        self.delta.subscriptions.extend(touched.into_values());
        self.delta
    }

    fn token_for(&self, customer: &str, touched: &BTreeMap<String, SubscriptionRow>) -> TokenWant {
        let mut best: Option<(usize, String)> = None;
        let rows = self
            .state
            .subscriptions_of(customer)
            .filter(|row| !touched.contains_key(&row.stripe_subscription_id))
            .chain(touched.values())
            .filter(|r| r.stripe_customer_id.as_deref() == Some(customer));
        for row in rows {
            if desired_instance(row) == Desired::Running {
                let rank = self.catalog.rank(&row.tier).unwrap_or(0);
                if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                    best = Some((rank, row.tier.clone()));
                }
            }
        }
        TokenWant { stripe_customer_id: customer.to_owned(), wanted: best.is_some(), tier: best.map(|(_, t)| t) }
    }
}
