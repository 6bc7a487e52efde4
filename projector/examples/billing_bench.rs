//! The billing API's own overhead: checkout commands (pack prices, a fresh `Idempotency-Key`
//! each) through one in-process projector to a fake Stripe on loopback that answers at once,
//! against the same client calling the fake directly. The difference is what the API adds: auth,
//! the catalog check, the idempotency lock, the journal row and the rate-limit count.
//!
//! usage: cargo run --release -p projector --example billing_bench -- [connections] [seconds]

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let (through, n, rate) = run(
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
    println!("through the API: {n} commands, {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms", through.0, through.1);

    let direct = format!("{}/v1/checkout/sessions", stripe.url);
    let (alone, n, rate) = run(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let form = [("mode", "payment".to_owned()), ("line_items[0][price]", "price_credits_1000".to_owned())];
            client.post(&direct).header("Idempotency-Key", format!("direct-{i}")).form(&form)
        }),
    )
    .await;
    println!("the fake alone:  {n} calls, {rate:.0}/s, p50 {:.2} ms, p99 {:.2} ms", alone.0, alone.1);
    println!(
        "added by the API ({connections} connections): p50 {:.2} ms, p99 {:.2} ms",
        through.0 - alone.0,
        through.1 - alone.1
    );
    projector.stop().await;
}

type Build = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// `connections` workers send requests for `seconds`; (p50, p99) in ms, count, per second.
async fn run(connections: usize, seconds: u64, build: Build) -> ((f64, f64), usize, f64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections as u64)
        .map(|w| {
            let build = build.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut i = w;
                while Instant::now() < deadline {
                    let at = Instant::now();
                    let response = build(&client, i).send().await.expect("request");
                    assert_eq!(response.status(), 200, "{:?}", response.text().await);
                    latencies.push(at.elapsed());
                    i += connections as u64;
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.expect("worker"));
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    ((pct(0.5), pct(0.99)), latencies.len(), latencies.len() as f64 / elapsed)
}
