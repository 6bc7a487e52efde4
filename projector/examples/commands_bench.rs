//! What the billing API adds to one user's click (issue 33, item 2): at concurrency 1, checkout,
//! preview, change and cancel through one in-process projector to a fake Stripe on loopback,
//! against the same client making the same Stripe calls directly (the fake's own latency). The
//! difference is what the API adds. Beside it, the server CPU per command, read from `/proc`:
//! this process's (projector, client and fake; the direct run's share per call subtracted) and
//! every `postgres` process's.
//!
//! usage: cargo run --release -p projector --example commands_bench -- [seconds]

use std::future::Future;
use std::time::{Duration, Instant};

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::stripe_billing::FakeStripeBilling;
use serde_json::{Value, json};

/// CPU seconds of this process, and of every `postgres` process, so far.
fn cpu() -> (f64, f64) {
    let ticks = |stat: &str| -> Option<f64> {
        // Fields after the parenthesized command: state is the 3rd, utime the 14th, stime the 15th.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        Some(fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?)
    };
    let own = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| ticks(&s)).unwrap_or(0.0);
    let mut postgres = 0.0;
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        if stat.contains("(postgres)") {
            postgres += ticks(&stat).unwrap_or(0.0);
        }
    }
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    (own / 100.0, postgres / 100.0)
}

/// One closed loop for `seconds`: latencies (ms, sorted) and CPU used (this process, postgres).
async fn run<F, Fut>(seconds: u64, mut once: F) -> (Vec<f64>, (f64, f64))
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    let (own, pg) = cpu();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut latencies = Vec::new();
    let mut i = 0;
    while Instant::now() < deadline {
        let at = Instant::now();
        once(i).await;
        latencies.push(at.elapsed().as_secs_f64() * 1_000.0);
        i += 1;
    }
    let (own_after, pg_after) = cpu();
    latencies.sort_by(f64::total_cmp);
    (latencies, (own_after - own, pg_after - pg))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

fn report(command: &str, api: &(Vec<f64>, (f64, f64)), fake: &(Vec<f64>, (f64, f64))) {
    let (a, f) = (&api.0, &fake.0);
    let per = |cpu: f64, n: usize| cpu / n.max(1) as f64 * 1e6;
    let projector = per(api.1.0, a.len()) - per(fake.1.0, f.len());
    println!(
        "{command:<9} c1: {} commands, p50 {:.2} / p99 {:.2} ms; the fake alone p50 {:.2} / p99 {:.2} ms; \
         added p50 {:.2} / p99 {:.2} ms; server CPU per command: projector {:.0} µs + PostgreSQL {:.0} µs",
        a.len(),
        percentile(a, 0.5),
        percentile(a, 0.99),
        percentile(f, 0.5),
        percentile(f, 0.99),
        percentile(a, 0.5) - percentile(f, 0.5),
        percentile(a, 0.99) - percentile(f, 0.99),
        projector.max(0.0),
        per(api.1.1, a.len()),
    );
}

async fn post(client: &reqwest::Client, url: &str, key: String, body: &Value) {
    let response = client
        .post(url)
        .bearer_auth(BILLING_KEY)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = response.status();
    assert!(status.is_success(), "{url}: {status}: {}", response.text().await.unwrap_or_default());
}

async fn stripe_call(client: &reqwest::Client, method: reqwest::Method, url: String, form: &[(&str, &str)]) {
    let response = client.request(method, &url).form(form).send().await.expect("request");
    assert!(response.status().is_success(), "{url}: {}", response.status());
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10);
    let db = TestDb::new().await;
    let stripe = FakeStripeBilling::start().await;
    let projector = TestProjector::start_billing(db.service_pool(4), &stripe.url).await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let t = stripe::now();
    let snap = SubSnapshot::new("sub_c", "cus_c", "price_starter_monthly", "active", (t, t + 2_592_000));
    let event = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
    assert_eq!(ingest.post_signed(&event).await.status(), 200);
    projector.caught_up(&db.pool).await;
    stripe.subscription("sub_c", "price_starter_monthly", t + 2_592_000, true);

    let client = reqwest::Client::new();
    let (api, fake) = (format!("http://{}", projector.addr), stripe.url.clone());
    let sub = format!("{fake}/v1/subscriptions/sub_c");
    let get = reqwest::Method::GET;
    let checkout = |i: u64| {
        let body = json!({ "price": "price_credits_1000", "customer": format!("cus_b{i}"),
                           "success_url": "https://app.test/ok", "cancel_url": "https://app.test/no" });
        let (client, url) = (client.clone(), format!("{api}/v1/checkout/sessions"));
        async move { post(&client, &url, format!("checkout-{i}"), &body).await }
    };
    let through = run(seconds, checkout).await;
    let alone = run(seconds, |_| {
        let (client, url) = (client.clone(), format!("{fake}/v1/checkout/sessions"));
        async move {
            let form = [("mode", "payment"), ("line_items[0][price]", "price_credits_1000")];
            stripe_call(&client, reqwest::Method::POST, url, &form).await
        }
    })
    .await;
    report("checkout", &through, &alone);

    let upgrade = json!({ "price": "price_professional_monthly" });
    for (command, calls) in [("preview", "/v1/invoices/create_preview"), ("change", "")] {
        let through = run(seconds, |i| {
            let (client, url, body) =
                (client.clone(), format!("{api}/v1/subscriptions/sub_c/{command}"), upgrade.clone());
            async move { post(&client, &url, format!("{command}-{i}"), &body).await }
        })
        .await;
        let alone = run(seconds, |_| {
            let (client, sub, get, fake) = (client.clone(), sub.clone(), get.clone(), fake.clone());
            async move {
                // What the command asks Stripe: the subscription's item, then the preview or the update.
                stripe_call(&client, get, sub.clone(), &[]).await;
                let form = [("items[0][id]", "si_sub_c"), ("items[0][price]", "price_professional_monthly")];
                let url = if calls.is_empty() { sub } else { format!("{fake}{calls}") };
                stripe_call(&client, reqwest::Method::POST, url, &form).await
            }
        })
        .await;
        report(command, &through, &alone);
    }

    let through = run(seconds, |i| {
        let (client, url) = (client.clone(), format!("{api}/v1/subscriptions/sub_c/cancel"));
        async move { post(&client, &url, format!("cancel-{i}"), &json!({ "at_period_end": true })).await }
    })
    .await;
    let alone = run(seconds, |_| {
        let (client, sub) = (client.clone(), sub.clone());
        async move { stripe_call(&client, reqwest::Method::POST, sub, &[("cancel_at_period_end", "true")]).await }
    })
    .await;
    report("cancel", &through, &alone);
    ingest.stop().await.expect("stop");
    projector.stop().await;
}
