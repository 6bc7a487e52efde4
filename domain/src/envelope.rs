//! Decoding of the Stripe event envelope: the fields ingest needs to store and index an event.
//!
//! Only the envelope is read (`id`, `type`, `created`, `api_version`, `livemode` and the id, type
//! and customer of `data.object`); every other field, present or future, is ignored, so a new API
//! version never makes ingest reject an event.
//!
//! Two shapes are events: a snapshot event (`object: "event"`, `created` in Unix seconds, the
//! object under `data.object`) and a thin event from an event destination (`object:
//! "v2.core.event"`, `created` an RFC 3339 time, only a `related_object` reference: its id and
//! type stand for the object's).

use serde::Deserialize;

use crate::stripe::{Expandable, THIN_EVENT, thin_created};

/// Why a body is not a Stripe event.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or the envelope fields have the wrong types.
    #[error("the body is not a Stripe event: {0}")]
    Malformed(#[from] serde_json::Error),
    /// `object` is neither `"event"` nor `"v2.core.event"`, or a snapshot event has no `data`.
    #[error("the body is not a Stripe event: object is `{0}`, expected `event` (with data) or `v2.core.event`")]
    NotAnEvent(String),
    /// `id` does not start with `evt_`.
    #[error("the body is not a Stripe event: id `{0}` does not start with evt_")]
    BadId(String),
    /// `type` is empty.
    #[error("the body is not a Stripe event: type is empty")]
    EmptyType,
    /// `created` is before 1970 or after 9999: no column can hold it.
    #[error("created {0} is out of range")]
    CreatedOutOfRange(i64),
    /// A field stored in its own column holds a NUL, which no text column can hold.
    #[error("an envelope field holds a NUL character")]
    Nul,
}

/// The envelope of a Stripe event, as stored beside its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// `id` (`evt_...`): the identity of the event.
    pub id: String,
    /// `type`, e.g. `customer.subscription.updated`.
    pub event_type: String,
    /// `api_version` the payload is rendered in (null for some old events).
    pub api_version: Option<String>,
    /// `created`, unix seconds.
    pub created: i64,
    /// `livemode`.
    pub livemode: bool,
    /// `data.object.object`, e.g. `subscription`.
    pub object_type: Option<String>,
    /// `data.object.id`.
    pub object_id: Option<String>,
    /// The customer the event concerns: `data.object.id` for customer objects, else
    /// `data.object.customer` (a plain id or an expanded object).
    pub customer_id: Option<String>,
    /// The subscription the event concerns: the subscription itself, an invoice's (before basil
    /// `subscription`, from basil `parent.subscription_details.subscription`), a Checkout
    /// Session's `subscription`. Audit queries filter on it.
    pub subscription_id: Option<String>,
}

#[derive(Deserialize)]
struct RawEnvelope {
    id: String,
    object: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    api_version: Option<String>,
    created: Created,
    livemode: bool,
    #[serde(default)]
    data: Option<RawData>,
    #[serde(default)]
    related_object: Option<RawRelated>,
}

/// A thin event's `related_object`: `type` names the object (`subscription`).
#[derive(Deserialize)]
struct RawRelated {
    id: Option<String>,
    #[serde(rename = "type")]
    object: Option<String>,
}

/// `created`: Unix seconds in a snapshot event, an RFC 3339 time in a thin one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Created {
    Seconds(i64),
    Time(String),
}

#[derive(Deserialize)]
struct RawData {
    object: RawObject,
}

#[derive(Deserialize)]
struct RawObject {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    object: Option<String>,
    #[serde(default)]
    customer: Option<Expandable>,
    #[serde(default)]
    subscription: Option<Lenient<Expandable>>,
    #[serde(default)]
    parent: Option<Lenient<RawParent>>,
}

/// A field read only when it has the shape we know: other objects use the same names for other
/// things, and the envelope never refuses an event for a field it does not need.
#[derive(Deserialize)]
#[serde(untagged)]
enum Lenient<T> {
    Known(T),
    Other(serde::de::IgnoredAny),
}

impl<T> Lenient<T> {
    fn known(&self) -> Option<&T> {
        match self {
            Self::Known(value) => Some(value),
            Self::Other(_) => None,
        }
    }
}

#[derive(Deserialize)]
struct RawParent {
    #[serde(default)]
    subscription_details: Option<Lenient<RawSubscriptionDetails>>,
}

#[derive(Deserialize)]
struct RawSubscriptionDetails {
    #[serde(default)]
    subscription: Option<Lenient<Expandable>>,
}

