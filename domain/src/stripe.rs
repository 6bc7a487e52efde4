//! The typed event model: the parts of Stripe's objects the projections use, read from raw event
//! bodies of any API version.
//!
//! Both shapes are read: before `2025-03-31.basil` a subscription's period is on the subscription
//! and an invoice names its subscription at the top level; from basil the period is on each
//! subscription item and the invoice's subscription is under `parent.subscription_details`, and
//! an invoice line's price is under `pricing.price_details`. Unknown fields are ignored; unknown
//! enum values are kept as text (`Other`) rather than failing the decode.

use std::collections::BTreeMap;

use serde::Deserialize;

/// An id that Stripe may send as a string or, when expanded, as an object with an `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expandable {
    /// `"cus_123"`.
    Id(String),
    /// `{"id": "cus_123", ...}`.
    Object {
        /// The object's id.
        id: String,
    },
}

impl Expandable {
    /// The id, expanded or not.
    pub fn id(&self) -> &str {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }

    fn into_id(self) -> String {
        match self {
            Self::Id(id) | Self::Object { id } => id,
        }
    }
}

/// Read in one pass: a string is the id; an object's `id` is kept and every other field skipped
/// (`#[serde(untagged)]` would first copy the whole expanded object into a buffer to try each shape).
impl<'de> Deserialize<'de> for Expandable {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Expanded {
            id: String,
        }
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = Expandable;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an id, or an object with an id")
            }
            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<Expandable, E> {
                Ok(Expandable::Id(id.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, id: String) -> Result<Expandable, E> {
                Ok(Expandable::Id(id))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Expandable, A::Error> {
                let Expanded { id } = Expanded::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Expandable::Object { id })
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

/// A price as an item names it: its id, or the whole price (or legacy plan) object.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PriceRef {
    Id(String),
    Price(Price),
}

impl PriceRef {
    fn id(&self) -> &str {
        match self {
            Self::Id(id) => id,
            Self::Price(price) => &price.id,
        }
    }

    fn into_price(self) -> Option<Price> {
        match self {
            Self::Id(_) => None,
            Self::Price(price) => Some(price),
        }
    }
}

impl<'de> Deserialize<'de> for PriceRef {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = PriceRef;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a price id, or a price object")
            }
            fn visit_str<E: serde::de::Error>(self, id: &str) -> Result<PriceRef, E> {
                Ok(PriceRef::Id(id.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PriceRef, A::Error> {
                let wire = WirePrice::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PriceRef::Price(wire.into()))
            }
        }
        deserializer.deserialize_any(Shape)
    }
}

/// A price object, or a legacy plan (`amount`, and the cycle at the top level).
#[derive(Deserialize)]
struct WirePrice {
    id: String,
    #[serde(default)]
    product: Option<Expandable>,
    #[serde(default)]
    unit_amount: Option<i64>,
    #[serde(default)]
    amount: Option<i64>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    recurring: Option<WireRecurring>,
    #[serde(default)]
    interval: Option<String>,
    #[serde(default)]
    interval_count: Option<u32>,
    #[serde(default)]
    usage_type: Option<String>,
    #[serde(default)]
    active: Option<bool>,
    #[serde(default)]
    deleted: bool,
}

#[derive(Deserialize)]
struct WireRecurring {
    interval: String,
    #[serde(default)]
    interval_count: Option<u32>,
    #[serde(default)]
    usage_type: Option<String>,
}

impl From<WirePrice> for Price {
    fn from(w: WirePrice) -> Self {
        let recurring = match (w.recurring, w.interval) {
            (Some(r), _) => Some(Recurring {
                interval: r.interval,
                interval_count: r.interval_count.unwrap_or(1).max(1),
                usage_type: r.usage_type.unwrap_or_else(|| "licensed".to_owned()),
            }),
            (None, Some(interval)) => Some(Recurring {
                interval,
                interval_count: w.interval_count.unwrap_or(1).max(1),
                usage_type: w.usage_type.unwrap_or_else(|| "licensed".to_owned()),
            }),
            (None, None) => None,
        };
        Price {
            id: w.id,
            product: w.product.map(Expandable::into_id),
            unit_amount: w.unit_amount.or(w.amount),
            currency: w.currency.map(|c| c.to_ascii_lowercase()),
            recurring,
            active: w.active.unwrap_or(true) && !w.deleted,
        }
    }
}

/// The event envelope fields the fold orders and keys by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// `evt_...`.
    pub id: String,
    /// `type`.
    pub event_type: String,
    /// `created`, unix seconds.
    pub created: i64,
    /// `api_version`.
    pub api_version: Option<String>,
    /// `livemode`.
    pub livemode: bool,
    /// Set on a fact fetched from Stripe to complete an earlier event (`crate::fetched`), not a
    /// delivery.
    pub fetched: Option<FetchedFrom>,
}

/// The `fetched` member of a fetched fact: why it was fetched.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FetchedFrom {
    /// The effect key of the fetch (`fetch:<part>:<id>`).
    pub key: String,
    /// The id of the event it completes.
    pub completes: String,
}

/// An event with its object decoded by type.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Envelope.
    pub meta: EventMeta,
    /// `data.object`, typed when the event type drives state.
    pub object: Object,
}

