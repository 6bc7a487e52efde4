//! The billing API's own overhead: checkout commands (pack prices, a fresh `Idempotency-Key`
//! each) through one in-process projector to a fake Stripe on loopback that answers at once,
//! against the same client calling the fake directly. The difference is what the API adds: auth,
//! the catalog check, the idempotency lock, the journal row and the rate-limit count.
//!
//! Then portal sessions under customer tokens, with the per-token limiter on: spread over 1,000
//! tokens (each within its 30 a minute: the limiter's cost when it admits), against the backend
//! key (not limited); and one token looping (the limiter refusing: what a 429 costs, and that
//! nothing of it reaches Stripe).
//!
//! usage: cargo run --release -p projector --example billing_bench -- [connections] [seconds]

use std::sync::Arc;

use ledger_tests::bench::{Measured, load, load_accepting};
use ledger_tests::db::TestDb;
use ledger_tests::projector::{BILLING_KEY, TestProjector, customer_token};
use ledger_tests::stripe_billing::FakeStripeBilling;
use serde_json::json;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let db = TestDb::new().await;
    let stripe = FakeStripeBilling::start().await;
    let projector = TestProjector::start_billing(db.service_pool(4), &stripe.url).await;

    let api = format!("http://{}/v1/checkout/sessions", projector.addr);
    let through = load(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            // One customer per request: the per-customer checkout rate limit does not apply.
            let body = json!({ "price": "price_credits_1000", "customer": format!("cus_b{i}"),
                           "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no" });
            client.post(&api).bearer_auth(BILLING_KEY).header("Idempotency-Key", format!("bench-{i}")).json(&body)
        }),
    )
    .await;
    println!(
        "through the API: {} commands, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        through.requests, through.per_second, through.p50, through.p99
    );

    let direct = format!("{}/v1/checkout/sessions", stripe.url);
    let alone = load(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let form = [("mode", "payment".to_owned()), ("line_items[0][price]", "price_credits_1000".to_owned())];
            client.post(&direct).header("Idempotency-Key", format!("direct-{i}")).form(&form)
        }),
    )
    .await;
    println!(
        "the fake alone:  {} calls, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        alone.requests, alone.per_second, alone.p50, alone.p99
    );
    println!(
        "added by the API ({connections} connections): p50 {:.2} ms, p99 {:.2} ms",
        through.p50 - alone.p50,
        through.p99 - alone.p99
    );
    limited(&db, &projector, &stripe, connections, seconds).await;
    projector.stop().await;
}

/// Customers whose tokens the limited runs use.
const TOKENS: usize = 1_000;

fn report(label: &str, m: &Measured) {
    println!(
        "{label}: {} answers {:?}, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        m.requests, m.statuses, m.per_second, m.p50, m.p99
    );
}

async fn limited(db: &TestDb, projector: &TestProjector, stripe: &FakeStripeBilling, connections: usize, seconds: u64) {
    let mut tokens = Vec::with_capacity(TOKENS);
    for i in 0..TOKENS {
        tokens.push(customer_token(&db.pool, &format!("cus_t{i}")).await);
    }
    let tokens = Arc::new(tokens);
    let portal = format!("http://{}/v1/portal/sessions", projector.addr);
    let url = portal.clone();
    let backend = load(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let body =
                json!({ "customer": format!("cus_t{}", i as usize % TOKENS), "return_url": "https://app.test/a" });
            client.post(&url).bearer_auth(BILLING_KEY).header("Idempotency-Key", format!("pb-{i}")).json(&body)
        }),
    )
    .await;
    report("portal, backend key (not limited)", &backend);
    let (url, spread) = (portal.clone(), tokens.clone());
    let admitted = load(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let token = &spread[i as usize % TOKENS];
            let body = json!({ "return_url": "https://app.test/a" });
            client.post(&url).bearer_auth(token).header("Idempotency-Key", format!("pt-{i}")).json(&body)
        }),
    )
    .await;
    report(&format!("portal, {TOKENS} customer tokens (limiter on, admitting)"), &admitted);
    let before = stripe.calls().len();
    let (url, one) = (portal, tokens[0].clone());
    let refused = load_accepting(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let body = json!({ "return_url": "https://app.test/a" });
            client.post(&url).bearer_auth(&one).header("Idempotency-Key", format!("loop-{i}")).json(&body)
        }),
        &[200, 429],
    )
    .await;
    report("portal, one token looping (limiter refusing)", &refused);
    println!("  Stripe calls during the loop: {}", stripe.calls().len() - before);
}
