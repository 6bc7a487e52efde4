//! `GET /v1/access` throughput and latency: one projector (in-process, release build), 1,000 live
//! tokens, a client with N connections checking random tokens (`?tier=starter`) for a few seconds.
//!
//! usage: cargo run --release -p projector --example access_bench -- [connections] [seconds]

use std::sync::Arc;
use std::time::{Duration, Instant};

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
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|w| {
            let (url, tokens) = (url.clone(), tokens.clone());
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut rng = fastrand::Rng::with_seed(w as u64);
                while Instant::now() < deadline {
                    let token = &tokens[rng.usize(0..tokens.len())];
                    let at = Instant::now();
                    let response = client.get(&url).bearer_auth(token).send().await.expect("request");
                    assert_eq!(response.status(), 200);
                    let _ = response.bytes().await;
                    latencies.push(at.elapsed());
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
    println!(
        "{} checks in {elapsed:.1}s with {connections} connections: {:.0} checks/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    projector.stop().await;
}
