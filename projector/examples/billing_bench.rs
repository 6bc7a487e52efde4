//! The billing API's own overhead: checkout commands (pack prices, a fresh `Idempotency-Key`
//! each) through one in-process projector to a fake Stripe on loopback that answers at once,
//! against the same client calling the fake directly. The difference is what the API adds: auth,
//! the catalog check, the idempotency lock, the journal row and the rate-limit count.
//!
//! usage: cargo run --release -p projector --example billing_bench -- [connections] [seconds]

use std::sync::Arc;

use ledger_tests::bench::load;
use ledger_tests::db::TestDb;
use ledger_tests::projector::{BILLING_KEY, TestProjector};
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
    projector.stop().await;
}
