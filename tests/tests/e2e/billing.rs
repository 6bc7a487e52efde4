//! The billing API's checkout against a fake Stripe that checks what it receives.

use std::time::Duration;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::stripe_billing::{FakeStripeBilling, Scripted};
use serde_json::{Value, json};

pub(crate) struct Billing {
    pub(crate) db: TestDb,
    pub(crate) stripe: FakeStripeBilling,
    pub(crate) projector: TestProjector,
    pub(crate) http: reqwest::Client,
}

impl Billing {
    pub(crate) async fn start() -> Self {
        let db = TestDb::new().await;
        let stripe = FakeStripeBilling::start().await;
        let projector = TestProjector::start_billing(db.service_pool(8), &stripe.url).await;
        Self { db, stripe, projector, http: reqwest::Client::new() }
    }

    /// [`Self::start`] on a clock the test moves.
    pub(crate) async fn start_with_clock(clock: std::sync::Arc<domain::clock::ManualClock>) -> Self {
        let db = TestDb::new().await;
        let stripe = FakeStripeBilling::start().await;
        let projector = TestProjector::start_billing_with(
            db.service_pool(8),
            ledger_tests::projector::catalog(),
            Some(&stripe.url),
            clock,
        )
        .await;
        Self { db, stripe, projector, http: reqwest::Client::new() }
    }

    pub(crate) async fn post(&self, path: &str, key: &str, idempotency: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("http://{}{path}", self.projector.addr))
            .bearer_auth(key)
            .header("Idempotency-Key", idempotency)
            .json(body)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn checkout(&self, idempotency: &str, body: &Value) -> (u16, Value) {
        self.post("/v1/checkout/sessions", BILLING_KEY, idempotency, body).await
    }

    async fn get_customer(&self, id: &str) -> (u16, Value) {
        self.projector.get_json(&format!("/v1/customers/{id}"), BILLING_KEY).await
    }

    pub(crate) async fn commands(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger.commands").fetch_one(&self.db.pool).await.expect("count")
    }
}

pub(crate) async fn customer_token(db: &TestDb, customer: &str) -> String {
    ledger_tests::projector::customer_token(&db.pool, customer).await
}

pub(crate) fn checkout(price: &str) -> Value {
    json!({ "price": price, "email": "new@example.com", "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no" })
}

pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_sends_the_catalog_mode_and_params_and_refuses_unknown_prices_without_calling_stripe() {
    let b = Billing::start().await;
    let (status, body) = b.checkout("k-unknown", &checkout("price_not_in_catalog")).await;
    assert_eq!((status, code(&body)), (422, "unknown_price"), "{body}");
    assert!(b.stripe.calls().is_empty(), "no Stripe call for a price outside the catalog");

    let (status, body) = b.checkout("k-tier", &checkout("price_starter_monthly")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].as_str().is_some_and(|id| id.starts_with("cs_test_")) && body["url"].is_string(), "{body}");
    let mut pack = checkout("price_credits_1000");
    pack["customer"] = json!("cus_pack");
    pack["quantity"] = json!(3);
    assert_eq!(b.checkout("k-pack", &pack).await.0, 200);

    let calls = b.stripe.calls();
    assert_eq!(calls.len(), 2);
    let (tier, pack) = (&calls[0], &calls[1]);
    assert_eq!(tier.path, "/v1/checkout/sessions");
    assert_eq!(tier.param("mode"), Some("subscription"));
    assert_eq!(tier.param("line_items[0][price]"), Some("price_starter_monthly"));
    assert_eq!(tier.param("line_items[0][quantity]"), Some("1"));
    assert_eq!(tier.param("customer_email"), Some("new@example.com"));
    assert_eq!(tier.param("customer"), None, "a new customer is named by email only");
    assert_eq!(tier.param("metadata[tier]"), Some("starter"));
    assert_eq!(tier.param("subscription_data[metadata][tier]"), Some("starter"));
    assert_eq!(tier.param("success_url"), Some("https://app.test/ok"));
    assert_eq!(tier.param("cancel_url"), Some("https://app.test/no"));
    assert_eq!(pack.param("mode"), Some("payment"));
    assert_eq!(pack.param("customer"), Some("cus_pack"));
    assert_eq!(pack.param("customer_email"), None);
    assert_eq!(pack.param("line_items[0][quantity]"), Some("3"));
    assert_eq!(
        (pack.param("metadata[pack]"), pack.param("metadata[price_id]")),
        (Some("credits_1000"), Some("price_credits_1000"))
    );
    for call in &calls {
        assert_eq!(call.authorization.as_deref(), Some("Bearer sk_test_fake_key"));
        assert_eq!(call.stripe_version.as_deref(), Some(shared::stripe_api::API_VERSION));
        assert!(call.idempotency_key.as_deref().is_some_and(|k| k.starts_with("sl-")), "{call:?}");
    }
    assert_ne!(calls[0].idempotency_key, calls[1].idempotency_key);
    assert_eq!(b.commands().await, 3, "every command is journaled, the refused one too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_replays_its_answer_once_even_under_concurrency_and_refuses_another_body() {
    let b = Billing::start().await;
    let first = b.checkout("same-key", &checkout("price_starter_monthly")).await;
    let again = b.checkout("same-key", &checkout("price_starter_monthly")).await;
    assert_eq!(first.0, 200);
    assert_eq!(first, again, "the stored answer");
    assert_eq!(b.stripe.calls().len(), 1, "one Stripe call");
    let (status, body) = b.checkout("same-key", &checkout("price_professional_monthly")).await;
    assert_eq!((status, code(&body)), (422, "idempotency_key_reused"));

    let pack = checkout("price_credits_1000");
    let (one, two) = tokio::join!(b.checkout("concurrent", &pack), b.checkout("concurrent", &pack));
    assert_eq!(one, two, "both get the one answer");
    assert_eq!(b.stripe.calls().len(), 2, "two identical requests at once make one Stripe call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_refuses_strangers_and_a_token_acting_for_another_customer() {
    let b = Billing::start().await;
    let (status, body) = b.post("/v1/checkout/sessions", "not-a-key", "k1", &checkout("price_starter_monthly")).await;
    assert_eq!((status, code(&body)), (401, "unauthorized"));
    let token = customer_token(&b.db, "cus_own").await;
    let mut other = checkout("price_credits_1000");
    other["customer"] = json!("cus_other");
    let (status, body) = b.post("/v1/checkout/sessions", &token, "k2", &other).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, _) = b.post("/v1/checkout/sessions", &token, "k3", &checkout("price_credits_1000")).await;
    assert_eq!(status, 200);
    assert_eq!(b.stripe.calls()[0].param("customer"), Some("cus_own"), "the token's own customer");
    let (_, metrics) = b.projector.admin_get("/metrics").await;
    assert!(metrics.contains(r#"api_auth_refusals_total{reason="unknown_key"} 1"#), "{metrics}");
    let response = reqwest::Client::new()
        .post(format!("http://{}/v1/checkout/sessions", b.projector.addr))
        .bearer_auth(BILLING_KEY)
        .json(&checkout("price_credits_1000"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400, "no Idempotency-Key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_refusals_outages_and_timeouts_are_mapped_and_a_live_subscriber_is_sent_elsewhere() {
    let b = Billing::start().await;
    b.stripe.script([Scripted::Error(400, "resource_missing", "No such price: 'price_starter_monthly'")]);
    let (status, body) = b.checkout("refused", &checkout("price_starter_monthly")).await;
    assert_eq!((status, code(&body)), (422, "stripe_error"), "{body}");
    assert_eq!(body["error"]["stripe_code"], "resource_missing");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("No such price")));

    // Stripe saves a 500 under its idempotency key: the retries get it again.
    b.stripe.script([Scripted::Error(500, "api_error", "boom")]);
    let (status, body) = b.checkout("down", &checkout("price_starter_monthly")).await;
    assert_eq!((status, code(&body)), (502, "stripe_unavailable"), "{body}");
    let before = b.stripe.calls().len();
    b.stripe.script([Scripted::Hang(Duration::from_secs(3)), Scripted::Hang(Duration::from_secs(3))]);
    let (status, body) = b.checkout("slow", &checkout("price_starter_monthly")).await;
    assert_eq!(status, 200, "a timeout is retried under the same Stripe key: {body}");
    let retried: Vec<_> = b.stripe.calls()[before..].iter().map(|c| c.idempotency_key.clone()).collect();
    assert!(retried.len() == 3 && retried.iter().all(|k| *k == retried[0]), "{retried:?}");

    // A customer with a live subscription is sent to plan change or the portal.
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    let t = stripe::now();
    let snap = SubSnapshot::new("sub_live", "cus_live", "price_starter_monthly", "active", (t, t + 2_592_000));
    assert_eq!(
        ingest
            .post_signed(&stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap))
            .await
            .status(),
        200
    );
    b.projector.caught_up(&b.db.pool).await;
    let mut tier = checkout("price_professional_monthly");
    tier["customer"] = json!("cus_live");
    let calls = b.stripe.calls().len();
    let (status, body) = b.checkout("subscribed", &tier).await;
    assert_eq!((status, code(&body)), (409, "already_subscribed"), "{body}");
    assert_eq!(body["error"]["subscription"], "sub_live");
    assert_eq!(b.stripe.calls().len(), calls, "no Stripe call");
    let mut pack = checkout("price_credits_10000");
    pack["customer"] = json!("cus_live");
    assert_eq!(b.checkout("pack-for-subscriber", &pack).await.0, 200, "packs are fine for subscribers");
}

/// `sub_id` of `cus_id` on `price`, projected (through ingest) and known to the fake Stripe.
pub(crate) async fn subscribed(
    b: &Billing,
    ingest: &TestIngest,
    sub: &str,
    customer: &str,
    price: &str,
    status: &str,
    basil: bool,
) -> i64 {
    let t = stripe::now();
    let period_end = t + 2_592_000;
    let snap = SubSnapshot::new(sub, customer, price, status, (t, period_end));
    let event = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
    assert_eq!(ingest.post_signed(&event).await.status(), 200);
    b.projector.caught_up(&b.db.pool).await;
    b.stripe.subscription(sub, price, period_end, basil);
    period_end
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_change_charges_what_its_preview_showed_and_cancel_reads_the_items_period_end() {
    let b = Billing::start().await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    let basil_end = subscribed(&b, &ingest, "sub_p", "cus_p", "price_starter_monthly", "active", true).await;
    let legacy_end = subscribed(&b, &ingest, "sub_l", "cus_l", "price_professional_monthly", "active", false).await;

    let (status, body) =
        b.post("/v1/subscriptions/sub_p/preview", BILLING_KEY, "p0", &json!({ "price": "price_gone" })).await;
    assert_eq!((status, code(&body)), (422, "unknown_price"));
    assert!(b.stripe.calls().is_empty(), "no Stripe call");

    let (status, preview) = b
        .post("/v1/subscriptions/sub_p/preview", BILLING_KEY, "p1", &json!({ "price": "price_professional_monthly" }))
        .await;
    assert_eq!(status, 200, "{preview}");
    assert_eq!(
        (preview["direction"].as_str(), preview["from_tier"].as_str(), preview["to_tier"].as_str()),
        (Some("upgrade"), Some("starter"), Some("professional"))
    );
    assert_eq!((preview["amount_due"].as_i64(), preview["currency"].as_str()), (Some(1500), Some("usd")));
    assert_eq!(preview["lines"].as_array().map(Vec::len), Some(2));
    assert_eq!(preview["lines"][1]["proration"], true);
    let date = preview["proration_date"].as_i64().expect("proration_date");
    let sent = b.stripe.calls().into_iter().find(|c| c.path == "/v1/invoices/create_preview").expect("preview call");
    assert_eq!(sent.param("subscription"), Some("sub_p"));
    assert_eq!(sent.param("subscription_details[items][0][id]"), Some("si_sub_p"));
    assert_eq!(sent.param("subscription_details[items][0][price]"), Some("price_professional_monthly"));
    assert_eq!(sent.param("subscription_details[proration_date]"), Some(date.to_string().as_str()));

    let change = json!({ "price": "price_professional_monthly", "proration_date": date });
    let (status, body) = b.post("/v1/subscriptions/sub_p/change", BILLING_KEY, "c1", &change).await;
    assert_eq!(status, 200, "{body}");
    let sent = b
        .stripe
        .calls()
        .into_iter()
        .rfind(|c| c.path == "/v1/subscriptions/sub_p" && c.method == "POST")
        .expect("update");
    assert_eq!(
        (sent.param("items[0][id]"), sent.param("items[0][price]")),
        (Some("si_sub_p"), Some("price_professional_monthly"))
    );
    assert_eq!(sent.param("proration_date"), Some(date.to_string().as_str()), "the charge uses the preview's date");

    for (sub, end) in [("sub_p", basil_end), ("sub_l", legacy_end)] {
        let (status, body) = b
            .post(
                &format!("/v1/subscriptions/{sub}/cancel"),
                BILLING_KEY,
                &format!("x-{sub}"),
                &json!({ "at_period_end": true }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            (body["cancel_at_period_end"].as_bool(), body["service_ends_at"].as_i64()),
            (Some(true), Some(end)),
            "{sub}: {body}"
        );
    }
    let (status, body) = b.post("/v1/subscriptions/sub_p/resume", BILLING_KEY, "r1", &json!({})).await;
    assert_eq!((status, body["cancel_at_period_end"].as_bool()), (200, Some(false)), "{body}");
    let (status, body) =
        b.post("/v1/subscriptions/sub_l/cancel", BILLING_KEY, "now", &json!({ "at_period_end": false })).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("canceled")), "{body}");
    assert!(b.stripe.calls().iter().any(|c| c.method == "DELETE" && c.path == "/v1/subscriptions/sub_l"));

    let (status, body) = b
        .post(
            "/v1/portal/sessions",
            BILLING_KEY,
            "portal",
            &json!({ "customer": "cus_p", "return_url": "https://app.test/account" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["url"].as_str().is_some_and(|u| u.starts_with("https://billing.stripe.com/")));
    let sent = b.stripe.calls().into_iter().find(|c| c.path == "/v1/billing_portal/sessions").expect("portal call");
    assert_eq!((sent.param("customer"), sent.param("return_url")), (Some("cus_p"), Some("https://app.test/account")));
    assert_eq!(sent.param("configuration"), Some("bpc_test_catalog"), "the configuration made from the catalog");
    let audited: Vec<String> =
        sqlx::query_scalar("SELECT response::text FROM audit.commands WHERE endpoint = 'POST /v1/portal/sessions'")
            .fetch_all(&b.db.pool)
            .await
            .expect("audit view");
    assert!(
        audited.len() == 1 && !audited[0].contains("billing.stripe.com"),
        "the portal login link stays out of the audit view: {audited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_commands_refuse_other_customers_tokens_ended_subscriptions_and_unknown_ones() {
    let b = Billing::start().await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    subscribed(&b, &ingest, "sub_a", "cus_a", "price_starter_monthly", "active", true).await;
    subscribed(&b, &ingest, "sub_c", "cus_c", "price_starter_monthly", "canceled", true).await;
    let token = customer_token(&b.db, "cus_other").await;
    let (status, body) =
        b.post("/v1/subscriptions/sub_a/cancel", &token, "t1", &json!({ "at_period_end": true })).await;
    assert_eq!((status, code(&body)), (403, "forbidden"));
    let (status, body) = b
        .post("/v1/subscriptions/sub_c/change", BILLING_KEY, "t2", &json!({ "price": "price_professional_monthly" }))
        .await;
    assert_eq!((status, code(&body)), (409, "subscription_not_changeable"));
    let (status, body) = b
        .post(
            "/v1/subscriptions/sub_nope/preview",
            BILLING_KEY,
            "t3",
            &json!({ "price": "price_professional_monthly" }),
        )
        .await;
    assert_eq!((status, code(&body)), (404, "unknown_subscription"));
    assert!(b.stripe.calls().is_empty(), "none of these called Stripe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_closes_the_loop_through_webhooks_and_the_timeline_shows_command_events_and_effects() {
    let b = Billing::start().await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    let mut request = checkout("price_starter_monthly");
    request["customer"] = json!("cus_loop");
    let (status, session) = b.checkout("loop", &request).await;
    assert_eq!(status, 200, "{session}");
    let session_id = session["id"].as_str().expect("session id");

    // What Stripe sends once the customer has paid: the command changed nothing by itself.
    let (status, _) = b.get_customer("cus_loop").await;
    assert_eq!(status, 404, "no projection before the webhooks");
    let t = stripe::now();
    let snap = SubSnapshot::new("sub_loop", "cus_loop", "price_starter_monthly", "active", (t, t + 2_592_000));
    for body in [
        stripe::customer_event("customer.created", t, Shape::Basil, "cus_loop", "loop@example.com"),
        stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap),
        stripe::checkout_completed(t, Shape::Basil, session_id, "cus_loop", "subscription", Some("sub_loop"), None),
    ] {
        assert_eq!(ingest.post_signed(&body).await.status(), 200);
    }
    b.projector.caught_up(&b.db.pool).await;
    let (status, customer) = b.get_customer("cus_loop").await;
    assert_eq!(status, 200, "{customer}");
    assert_eq!(customer["email"], "loop@example.com");
    assert_eq!(customer["subscriptions"][0]["tier"], "starter");
    assert_eq!(customer["subscriptions"][0]["instance"]["desired"], "running");
    ledger_tests::wait::until(Duration::from_secs(30), "the token", || async {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.api_tokens WHERE stripe_customer_id = 'cus_loop'")
            .fetch_one(&b.db.pool)
            .await
            .expect("tokens");
        (n == 1).then_some(())
    })
    .await;

    let lines =
        replay::audit::timeline(&b.db.pool, "cus_loop", &ledger_tests::projector::catalog(), &Default::default())
            .await
            .expect("timeline");
    let at = |needle: &str| {
        lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{needle} in {lines:#?}"))
    };
    assert!(lines[0].starts_with("timeline of cus_loop: 1 commands and debits, 3 events"), "{lines:#?}");
    let command = at("command POST /v1/checkout/sessions by backend");
    let created = at("customer.subscription.created");
    let token = at("effect token #1 succeeded");
    assert!(command < created && created < token, "command, then events, then effects: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_configuration_offers_exactly_the_catalogs_tier_prices_and_is_created_once() {
    let stripe = FakeStripeBilling::start().await;
    let api = shared::stripe_api::StripeApi::new(&stripe.url, "sk_test_fake_key".into(), Duration::from_secs(1))
        .expect("client");
    let catalog = ledger_tests::projector::catalog();
    let form = replay::portal::form(&api, &catalog).await.expect("form");
    let get = |key: &str| form.pairs().iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let offered: Vec<&str> =
        form.pairs().iter().filter(|(k, _)| k.contains("[prices]")).map(|(_, v)| v.as_str()).collect();
    let mut expected: Vec<&str> =
        catalog.tiers().iter().filter(|t| t.sellable).flat_map(|t| t.price_ids.iter().map(String::as_str)).collect();
    assert!(!expected.contains(&"price_enterprise_monthly"), "the enterprise tier is sold by contract");
    let mut sorted = offered.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "every sellable tier price, and no pack");
    assert_eq!(get("features[subscription_update][products][0][product]").as_deref(), Some("prod_free"));
    assert_eq!(get("features[subscription_update][proration_behavior]").as_deref(), Some("create_prorations"));
    assert_eq!(get("features[subscription_cancel][mode]").as_deref(), Some("at_period_end"));
    let first = replay::portal::apply(&api, &catalog, &form).await.expect("created");
    let again = replay::portal::apply(&api, &catalog, &form).await.expect("again");
    assert_eq!(first, again, "one configuration per catalog");
    let created = stripe.calls().iter().filter(|c| c.path == "/v1/billing_portal/configurations").count();
    assert_eq!(created, 2, "both calls carry the same Idempotency-Key, so Stripe keeps one");
    let keys: Vec<_> = stripe
        .calls()
        .iter()
        .filter(|c| c.path == "/v1/billing_portal/configurations")
        .map(|c| c.idempotency_key.clone())
        .collect();
    assert_eq!(keys[0], keys[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_stuck_on_a_slow_stripe_never_hold_up_access_checks() {
    let b = Billing::start().await;
    // Every command hangs three times a second at Stripe, each holding its connection meanwhile:
    // more commands than the API pool has connections.
    b.stripe.script((0..36).map(|_| Scripted::Hang(Duration::from_secs(2))));
    let stuck: Vec<_> = (0..12)
        .map(|i| {
            let http = b.http.clone();
            let url = format!("http://{}/v1/checkout/sessions", b.projector.addr);
            let mut body = checkout("price_credits_1000");
            body["customer"] = json!(format!("cus_stuck{i}"));
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(BILLING_KEY)
                    .header("Idempotency-Key", format!("stuck-{i}"))
                    .json(&body)
                    .send()
                    .await
            })
        })
        .collect();
    ledger_tests::wait::until(Duration::from_secs(10), "commands waiting on Stripe", || async {
        (b.stripe.calls().len() >= 8).then_some(())
    })
    .await;
    let started = std::time::Instant::now();
    let response = b
        .http
        .get(format!("http://{}/v1/access", b.projector.addr))
        .bearer_auth("sl_not_a_token")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 401, "answered from the database, not 503 for want of a connection");
    assert!(started.elapsed() < Duration::from_secs(1), "promptly: {:?}", started.elapsed());
    for task in stuck {
        let _ = task.await;
    }
}

/// Issue 30, item 2: checkout takes a promotion code field or a promotion code, never both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_offers_a_promotion_code_field_or_applies_one_code_but_refuses_both() {
    let b = Billing::start().await;
    let mut field = checkout("price_starter_monthly");
    field["allow_promotion_codes"] = json!(true);
    assert_eq!(b.checkout("promo-field", &field).await.0, 200);
    let mut code_given = checkout("price_credits_1000");
    code_given["promotion_code"] = json!("promo_1MiM6KLkdIwHu7ixeqCFtVxS");
    assert_eq!(b.checkout("promo-code", &code_given).await.0, 200);
    let calls = b.stripe.calls();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].param("allow_promotion_codes"), Some("true"));
    assert_eq!(calls[0].param("discounts[0][promotion_code]"), None);
    assert_eq!(calls[1].param("discounts[0][promotion_code]"), Some("promo_1MiM6KLkdIwHu7ixeqCFtVxS"));
    assert_eq!(calls[1].param("allow_promotion_codes"), None);

    let mut both = checkout("price_starter_monthly");
    both["allow_promotion_codes"] = json!(true);
    both["promotion_code"] = json!("promo_abc");
    let (status, body) = b.checkout("promo-both", &both).await;
    assert_eq!((status, code(&body)), (422, "invalid_request"), "{body}");
    let mut malformed = checkout("price_starter_monthly");
    malformed["promotion_code"] = json!("SUMMER20");
    let (status, body) = b.checkout("promo-malformed", &malformed).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "a code's id, not what the buyer types: {body}");
    assert_eq!(b.stripe.calls().len(), 2, "no Stripe call for a refused checkout");
}