impl RawObject {
    /// See [`Envelope::subscription_id`].
    fn subscription_id(&self) -> Option<String> {
        match self.object.as_deref()? {
            "subscription" => self.id.clone(),
            "invoice" => {
                let details =
                    self.parent.as_ref().and_then(Lenient::known).and_then(|p| p.subscription_details.as_ref());
                let basil = details.and_then(Lenient::known).and_then(|d| d.subscription.as_ref());
                basil.or(self.subscription.as_ref()).and_then(Lenient::known).map(|s| s.id().to_owned())
            }
            "checkout.session" => self.subscription.as_ref().and_then(Lenient::known).map(|s| s.id().to_owned()),
            _ => None,
        }
    }
}

/// Decodes and checks the envelope of a raw webhook body.
pub fn decode(body: &[u8]) -> Result<Envelope, EnvelopeError> {
    let raw: RawEnvelope = serde_json::from_slice(body)?;
    let object = match (raw.object.as_str(), raw.data, raw.related_object) {
        ("event", Some(data), _) => data.object,
        (THIN_EVENT, _, related) => {
            let (id, object) = related.map(|r| (r.id, r.object)).unwrap_or_default();
            RawObject { id, object, customer: None, subscription: None, parent: None }
        }
        _ => return Err(EnvelopeError::NotAnEvent(raw.object)),
    };
    if !raw.id.starts_with("evt_") || raw.id.len() <= 4 {
        return Err(EnvelopeError::BadId(raw.id));
    }
    if raw.event_type.trim().is_empty() {
        return Err(EnvelopeError::EmptyType);
    }
    let created = match raw.created {
        Created::Seconds(seconds) => seconds,
        Created::Time(time) => thin_created(&time).ok_or_else(|| {
            EnvelopeError::Malformed(<serde_json::Error as serde::de::Error>::custom(format!("created `{time}`")))
        })?,
    };
    if !(0..=crate::stripe::MAX_TIME).contains(&created) {
        return Err(EnvelopeError::CreatedOutOfRange(created));
    }
    let customer_id = if object.object.as_deref() == Some("customer") {
        object.id.clone()
    } else {
        object.customer.as_ref().map(|c| c.id().to_owned())
    };
    let subscription_id = object.subscription_id();
    let envelope = Envelope {
        id: raw.id,
        event_type: raw.event_type,
        api_version: raw.api_version,
        created,
        livemode: raw.livemode,
        object_type: object.object,
        object_id: object.id,
        customer_id,
        subscription_id,
    };
    let texts = [
        &envelope.api_version,
        &envelope.object_type,
        &envelope.object_id,
        &envelope.customer_id,
        &envelope.subscription_id,
    ];
    if envelope.id.contains('\0')
        || envelope.event_type.contains('\0')
        || texts.iter().any(|t| t.as_deref().is_some_and(|t| t.contains('\0')))
    {
        return Err(EnvelopeError::Nul);
    }
    Ok(envelope)
}

