//! Facts the webhook leaves out (issue 17), against a fake Stripe API on loopback: the fold asks
//! for a fetch, the dispatcher fetches every page and appends what Stripe answered as a fact
//! (source `fetch`), the fold reads it; a rebuild folds the fact and calls nothing.

use std::sync::Arc;
use std::time::Duration;

use domain::fold::FoldConfig;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector, catalog};
use ledger_tests::stripe::{self, InvoiceOf, Shape, SubSnapshot};
use ledger_tests::stripe_api::FakeStripe;
use ledger_tests::wait;
use serde_json::{Value, json};
use store::rebuild;

struct World {
    db: TestDb,
    ingest: TestIngest,
    projector: TestProjector,
    stripe: FakeStripe,
}

impl World {
    /// A projector that fetches from the fake (`with_key`) or has no `STRIPE_API_KEY`.
    async fn start(with_key: bool) -> Self {
        let db = TestDb::new().await;
        let stripe = FakeStripe::start(Vec::new()).await;
        let url = with_key.then_some(stripe.url.as_str());
        let clock = Arc::new(domain::clock::SystemClock);
        let projector = TestProjector::start_billing_with(db.service_pool(8), catalog(), url, clock).await;
        let ingest = TestIngest::start(db.service_pool(2)).await;
        Self { db, ingest, projector, stripe }
    }

    async fn post(&self, body: &[u8]) {
        assert_eq!(self.ingest.post_signed(body).await.status(), 200);
        self.projector.caught_up(&self.db.pool).await;
    }

    /// (id, type, `fetched.completes`) of the fetched facts in the log.
    async fn fetched(&self) -> Vec<(String, String, String)> {
        sqlx::query_as(
            "SELECT stripe_event_id, event_type, convert_from(raw_body, 'UTF8')::jsonb #>> '{fetched,completes}'
             FROM ledger.events WHERE source = 'fetch' ORDER BY position",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("fetched")
    }

    /// Waits (bounded) until `key`'s latest journal row is `outcome`.
    async fn journaled(&self, key: &str, outcome: &str) {
        wait::until(Duration::from_secs(30), &format!("{key} journaled {outcome}"), || async {
            let last: Option<String> =
                sqlx::query_scalar("SELECT outcome FROM ledger.effects WHERE key = $1 ORDER BY id DESC LIMIT 1")
                    .bind(key)
                    .fetch_optional(&self.db.pool)
                    .await
                    .expect("journal");
            (last.as_deref() == Some(outcome)).then_some(())
        })
        .await;
        self.projector.caught_up(&self.db.pool).await;
    }

    async fn anomalies(&self, kind: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT detail FROM projection.anomalies WHERE kind = $1")
            .bind(kind)
            .fetch_all(&self.db.pool)
            .await
            .expect("anomalies")
    }

    async fn balance(&self, customer: &str) -> Value {
        let (status, body) = self.projector.get_json(&format!("/v1/customers/{customer}"), BILLING_KEY).await;
        assert_eq!(status, 200, "{body}");
        body["credits"]["balance"].clone()
    }

    fn requests_to(&self, path: &str) -> Vec<(String, u16)> {
        self.stripe.requests().into_iter().filter(|r| r.path == path).map(|r| (r.query, r.status)).collect()
    }
}

fn line_item(id: &str, price: &str, quantity: u64) -> Value {
    json!({ "id": id, "object": "item", "price": { "id": price, "object": "price" }, "quantity": quantity, "currency": "usd" })
}

const SESSION_ITEMS: &str = "/v1/checkout/sessions/cs_pack1/line_items";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_without_line_items_is_completed_by_one_fetch_and_credited_once_also_after_a_rebuild() {
    let w = World::start(true).await;
    w.stripe.put_list("cs_pack1", vec![line_item("li_1", "price_credits_1000", 3)]);
    // Four 500s: the first fetch (three tries) is journaled as a retry, the second gets through.
    w.stripe.script(&[(500, None), (500, None), (500, None), (500, None)]);
    let t = stripe::now();
    w.post(&stripe::customer_event("customer.created", t, Shape::Basil, "cus_pack", "pack@example.com")).await;
    // A Payment Link's session: no metadata.price_id, and webhooks never carry line_items.
    w.post(&stripe::checkout_completed(t, Shape::Basil, "cs_pack1", "cus_pack", "payment", None, None)).await;

    w.journaled("fetch:checkout_items:cs_pack1", "succeeded").await;
    let fetched = w.fetched().await;
    assert_eq!(fetched.len(), 1, "one fetched fact: {fetched:?}");
    let (id, event_type, completes) = &fetched[0];
    assert!(id.starts_with("evt_fetch_") && event_type == "checkout.session.completed", "{fetched:?}");
    assert!(completes.starts_with("evt_"), "the fact names the event it completes: {completes}");
    // docs/auditing.md's query finds it, with the requests made.
    let (audited, requests): (String, Value) = sqlx::query_as(
        "SELECT payload #>> '{fetched,completes}', (payload -> 'fetched' -> 'requests')::text
         FROM audit.events WHERE source = 'fetch'",
    )
    .fetch_one(&w.db.pool)
    .await
    .map(|(c, r): (String, String)| (c, serde_json::from_str(&r).expect("json")))
    .expect("audit");
    assert_eq!(&audited, completes);
    assert_eq!(requests, json!([format!("GET {SESSION_ITEMS}?limit=100")]));
    assert_eq!(w.balance("cus_pack").await, json!(3_000), "three packs of 1,000 credited");
    assert_eq!(w.anomalies("checkout_without_items").await, Vec::<String>::new(), "the anomaly is resolved");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM ledger.effects WHERE key = 'fetch:checkout_items:cs_pack1' ORDER BY id",
    )
    .fetch_all(&w.db.pool)
    .await
    .expect("journal");
    assert_eq!(outcomes, ["retry", "succeeded"], "retried like any effect");
    let statuses: Vec<u16> = w.requests_to(SESSION_ITEMS).into_iter().map(|(_, s)| s).collect();
    assert_eq!(statuses, [500, 500, 500, 500, 200], "one page, fetched once it answered");