/// `data.object` of the event types that drive state.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// `data.object.object == "customer"` (`customer.created/updated/deleted`).
    Customer(Customer),
    /// `"subscription"` (`customer.subscription.*`).
    Subscription(Subscription),
    /// `"invoice"` (`invoice.*`).
    Invoice(Invoice),
    /// `"checkout.session"` (`checkout.session.*`).
    CheckoutSession(CheckoutSession),
    /// `"price"` or a legacy `"plan"` (`price.*`, `plan.*`).
    Price(Price),
    /// `"discount"` (`customer.discount.created/updated/deleted`).
    Discount(Discount),
    /// A thin event (`v2.core.event`): only a reference to the object, which is fetched.
    Thin(ThinReference),
    /// Any other object: stored and counted, not projected.
    Other,
}

/// A thin event's `related_object`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct ThinReference {
    /// The object's id.
    #[serde(default)]
    pub id: Option<String>,
    /// The object's kind (`subscription`, `checkout.session`).
    #[serde(default, rename = "type")]
    pub object: Option<String>,
}

/// A customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Customer {
    /// `cus_...`.
    pub id: String,
    /// Email.
    #[serde(default)]
    pub email: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: Option<String>,
    /// True on a deleted-customer stub.
    #[serde(default)]
    pub deleted: bool,
    /// When the customer was created in Stripe (Unix seconds; absent on a deleted stub).
    #[serde(default)]
    pub created: Option<i64>,
}

/// The Stripe API version the projector's own calls are made with (`Stripe-Version`) and that
/// fetched facts are recorded under: the object shapes the fold reads (`current_period_end` on
/// the items, `parent` on invoice lines).
pub const API_VERSION: &str = "2025-03-31.basil";

/// A subscription status; unknown values are kept.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    /// Trial.
    Trialing,
    /// Paid and running.
    Active,
    /// A payment failed; Stripe retries.
    PastDue,
    /// Retries exhausted, not canceled.
    Unpaid,
    /// Canceled (terminal).
    Canceled,
    /// First payment not made yet.
    Incomplete,
    /// First payment never made (terminal).
    IncompleteExpired,
    /// Paused (trial ended without a payment method).
    Paused,
    /// Not a Stripe status: a subscription known only from a reference (an invoice, a session)
    /// until its own snapshot arrives.
    #[serde(skip)]
    Unknown,
    /// A status this version does not know.
    #[serde(untagged)]
    Other(String),
}

impl SubscriptionStatus {
    /// The status as Stripe spells it.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Unpaid => "unpaid",
            Self::Canceled => "canceled",
            Self::Incomplete => "incomplete",
            Self::IncompleteExpired => "incomplete_expired",
            Self::Paused => "paused",
            Self::Unknown => "unknown",
            Self::Other(other) => other,
        }
    }

    /// The status spelled `text` ([`Self::as_str`] read back).
    pub fn parse(text: &str) -> Self {
        match text {
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "unpaid" => Self::Unpaid,
            "canceled" => Self::Canceled,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "paused" => Self::Paused,
            "unknown" => Self::Unknown,
            other => Self::Other(other.to_owned()),
        }
    }

    /// Stripe still bills it (trialing, active, past_due): what the product calls a live
    /// subscription, the one a second checkout must not duplicate. Whether it also grants access
    /// now is the subscription row's question (its tier, its grace deadline).
    pub fn is_live(&self) -> bool {
        matches!(self, Self::Trialing | Self::Active | Self::PastDue)
    }

    /// Service has ended for good (canceled, unpaid, incomplete_expired): its instance goes.
    pub fn has_ended(&self) -> bool {
        matches!(self, Self::Canceled | Self::Unpaid | Self::IncompleteExpired)
    }
}

impl std::fmt::Display for SubscriptionStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a price charges, as Stripe's price (or legacy plan) object says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    /// `price_...` (or a plan's id).
    pub id: String,
    /// `prod_...`.
    pub product: Option<String>,
    /// Per unit, in the currency's minor unit (`amount` on a plan); `None` for tiered prices.
    pub unit_amount: Option<i64>,
    /// ISO code, lowercase.
    pub currency: Option<String>,
    /// How often it bills; `None` for a one-time price.
    pub recurring: Option<Recurring>,
    /// Still sellable in Stripe (`false` once archived or deleted).
    pub active: bool,
}

/// A discount: a coupon applied to a customer or to a subscription (`customer.discount.*` events'
/// objects, and the expanded `discount`/`discounts` of subscriptions).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Discount {
    /// `di_...` (`None` when the object has none, as an old expanded `discount` may).
    pub id: Option<String>,
    /// The coupon's id.
    pub coupon: Option<String>,
    /// `coupon.percent_off`, in hundredths of a percent (20 % is 2,000; Stripe allows two decimals).
    pub percent_off: Option<u32>,
    /// `coupon.amount_off`, per invoice, in `currency`.
    pub amount_off: Option<i64>,
    /// Currency of `amount_off`.
    pub currency: Option<String>,
    /// `coupon.duration`: `once`, `repeating` or `forever`.
    pub duration: Option<String>,
    /// `coupon.duration_in_months` (for `repeating`).
    pub duration_in_months: Option<u32>,
    /// The promotion code the customer redeemed (`promo_...`), if any.
    pub promotion_code: Option<String>,
    /// When it started applying (Unix seconds).
    pub start: Option<i64>,
    /// When it stops applying (Unix seconds; `None`: forever).
    pub end: Option<i64>,
    /// The customer it belongs to.
    pub customer: Option<String>,
    /// The subscription it applies to (`None`: every subscription of the customer without one).
    pub subscription: Option<String>,
}

