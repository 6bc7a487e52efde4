//! Facts fetched from Stripe to complete an event the webhook left incomplete (docs/projector.md,
//! "Fetched facts"): the one place their format is built and their requests are named.
//!
//! A fetched fact is an event of its own in the log (source `fetch`): the incomplete event's type,
//! `created`, `api_version` and `livemode`, its object with the missing part filled in with
//! everything Stripe answered (every page), a `fetched` member naming the effect key, the event it
//! completes, when and what was asked; and an id derived from the key (`evt_fetch_<sha256>`), so
//! however often the fetch runs, one fact is appended.

use bytes::Bytes;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// What part of an object is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// A Checkout Session's `line_items` (webhooks never carry them).
    CheckoutLineItems,
    /// An invoice's `lines` beyond the first page (`has_more: true`).
    InvoiceLines,
    /// A subscription's period, which the snapshot lacked (neither on it nor on its items).
    SubscriptionPeriod,
    /// The whole object a thin event refers to.
    ThinObject,
}

/// The objects a thin event may refer to that are fetched, and where: the kinds the fold projects.
const THIN_OBJECTS: [(&str, &str); 4] = [
    ("customer", "/v1/customers/"),
    ("subscription", "/v1/subscriptions/"),
    ("invoice", "/v1/invoices/"),
    ("checkout.session", "/v1/checkout/sessions/"),
];

/// One request to Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `/v1/...`, built from plain ids only.
    pub path: String,
    /// A list to read page by page (`data`, `has_more`), or one object.
    pub list: bool,
    /// `expand[]` of the request.
    pub expand: Option<&'static str>,
}

impl Part {
    /// The object's field the fetch fills (the whole object for a thin event).
    pub fn field(self) -> &'static str {
        match self {
            Self::CheckoutLineItems => "line_items",
            Self::InvoiceLines => "lines",
            Self::SubscriptionPeriod => "current_period_end",
            Self::ThinObject => "object",
        }
    }

    /// The request for the part named by `id` (the session or invoice of a list; the completed
    /// event for a period or a thin event, whose object `original` names). None when an id is not
    /// a plain Stripe id (it would change the path) or the thin event's object is not fetched.
    pub fn request(self, id: &str, original: &Value) -> Option<Request> {
        let list = |path: String| Request { path, list: true, expand: None };
        match self {
            Self::CheckoutLineItems => plain(id).then(|| list(format!("/v1/checkout/sessions/{id}/line_items"))),
            Self::InvoiceLines => plain(id).then(|| list(format!("/v1/invoices/{id}/lines"))),
            Self::SubscriptionPeriod => {
                let sub = original["data"]["object"]["id"].as_str().filter(|s| plain(s))?;
                Some(Request { path: format!("/v1/subscriptions/{sub}"), list: false, expand: None })
            }
            Self::ThinObject => {
                let related = &original["related_object"];
                let id = related["id"].as_str().filter(|s| plain(s))?;
                let prefix = thin_prefix(related["type"].as_str()?)?;
                let expand = (prefix == "/v1/checkout/sessions/").then_some("line_items");
                Some(Request { path: format!("{prefix}{id}"), list: false, expand })
            }
        }
    }
}

fn plain(id: &str) -> bool {
    !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn thin_prefix(kind: &str) -> Option<&'static str> {
    THIN_OBJECTS.iter().find(|(k, _)| *k == kind).map(|(_, prefix)| *prefix)
}

/// Whether a thin event referring to an object of `kind` has its object fetched.
pub fn thin_object_fetched(kind: &str) -> bool {
    thin_prefix(kind).is_some()
}

/// The snapshot event type a thin event stands for: `v1.invoice.paid` -> `invoice.paid`.
pub fn snapshot_type(thin_type: &str) -> &str {
    thin_type.strip_prefix("v1.").unwrap_or(thin_type)
}

/// The id of the fact fetched under effect key `key`.
pub fn event_id(key: &str) -> String {
    format!("evt_fetch_{}", &hex::encode(Sha256::digest(key.as_bytes()))[..32])
}

/// What was fetched: the items of every page in order (the one object of a single request), and
/// the requests that got them.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The list's `data`, all pages; or the object.
    pub items: Vec<Value>,
    /// `GET <path>?<query>` of each request.
    pub requests: Vec<String>,
}

