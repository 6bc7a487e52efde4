//! `POST /v1/usage` under load: one in-process projector on the embedded PostgreSQL, the client on
//! the same two cores. Two runs: increments spread over many customers (each counter row rarely
//! contended), and every connection on one customer's counter (the worst case: one row lock),
//! whose quota the run exhausts, so the count after must equal the 200s (no overshoot).
//!
//! usage: cargo run --release -p projector --example usage_bench -- [connections] [seconds] [customers]
//!    or: ... --example usage_bench -- --serve [customers]: sets the same world up, prints
//!        `ready <usage url> <billing key> <database url>` and serves until SIGINT or SIGTERM (for
//!        `scripts/bench-usage`, which drives it with wrk and runs pgbench beside it).

use std::sync::Arc;

use domain::catalog::{Catalog, EXAMPLE};
use domain::clock::SystemClock;
use ledger_tests::bench::{Measured, load_accepting};
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{BILLING_KEY, TestProjector};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use serde_json::json;

/// The hot customer's daily quota: reached within the run at the rates this machine does.
const HOT_QUOTA: u64 = 8_000;

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let serve = args.get(1).is_some_and(|a| a == "--serve");
    if serve {
        args.remove(1);
        args.insert(1, String::new());
        args.insert(1, String::new());
    }
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let customers: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let mut catalog = EXAMPLE
        .replace("messages_per_day = 1000,", &format!("messages_per_day = {HOT_QUOTA},"))
        .replace("api_calls_per_day = 10000,", "api_calls_per_day = 1000000,");
    // BENCH_WINDOWS=3: api calls are counted per minute and per billing period too (issue 31),
    // with quotas the run never reaches.
    if std::env::var("BENCH_WINDOWS").is_ok_and(|w| w == "3") {
        for per_day in ["1000", "1000000", "100000", "-1"] {
            catalog = catalog.replace(
                &format!("api_calls_per_day = {per_day},"),
                &format!(
                    "api_calls_per_day = {per_day}, api_calls_per_minute = 10000000, api_calls_per_period = 100000000,"
                ),
            );
        }
    }
    let catalog = Catalog::parse(&catalog).expect("catalog");
    let db = TestDb::new().await;
    let projector = TestProjector::start_billing_with(db.service_pool(16), catalog, None, Arc::new(SystemClock)).await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    for c in 0..=customers {
        let t = stripe::now();
        let snap = SubSnapshot::new(
            &format!("sub_u{c}"),
            &format!("cus_u{c}"),
            "price_starter_monthly",
            "active",
            (t, t + 86_400),
        );
        let event = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
        assert_eq!(ingest.post_signed(&event).await.status(), 200);
    }
    projector.caught_up(&db.pool).await;
    let url = format!("http://{}/v1/usage", projector.addr);
    if serve {
        println!("ready {url} {BILLING_KEY} {}", db.url().await);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        projector.stop().await;
        return;
    }

    let spread_url = url.clone();
    let spread = load_accepting(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let body = json!({ "customer": format!("cus_u{}", 1 + i % customers), "metric": "api_calls",
                               "quantity": 1, "idempotency_key": format!("s{i}") });
            client.post(&spread_url).bearer_auth(BILLING_KEY).json(&body)
        }),
        &[200],
    )
    .await;
    report(&format!("spread over {customers} customers"), connections, &spread);

    let hot = load_accepting(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            let body = json!({ "customer": "cus_u0", "metric": "messages", "quantity": 1,
                               "idempotency_key": format!("h{i}") });
            client.post(&url).bearer_auth(BILLING_KEY).json(&body)
        }),
        &[200, 429],
    )
    .await;
    report("one customer, one counter", connections, &hot);
    let counted: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(used), 0)::bigint FROM ledger.usage_counters WHERE stripe_customer_id = 'cus_u0' AND quota_window = 'day'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    let ok = hot.statuses.get(&200).copied().unwrap_or(0);
    println!(
        "  quota {HOT_QUOTA}: {ok} answered 200, counter {counted}, {} refused (429): {}",
        hot.statuses.get(&429).copied().unwrap_or(0),
        if counted == ok as i64 && counted <= HOT_QUOTA as i64 { "no overshoot" } else { "OVERSHOOT" }
    );
    projector.stop().await;
}

fn report(what: &str, connections: usize, m: &Measured) {
    println!(
        "{what} ({connections} connections): {} requests, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        m.requests, m.per_second, m.p50, m.p99, m.max
    );
}