/// A recurring price's cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recurring {
    /// `day`, `week`, `month` or `year`.
    pub interval: String,
    /// Cycles of `interval` per bill (e.g. 3 months).
    pub interval_count: u32,
    /// `licensed` (per seat) or `metered`.
    pub usage_type: String,
}

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionItem {
    /// `si_...`.
    pub id: String,
    /// The price id (`price.id`, or the legacy `plan.id`).
    pub price_id: Option<String>,
    /// The price itself, when the item carries it expanded (webhooks do).
    pub price: Option<Price>,
    /// Quantity.
    pub quantity: u64,
    /// Period start on the item (basil and later).
    pub current_period_start: Option<i64>,
    /// Period end on the item (basil and later).
    pub current_period_end: Option<i64>,
}

/// A subscription, normalized across API versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// `sub_...`.
    pub id: String,
    /// Its customer.
    pub customer: String,
    /// Status.
    pub status: SubscriptionStatus,
    /// Items (usually one).
    pub items: Vec<SubscriptionItem>,
    /// Current period start: the subscription's own (before basil) or the items' earliest.
    pub current_period_start: Option<i64>,
    /// Current period end: the subscription's own (before basil) or the items' latest.
    pub current_period_end: Option<i64>,
    /// Trial start.
    pub trial_start: Option<i64>,
    /// Trial end.
    pub trial_end: Option<i64>,
    /// Cancels at the end of the period.
    pub cancel_at_period_end: bool,
    /// Scheduled cancellation time.
    pub cancel_at: Option<i64>,
    /// When cancellation was requested.
    pub canceled_at: Option<i64>,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// The discounts it carries expanded (`discount` before basil, the expanded entries of
    /// `discounts` after); the first is the one in force.
    pub discounts: Vec<Discount>,
    /// The discounts it names by id only (entries of `discounts` not expanded): resolved from
    /// `customer.discount.*` events.
    pub discount_ids: Vec<String>,
}

impl Subscription {
    /// The discount in force, when the snapshot carries it expanded with its coupon's terms.
    pub fn discount(&self) -> Option<&Discount> {
        self.discounts.first().filter(|d| d.percent_off.is_some() || d.amount_off.is_some())
    }

    /// The price of the first item: what the catalog looks up.
    pub fn price_id(&self) -> Option<&str> {
        self.items.iter().find_map(|i| i.price_id.as_deref())
    }
}

/// An invoice, normalized across API versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// `in_...`.
    pub id: String,
    /// Its customer.
    pub customer: Option<String>,
    /// The subscription it bills: top-level `subscription` (before basil) or
    /// `parent.subscription_details.subscription` (basil and later).
    pub subscription: Option<String>,
    /// `billing_reason`, e.g. `subscription_cycle`, `subscription_create`.
    pub billing_reason: Option<String>,
    /// `status`, e.g. `paid`, `open`.
    pub status: Option<String>,
    /// Amount due, in the smallest currency unit.
    pub amount_due: i64,
    /// Amount paid.
    pub amount_paid: i64,
    /// Currency.
    pub currency: Option<String>,
    /// `period_start` of the invoice.
    pub period_start: Option<i64>,
    /// `period_end` of the invoice.
    pub period_end: Option<i64>,
    /// Price ids of its lines (`price.id` before basil, `pricing.price_details.price` after).
    pub line_price_ids: Vec<String>,
    /// The prices of its lines, when they carry them expanded (before API version basil).
    pub line_prices: Vec<Price>,
    /// The latest end of a line's period (the service period a cycle invoice pays for).
    pub lines_period_end: Option<i64>,
    /// `lines.has_more`: the payload carries only the first page of the lines.
    pub lines_truncated: bool,
}

/// A Checkout Session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    /// `cs_...`.
    pub id: String,
    /// `subscription`, `payment` or `setup`.
    pub mode: String,
    /// Its customer, when one was created or given.
    pub customer: Option<String>,
    /// The subscription created (subscription mode).
    pub subscription: Option<String>,
    /// `paid`, `unpaid`, `no_payment_required`.
    pub payment_status: Option<String>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// (price id, quantity) of its line items, when the payload carries them (expanded).
    pub line_items: Vec<(String, u64)>,
    /// The prices of its line items, when they carry them expanded (fetched line items do).
    pub line_prices: Vec<Price>,
}

impl CheckoutSession {
    /// What the session bought: its line items, or when the payload has none (webhook payloads
    /// do not expand them) `metadata.price_id` with `metadata.quantity` (default 1).
    pub fn purchased(&self) -> Vec<(String, u64)> {
        if !self.line_items.is_empty() {
            return self.line_items.clone();
        }
        match self.metadata.get("price_id") {
            Some(price) => {
                let quantity = self.metadata.get("quantity").and_then(|q| q.parse().ok()).unwrap_or(1);
                vec![(price.clone(), quantity)]
            }
            None => Vec::new(),
        }
    }
}

