//! Erasure of a customer's personal data from a stored body (issue 32, docs/auditing.md
//! "Erasure"), decided purely: which values are personal, and the redacted body.
//!
//! Every value under a personal key, at any depth, becomes [`ERASED`] (a `null` stays `null`:
//! nothing was there), and every value of a `metadata` object too. Ids, amounts, times, statuses,
//! prices and every other value keep their meaning. The body is re-serialized: its bytes change in
//! layout (no whitespace, object keys in sorted order, numbers in serde_json's shortest form), not
//! in what any kept value says.

use serde_json::Value;

/// What an erased value reads as.
pub const ERASED: &str = "[erased]";

/// Keys whose value is personal data, wherever they appear.
pub const PERSONAL_KEYS: [&str; 13] = [
    "email",
    "name",
    "phone",
    "address",
    "shipping",
    "customer_email",
    "customer_name",
    "customer_phone",
    "customer_address",
    "customer_details",
    "billing_details",
    "receipt_email",
    "description",
];

/// The redacted body of `raw`, or `None` when it holds nothing to erase (or is not JSON: nothing
/// can be told apart in it, and such a body was never folded).
pub fn redact(raw: &[u8]) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(raw).ok()?;
    if !erase(&mut value) {
        return None;
    }
    serde_json::to_vec(&value).ok()
}

/// Erases the personal values in `value`; true when it changed anything.
fn erase(value: &mut Value) -> bool {
    match value {
        Value::Object(map) => {
            let mut changed = false;
            for (key, child) in map.iter_mut() {
                changed |= if key == "metadata" {
                    erase_all(child, false)
                } else if PERSONAL_KEYS.contains(&key.as_str()) {
                    erase_all(child, true)
                } else {
                    erase(child)
                };
            }
            changed
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| erase(item) | changed),
        _ => false,
    }
}

/// Replaces `value` by [`ERASED`] (`whole`), or each value of the object `value` (metadata).
fn erase_all(value: &mut Value, whole: bool) -> bool {
    match value {
        Value::Null => false,
        Value::String(s) if s == ERASED => false,
        Value::Object(map) if !whole => map.values_mut().fold(false, |changed, v| erase_all(v, true) | changed),
        _ if !whole => false,
        _ => {
            *value = Value::String(ERASED.to_owned());
            true
        }
    }
}

/// `text`, unless it is an erased value (read as absent: no mail goes to `[erased]`).
pub fn unless_erased(text: Option<String>) -> Option<String> {
    text.filter(|t| t != ERASED)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn redacted(value: Value) -> Value {
        serde_json::from_slice(&redact(&serde_json::to_vec(&value).expect("json")).expect("changed")).expect("json")
    }

    #[test]
    fn personal_values_at_any_depth_and_every_metadata_value_are_erased_the_rest_kept() {
        let event = json!({
            "id": "evt_1", "created": 1_700_000_000, "type": "checkout.session.completed",
            "data": { "object": {
                "id": "cs_1", "customer": "cus_1", "amount_total": 2_900, "customer_email": "a@example.com",
                "customer_details": { "email": "a@example.com", "address": { "city": "Paris" } },
                "metadata": { "user": "42", "note": { "nested": true } },
                "line_items": { "data": [ { "description": "Ada's seat", "price": { "id": "price_1", "unit_amount": 2_900 } } ] },
                "shipping": null, "phone": 33_100_000
            } }
        });
        let out = redacted(event.clone());
        let o = &out["data"]["object"];
        assert_eq!(o["customer_email"], ERASED);
        assert_eq!(o["customer_details"], ERASED, "the whole object");
        assert_eq!(o["metadata"], json!({ "user": ERASED, "note": ERASED }));
        assert_eq!(o["line_items"]["data"][0]["description"], ERASED);
        assert_eq!(o["phone"], ERASED, "whatever its type");
        assert_eq!(o["shipping"], Value::Null, "nothing was there");
        // Everything else means what it meant.
        assert_eq!(
            (&o["id"], &o["customer"], &o["amount_total"]),
            (&event["data"]["object"]["id"], &json!("cus_1"), &json!(2_900))
        );
        assert_eq!(o["line_items"]["data"][0]["price"], event["data"]["object"]["line_items"]["data"][0]["price"]);
        assert_eq!((&out["id"], &out["created"], &out["type"]), (&event["id"], &event["created"], &event["type"]));
    }

    #[test]
    fn a_body_with_nothing_personal_or_already_erased_is_left_alone() {
        assert_eq!(redact(br#"{"id":"evt_1","data":{"object":{"id":"sub_1","email":null,"metadata":{}}}}"#), None);
        let once = redact(br#"{"data":{"object":{"email":"a@example.com"}}}"#).expect("erased");
        assert_eq!(redact(&once), None, "erasing twice changes nothing");
        assert_eq!(redact(b"{ not json"), None);
    }

    #[test]
    fn an_erased_value_reads_as_absent() {
        assert_eq!(unless_erased(Some(ERASED.to_owned())), None);
        assert_eq!(unless_erased(Some("a@example.com".to_owned())).as_deref(), Some("a@example.com"));
    }
}
