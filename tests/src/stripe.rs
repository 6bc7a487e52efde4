//! Stripe-shaped events for tests, built from Stripe's published example objects
//! (`tests/fixtures/stripe-objects.json`, API version 2022-11-15).

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The signing secret the test ingest instances use.
pub const SECRET: &str = "whsec_ledger_tests_secret";

fn objects() -> &'static Value {
    static OBJECTS: OnceLock<Value> = OnceLock::new();
    OBJECTS
        .get_or_init(|| serde_json::from_str(include_str!("../fixtures/stripe-objects.json")).expect("fixture parses"))
}

/// Stripe's example object of `kind` (`customer`, `subscription`, `invoice`, `checkout.session`, ...).
pub fn object(kind: &str) -> Value {
    objects()["resources"][kind].clone()
}

/// A fresh `evt_` id.
pub fn event_id() -> String {
    format!("evt_{}", uuid::Uuid::new_v4().simple())
}

/// Now, unix seconds.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).expect("clock after 1970")
}

/// An event envelope shaped like Stripe's example event, carrying `data_object`.
pub fn event(id: &str, event_type: &str, created: i64, data_object: Value) -> Value {
    let mut event = object("event");
    event["id"] = json!(id);
    event["type"] = json!(event_type);
    event["created"] = json!(created);
    event["data"] = json!({ "object": data_object });
    event["request"] = json!({ "id": format!("req_{}", &id[4..12.min(id.len())]), "idempotency_key": null });
    event
}

/// Stripe's example price (recurring, monthly, licensed, usd) with another id and unit amount.
pub fn price(id: &str, unit_amount: i64) -> Value {
    let mut price = object("price");
    price["id"] = json!(id);
    price["unit_amount"] = json!(unit_amount);
    price
}

/// A `price.*` event carrying `price`, as the body Stripe sends (a fresh event id).
pub fn price_event(event_type: &str, created: i64, price: Value) -> Vec<u8> {
    serde_json::to_vec(&event(&event_id(), event_type, created, price)).expect("json")
}

/// Stripe's example discount with other ids and terms: `percent_off` from `start` for `months`
/// (`None`: forever), on `subscription` (`None`: the customer's, for all their subscriptions).
pub fn discount(
    id: &str,
    customer: &str,
    subscription: Option<&str>,
    percent_off: f64,
    start: i64,
    months: Option<u32>,
) -> Value {
    let mut discount = object("discount");
    discount["id"] = json!(id);
    discount["customer"] = json!(customer);
    discount["subscription"] = json!(subscription);
    discount["start"] = json!(start);
    discount["end"] = json!(months.map(|m| start + i64::from(m) * 30 * 86_400));
    discount["coupon"]["percent_off"] = json!(percent_off);
    discount["coupon"]["duration"] = json!(if months.is_some() { "repeating" } else { "forever" });
    discount["coupon"]["duration_in_months"] = json!(months);
    discount
}

/// A `customer.discount.*` event carrying `discount`.
pub fn discount_event(event_type: &str, created: i64, discount: Value) -> Vec<u8> {
    serde_json::to_vec(&event(&event_id(), event_type, created, discount)).expect("json")
}

/// Stripe's example customer with another id.
pub fn customer(id: &str) -> Value {
    let mut customer = object("customer");
    customer["id"] = json!(id);
    customer
}

/// Stripe's example subscription with other ids.
pub fn subscription(id: &str, customer: &str, status: &str) -> Value {
    let mut subscription = object("subscription");
    subscription["id"] = json!(id);
    subscription["customer"] = json!(customer);
    subscription["status"] = json!(status);
    subscription
}

/// A realistic `customer.subscription.updated` body (about 3 KB), pretty-printed like Stripe's.
pub fn subscription_updated(id: &str, sequence: u64) -> Vec<u8> {
    let customer = format!("cus_{sequence:014}");
    let event = event(
        id,
        "customer.subscription.updated",
        now(),
        subscription(&format!("sub_{sequence:014}"), &customer, "active"),
    );
    serde_json::to_vec_pretty(&event).expect("serializable")
}