/// Why an event body could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("cannot decode {what}: {source}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// The cause.
    #[source]
    pub source: serde_json::Error,
}

/// Marks a thin event (`object` of an event destination's `v2` payloads).
pub const THIN_EVENT: &str = "v2.core.event";

/// `created` of a thin event (`2024-09-17T06:20:52.246Z`) in Unix seconds; None if unreadable.
pub fn thin_created(time: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(time).ok().map(|t| t.timestamp())
}

// ---- wire shapes (private): every field optional or defaulted, unknown fields ignored ----

/// The latest time PostgreSQL and chrono both hold, and that Stripe could send: 9999-12-31T23:59:59Z.
pub const MAX_TIME: i64 = 253_402_300_799;

/// A Stripe timestamp the projections can store: Unix seconds from 1970 to [`MAX_TIME`]. Anything
/// else (negative, or a year beyond 9999) is read as absent at this boundary, so the fold's state
/// and the tables it writes never disagree and no table refuses the row.
fn storable_time<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    Ok(Option::<i64>::deserialize(deserializer)?.filter(|t| (0..=MAX_TIME).contains(t)))
}

#[derive(Deserialize)]
struct WireEvent<'a> {
    id: String,
    #[serde(default)]
    object: Option<String>,
    #[serde(rename = "type")]
    event_type: String,
    created: WireCreated,
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    livemode: bool,
    #[serde(borrow, default)]
    data: Option<WireData<'a>>,
    #[serde(default)]
    related_object: Option<ThinReference>,
    #[serde(default)]
    fetched: Option<FetchedFrom>,
}

/// Unix seconds, or a thin event's RFC 3339 time.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireCreated {
    Seconds(i64),
    Time(String),
}

#[derive(Deserialize)]
struct WireData<'a> {
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
}

#[derive(Deserialize)]
struct WireKind<'a> {
    #[serde(default, borrow)]
    object: Option<&'a str>,
}

#[derive(Deserialize)]
struct WireList<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    has_more: bool,
}

impl<T> Default for WireList<T> {
    fn default() -> Self {
        Self { data: Vec::new(), has_more: false }
    }
}

#[derive(Deserialize)]
struct WireSubscription {
    id: String,
    customer: Expandable,
    status: SubscriptionStatus,
    #[serde(default)]
    items: WireList<WireItem>,
    #[serde(default, deserialize_with = "storable_time")]
    current_period_start: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    current_period_end: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    trial_start: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    trial_end: Option<i64>,
    #[serde(default)]
    cancel_at_period_end: bool,
    #[serde(default, deserialize_with = "storable_time")]
    cancel_at: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    canceled_at: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    ended_at: Option<i64>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    discount: Option<WireDiscount>,
    #[serde(default)]
    discounts: Vec<MaybeDiscount>,
}

/// A discount object: its coupon (at `coupon`, or at `source.coupon` from API version clover on)
/// and what it applies to.
#[derive(Deserialize)]
struct WireDiscount {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    coupon: Option<WireCoupon>,
    #[serde(default)]
    source: Option<WireDiscountSource>,
    #[serde(default)]
    promotion_code: Option<Expandable>,
    #[serde(default, deserialize_with = "storable_time")]
    start: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    end: Option<i64>,
    #[serde(default)]
    customer: Option<Expandable>,
    #[serde(default)]
    subscription: Option<Expandable>,
}

#[derive(Deserialize)]
struct WireDiscountSource {
    #[serde(default)]
    coupon: Option<WireCoupon>,
}

/// A coupon, expanded or only its id.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireCoupon {
    Expanded {
        #[serde(default)]
        id: Option<String>,
        #[serde(default)]
        percent_off: Option<f64>,
        #[serde(default)]
        amount_off: Option<i64>,
        #[serde(default)]
        currency: Option<String>,
        #[serde(default)]
        duration: Option<String>,
        #[serde(default)]
        duration_in_months: Option<u32>,
    },
    Id(String),
}

/// An entry of `discounts`: the discount, or its id (resolved when a discount event names it).
#[derive(Deserialize)]
#[serde(untagged)]
enum MaybeDiscount {
    Expanded(Box<WireDiscount>),
    Id(String),
    Other(serde::de::IgnoredAny),
}

impl From<WireDiscount> for Discount {
    fn from(wire: WireDiscount) -> Self {
        let mut discount = Discount {
            id: wire.id.filter(|id| !id.is_empty()),
            promotion_code: wire.promotion_code.map(Expandable::into_id),
            start: wire.start,
            end: wire.end,
            customer: wire.customer.map(Expandable::into_id),
            subscription: wire.subscription.map(Expandable::into_id),
            ..Discount::default()
        };
        match wire.coupon.or_else(|| wire.source.and_then(|s| s.coupon)) {
            Some(WireCoupon::Expanded { id, percent_off, amount_off, currency, duration, duration_in_months }) => {
                discount.coupon = id;
                discount.percent_off = percent_off.map(|p| (p.clamp(0.0, 100.0) * 100.0).round() as u32);
                discount.amount_off = amount_off;
                discount.currency = currency.map(|c| c.to_ascii_lowercase());
                discount.duration = duration;
                discount.duration_in_months = duration_in_months;
            }
            Some(WireCoupon::Id(id)) => discount.coupon = Some(id),
            None => {}
        }
        discount
    }
}

