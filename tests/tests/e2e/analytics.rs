//! `GET /v1/analytics/mrr` (issue 30): lifecycles through ingest, the figures computed by hand,
//! and a policy change that a rebuild applies to all of history.

use std::sync::Arc;

use domain::catalog::Catalog;
use domain::clock::SystemClock;
use domain::fold::FoldConfig;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector, catalog, customer_token};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use serde_json::{Value, json};
use store::rebuild;

/// 2026-03-01 12:00 UTC.
const T0: i64 = 1_772_366_400;
const DAY: i64 = 86_400;

/// A subscription event of `customer` on the starter or professional price at `amount`, with an
/// optional forever discount of `percent_off`.
fn event(
    kind: &str,
    at: i64,
    sub: &str,
    customer: &str,
    status: &str,
    amount: i64,
    percent_off: Option<f64>,
) -> Vec<u8> {
    let snap = SubSnapshot::new(sub, customer, "price_starter_monthly", status, (at, at + 30 * DAY));
    let mut e: Value =
        serde_json::from_slice(&stripe::subscription_event(kind, at, Shape::Basil, &snap)).expect("json");
    e["data"]["object"]["items"]["data"][0]["price"]["unit_amount"] = json!(amount);
    e["data"]["object"]["discount"] = match percent_off {
        Some(p) => {
            json!({ "id": "di_1", "object": "discount", "coupon": { "id": "LAUNCH", "percent_off": p, "duration": "forever" }, "start": at, "end": null })
        }
        None => Value::Null,
    };
    serde_json::to_vec(&e).expect("json")
}

async fn mrr(projector: &TestProjector, bearer: &str, query: &str) -> (u16, Value) {
    projector.get_json(&format!("/v1/analytics/mrr?{query}"), bearer).await
}

/// `(mrr, customers, new, churn)` per day of `currency`.
fn days(body: &Value, currency: &str) -> Vec<(i64, i64, i64, i64)> {
    let n = |d: &Value, k: &str| d[k].as_i64().unwrap_or(i64::MIN);
    body["currencies"][currency]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| (n(d, "mrr"), n(d, "customers"), n(d, "new"), n(d, "churn")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mrr_per_day_matches_the_lifecycles_and_a_new_policy_rewrites_history_on_rebuild() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let projector = TestProjector::start_billing_with(db.service_pool(6), catalog(), None, Arc::new(SystemClock)).await;
    // cus_a: 29.00 with 20 % off forever from March 1st, canceled on the 4th. cus_b: a trial from
    // the 1st, paying 99.00 from the 3rd.
    let bodies = [
        event("customer.subscription.created", T0, "sub_a", "cus_a", "active", 2_900, Some(20.0)),
        event("customer.subscription.created", T0, "sub_b", "cus_b", "trialing", 9_900, None),
        event("customer.subscription.updated", T0 + 2 * DAY, "sub_b", "cus_b", "active", 9_900, None),
        event("customer.subscription.deleted", T0 + 3 * DAY, "sub_a", "cus_a", "canceled", 2_900, Some(20.0)),
    ];
    for body in &bodies {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
    }
    projector.caught_up(&db.pool).await;

    let (status, body) = mrr(&projector, BILLING_KEY, "from=2026-02-28&to=2026-03-05").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["policy"], json!({ "discounts": "subtract", "past_due": "count" }));
    assert_eq!(
        days(&body, "usd"),
        [
            (0, 0, 0, 0),
            (2_320, 1, 2_320, 0),
            (2_320, 1, 0, 0),
            (12_220, 2, 9_900, 0),
            (9_900, 1, 0, 2_320),
            (9_900, 1, 0, 0)
        ],
        "by hand: 29.00 - 20 % on the 1st, the trial converts on the 3rd, the churn on the 4th: {body}"
    );
    // Each movement names the event that made it: cus_a's creation, cus_b's conversion, the churn.
    let named: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT m.position, m.event_id, e.stripe_event_id FROM audit.mrr_movements m
         LEFT JOIN ledger.events e USING (position) ORDER BY m.position",
    )
    .fetch_all(&db.pool)
    .await
    .expect("movements");
    assert_eq!(named.iter().map(|m| m.0).collect::<Vec<_>>(), [1, 3, 4], "{named:?}");
    assert!(named.iter().all(|(_, id, at)| Some(id) == at.as_ref()), "{named:?}");
    // Each subscription's discount, as its snapshot carried it (issue 30, item 2).
    let (_, a) = projector.get_json("/v1/customers/cus_a", BILLING_KEY).await;
    assert_eq!(
        a["subscriptions"][0]["discount"],
        json!({ "percent_off": 20.0, "amount_off": null, "currency": null, "end": null, "id": "di_1", "coupon": "LAUNCH",
                "duration": "forever", "duration_in_months": null, "promotion_code": null, "applies_to": "subscription" }),
        "{a}"
    );
    let (_, b) = projector.get_json("/v1/customers/cus_b", BILLING_KEY).await;
    assert_eq!(b["subscriptions"][0]["discount"], Value::Null, "{b}");
    let token = customer_token(&db.pool, "cus_b").await;
    assert_eq!(mrr(&projector, &token, "").await.0, 403, "a customer's token sees no revenue");
    assert_eq!(mrr(&projector, BILLING_KEY, "from=March").await.0, 400);

    // Another policy: discounts ignored. The rebuild recomputes every day since the first event.
    projector.kill();
    let ignoring = Catalog::parse(
        &include_str!("../../../catalog.example.toml").replace("discounts = \"subtract\"", "discounts = \"ignore\""),
    )
    .expect("catalog");
    let folded = rebuild::fold_log(&db.pool, &ignoring, &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    rebuild::swap_in(&db.pool, folded, &ignoring, &FoldConfig::default(), false).await.expect("swap");
    let projector = TestProjector::start_billing_with(db.service_pool(6), ignoring, None, Arc::new(SystemClock)).await;
    let (_, body) = mrr(&projector, BILLING_KEY, "from=2026-02-28&to=2026-03-05").await;
    assert_eq!(body["policy"]["discounts"], "ignore");
    ledger_tests::projector::assert_mrr_days_follow_the_movements(&db.pool).await;
    assert_eq!(
        days(&body, "usd"),
        [
            (0, 0, 0, 0),
            (2_900, 1, 2_900, 0),
            (2_900, 1, 0, 0),
            (12_800, 2, 9_900, 0),
            (9_900, 1, 0, 2_900),
            (9_900, 1, 0, 0)
        ],
        "at list price, all of history: {body}"
    );
    ingest.stop().await.expect("stop");
}

