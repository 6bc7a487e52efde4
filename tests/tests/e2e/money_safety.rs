//! Issue 27: the command side is safe with money. Each test is one finding of the security
//! review, against the real projector, PostgreSQL and a fake Stripe on loopback.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use domain::clock::{Clock as _, ManualClock};
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector};
use ledger_tests::stripe::{self, Shape};
use ledger_tests::stripe_billing::Scripted;
use serde_json::{Value, json};

use crate::billing::{Billing, checkout, code, customer_token, subscribed};

const PRO: &str = "price_professional_monthly";

fn stripe_updates(b: &Billing, sub: &str) -> Vec<ledger_tests::stripe_billing::Call> {
    b.stripe
        .calls()
        .into_iter()
        .filter(|c| c.path == format!("/v1/subscriptions/{sub}") && c.method == "POST")
        .collect()
}

async fn change(b: &Billing, key: &str, bearer: &str, body: Value) -> (u16, Value) {
    b.post("/v1/subscriptions/sub_m/change", bearer, key, &body).await
}

/// Finding 1 as a story: a token holder previews an upgrade, then tries a forged date (the period
/// start), another caller's date, a stale date, and finally the date it was issued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_customer_cannot_pick_its_own_proration_date_only_one_a_recent_preview_issued_it() {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let b = Billing::start_with_clock(clock.clone()).await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    subscribed(&b, &ingest, "sub_m", "cus_m", "price_starter_monthly", "active", true).await;
    let token = customer_token(&b.db, "cus_m").await;

    let (status, body) =
        b.post("/v1/subscriptions/sub_m/preview", &token, "p0", &json!({ "price": PRO, "proration_date": 1 })).await;
    assert_eq!((status, code(&body)), (400, "invalid_request"), "a preview takes no date: {body}");
    let (status, issued) = b.post("/v1/subscriptions/sub_m/preview", &token, "p1", &json!({ "price": PRO })).await;
    assert_eq!(status, 200, "{issued}");
    let date = issued["proration_date"].as_i64().expect("the date the server used");
    assert_eq!(date, clock.now().timestamp(), "now, decided by the server");

    let calls = b.stripe.calls().len();
    let forged = date - 29 * 86_400;
    let (status, body) = change(&b, "c1", &token, json!({ "price": PRO, "proration_date": forged })).await;
    assert_eq!((status, code(&body)), (422, "invalid_proration_date"), "{body}");
    let (status, body) = change(&b, "c2", &token, json!({ "price": PRO, "proration_date": date + 1 })).await;
    assert_eq!((status, code(&body)), (422, "invalid_proration_date"), "not exactly the issued value: {body}");
    let (status, body) = change(&b, "c3", BILLING_KEY, json!({ "price": PRO, "proration_date": date })).await;
    assert_eq!((status, code(&body)), (422, "invalid_proration_date"), "issued to another caller: {body}");
    let yearly = json!({ "price": "price_professional_yearly", "proration_date": date });
    let (status, body) = change(&b, "c4", &token, yearly).await;
    assert_eq!((status, code(&body)), (422, "invalid_proration_date"), "issued for another price: {body}");
    assert_eq!(b.stripe.calls().len(), calls, "no Stripe call for a refused date");

    // Stale: ten minutes and one second after the preview.
    clock.set(clock.now() + TimeDelta::seconds(601));
    let (status, body) = change(&b, "c5", &token, json!({ "price": PRO, "proration_date": date })).await;
    assert_eq!((status, code(&body)), (422, "invalid_proration_date"), "stale: {body}");
    assert_eq!(b.stripe.calls().len(), calls, "no Stripe call for a stale date");

    // The date a fresh preview issued is accepted, and Stripe receives exactly it.
    let (_, issued) = b.post("/v1/subscriptions/sub_m/preview", &token, "p2", &json!({ "price": PRO })).await;
    let date = issued["proration_date"].as_i64().expect("date");
    clock.set(clock.now() + TimeDelta::seconds(300));
    let (status, body) = change(&b, "c6", &token, json!({ "price": PRO, "proration_date": date })).await;
    assert_eq!((status, body["proration_date"].as_i64()), (200, Some(date)), "{body}");
    let sent = stripe_updates(&b, "sub_m");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].param("proration_date"), Some(date.to_string().as_str()));

    // Without a date, the server sends none: Stripe prorates as of the moment it applies it.
    let (status, body) = change(&b, "c7", BILLING_KEY, json!({ "price": "price_starter_monthly" })).await;
    assert_eq!(status, 200, "{body}");
    let sent = stripe_updates(&b, "sub_m");
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].param("proration_date"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_bound_to_its_endpoint_its_subscription_and_its_body() {
    let b = Billing::start().await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    subscribed(&b, &ingest, "sub_a", "cus_a", "price_starter_monthly", "active", true).await;
    subscribed(&b, &ingest, "sub_b", "cus_b", "price_starter_monthly", "active", true).await;
    let cancel = json!({ "at_period_end": true });
    let (status, body) = b.post("/v1/subscriptions/sub_a/cancel", BILLING_KEY, "K", &cancel).await;
    assert_eq!((status, body["subscription"].as_str()), (200, Some("sub_a")), "{body}");
    let (status, body) = b.post("/v1/subscriptions/sub_b/cancel", BILLING_KEY, "K", &cancel).await;
    assert_eq!((status, code(&body)), (422, "idempotency_key_reused"), "never sub_a's answer: {body}");
    assert!(stripe_updates(&b, "sub_b").is_empty(), "sub_b was not touched under sub_a's key");
    let (status, _) = b.post("/v1/subscriptions/sub_b/cancel", BILLING_KEY, "K-b", &cancel).await;
    assert_eq!(status, 200, "its own key cancels it");

    let price = json!({ "price": PRO });
    let (status, preview) = b.post("/v1/subscriptions/sub_a/preview", BILLING_KEY, "P", &price).await;
    assert_eq!(status, 200, "{preview}");
    let (status, body) = b.post("/v1/subscriptions/sub_a/change", BILLING_KEY, "P", &price).await;
    assert_eq!((status, code(&body)), (422, "idempotency_key_reused"), "a change never replays a preview: {body}");
    let (status, again) = b.post("/v1/subscriptions/sub_a/preview", BILLING_KEY, "P", &price).await;
    assert_eq!((status, &again), (200, &preview), "the same endpoint, id and body replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_never_reached_stripe_is_not_final_and_the_retry_under_the_same_key_runs() {
    let b = Billing::start().await;
    // Three attempts, each refused before Stripe began (not saved under the key): 502.
    b.stripe.script([Scripted::Unstored(429), Scripted::Unstored(503), Scripted::Unstored(429)]);
    let (status, body) = b.checkout("retry-me", &checkout(PRO)).await;
    assert_eq!((status, code(&body)), (502, "stripe_unavailable"), "{body}");
    assert_eq!(b.commands().await, 0, "not journaled as the command's answer");
    let (status, body) = b.checkout("retry-me", &checkout(PRO)).await;
    assert_eq!(status, 200, "the retry the message asks for ran: {body}");
    let keys: Vec<_> = b.stripe.calls().iter().map(|c| c.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 4);
    assert!(keys.iter().all(|k| *k == keys[0]), "one derived Stripe key for every attempt: {keys:?}");
    assert_eq!(b.commands().await, 1);
    assert_eq!(b.checkout("retry-me", &checkout(PRO)).await.1, body, "now final: replayed");
    assert_eq!(b.stripe.calls().len(), 4);

    // Without STRIPE_API_KEY: 503 naming the variable, not final either.
    let unconfigured = TestProjector::start_billing_with(
        b.db.service_pool(4),
        ledger_tests::projector::catalog(),
        None,
        Arc::new(domain::clock::SystemClock),
    )
    .await;
    let response = b
        .http
        .post(format!("http://{}/v1/checkout/sessions", unconfigured.addr))
        .bearer_auth(BILLING_KEY)
        .header("Idempotency-Key", "no-stripe")
        .json(&checkout("price_credits_1000"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.expect("json");
    assert_eq!(code(&body), "stripe_not_configured");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("STRIPE_API_KEY")), "{body}");
    assert_eq!(b.commands().await, 1, "the 503 was not journaled");
    let (status, _) = b.checkout("no-stripe", &checkout("price_credits_1000")).await;
    assert_eq!(status, 200, "the same key on a replica with Stripe runs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_by_email_alone_never_binds_to_an_existing_customer_nor_reveals_its_ids() {
    let b = Billing::start().await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    let t = stripe::now();
    let event = stripe::customer_event("customer.created", t, Shape::Basil, "cus_victim", "Victim@Example.com");
    assert_eq!(ingest.post_signed(&event).await.status(), 200);
    b.projector.caught_up(&b.db.pool).await;
    let mut request = checkout("price_credits_1000");
    request["email"] = json!("victim@example.COM");
    let (status, body) = b.checkout("stranger", &request).await;
    assert_eq!((status, code(&body)), (409, "customer_exists"), "{body}");
    assert!(!body.to_string().contains("cus_"), "no ids in the answer: {body}");
    assert!(b.stripe.calls().is_empty(), "no session bound to the stranger's customer");
    request["customer"] = json!("cus_victim");
    assert_eq!(b.checkout("signed-in", &request).await.0, 200, "the backend names the customer it signed in");
    assert_eq!(b.stripe.calls()[0].param("customer"), Some("cus_victim"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_go_only_to_allowed_origins() {
    let b = Billing::start().await;
    for (field, url) in [
        ("success_url", "https://evil.test/phish"),
        ("success_url", "https://app.test.evil.test/ok"),
        ("cancel_url", "https://app.test@evil.test/no"),
        ("cancel_url", "http://app.test/no"),
        ("success_url", "javascript:alert(1)"),
    ] {
        let mut request = checkout(PRO);
        request[field] = json!(url);
        let (status, body) = b.checkout(&format!("r-{url}"), &request).await;
        assert_eq!((status, code(&body)), (422, "redirect_not_allowed"), "{field} {url}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains(field)), "{body}");
    }
    let portal = json!({ "customer": "cus_p", "return_url": "https://evil.test/account" });
    let (status, body) = b.post("/v1/portal/sessions", BILLING_KEY, "portal-evil", &portal).await;
    assert_eq!((status, code(&body)), (422, "redirect_not_allowed"), "{body}");
    assert!(b.stripe.calls().is_empty(), "no session made for a refused redirect");
    let portal = json!({ "customer": "cus_p", "return_url": "https://app.test/account" });
    assert_eq!(b.post("/v1/portal/sessions", BILLING_KEY, "portal-ok", &portal).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsellable_tier_cannot_be_bought_or_changed_to_and_its_subscribers_are_untouched() {
    let b = Billing::start().await;
    let ingest = TestIngest::start(b.db.service_pool(2)).await;
    subscribed(&b, &ingest, "sub_s", "cus_s", "price_starter_monthly", "active", true).await;
    subscribed(&b, &ingest, "sub_e", "cus_e", "price_enterprise_monthly", "active", true).await;
    let calls = b.stripe.calls().len();
    let (status, body) = b.checkout("ent", &checkout("price_enterprise_monthly")).await;
    assert_eq!((status, code(&body)), (422, "not_sellable"), "{body}");
    for verb in ["preview", "change"] {
        let body = json!({ "price": "price_enterprise_yearly" });
        let (status, answer) = b.post(&format!("/v1/subscriptions/sub_s/{verb}"), BILLING_KEY, verb, &body).await;
        assert_eq!((status, code(&answer)), (422, "not_sellable"), "{verb}: {answer}");
    }
    assert_eq!(b.stripe.calls().len(), calls, "no Stripe call");
    let (status, customer) = b.projector.get_json("/v1/customers/cus_e", BILLING_KEY).await;
    assert_eq!((status, &customer["subscriptions"][0]["tier"]), (200, &json!("enterprise")), "{customer}");
    let cancel = json!({ "at_period_end": true });
    assert_eq!(b.post("/v1/subscriptions/sub_e/cancel", BILLING_KEY, "x", &cancel).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_gets_thirty_commands_a_minute_and_two_in_flight_then_429_with_ratelimit_headers() {
    let b = Billing::start().await;
    let token = customer_token(&b.db, "cus_r").await;
    let portal = json!({ "return_url": "https://app.test/account" });
    // A cell comes back every two seconds: a slow run may fit one or two more in.
    let mut admitted = 0;
    let response = loop {
        let response = b
            .http
            .post(format!("http://{}/v1/portal/sessions", b.projector.addr))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("p{admitted}"))
            .json(&portal)
            .send()
            .await
            .expect("request");
        if response.status() != 200 || admitted == 40 {
            break response;
        }
        admitted += 1;
    };
    assert!((30..=32).contains(&admitted), "thirty a minute, then refused: {admitted}");
    assert_eq!(response.status(), 429);
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let retry: u64 = header("retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
    assert!((1..=2).contains(&retry), "one command comes back every two seconds: {retry}");
    assert_eq!(header("ratelimit-policy").as_deref(), Some("\"commands\";q=30;w=60"));
    assert_eq!(header("ratelimit"), Some(format!("\"commands\";r=0;t={retry}")));
    let body: Value = response.json().await.expect("json");
    assert_eq!(code(&body), "rate_limited");
    assert_eq!(b.stripe.calls().len(), admitted, "the refused one never reached Stripe");
    assert_eq!(b.commands().await, i64::try_from(admitted).expect("small"), "nor the journal");
    let (status, _) = b
        .post(
            "/v1/portal/sessions",
            BILLING_KEY,
            "backend",
            &json!({ "customer": "cus_r", "return_url": "https://app.test/a" }),
        )
        .await;
    assert_eq!(status, 200, "the backend key is not limited per customer");

    // Two in flight, the third refused at once.
    let other = customer_token(&b.db, "cus_f").await;
    b.stripe.script((0..6).map(|_| Scripted::Hang(Duration::from_secs(3))));
    let stuck: Vec<_> = (0..2)
        .map(|i| {
            let (http, url, other) =
                (b.http.clone(), format!("http://{}/v1/portal/sessions", b.projector.addr), other.clone());
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .bearer_auth(other)
                    .header("Idempotency-Key", format!("slow{i}"))
                    .json(&json!({ "return_url": "https://app.test/a" }))
                    .send()
                    .await
                    .expect("request");
                response.status().as_u16()
            })
        })
        .collect();
    let before = b.stripe.calls().len();
    ledger_tests::wait::until(Duration::from_secs(10), "two commands waiting on Stripe", || async {
        (b.stripe.calls().len() >= before + 2).then_some(())
    })
    .await;
    let (status, body) =
        b.post("/v1/portal/sessions", &other, "third", &json!({ "return_url": "https://app.test/a" })).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"), "{body}");
    for task in stuck {
        assert_eq!(task.await.expect("task"), 502, "Stripe never answered them");
    }
    let (status, _) =
        b.post("/v1/portal/sessions", &other, "after", &json!({ "return_url": "https://app.test/a" })).await;
    assert_eq!(status, 200, "the slots came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_checkouts_of_one_buyer_open_one_session_and_another_tier_replaces_it() {
    let b = Arc::new(Billing::start().await);
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let b = b.clone();
            tokio::spawn(async move {
                let mut request = checkout(PRO);
                request["customer"] = json!("cus_race");
                b.checkout(&format!("race-{i}"), &request).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 200, "{body}");
        ids.push(body["id"].as_str().expect("id").to_owned());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one session for all eight: {ids:?}");
    let created = |b: &Billing| b.stripe.calls().iter().filter(|c| c.path == "/v1/checkout/sessions").count();
    assert_eq!(created(&b), 1);

    // By email, case-insensitively.
    let tasks: Vec<_> = ["Ada@Example.test", "ada@example.TEST", "ADA@EXAMPLE.TEST"]
        .into_iter()
        .map(|email| {
            let b = b.clone();
            tokio::spawn(async move {
                let mut request = checkout(PRO);
                request["email"] = json!(email);
                b.checkout(&format!("email-{email}"), &request).await.1["id"].clone()
            })
        })
        .collect();
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.expect("task"));
    }
    assert!(ids.iter().all(|id| *id == ids[0]) && ids[0].is_string(), "{ids:?}");
    assert_eq!(created(&b), 2);

    // Another tier: the open session is expired at Stripe, then the new one made.
    let first = ids[0].as_str().expect("id").to_owned();
    let mut starter = checkout("price_starter_monthly");
    starter["email"] = json!("ada@example.test");
    let (status, body) = b.checkout("email-starter", &starter).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(body["id"].as_str(), Some(first.as_str()));
    assert_eq!(b.stripe.checkout_status(&first).as_deref(), Some("expired"));
    assert_eq!(created(&b), 3);

    // Paid meanwhile (the webhooks not in yet): another tier is refused, not a second subscription.
    let paid = body["id"].as_str().expect("id").to_owned();
    b.stripe.complete_checkout(&paid);
    let mut again = checkout(PRO);
    again["email"] = json!("ADA@example.test");
    let (status, body) = b.checkout("email-pro-again", &again).await;
    assert_eq!((status, code(&body)), (409, "already_subscribed"), "{body}");
    assert_eq!(created(&b), 3);
}
