//! `GET /v1/catalog` (issue 30, items 1 and 5): the pricing page's tiers and packs, their amounts
//! from Stripe's own price objects folded from the log, never typed by hand; no authentication;
//! cacheable with an `ETag`.

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, catalog};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use serde_json::{Value, json};

fn price_event(event_type: &str, created: i64, id: &str, unit_amount: i64, interval: &str) -> Vec<u8> {
    let mut price = stripe::price(id, unit_amount);
    price["recurring"]["interval"] = json!(interval);
    stripe::price_event(event_type, created, price)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pricing_page_gets_stripes_amounts_for_sellable_tiers_without_a_key_and_can_cache_them() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let projector = TestProjector::start(db.service_pool(4), catalog(), 20).await;
    let t = stripe::now();
    // A subscription carries the starter monthly price; price events describe the yearly one
    // (updated later), and the enterprise price (not sellable: never shown).
    let snap = SubSnapshot::new("sub_cat", "cus_cat", "price_starter_monthly", "active", (t, t + 2_592_000));
    let bodies = [
        stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap),
        price_event("price.created", t, "price_starter_yearly", 19_000, "year"),
        price_event("price.updated", t + 5, "price_starter_yearly", 29_000, "year"),
        price_event("price.created", t, "price_enterprise_monthly", 99_000, "month"),
    ];
    for body in &bodies {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
    }
    projector.caught_up(&db.pool).await;

    let url = format!("http://{}/v1/catalog", projector.addr);
    let response = reqwest::get(&url).await.expect("request");
    assert_eq!(response.status(), 200, "no key needed");
    assert_eq!(response.headers()["cache-control"], "public, max-age=60");
    let etag = response.headers()["etag"].to_str().expect("etag").to_owned();
    let body: Value = response.json().await.expect("json");
    let names: Vec<&str> = body["tiers"].as_array().expect("tiers").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["free", "starter", "professional"], "enterprise is sold by contract");
    let starter = &body["tiers"][1];
    let price = |id: &str| starter["prices"].as_array().expect("prices").iter().find(|p| p["id"] == id).cloned();
    assert_eq!(
        price("price_starter_monthly"),
        Some(
            json!({ "id": "price_starter_monthly", "amount": 2000, "currency": "usd", "interval": "month", "interval_count": 1 })
        ),
        "the amount of Stripe's example price the subscription carried"
    );
    assert_eq!(
        price("price_starter_yearly").map(|p| p["amount"].clone()),
        Some(json!(29_000)),
        "the newest price event"
    );
    assert_eq!(price("price_starter_legacy_2023").map(|p| p["amount"].clone()), Some(Value::Null), "never seen");
    assert_eq!(starter["display_name"], "Starter");
    assert_eq!(starter["credits_per_cycle"], 1000);
    assert_eq!(body["credit_packs"][0]["name"], "credits_1000");

    let again = reqwest::Client::new().get(&url).header("if-none-match", &etag).send().await.expect("request");
    assert_eq!(again.status(), 304, "unchanged: the cached copy stands");
    ingest.post_signed(&price_event("price.updated", t + 9, "price_starter_yearly", 31_000, "year")).await;
    projector.caught_up(&db.pool).await;
    let changed = reqwest::Client::new().get(&url).header("if-none-match", &etag).send().await.expect("request");
    assert_eq!(changed.status(), 200, "a new price makes a new ETag");
    ingest.stop().await.expect("stop");
}