    // A rebuild folds the fact and calls nothing.
    let folded = rebuild::fold_log(&w.db.pool, &catalog(), &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    let swapped = rebuild::swap_in(&w.db.pool, folded, &catalog(), &FoldConfig::default(), false).await.expect("swap");
    assert_eq!(swapped.new_intents, 0, "the fetch intent is already journaled");
    w.projector.dispatcher_passes(3).await;
    assert_eq!(w.balance("cus_pack").await, json!(3_000), "same balance after the rebuild");
    assert_eq!(w.requests_to(SESSION_ITEMS).len(), 5, "no fetch after the rebuild");
    assert_eq!(w.fetched().await.len(), 1);
    w.projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_whose_tier_price_is_on_the_second_page_of_its_lines_finds_its_tier() {
    let w = World::start(true).await;
    let t = stripe::now();
    let snap = SubSnapshot::new("sub_big", "cus_big", "price_professional_monthly", "active", (t, t + 2_592_000));
    w.post(&stripe::subscription_event("customer.subscription.created", t, Shape::Legacy, &snap)).await;
    // The webhook's first page holds a metered add-on line only; 119 more add-on lines and the
    // tier's line follow on Stripe's side: two pages of 100.
    let of = InvoiceOf {
        id: "in_big",
        customer: "cus_big",
        subscription: "sub_big",
        price: "price_addon_seats",
        period: (t, t + 2_592_000),
    };
    let mut invoice: Value =
        serde_json::from_slice(&stripe::invoice_event("invoice.paid", t, Shape::Legacy, &of)).expect("json");
    invoice["data"]["object"]["lines"]["has_more"] = json!(true);
    let mut lines: Vec<Value> = (0..120).map(|n| line_item(&format!("il_{n:03}"), "price_addon_seats", 1)).collect();
    lines.push(line_item("il_tier", "price_professional_monthly", 1));
    w.stripe.put_list("in_big", lines);
    w.post(&serde_json::to_vec(&invoice).expect("json")).await;

    w.journaled("fetch:invoice_lines:in_big", "succeeded").await;
    let grant: Option<i64> =
        sqlx::query_scalar("SELECT credits FROM projection.credit_grants WHERE key = 'invoice:in_big'")
            .fetch_optional(&w.db.pool)
            .await
            .expect("grant");
    assert_eq!(grant, Some(10_000), "the professional tier's cycle credits, found on page two");
    assert_eq!(w.anomalies("invoice_without_known_price").await, Vec::<String>::new(), "resolved");
    let pages = w.requests_to("/v1/invoices/in_big/lines");
    assert_eq!(pages.len(), 2, "{pages:?}");
    assert!(pages[1].0.contains("starting_after=il_099"), "the second page follows the first: {pages:?}");
    w.projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_stripe_api_key_the_anomaly_says_so_and_nothing_is_called() {
    let w = World::start(false).await;
    let t = stripe::now();
    w.post(&stripe::checkout_completed(t, Shape::Legacy, "cs_nokey", "cus_nokey", "payment", None, None)).await;
    w.projector.dispatcher_passes(3).await;
    let details = w.anomalies("checkout_without_items").await;
    assert_eq!(details.len(), 1, "{details:?}");
    assert!(
        details[0].contains("waiting for fetch:checkout_items:cs_nokey") && details[0].contains("STRIPE_API_KEY"),
        "{details:?}"
    );
    let journaled: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.effects WHERE kind = 'fetch'")
        .fetch_one(&w.db.pool)
        .await
        .expect("journal");
    assert_eq!(journaled, 0, "nothing attempted");
    assert!(w.stripe.requests().is_empty(), "no call");
    let (_, metrics) = w.projector.admin_get("/metrics").await;
    assert!(metrics.contains("fetches_waiting_for_api_key 1"), "{metrics}");
    assert!(w.fetched().await.is_empty());
    w.projector.stop().await;
}

/// (status, tier, period end) of a subscription row.
async fn subscription_row(w: &World, id: &str) -> Option<(String, String, Option<i64>)> {
    sqlx::query_as(
        "SELECT status, tier, extract(epoch FROM current_period_end)::bigint
         FROM projection.subscriptions WHERE stripe_subscription_id = $1",
    )
    .bind(id)
    .fetch_optional(&w.db.pool)
    .await
    .expect("subscription")
}

/// Stripe's subscription `id` as the API returns it now (basil: the period on the item).
fn held_subscription(id: &str, customer: &str, price: &str, status: &str, period: (i64, i64)) -> Value {
    let snap = SubSnapshot::new(id, customer, price, status, period);
    let event = stripe::subscription_event("customer.subscription.updated", period.0, Shape::Basil, &snap);
    serde_json::from_slice::<Value>(&event).expect("json")["data"]["object"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_snapshot_without_its_period_gets_the_period_by_fetching_the_subscription() {
    let w = World::start(true).await;
    let t = stripe::now();
    let period = (t, t + 2_592_000);
    w.stripe.put(held_subscription("sub_noperiod", "cus_noperiod", "price_professional_monthly", "active", period));
    w.stripe.script(&[(503, None)]);
    let snap = SubSnapshot::new("sub_noperiod", "cus_noperiod", "price_professional_monthly", "active", period);
    let created = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
    w.post(&stripe::without_period(&created)).await;

    let key = {
        let completes: String =
            sqlx::query_scalar("SELECT stripe_event_id FROM ledger.events WHERE object_id = 'sub_noperiod'")
                .fetch_one(&w.db.pool)
                .await
                .expect("the delivered event");
        format!("fetch:subscription_period:{completes}")
    };
    w.journaled(&key, "succeeded").await;
    let fetched = w.fetched().await;
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].1, "customer.subscription.created", "the fact stands in the original's place");
    let row = subscription_row(&w, "sub_noperiod").await.expect("row");
    assert_eq!(row, ("active".to_owned(), "professional".to_owned(), Some(period.1)), "the period Stripe has");
    assert_eq!(w.anomalies("subscription_without_period").await, Vec::<String>::new(), "resolved");
    let gets: Vec<u16> = w.requests_to("/v1/subscriptions/sub_noperiod").into_iter().map(|(_, s)| s).collect();
    assert_eq!(gets, [503, 200], "retried once, then fetched");

    // A rebuild folds the fact: same period, no new request.
    let folded = rebuild::fold_log(&w.db.pool, &catalog(), &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    let swapped = rebuild::swap_in(&w.db.pool, folded, &catalog(), &FoldConfig::default(), false).await.expect("swap");
    assert_eq!(swapped.new_intents, 0);
    w.projector.dispatcher_passes(3).await;
    assert_eq!(subscription_row(&w, "sub_noperiod").await.expect("row").2, Some(period.1));
    assert_eq!(w.requests_to("/v1/subscriptions/sub_noperiod").len(), 2, "no fetch after the rebuild");
    w.projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thin_events_are_stored_and_the_objects_they_refer_to_are_fetched_as_snapshots() {
    let w = World::start(true).await;
    let t = stripe::now();
    let period = (t, t + 2_592_000);
    w.stripe.put(held_subscription("sub_thin", "cus_thin", "price_professional_monthly", "active", period));
    let mut session = stripe::object("checkout.session");
    session["id"] = json!("cs_thin");
    session["customer"] = json!("cus_thin");
    session["mode"] = json!("payment");
    session["payment_status"] = json!("paid");
    session["metadata"] = json!({});
    session["line_items"] =
        json!({ "object": "list", "data": [line_item("li_t", "price_credits_1000", 2)], "has_more": false });
    w.stripe.put(session);

    w.post(&stripe::thin_event("v1.customer.subscription.created", t, "subscription", "sub_thin")).await;
    w.post(&stripe::thin_event("v1.checkout.session.completed", t, "checkout.session", "cs_thin")).await;
    // Neither an object nor a type the fold projects: stored, nothing fetched.
    w.post(&stripe::thin_event("v1.billing.meter.error_report_triggered", t, "billing.meter", "mtr_1")).await;

    let thin: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT stripe_event_id, event_type, object_type FROM ledger.events WHERE source = 'webhook' ORDER BY position",
    )
    .fetch_all(&w.db.pool)
    .await
    .expect("log");
    assert_eq!(thin.len(), 3, "every thin event is stored: {thin:?}");
    for (id, event_type, _) in &thin[..2] {
        w.journaled(&format!("fetch:thin_object:{id}"), "succeeded").await;
        assert!(event_type.starts_with("v1."), "stored as sent: {event_type}");
    }
    // Fetched concurrently: appended in whichever order Stripe answered.
    let mut facts: Vec<String> = w.fetched().await.into_iter().map(|(_, event_type, _)| event_type).collect();
    facts.sort();
    assert_eq!(facts, ["checkout.session.completed", "customer.subscription.created"], "snapshots of the types");
    let row = subscription_row(&w, "sub_thin").await.expect("the subscription, from the fetched object");
    assert_eq!(row, ("active".to_owned(), "professional".to_owned(), Some(period.1)));
    assert_eq!(w.balance("cus_thin").await, json!(2_000), "two packs of 1,000, from the expanded line items");
    assert_eq!(w.anomalies("thin_event").await, Vec::<String>::new(), "both resolved");
    let session_gets = w.requests_to("/v1/checkout/sessions/cs_thin");
    assert_eq!(session_gets.len(), 1, "{session_gets:?}");
    assert!(session_gets[0].0.contains("expand[]=line_items") || session_gets[0].0.contains("expand%5B%5D=line_items"));
    let subjects: Vec<(String, String)> =
        sqlx::query_as("SELECT subject_type, subject FROM ledger.intents WHERE kind = 'fetch' ORDER BY position")
            .fetch_all(&w.db.pool)
            .await
            .expect("intents");
    assert_eq!(subjects[0], ("subscription".to_owned(), "sub_thin".to_owned()));
    assert_eq!(subjects[1], ("event".to_owned(), thin[1].0.clone()), "a session's customer is not known yet");
    assert_eq!(subjects.len(), 2, "the meter's event asks for nothing");
    w.projector.stop().await;
}
