//! `GET /v1/access` throughput and latency: one projector (in-process, release build), 1,000 live
//! tokens of customers with an active subscription, a client with N connections checking random
//! tokens (`?tier=starter`) for a few seconds. Then how soon a write is seen: 200 times, a cached
//! customer's subscription changes tier and the check is repeated until it shows the new tier.
//!
//! usage: cargo run --release -p projector --example access_bench -- [connections] [seconds] [cache rows]
//! (cache rows: `ACCESS_CACHE_ROWS`, default 100000; 0: every check reads the database)

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::clock::SystemClock;
use domain::token::{new_token, token_hash};
use ledger_tests::bench::load;
use ledger_tests::db::TestDb;
use ledger_tests::projector::{TestProjector, catalog, effect_settings, settings};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
    let cache_rows: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let db = TestDb::new().await;
    let mut tokens = Vec::new();
    for i in 0..1000 {
        let token = new_token().expect("token");
        sqlx::query(
            "INSERT INTO ledger.api_tokens (token_sha256, stripe_customer_id, tier, key, issued_at, expires_at, delivered_at)
             VALUES ($1, $2, 'professional', $3, now(), now() + interval '30 days', now())",
        )
        .bind(token_hash(&token))
        .bind(format!("cus_a{i}"))
        .bind(format!("token:cus_a{i}:1"))
        .execute(&db.pool)
        .await
        .expect("token");
        // A check also reads the customer's live subscription.
        sqlx::query(
            "INSERT INTO projection.subscriptions (stripe_subscription_id, stripe_customer_id, tier, status,
               cancel_at_period_end, deleted, live, entitled_until)
             VALUES ($1, $2, 'professional', 'active', false, false, true, '9999-12-31T23:59:59Z')",
        )
        .bind(format!("sub_a{i}"))
        .bind(format!("cus_a{i}"))
        .execute(&db.pool)
        .await
        .expect("subscription");
        tokens.push(token);
    }
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = settings(catalog(), 500, effect_settings(dir.path()));
    settings.access_cache_rows = cache_rows;
    let projector = TestProjector::start_settings(settings, db.service_pool(16), Arc::new(SystemClock)).await;
    let url = format!("http://{}/v1/access?tier=starter", projector.addr);
    let tokens = Arc::new(tokens);
    let (hits, misses) = (lookups(&projector, "hit").await, lookups(&projector, "miss").await);
    let checked = tokens.clone();
    let m = load(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            // A spread of tokens: request i of any worker picks its own.
            let token = &checked[(i.wrapping_mul(2_654_435_761) % checked.len() as u64) as usize];
            client.get(&url).bearer_auth(token)
        }),
    )
    .await;
    println!(
        "{} checks in {seconds}s with {connections} connections: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        m.requests, m.per_second, m.p50, m.p99, m.max
    );
    println!(
        "cache ({cache_rows} rows): {} hits, {} misses",
        lookups(&projector, "hit").await - hits,
        lookups(&projector, "miss").await - misses
    );
    seen_after_writes(&db, &projector, &tokens).await;
    projector.stop().await;
}

/// For 200 customers in turn: check twice (cached), change the subscription's tier, then check
/// until the answer shows it. Prints how many first checks after the commit still showed the old
/// tier, and how long until the new one showed (from the writer's commit returning).
async fn seen_after_writes(db: &TestDb, projector: &TestProjector, tokens: &[String]) {
    let client = reqwest::Client::new();
    let url = format!("http://{}/v1/access", projector.addr);
    let tier = |token: &String| {
        let request = client.get(&url).bearer_auth(token);
        async move {
            let body: serde_json::Value = request.send().await.expect("check").json().await.expect("json");
            body["tier"].as_str().unwrap_or_default().to_owned()
        }
    };
    let (mut delays, mut stale_first) = (Vec::new(), 0);
    for (i, token) in tokens.iter().enumerate().take(200) {
        tier(token).await;
        assert_eq!(tier(token).await, "professional");
        sqlx::query("UPDATE projection.subscriptions SET tier = 'starter' WHERE stripe_subscription_id = $1")
            .bind(format!("sub_a{i}"))
            .execute(&db.pool)
            .await
            .expect("update");
        let committed = Instant::now();
        let mut first = true;
        while tier(token).await != "starter" {
            stale_first += usize::from(first);
            first = false;
            assert!(committed.elapsed() < Duration::from_secs(10), "the write never showed");
        }
        delays.push(committed.elapsed());
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "a write seen by the next check: {} of {} first checks after the commit showed the old tier; \
         new tier shown after p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (one check's round trip included)",
        stale_first,
        delays.len(),
        ms(delays[delays.len() / 2]),
        ms(delays[delays.len() * 99 / 100]),
        ms(delays[delays.len() - 1])
    );
}

async fn lookups(projector: &TestProjector, result: &str) -> u64 {
    let (_, metrics) = projector.admin_get("/metrics").await;
    let name = format!("access_cache_lookups_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}