/// The envelope of a body that [`decode`] refused but that still names an event id: what Stripe
/// signed is a fact and is stored (the fold records it as an `undecodable` anomaly), so Stripe
/// does not retry it for three days and then disable the endpoint. Returns None without an `evt_`
/// id. Fields that cannot be read fall back: type `unknown`, `created` = `signed_at`, livemode
/// false (an unreadable event never drives live state). Invalid UTF-8 is read lossily for the
/// envelope only; the stored bytes stay exact.
pub fn salvage(body: &[u8], signed_at: i64) -> Option<Envelope> {
    let value: serde_json::Value = match serde_json::from_slice(body) {
        Ok(value) => value,
        Err(_) => serde_json::from_str(&String::from_utf8_lossy(body)).ok()?,
    };
    let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.trim().is_empty()).map(|s| s.replace('\0', "\u{fffd}"));
    let id = text(&value["id"]).filter(|id| id.starts_with("evt_") && id.len() > 4)?;
    let created = value["created"].as_i64().or_else(|| value["created"].as_f64().map(|f| f as i64));
    let object = &value["data"]["object"];
    let object_type = text(&object["object"]);
    let object_id = text(&object["id"]);
    let customer_id = if object_type.as_deref() == Some("customer") {
        object_id.clone()
    } else {
        text(&object["customer"]).or_else(|| text(&object["customer"]["id"]))
    };
    Some(Envelope {
        id,
        event_type: text(&value["type"]).unwrap_or_else(|| "unknown".to_owned()),
        api_version: text(&value["api_version"]),
        created: created.filter(|c| (0..=crate::stripe::MAX_TIME).contains(c)).unwrap_or(signed_at),
        livemode: value["livemode"].as_bool().unwrap_or(false),
        object_type,
        object_id,
        customer_id,
        subscription_id: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(object: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "id": "evt_1MqqbKLt4dXK03v5qaIbiNCC",
            "object": "event",
            "api_version": "2025-03-31.basil",
            "created": 1680064028,
            "data": { "object": object, "previous_attributes": {} },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": "req_1", "idempotency_key": null },
            "type": "customer.subscription.updated",
            "some_future_field": { "nested": [1, 2, 3] }
        }))
        .expect("serializable")
    }

    #[test]
    fn a_subscription_event_yields_its_object_and_customer() {
        let env = decode(&event(json!({"id": "sub_1", "object": "subscription", "customer": "cus_9"}))).expect("event");
        assert_eq!(env.id, "evt_1MqqbKLt4dXK03v5qaIbiNCC");
        assert_eq!(env.event_type, "customer.subscription.updated");
        assert_eq!(env.api_version.as_deref(), Some("2025-03-31.basil"));
        assert_eq!(env.created, 1680064028);
        assert!(!env.livemode);
        assert_eq!(env.object_type.as_deref(), Some("subscription"));
        assert_eq!(env.object_id.as_deref(), Some("sub_1"));
        assert_eq!(env.customer_id.as_deref(), Some("cus_9"));
        assert_eq!(env.subscription_id.as_deref(), Some("sub_1"));
    }

    #[test]
    fn the_subscription_of_an_invoice_or_session_is_read_in_both_api_shapes() {
        let sub = |object| decode(&event(object)).expect("event").subscription_id;
        assert_eq!(
            sub(json!({"id": "in_1", "object": "invoice", "subscription": "sub_old"})).as_deref(),
            Some("sub_old")
        );
        assert_eq!(
            sub(
                json!({"id": "in_1", "object": "invoice", "subscription": {"id": "sub_exp", "object": "subscription"}})
            )
            .as_deref(),
            Some("sub_exp")
        );
        let basil = json!({"id": "in_2", "object": "invoice",
            "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_basil"}}});
        assert_eq!(sub(basil).as_deref(), Some("sub_basil"));
        let one_off = json!({"id": "in_3", "object": "invoice", "parent": null, "subscription": null});
        assert_eq!(sub(one_off), None);
        assert_eq!(
            sub(json!({"id": "cs_1", "object": "checkout.session", "subscription": "sub_cs"})).as_deref(),
            Some("sub_cs")
        );
        assert_eq!(sub(json!({"id": "pi_1", "object": "payment_intent", "subscription": "sub_no"})), None);
        let odd = json!({"id": "in_4", "object": "invoice", "parent": "prod_1", "subscription": 7});
        assert_eq!(sub(odd), None, "fields of another shape are read as absent, never refused");
    }

    #[test]
    fn a_customer_event_is_its_own_customer() {
        let env = decode(&event(json!({"id": "cus_1", "object": "customer", "email": "a@b.c"}))).expect("event");
        assert_eq!(env.customer_id.as_deref(), Some("cus_1"));
        let env = decode(&event(json!({"id": "pm_1", "object": "payment_method", "type": "card"}))).expect("event");
        assert_eq!(env.object_type.as_deref(), Some("payment_method"), "an object's own `type` is not its kind");
    }

    #[test]
    fn an_expanded_or_null_customer_is_read() {
        let env = decode(&event(
            json!({"id": "in_1", "object": "invoice", "customer": {"id": "cus_x", "object": "customer"}}),
        ))
        .expect("event");
        assert_eq!(env.customer_id.as_deref(), Some("cus_x"));
        let env = decode(&event(json!({"id": "pi_1", "object": "payment_intent", "customer": null}))).expect("event");
        assert_eq!(env.customer_id, None);
    }

    #[test]
    fn a_thin_event_is_an_event_of_its_related_object() {
        let thin = br#"{"id":"evt_test_65R9Ijk8Hs3nKCBTcjl16R9IJ7DSQ0dU0U8w3gPrPIwlx","object":"v2.core.event","type":"v1.customer.subscription.updated","livemode":false,"created":"2024-09-17T06:20:52.246Z","related_object":{"id":"sub_1","type":"subscription","url":"/v1/subscriptions/sub_1"},"context":null}"#;
        let env = decode(thin).expect("a thin event");
        assert_eq!(env.event_type, "v1.customer.subscription.updated");
        assert_eq!((env.created, env.api_version), (1_726_554_052, None));
        assert_eq!((env.object_type.as_deref(), env.object_id.as_deref()), (Some("subscription"), Some("sub_1")));
        assert_eq!(env.customer_id, None);
        let customer = br#"{"id":"evt_2","object":"v2.core.event","type":"v1.customer.updated","livemode":true,"created":"2026-01-01T00:00:00Z","related_object":{"id":"cus_1","type":"customer","url":"/v1/customers/cus_1"}}"#;
        let env = decode(customer).expect("a thin event");
        assert_eq!((env.customer_id.as_deref(), env.livemode), (Some("cus_1"), true));
        let ping = br#"{"id":"evt_3","object":"v2.core.event","type":"v2.core.event_destination.ping","livemode":false,"created":"2026-01-01T00:00:00Z"}"#;
        assert_eq!(decode(ping).expect("no related object").object_id, None);
    }

    #[test]
    fn things_that_are_not_stripe_events_are_refused() {
        assert!(matches!(decode(b"not json"), Err(EnvelopeError::Malformed(_))));
        assert!(matches!(decode(b"{}"), Err(EnvelopeError::Malformed(_))));
        assert!(matches!(decode(br#"{"id":"evt_1","object":"event","type":"x","created":"yesterday","livemode":false,"data":{"object":{}}}"#), Err(EnvelopeError::Malformed(_))));
        assert!(matches!(
            decode(br#"{"id":"evt_1","object":"v2.core.event","type":"x","created":"yesterday","livemode":false}"#),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            decode(br#"{"id":"evt_1","object":"event","type":"x","created":1,"livemode":false}"#),
            Err(EnvelopeError::NotAnEvent(_))
        ));
        assert!(matches!(
            decode(
                br#"{"id":"evt_1","object":"v3.event","type":"x","created":1,"livemode":false,"data":{"object":{}}}"#
            ),
            Err(EnvelopeError::NotAnEvent(_))
        ));
        assert!(matches!(
            decode(br#"{"id":"cus_1","object":"event","type":"x","created":1,"livemode":false,"data":{"object":{}}}"#),
            Err(EnvelopeError::BadId(_))
        ));
        assert!(matches!(
            decode(br#"{"id":"evt_1","object":"event","type":" ","created":1,"livemode":false,"data":{"object":{}}}"#),
            Err(EnvelopeError::EmptyType)
        ));
    }

    #[test]
    fn a_body_decode_refuses_is_salvaged_when_it_names_an_event_id() {
        let float_created = br#"{"id":"evt_1","object":"event","type":"customer.created","created":1680064028.5,"data":{"object":{"id":"cus_1","object":"customer"}}}"#;
        assert!(decode(float_created).is_err(), "no livemode, a float created");
        let salvaged = salvage(float_created, 7).expect("has an id");
        assert_eq!((salvaged.id.as_str(), salvaged.event_type.as_str()), ("evt_1", "customer.created"));
        assert_eq!((salvaged.created, salvaged.livemode), (1680064028, false));
        assert_eq!(salvaged.customer_id.as_deref(), Some("cus_1"));

        let mut invalid_utf8 = br#"{"id":"evt_2","type":"x","data":{"object":{"name":"#.to_vec();
        invalid_utf8.extend_from_slice(b"\"\xff\xfe\"}}}");
        let salvaged = salvage(&invalid_utf8, 7).expect("id read lossily");
        assert_eq!((salvaged.id.as_str(), salvaged.created), ("evt_2", 7));

        let far = br#"{"id":"evt_3","object":"event","type":"x","created":-99999999999,"livemode":true,"data":{"object":{"id":"cus_\u0000"}}}"#;
        assert!(matches!(decode(far), Err(EnvelopeError::CreatedOutOfRange(_))));
        let salvaged = salvage(far, 7).expect("salvaged");
        assert_eq!(salvaged.created, 7, "an unstorable time is replaced by the signature's");
        assert!(!salvaged.object_id.expect("id").contains('\0'));

        assert!(salvage(br#"{"type":"customer.created"}"#, 7).is_none(), "no id");
        assert!(salvage(br#"{"id":"cus_1"}"#, 7).is_none(), "not an event id");
        assert!(salvage(b"not json", 7).is_none());
    }
}
