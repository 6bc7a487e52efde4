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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A Checkout Session's `line_items` (webhooks never carry them).
    CheckoutLineItems,
    /// An invoice's `lines` beyond the first page (`has_more: true`).
    InvoiceLines,
}

impl Part {
    /// The object's field the list fills.
    pub fn field(self) -> &'static str {
        match self {
            Self::CheckoutLineItems => "line_items",
            Self::InvoiceLines => "lines",
        }
    }

    /// Stripe's list endpoint of `id`'s part; `None` for an id that is not a plain Stripe id (it
    /// would change the path).
    pub fn path(self, id: &str) -> Option<String> {
        let plain = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        plain.then(|| match self {
            Self::CheckoutLineItems => format!("/v1/checkout/sessions/{id}/line_items"),
            Self::InvoiceLines => format!("/v1/invoices/{id}/lines"),
        })
    }
}

/// The id of the fact fetched under effect key `key`.
pub fn event_id(key: &str) -> String {
    format!("evt_fetch_{}", &hex::encode(Sha256::digest(key.as_bytes()))[..32])
}

/// What was fetched: the items of every page, in order, and the requests that got them.
#[derive(Debug, Clone, Default)]
pub struct Fetched {
    /// The list's `data`, all pages.
    pub items: Vec<Value>,
    /// `GET <path>?<query>` of each page.
    pub requests: Vec<String>,
}

/// The fact: `original` (the raw body of the incomplete event) with `data.object.<field>` replaced
/// by the complete list.
pub fn event(original: &[u8], key: &str, part: Part, fetched: Fetched, fetched_at: i64) -> anyhow::Result<Bytes> {
    let original: Value = serde_json::from_slice(&crate::stripe::without_nul_escapes(original))?;
    let mut object = original["data"]["object"].clone();
    let Some(fields) = object.as_object_mut() else { anyhow::bail!("the event to complete carries no object") };
    let id = fields.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
    let url = part.path(&id).unwrap_or_default();
    fields.insert(
        part.field().to_owned(),
        json!({ "object": "list", "data": fetched.items, "has_more": false, "url": url }),
    );
    let body = json!({
        "id": event_id(key),
        "object": "event",
        "type": original["type"],
        "api_version": original["api_version"],
        "created": original["created"],
        "livemode": original["livemode"],
        "pending_webhooks": 0,
        "request": { "id": null, "idempotency_key": null },
        "fetched": { "key": key, "completes": original["id"], "at": fetched_at, "requests": fetched.requests },
        "data": { "object": object },
    });
    Ok(Bytes::from(serde_json::to_vec(&body)?))
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
        assert!(decoded.meta.id.starts_with("evt_fetch_") && decoded.meta.fetched);
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
        assert_eq!(Part::InvoiceLines.path("in_1Mx").as_deref(), Some("/v1/invoices/in_1Mx/lines"));
        for id in ["", "in_1/../customers", "in_1?expand=x", "in 1"] {
            assert_eq!(Part::InvoiceLines.path(id), None, "{id}");
        }
    }
}
