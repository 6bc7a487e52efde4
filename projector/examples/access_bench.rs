//! `GET /v1/access` throughput and latency: one projector (in-process, release build), 1,000 live
//! tokens of customers with an active subscription, a client with N connections checking random tokens (`?tier=starter`) for a few seconds.
//!
//! usage: cargo run --release -p projector --example access_bench -- [connections] [seconds]

use std::sync::Arc;

use ledger_tests::bench::load;
use ledger_tests::db::TestDb;
use ledger_tests::projector::{TestProjector, catalog, effect_settings};
use projector::api::token::{new_token, token_hash};
use projector::effects::SystemClock;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let connections: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10);
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
               cancel_at_period_end, deleted)
             VALUES ($1, $2, 'professional', 'active', false, false)",
        )
        .bind(format!("sub_a{i}"))
        .bind(format!("cus_a{i}"))
        .execute(&db.pool)
        .await
        .expect("subscription");
        tokens.push(token);
    }
    let dir = tempfile::tempdir().expect("dir");
    let projector = TestProjector::start_with(
        db.service_pool(16),
        catalog(),
        500,
        effect_settings(dir.path()),
        Arc::new(SystemClock),
    )
    .await;
    let url = format!("http://{}/v1/access?tier=starter", projector.addr);
    let tokens = Arc::new(tokens);
    let m = load(
        connections,
        seconds,
        Arc::new(move |client: &reqwest::Client, i: u64| {
            // A spread of tokens: request i of any worker picks its own.
            let token = &tokens[(i.wrapping_mul(2_654_435_761) % tokens.len() as u64) as usize];
            client.get(&url).bearer_auth(token)
        }),
    )
    .await;
    println!(
        "{} checks in {seconds}s with {connections} connections: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        m.requests, m.per_second, m.p50, m.p99, m.max
    );
    projector.stop().await;
}