#[derive(Deserialize)]
struct WireItem {
    id: String,
    #[serde(default)]
    price: Option<PriceRef>,
    #[serde(default)]
    plan: Option<PriceRef>,
    #[serde(default)]
    quantity: Option<u64>,
    #[serde(default, deserialize_with = "storable_time")]
    current_period_start: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    current_period_end: Option<i64>,
}

#[derive(Deserialize)]
struct WireInvoice {
    id: String,
    #[serde(default)]
    customer: Option<Expandable>,
    #[serde(default)]
    subscription: Option<Expandable>,
    #[serde(default)]
    parent: Option<WireInvoiceParent>,
    #[serde(default)]
    billing_reason: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    amount_due: i64,
    #[serde(default)]
    amount_paid: i64,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default, deserialize_with = "storable_time")]
    period_start: Option<i64>,
    #[serde(default, deserialize_with = "storable_time")]
    period_end: Option<i64>,
    #[serde(default)]
    lines: Option<WireList<WireLine>>,
}

#[derive(Deserialize)]
struct WireInvoiceParent {
    #[serde(default)]
    subscription_details: Option<WireSubscriptionDetails>,
}

#[derive(Deserialize)]
struct WireSubscriptionDetails {
    #[serde(default)]
    subscription: Option<Expandable>,
}

#[derive(Deserialize)]
struct WireLine {
    #[serde(default)]
    price: Option<PriceRef>,
    #[serde(default)]
    pricing: Option<WirePricing>,
    #[serde(default)]
    period: Option<WirePeriod>,
}

#[derive(Deserialize)]
struct WirePricing {
    #[serde(default)]
    price_details: Option<WirePriceDetails>,
}

#[derive(Deserialize)]
struct WirePriceDetails {
    #[serde(default)]
    price: Option<Expandable>,
}

#[derive(Deserialize)]
struct WirePeriod {
    #[serde(default, deserialize_with = "storable_time")]
    end: Option<i64>,
}

#[derive(Deserialize)]
struct WireCheckoutSession {
    id: String,
    mode: String,
    #[serde(default)]
    customer: Option<Expandable>,
    #[serde(default)]
    subscription: Option<Expandable>,
    #[serde(default)]
    payment_status: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    line_items: Option<WireList<WireCheckoutLine>>,
}

#[derive(Deserialize)]
struct WireCheckoutLine {
    #[serde(default)]
    price: Option<PriceRef>,
    #[serde(default)]
    quantity: Option<u64>,
}

/// The body with every JSON `\u0000` escape turned into `\ufffd`: a NUL is valid JSON but no
/// PostgreSQL text column holds it, so a customer name with one would fail every write of its
/// batch. Done once, at the model boundary, so the fold's state and the tables agree. An escaped
/// backslash followed by `u0000` (`\\u0000`, the text "\u0000") is left alone.
pub fn without_nul_escapes(body: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    const NUL: &[u8] = b"\\u0000";
    if memchr::memmem::find(body, NUL).is_none() {
        return std::borrow::Cow::Borrowed(body);
    }
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        if body[i] == b'\\' {
            if body[i..].starts_with(NUL) {
                out.extend_from_slice(b"\\ufffd");
                i += NUL.len();
            } else {
                // Any other escape: copy the backslash and the escaped character together.
                out.extend_from_slice(&body[i..(i + 2).min(body.len())]);
                i += 2;
            }
        } else {
            out.push(body[i]);
            i += 1;
        }
    }
    std::borrow::Cow::Owned(out)
}

fn object<'a, T: Deserialize<'a>>(raw: &'a serde_json::value::RawValue, what: &'static str) -> Result<T, DecodeError> {
    serde_json::from_str(raw.get()).map_err(|source| DecodeError { what, source })
}

/// Decodes a raw event body into the typed model.
pub fn decode(body: &[u8]) -> Result<Event, DecodeError> {
    let body = without_nul_escapes(body);
    let wire: WireEvent<'_> =
        serde_json::from_slice(&body).map_err(|source| DecodeError { what: "the event envelope", source })?;
    let created = match wire.created {
        WireCreated::Seconds(seconds) => Some(seconds),
        WireCreated::Time(ref time) => thin_created(time),
    };
    let Some(created) = created.filter(|c| (0..=MAX_TIME).contains(c)) else {
        let source = <serde_json::Error as serde::de::Error>::custom("created is unreadable or out of range");
        return Err(DecodeError { what: "the event envelope", source });
    };
    let object = match (wire.object.as_deref(), wire.data) {
        (Some(THIN_EVENT), _) => Object::Thin(wire.related_object.unwrap_or_default()),
        (_, Some(data)) => data_object(data.object)?,
        (_, None) => {
            let source = <serde_json::Error as serde::de::Error>::missing_field("data");
            return Err(DecodeError { what: "the event envelope", source });
        }
    };
    Ok(Event {
        meta: EventMeta {
            id: wire.id,
            event_type: wire.event_type,
            created,
            api_version: wire.api_version,
            livemode: wire.livemode,
            fetched: wire.fetched,
        },
        object,
    })
}

