//! `GET /v1/catalog`: what the product's pricing page shows, without authentication: every
//! sellable tier (display name, limits, credits, rollover cap) and every credit pack, each with its
//! prices as Stripe's own price objects say (`projection.prices`: amount, currency, interval), so
//! no amount is ever typed by hand. `amount` is null while Stripe's price has not been seen (no
//! event carried it yet: a `replay reconcile` run fetches it). Cacheable: an `ETag` of the body,
//! `If-None-Match` answered 304, `Cache-Control: public, max-age=60`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::catalog::Catalog;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AccessState;
use super::error::ApiError;

/// A price as the pricing page needs it: amount, currency, interval, interval count.
type Known = (Option<i64>, Option<String>, Option<String>, Option<i32>);

/// The handler.
pub async fn read(State(state): State<AccessState>, headers: HeaderMap) -> Response {
    match body(&state).await {
        Ok(body) => cacheable(&headers, body),
        Err(error) => error.into_response(),
    }
}

async fn body(state: &AccessState) -> Result<Vec<u8>, ApiError> {
    let ids: Vec<String> = state
        .catalog
        .tiers()
        .iter()
        .filter(|t| t.sellable)
        .flat_map(|t| t.price_ids.iter().cloned())
        .chain(state.catalog.credit_packs().iter().map(|p| p.price_id.clone()))
        .collect();
    let known: HashMap<String, Known> = sqlx::query_as::<_, (String, Option<i64>, Option<String>, Option<String>, Option<i32>)>(
        "SELECT price_id, unit_amount, currency, interval, interval_count FROM projection.prices WHERE price_id = ANY($1)",
    )
    .bind(&ids)
    .fetch_all(&state.pool)
    .await?
    .into_iter()
    .map(|(id, amount, currency, interval, count)| (id, (amount, currency, interval, count)))
    .collect();
    Ok(serde_json::to_vec(&catalog_json(&state.catalog, &known)).unwrap_or_default())
}

/// The answer: sellable tiers lowest first, then the packs, prices in the catalog's order.
fn catalog_json(catalog: &Catalog, known: &HashMap<String, Known>) -> Value {
    let prices = |ids: &[String]| -> Vec<Value> {
        ids.iter()
            .map(|id| {
                let (amount, currency, interval, count) = known.get(id).cloned().unwrap_or_default();
                json!({ "id": id, "amount": amount, "currency": currency, "interval": interval, "interval_count": count })
            })
            .collect()
    };
    let tiers: Vec<Value> = catalog
        .tiers()
        .iter()
        .filter(|t| t.sellable)
        .map(|t| {
            json!({
                "name": t.name, "display_name": t.display_name, "limits": domain::access::limits(t),
                "credits_per_cycle": t.credits_per_cycle, "rollover_cap": t.rollover_cap, "prices": prices(&t.price_ids),
            })
        })
        .collect();
    let packs: Vec<Value> = catalog
        .credit_packs()
        .iter()
        .map(|p| json!({ "name": p.name, "credits": p.credits, "prices": prices(std::slice::from_ref(&p.price_id)) }))
        .collect();
    json!({ "tiers": tiers, "credit_packs": packs })
}

/// 200 with the body, its `ETag` and `Cache-Control`, or 304 when `If-None-Match` names it.
fn cacheable(headers: &HeaderMap, body: Vec<u8>) -> Response {
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(&body))[..32]);
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let h = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, value);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=60"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsellable_tiers_are_left_out_and_unseen_prices_have_no_amount() {
        let catalog = Catalog::example().expect("catalog");
        let known: HashMap<String, Known> = [(
            "price_starter_monthly".to_owned(),
            (Some(2_900), Some("usd".to_owned()), Some("month".to_owned()), Some(1)),
        )]
        .into();
        let body = catalog_json(&catalog, &known);
        let names: Vec<&str> =
            body["tiers"].as_array().expect("tiers").iter().filter_map(|t| t["name"].as_str()).collect();
        assert_eq!(names, ["free", "starter", "professional"], "enterprise is sold by contract");
        let starter = &body["tiers"][1];
        assert_eq!(starter["display_name"], "Starter");
        assert_eq!(starter["limits"]["agents"], 3);
        assert_eq!(
            starter["prices"][0],
            json!({ "id": "price_starter_monthly", "amount": 2900, "currency": "usd", "interval": "month", "interval_count": 1 })
        );
        assert_eq!(starter["prices"][1]["amount"], Value::Null, "not seen yet");
        assert_eq!(body["credit_packs"][0]["credits"], 1000);
    }

    #[test]
    fn a_matching_if_none_match_gets_304_with_the_same_etag() {
        let first = cacheable(&HeaderMap::new(), b"{}".to_vec());
        assert_eq!(first.status(), StatusCode::OK);
        let etag = first.headers()[header::ETAG].clone();
        assert_eq!(first.headers()[header::CACHE_CONTROL], "public, max-age=60");
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, etag.clone());
        let again = cacheable(&headers, b"{}".to_vec());
        assert_eq!((again.status(), again.headers()[header::ETAG].clone()), (StatusCode::NOT_MODIFIED, etag));
        assert_eq!(cacheable(&headers, b"{\"changed\":1}".to_vec()).status(), StatusCode::OK);
    }
}