/// The `Stripe-Signature` header Stripe would send for `body` now.
pub fn sign(body: &[u8]) -> String {
    domain::signature::sign_header(SECRET, now(), body)
}

/// Which API version's object shapes an event is rendered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `2022-11-15` (Stripe's fixtures): period on the subscription, `invoice.subscription`.
    Legacy,
    /// `2025-03-31.basil`: period on the items, `invoice.parent.subscription_details`,
    /// line price under `pricing.price_details`.
    Basil,
}

impl Shape {
    fn api_version(self) -> &'static str {
        match self {
            Self::Legacy => "2022-11-15",
            Self::Basil => "2025-03-31.basil",
        }
    }
}

fn envelope(event_type: &str, created: i64, shape: Shape, object: Value) -> Vec<u8> {
    let mut e = event(&event_id(), event_type, created, object);
    e["api_version"] = json!(shape.api_version());
    serde_json::to_vec(&e).expect("serializable")
}

/// What a subscription snapshot says.
#[derive(Debug, Clone)]
pub struct SubSnapshot {
    /// `sub_...`.
    pub id: String,
    /// `cus_...`.
    pub customer: String,
    /// Price of its item.
    pub price: String,
    /// Status.
    pub status: String,
    /// Current period (start, end).
    pub period: (i64, i64),
    /// Trial end.
    pub trial_end: Option<i64>,
    /// Cancels at period end.
    pub cancel_at_period_end: bool,
    /// Canceled at.
    pub canceled_at: Option<i64>,
    /// Ended at.
    pub ended_at: Option<i64>,
}

impl SubSnapshot {
    /// A snapshot with no trial and no cancellation.
    pub fn new(id: &str, customer: &str, price: &str, status: &str, period: (i64, i64)) -> Self {
        Self {
            id: id.into(),
            customer: customer.into(),
            price: price.into(),
            status: status.into(),
            period,
            trial_end: None,
            cancel_at_period_end: false,
            canceled_at: None,
            ended_at: None,
        }
    }
}

/// A `customer.subscription.*` event in the given shape, built on Stripe's example subscription.
pub fn subscription_event(event_type: &str, created: i64, shape: Shape, s: &SubSnapshot) -> Vec<u8> {
    let mut sub = subscription(&s.id, &s.customer, &s.status);
    sub["items"]["data"][0]["price"]["id"] = json!(s.price);
    sub["items"]["data"][0]["subscription"] = json!(s.id);
    sub["trial_start"] = json!(s.trial_end.map(|_| s.period.0));
    sub["trial_end"] = json!(s.trial_end);
    sub["cancel_at_period_end"] = json!(s.cancel_at_period_end);
    sub["cancel_at"] = json!(if s.cancel_at_period_end { Some(s.period.1) } else { None });
    sub["canceled_at"] = json!(s.canceled_at);
    sub["ended_at"] = json!(s.ended_at);
    match shape {
        Shape::Legacy => {
            sub["current_period_start"] = json!(s.period.0);
            sub["current_period_end"] = json!(s.period.1);
        }
        Shape::Basil => {
            let map = sub.as_object_mut().expect("object");
            map.remove("current_period_start");
            map.remove("current_period_end");
            sub["items"]["data"][0]["current_period_start"] = json!(s.period.0);
            sub["items"]["data"][0]["current_period_end"] = json!(s.period.1);
        }
    }
    envelope(event_type, created, shape, sub)
}

/// `body` (a subscription event) without its period: neither on the subscription nor on its
/// items, as no API version renders it but a snapshot can arrive.
pub fn without_period(body: &[u8]) -> Vec<u8> {
    let mut event: Value = serde_json::from_slice(body).expect("json");
    let sub = &mut event["data"]["object"];
    let strip = |o: &mut Value| {
        if let Some(map) = o.as_object_mut() {
            map.remove("current_period_start");
            map.remove("current_period_end");
        }
    };
    strip(sub);
    if let Some(items) = sub["items"]["data"].as_array_mut() {
        items.iter_mut().for_each(strip);
    }
    serde_json::to_vec(&event).expect("serializable")
}