/// `data.object`, typed by what the object is, not by the event type's prefix
/// (`customer.source.created` carries a card, `customer.subscription.updated` a subscription).
fn data_object(raw: &serde_json::value::RawValue) -> Result<Object, DecodeError> {
    let kind: WireKind<'_> = object(raw, "the object type")?;
    Ok(match kind.object {
        Some("customer") => Object::Customer(object(raw, "a customer")?),
        Some("subscription") => Object::Subscription(subscription(object(raw, "a subscription")?)),
        Some("invoice") => Object::Invoice(invoice(object(raw, "an invoice")?)),
        Some("checkout.session") => Object::CheckoutSession(checkout_session(object(raw, "a checkout session")?)),
        Some("price" | "plan") => Object::Price(object::<WirePrice>(raw, "a price")?.into()),
        Some("discount") => Object::Discount(object::<WireDiscount>(raw, "a discount")?.into()),
        _ => Object::Other,
    })
}

/// The period (`current_period_start`, `current_period_end`) of a subscription object as the
/// API returns it, in either shape; None for what is not a subscription.
pub fn subscription_period(object: &serde_json::Value) -> Option<(Option<i64>, Option<i64>)> {
    let sub = subscription(WireSubscription::deserialize(object).ok()?);
    Some((sub.current_period_start, sub.current_period_end))
}

fn subscription(wire: WireSubscription) -> Subscription {
    let items: Vec<SubscriptionItem> = wire
        .items
        .data
        .into_iter()
        .map(|item| {
            let price = item.price.or(item.plan);
            SubscriptionItem {
                id: item.id,
                price_id: price.as_ref().map(|p| p.id().to_owned()),
                price: price.and_then(PriceRef::into_price),
                quantity: item.quantity.unwrap_or(1),
                current_period_start: item.current_period_start,
                current_period_end: item.current_period_end,
            }
        })
        .collect();
    Subscription {
        current_period_start: wire
            .current_period_start
            .or_else(|| items.iter().filter_map(|i| i.current_period_start).min()),
        current_period_end: wire.current_period_end.or_else(|| items.iter().filter_map(|i| i.current_period_end).max()),
        id: wire.id,
        customer: wire.customer.into_id(),
        status: wire.status,
        items,
        trial_start: wire.trial_start,
        trial_end: wire.trial_end,
        cancel_at_period_end: wire.cancel_at_period_end,
        cancel_at: wire.cancel_at,
        canceled_at: wire.canceled_at,
        ended_at: wire.ended_at,
        metadata: wire.metadata.unwrap_or_default(),
        discount_ids: wire
            .discounts
            .iter()
            .filter_map(|d| match d {
                MaybeDiscount::Id(id) => Some(id.clone()),
                _ => None,
            })
            .collect(),
        discounts: wire
            .discount
            .into_iter()
            .chain(wire.discounts.into_iter().filter_map(|d| match d {
                MaybeDiscount::Expanded(d) => Some(*d),
                _ => None,
            }))
            .map(Discount::from)
            .collect(),
    }
}

fn invoice(wire: WireInvoice) -> Invoice {
    let WireList { data: lines, has_more: lines_truncated } = wire.lines.unwrap_or_default();
    Invoice {
        subscription: wire.subscription.map(Expandable::into_id).or_else(|| {
            wire.parent.and_then(|p| p.subscription_details).and_then(|d| d.subscription).map(Expandable::into_id)
        }),
        line_price_ids: lines
            .iter()
            .filter_map(|line| {
                let basil =
                    || line.pricing.as_ref().and_then(|p| p.price_details.as_ref()).and_then(|d| d.price.as_ref());
                line.price.as_ref().map(|p| p.id().to_owned()).or_else(|| basil().map(|p| p.id().to_owned()))
            })
            .collect(),
        line_prices: lines.iter().filter_map(|line| line.price.clone().and_then(PriceRef::into_price)).collect(),
        lines_period_end: lines.iter().filter_map(|l| l.period.as_ref().and_then(|p| p.end)).max(),
        lines_truncated,
        id: wire.id,
        customer: wire.customer.map(Expandable::into_id),
        billing_reason: wire.billing_reason,
        status: wire.status,
        amount_due: wire.amount_due,
        amount_paid: wire.amount_paid,
        currency: wire.currency,
        period_start: wire.period_start,
        period_end: wire.period_end,
    }
}

