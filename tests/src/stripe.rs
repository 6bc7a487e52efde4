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
    shared::signature::sign_header(SECRET, now(), body)
}