/// A thin event, as an event destination sends it (`v2.core.event`): `event_type` (for example
/// `v1.customer.subscription.updated`), `created` as an RFC 3339 time, and only a reference to
/// the object (`kind` such as `subscription`, `id`).
pub fn thin_event(event_type: &str, created: i64, kind: &str, id: &str) -> Vec<u8> {
    let created = chrono::DateTime::from_timestamp(created, 123_000_000).expect("a time");
    let url = match kind {
        "checkout.session" => format!("/v1/checkout/sessions/{id}"),
        other => format!("/v1/{other}s/{id}"),
    };
    serde_json::to_vec(&json!({
        "id": format!("evt_test_{}", uuid::Uuid::new_v4().simple()),
        "object": "v2.core.event",
        "type": event_type,
        "livemode": false,
        "created": created.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "related_object": { "id": id, "type": kind, "url": url },
        "context": null,
        "reason": { "type": "request", "request": { "id": "req_v2thin", "idempotency_key": null } },
    }))
    .expect("serializable")
}

/// What a subscription invoice is about.
#[derive(Debug, Clone, Copy)]
pub struct InvoiceOf<'a> {
    /// `in_...`.
    pub id: &'a str,
    /// `cus_...`.
    pub customer: &'a str,
    /// `sub_...`.
    pub subscription: &'a str,
    /// Price of its line.
    pub price: &'a str,
    /// Service period (start, end).
    pub period: (i64, i64),
}

/// An `invoice.*` event for a subscription invoice, built on Stripe's example invoice.
pub fn invoice_event(event_type: &str, created: i64, shape: Shape, of: &InvoiceOf<'_>) -> Vec<u8> {
    let InvoiceOf { id: invoice_id, customer, subscription, price, period } = *of;
    let mut inv = object("invoice");
    inv["id"] = json!(invoice_id);
    inv["customer"] = json!(customer);
    inv["billing_reason"] = json!("subscription_cycle");
    inv["status"] = json!(if event_type == "invoice.payment_failed" { "open" } else { "paid" });
    inv["period_start"] = json!(period.0);
    inv["period_end"] = json!(period.1);
    inv["lines"]["data"][0]["period"] = json!({ "start": period.0, "end": period.1 });
    match shape {
        Shape::Legacy => {
            inv["subscription"] = json!(subscription);
            inv["lines"]["data"][0]["price"]["id"] = json!(price);
        }
        Shape::Basil => {
            inv.as_object_mut().expect("object").remove("subscription");
            inv["parent"] = json!({ "type": "subscription_details", "quote_details": null,
                "subscription_details": { "metadata": {}, "subscription": subscription } });
            let line = &mut inv["lines"]["data"][0];
            line.as_object_mut().expect("line").remove("price");
            line["pricing"] =
                json!({ "type": "price_details", "price_details": { "price": price, "product": "prod_x" } });
        }
    }
    envelope(event_type, created, shape, inv)
}

/// A `checkout.session.completed` event, built on Stripe's example session.
/// `mode` is `subscription` (with `subscription`) or `payment` (with `pack` as `metadata.price_id`).
pub fn checkout_completed(
    created: i64,
    shape: Shape,
    session_id: &str,
    customer: &str,
    mode: &str,
    subscription: Option<&str>,
    pack: Option<(&str, u64)>,
) -> Vec<u8> {
    let mut cs = object("checkout.session");
    cs["id"] = json!(session_id);
    cs["customer"] = json!(customer);
    cs["mode"] = json!(mode);
    cs["status"] = json!("complete");
    cs["payment_status"] = json!("paid");
    cs["subscription"] = json!(subscription);
    if let Some((price, quantity)) = pack {
        cs["metadata"] = json!({ "price_id": price, "quantity": quantity.to_string() });
    }
    envelope("checkout.session.completed", created, shape, cs)
}

/// A `customer.*` event, built on Stripe's example customer.
pub fn customer_event(event_type: &str, created: i64, shape: Shape, id: &str, email: &str) -> Vec<u8> {
    let mut c = customer(id);
    c["email"] = json!(email);
    c["name"] = json!(format!("Customer {id}"));
    if event_type == "customer.deleted" {
        c = json!({ "id": id, "object": "customer", "deleted": true });
    }
    envelope(event_type, created, shape, c)
}