/// The fact completing `original` (the raw body of the incomplete event): its object with the
/// list replaced by the complete one, or with the period Stripe has now, or (for a thin event) a
/// snapshot event of the object Stripe answered, of the type the thin event stands for.
pub fn event(original: &[u8], key: &str, part: Part, fetched: Fetched, fetched_at: i64) -> anyhow::Result<Bytes> {
    let original: Value = serde_json::from_slice(&crate::stripe::without_nul_escapes(original))?;
    let fetched_member =
        json!({ "key": key, "completes": original["id"], "at": fetched_at, "requests": fetched.requests });
    let (event_type, api_version, created, object) = match part {
        Part::ThinObject => thin_snapshot(&original, fetched.items)?,
        _ => {
            let object = completed(&original, part, fetched.items)?;
            (original["type"].clone(), original["api_version"].clone(), original["created"].clone(), object)
        }
    };
    let body = json!({
        "id": event_id(key),
        "object": "event",
        "type": event_type,
        "api_version": api_version,
        "created": created,
        "livemode": original["livemode"],
        "pending_webhooks": 0,
        "request": { "id": null, "idempotency_key": null },
        "fetched": fetched_member,
        "data": { "object": object },
    });
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// The original's object with the fetched part in place.
fn completed(original: &Value, part: Part, items: Vec<Value>) -> anyhow::Result<Value> {
    let mut object = original["data"]["object"].clone();
    let Some(fields) = object.as_object_mut() else { anyhow::bail!("the event to complete carries no object") };
    let id = fields.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    if part == Part::SubscriptionPeriod {
        let fetched = items.first().ok_or_else(|| anyhow::anyhow!("Stripe answered no subscription"))?;
        let (start, end) = crate::stripe::subscription_period(fetched)
            .ok_or_else(|| anyhow::anyhow!("Stripe's answer is not a subscription"))?;
        fields.insert("current_period_start".to_owned(), json!(start));
        fields.insert("current_period_end".to_owned(), json!(end));
        return Ok(object);
    }
    let url = part.request(&id, original).map(|r| r.path).unwrap_or_default();
    fields.insert(part.field().to_owned(), json!({ "object": "list", "data": items, "has_more": false, "url": url }));
    Ok(object)
}

/// A thin event's stand-in: (type, api_version, created in seconds, object).
fn thin_snapshot(original: &Value, items: Vec<Value>) -> anyhow::Result<(Value, Value, Value, Value)> {
    let object = items.into_iter().next().ok_or_else(|| anyhow::anyhow!("Stripe answered no object"))?;
    let created = original["created"]
        .as_str()
        .and_then(crate::stripe::thin_created)
        .or_else(|| original["created"].as_i64())
        .ok_or_else(|| anyhow::anyhow!("the thin event's created is unreadable"))?;
    let thin_type = original["type"].as_str().unwrap_or_default();
    Ok((json!(snapshot_type(thin_type)), json!(crate::stripe::API_VERSION), json!(created), object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fact_is_the_original_event_completed_under_an_id_of_the_key() {
        let original = br#"{"id":"evt_1","object":"event","type":"checkout.session.completed","api_version":"2025-03-31.basil","created":1700000000,"livemode":false,"data":{"object":{"id":"cs_1","object":"checkout.session","mode":"payment","customer":"cus_1"}}}"#;
        let items = vec![json!({ "id": "li_1", "price": { "id": "price_credits_1000" }, "quantity": 2 })];
        let requests = vec!["GET /v1/checkout/sessions/cs_1/line_items?limit=100".to_owned()];
        let body =
            event(original, "fetch:checkout_items:cs_1", Part::CheckoutLineItems, Fetched { items, requests }, 1)
                .expect("built");
        let decoded = crate::stripe::decode(&body).expect("an event the fold reads");
        assert_eq!(decoded.meta.id, event_id("fetch:checkout_items:cs_1"));
        assert!(decoded.meta.id.starts_with("evt_fetch_"));
        let from = decoded.meta.fetched.expect("a fetched fact");
        assert_eq!((from.key.as_str(), from.completes.as_str()), ("fetch:checkout_items:cs_1", "evt_1"));
        assert_eq!(
            (decoded.meta.event_type.as_str(), decoded.meta.created),
            ("checkout.session.completed", 1_700_000_000)
        );
        let crate::stripe::Object::CheckoutSession(session) = decoded.object else { panic!("a session") };
        assert_eq!(session.line_items, [("price_credits_1000".to_owned(), 2)]);
        assert_eq!(session.customer.as_deref(), Some("cus_1"));
        let envelope = crate::envelope::decode(&body).expect("an envelope ingest would accept");
        assert_eq!(envelope.object_id.as_deref(), Some("cs_1"));
    }

    #[test]
    fn only_plain_ids_make_a_path() {
        let none = Value::Null;
        let path = |part: Part, id: &str, original: &Value| part.request(id, original).map(|r| r.path);
        assert_eq!(path(Part::InvoiceLines, "in_1Mx", &none).as_deref(), Some("/v1/invoices/in_1Mx/lines"));
        for id in ["", "in_1/../customers", "in_1?expand=x", "in 1"] {
            assert_eq!(path(Part::InvoiceLines, id, &none), None, "{id}");
            let sub = json!({ "data": { "object": { "id": id } } });
            assert_eq!(path(Part::SubscriptionPeriod, "evt_1", &sub), None, "{id}");
            let thin = json!({ "related_object": { "id": id, "type": "invoice" } });
            assert_eq!(path(Part::ThinObject, "evt_1", &thin), None, "{id}");
        }
        let thin = json!({ "related_object": { "id": "cs_1", "type": "checkout.session", "url": "/v1/elsewhere" } });
        let request = Part::ThinObject.request("evt_1", &thin).expect("a session is fetched");
        assert_eq!(
            (request.path.as_str(), request.list, request.expand),
            ("/v1/checkout/sessions/cs_1", false, Some("line_items"))
        );
        let meter = json!({ "related_object": { "id": "mtr_1", "type": "billing.meter" } });
        assert_eq!(Part::ThinObject.request("evt_1", &meter), None, "not an object the fold projects");
    }

    #[test]
    fn a_period_fact_carries_the_period_stripe_has_now() {
        let original = br#"{"id":"evt_7","object":"event","type":"customer.subscription.updated","api_version":"2025-03-31.basil","created":1700000000,"livemode":false,"data":{"object":{"id":"sub_1","object":"subscription","customer":"cus_1","status":"active","items":{"data":[{"id":"si_1","price":{"id":"price_pro"}}]}}}}"#;
        let fetched = json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "items": { "data": [{ "id": "si_1", "price": { "id": "price_pro" }, "current_period_start": 1_700_000_000, "current_period_end": 1_702_592_000 }] } });
        let body = event(
            original,
            "fetch:subscription_period:evt_7",
            Part::SubscriptionPeriod,
            Fetched { items: vec![fetched], requests: vec![] },
            1,
        )
        .expect("built");
        let decoded = crate::stripe::decode(&body).expect("decodes");
        let crate::stripe::Object::Subscription(sub) = decoded.object else { panic!("a subscription") };
        assert_eq!((sub.current_period_start, sub.current_period_end), (Some(1_700_000_000), Some(1_702_592_000)));
        assert_eq!(
            (decoded.meta.created, sub.status.as_str()),
            (1_700_000_000, "active"),
            "the original's, not Stripe's now"
        );
    }

    #[test]
    fn a_thin_fact_is_a_snapshot_event_of_the_type_it_stands_for() {
        let thin = br#"{"id":"evt_test_65R9","object":"v2.core.event","type":"v1.customer.subscription.updated","livemode":false,"created":"2024-09-17T06:20:52.246Z","related_object":{"id":"sub_1","type":"subscription","url":"/v1/subscriptions/sub_1"}}"#;
        let fetched = json!({ "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "past_due", "items": { "data": [] } });
        let body = event(
            thin,
            "fetch:thin_object:evt_test_65R9",
            Part::ThinObject,
            Fetched { items: vec![fetched], requests: vec![] },
            1,
        )
        .expect("built");
        let decoded = crate::stripe::decode(&body).expect("decodes");
        assert_eq!(decoded.meta.event_type, "customer.subscription.updated");
        assert_eq!(
            (decoded.meta.created, decoded.meta.api_version.as_deref()),
            (1_726_554_052, Some(crate::stripe::API_VERSION))
        );
        let crate::stripe::Object::Subscription(sub) = decoded.object else { panic!("a subscription") };
        assert_eq!((sub.id.as_str(), sub.customer.as_str(), sub.status.as_str()), ("sub_1", "cus_1", "past_due"));
        assert!(crate::envelope::decode(&body).is_ok(), "an envelope the log accepts");
    }
}