/// Issue 30, item 2: a customer's own discount, known only from a `customer.discount.created`
/// event (the subscription names no discount), lowers their MRR from its day and shows on each of
/// their subscriptions with its coupon and promotion code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_discount_event_lowers_mrr_from_its_day_and_shows_on_the_customer() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let projector = TestProjector::start_billing_with(db.service_pool(6), catalog(), None, Arc::new(SystemClock)).await;
    let mut ten = stripe::discount("di_c", "cus_c", None, 10.0, T0 + DAY, None);
    ten["promotion_code"] = json!("promo_SPRING10");
    let bodies = [
        event("customer.subscription.created", T0, "sub_c", "cus_c", "active", 5_000, None),
        stripe::discount_event("customer.discount.created", T0 + DAY, ten),
    ];
    for body in &bodies {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
    }
    projector.caught_up(&db.pool).await;
    let (_, body) = mrr(&projector, BILLING_KEY, "from=2026-03-01&to=2026-03-02").await;
    let contraction: Vec<i64> = body["currencies"]["usd"]
        .as_array()
        .expect("days")
        .iter()
        .map(|d| d["contraction"].as_i64().unwrap_or(i64::MIN))
        .collect();
    assert_eq!(days(&body, "usd"), [(5_000, 1, 5_000, 0), (4_500, 1, 0, 0)], "{body}");
    assert_eq!(contraction, [0, 500], "10 % off from the 2nd: {body}");
    ledger_tests::projector::assert_mrr_days_follow_the_movements(&db.pool).await;
    let (_, c) = projector.get_json("/v1/customers/cus_c", BILLING_KEY).await;
    let discount = &c["subscriptions"][0]["discount"];
    assert_eq!(
        (&discount["percent_off"], &discount["promotion_code"], &discount["applies_to"]),
        (&json!(10.0), &json!("promo_SPRING10"), &json!("customer")),
        "{c}"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.discounts WHERE stripe_customer_id = 'cus_c'")
        .fetch_one(&db.pool)
        .await
        .expect("audit view");
    assert_eq!(rows, 1);
    ingest.stop().await.expect("stop");
}