fn checkout_session(wire: WireCheckoutSession) -> CheckoutSession {
    let lines = wire.line_items.unwrap_or_default().data;
    CheckoutSession {
        id: wire.id,
        mode: wire.mode,
        customer: wire.customer.map(Expandable::into_id),
        subscription: wire.subscription.map(Expandable::into_id),
        payment_status: wire.payment_status,
        metadata: wire.metadata.unwrap_or_default(),
        line_items: lines
            .iter()
            .filter_map(|l| l.price.as_ref().map(|p| (p.id().to_owned(), l.quantity.unwrap_or(1))))
            .collect(),
        line_prices: lines.into_iter().filter_map(|l| l.price.and_then(PriceRef::into_price)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn fixture(kind: &str) -> Value {
        let all: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/stripe-objects.json")).expect("fixture");
        all["resources"][kind].clone()
    }

    fn event(event_type: &str, api_version: &str, object: Value) -> Vec<u8> {
        let mut event = fixture("event");
        event["id"] = json!("evt_test");
        event["type"] = json!(event_type);
        event["api_version"] = json!(api_version);
        event["created"] = json!(1_700_000_000);
        event["data"] = json!({ "object": object });
        serde_json::to_vec(&event).expect("serializable")
    }

    fn decode_object(event_type: &str, api_version: &str, object: Value) -> Object {
        let event = decode(&event(event_type, api_version, object)).expect("decodes");
        assert_eq!(event.meta.event_type, event_type);
        assert_eq!(event.meta.created, 1_700_000_000);
        event.object
    }

    fn subscription_of(object: Object) -> Subscription {
        match object {
            Object::Subscription(s) => s,
            other => panic!("not a subscription: {other:?}"),
        }
    }

    fn invoice_of(object: Object) -> Invoice {
        match object {
            Object::Invoice(i) => i,
            other => panic!("not an invoice: {other:?}"),
        }
    }

    /// The 2025-03-31.basil shape of Stripe's example subscription: the period moves to the items.
    fn basil_subscription() -> Value {
        let mut sub = fixture("subscription");
        let map = sub.as_object_mut().expect("object");
        map.remove("current_period_start");
        map.remove("current_period_end");
        sub["items"]["data"][0]["current_period_start"] = json!(1_700_000_000);
        sub["items"]["data"][0]["current_period_end"] = json!(1_702_592_000);
        sub
    }

    #[test]
    fn a_pre_basil_subscription_reads_its_own_period() {
        let mut sub = fixture("subscription");
        sub["current_period_start"] = json!(1_690_000_000);
        sub["current_period_end"] = json!(1_692_592_000);
        sub["cancel_at_period_end"] = json!(true);
        let s = subscription_of(decode_object("customer.subscription.updated", "2022-11-15", sub));
        assert_eq!(s.id, "sub_1MoqxHLgUG5tbmjcG8lOfx2N");
        assert_eq!(s.customer, "cus_NZbFQAsc0ptasX");
        assert_eq!(s.status, SubscriptionStatus::Active);
        assert_eq!(s.price_id(), Some("price_1MoS37LgUG5tbmjcCA3GTNX8"));
        assert_eq!((s.current_period_start, s.current_period_end), (Some(1_690_000_000), Some(1_692_592_000)));
        assert!(s.cancel_at_period_end);
        assert_eq!(s.trial_end, Some(1_234_567_890));
        assert_eq!(s.items[0].quantity, 1);
    }

    #[test]
    fn a_basil_subscription_reads_the_period_from_its_items() {
        let s =
            subscription_of(decode_object("customer.subscription.created", "2025-03-31.basil", basil_subscription()));
        assert_eq!((s.current_period_start, s.current_period_end), (Some(1_700_000_000), Some(1_702_592_000)));
        assert_eq!(s.price_id(), Some("price_1MoS37LgUG5tbmjcCA3GTNX8"));
    }

    #[test]
    fn an_expandable_is_an_id_or_an_object_whose_own_id_is_kept() {
        let read = |text: &str| serde_json::from_str::<Expandable>(text).map(|e| e.id().to_owned());
        assert_eq!(read(r#""cus_1""#).expect("id"), "cus_1");
        let expanded =
            r#"{"metadata": {"id": "not_this"}, "object": "customer", "id": "cus_\u0041", "list": [1, {"id": 2}]}"#;
        assert_eq!(read(expanded).expect("object"), "cus_A");
        for bad in ["null", "5", "{}", r#"{"id": 5}"#, "[\"cus_1\"]"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn legacy_plans_expanded_customers_and_unknown_statuses_are_read() {
        let mut sub = fixture("subscription");
        sub["items"]["data"][0].as_object_mut().expect("item").remove("price");
        sub["items"]["data"][0]["plan"] = json!({ "id": "plan_legacy_gold", "object": "plan" });
        sub["customer"] = json!({ "id": "cus_expanded", "object": "customer" });
        sub["status"] = json!("some_future_status");
        let s = subscription_of(decode_object("customer.subscription.updated", "2019-12-03", sub));
        assert_eq!(s.price_id(), Some("plan_legacy_gold"));
        assert_eq!(s.customer, "cus_expanded");
        assert_eq!(s.status, SubscriptionStatus::Other("some_future_status".into()));
        assert_eq!(s.status.as_str(), "some_future_status");
    }

    #[test]
    fn invoices_name_their_subscription_in_both_shapes() {
        let mut old = fixture("invoice");
        old["subscription"] = json!("sub_old_shape");
        old["billing_reason"] = json!("subscription_cycle");
        let inv = invoice_of(decode_object("invoice.paid", "2022-11-15", old));
        assert_eq!(inv.subscription.as_deref(), Some("sub_old_shape"));
        assert_eq!(inv.line_price_ids, ["price_1MoS36LgUG5tbmjch8DFzJe3"]);
        assert_eq!(inv.lines_period_end, Some(1_679_588_731));
        assert_eq!((inv.amount_due, inv.amount_paid), (1000, 0));

        let mut basil = fixture("invoice");
        basil.as_object_mut().expect("object").remove("subscription");
        basil["parent"] = json!({ "type": "subscription_details", "quote_details": null,
            "subscription_details": { "metadata": {}, "subscription": "sub_basil_shape" } });
        let line = &mut basil["lines"]["data"][0];
        line.as_object_mut().expect("line").remove("price");
        line["pricing"] =
            json!({ "type": "price_details", "price_details": { "price": "price_basil", "product": "prod_x" } });
        let inv = invoice_of(decode_object("invoice.payment_succeeded", "2025-03-31.basil", basil));
        assert_eq!(inv.subscription.as_deref(), Some("sub_basil_shape"));
        assert_eq!(inv.line_price_ids, ["price_basil"]);
        assert_eq!(inv.customer.as_deref(), Some("cus_NZbFQAsc0ptasX"));
    }

    #[test]
    fn checkout_sessions_say_what_they_bought() {
        let mut session = fixture("checkout.session");
        session["customer"] = json!("cus_buyer");
        session["payment_status"] = json!("paid");
        session["metadata"] = json!({ "price_id": "price_credits_1000", "quantity": "3" });
        let Object::CheckoutSession(cs) = decode_object("checkout.session.completed", "2022-11-15", session.clone())
        else {
            panic!("not a session")
        };
        assert_eq!(cs.mode, "payment");
        assert_eq!(cs.customer.as_deref(), Some("cus_buyer"));
        assert_eq!(cs.purchased(), [("price_credits_1000".to_owned(), 3)]);

        session["line_items"] = json!({ "object": "list", "data": [ { "id": "li_1", "price": { "id": "price_credits_10000" }, "quantity": 2 } ] });
        let Object::CheckoutSession(cs) = decode_object("checkout.session.completed", "2022-11-15", session.clone())
        else {
            panic!("not a session")
        };
        assert_eq!(cs.purchased(), [("price_credits_10000".to_owned(), 2)], "line items win over metadata");

        session["mode"] = json!("subscription");
        session["subscription"] = json!("sub_from_checkout");
        let Object::CheckoutSession(cs) = decode_object("checkout.session.completed", "2025-03-31.basil", session)
        else {
            panic!("not a session")
        };
        assert_eq!((cs.mode.as_str(), cs.subscription.as_deref()), ("subscription", Some("sub_from_checkout")));
    }

    #[test]
    fn customers_and_other_types_are_told_apart() {
        let mut customer = fixture("customer");
        customer["email"] = json!("jennyrosen@example.com");
        let Object::Customer(c) = decode_object("customer.updated", "2022-11-15", customer) else {
            panic!("not a customer")
        };
        assert_eq!(c.id, "cus_NZbFQAsc0ptasX");
        assert_eq!(c.email.as_deref(), Some("jennyrosen@example.com"));
        assert!(!c.deleted);
        let stub = json!({ "id": "cus_gone", "object": "customer", "deleted": true });
        let Object::Customer(c) = decode_object("customer.deleted", "2022-11-15", stub) else {
            panic!("not a customer")
        };
        assert!(c.deleted);
        let card = json!({ "id": "card_1", "object": "card", "customer": "cus_1" });
        assert_eq!(decode_object("customer.source.created", "2022-11-15", card), Object::Other);
        assert_eq!(decode_object("payment_intent.created", "2022-11-15", fixture("payment_intent")), Object::Other);
        assert_eq!(
            decode_object("invoice_payment.paid", "2025-05-28.basil", json!({ "id": "inpay_1" })),
            Object::Other
        );
    }

    #[test]
    fn an_undecodable_object_says_what_failed() {
        let mut sub = fixture("subscription");
        sub.as_object_mut().expect("object").remove("status");
        let err = decode(&event("customer.subscription.updated", "2022-11-15", sub)).expect_err("no status");
        assert_eq!(err.what, "a subscription");
        assert!(err.to_string().contains("status"), "{err}");
        let err = decode(b"{\"id\": 1}").expect_err("not an event");
        assert_eq!(err.what, "the event envelope");
    }

    #[test]
    fn nul_escapes_and_unstorable_times_are_settled_at_the_model_boundary() {
        let mut customer = fixture("customer");
        customer["name"] = json!("Ann\u{0}Lee");
        let body = event("customer.updated", "2025-03-31.basil", customer);
        assert!(String::from_utf8_lossy(&body).contains("\\u0000"));
        match decode(&body).expect("decodes").object {
            Object::Customer(c) => assert_eq!(c.name.as_deref(), Some("Ann\u{fffd}Lee")),
            other => panic!("{other:?}"),
        }
        // An escaped backslash before u0000 is the text "\u0000", not a NUL: untouched.
        assert_eq!(without_nul_escapes(br#""a\\u0000b""#).as_ref(), br#""a\\u0000b""#);
        assert_eq!(without_nul_escapes(br#""a\u0000b""#).as_ref(), br#""a\ufffdb""#);

        let mut sub = fixture("subscription");
        sub["current_period_end"] = json!(-62_135_596_801_i64);
        sub["trial_end"] = json!(MAX_TIME + 1);
        let s = subscription_of(decode_object("customer.subscription.updated", "2022-11-15", sub));
        assert_eq!((s.current_period_end, s.trial_end), (None, None));

        let mut far =
            serde_json::from_slice::<Value>(&event("customer.updated", "2025-03-31.basil", fixture("customer")))
                .expect("json");
        far["created"] = json!(-1);
        assert!(decode(&serde_json::to_vec(&far).expect("json")).is_err(), "an event time out of range is undecodable");
    }
}
