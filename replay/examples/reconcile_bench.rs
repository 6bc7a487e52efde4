//! `replay reconcile` of many subscriptions against a fake Stripe on loopback that answers at once
//! (no rate limit): objects compared per second, and the same pages fetched alone (what the
//! fetches cost) beside it.
//! Half the subscriptions are in the log already (in sync), half only in Stripe (drift, reported).
//!
//! usage: cargo run --release -p replay --example reconcile_bench -- [subscriptions]

use std::time::{Duration, Instant};

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, catalog};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::stripe_api::FakeStripe;
use replay::reconcile::{self, Kind, Settings};
use replay::stripe_read::ReadSettings;
use secrecy::SecretString;

#[tokio::main]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let db = TestDb::new().await;
    let api = FakeStripe::start(Vec::new()).await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let t = stripe::now() - 600;
    for i in 0..n {
        let snap = SubSnapshot::new(
            &format!("sub_{i:06}"),
            &format!("cus_{i:06}"),
            "price_starter_monthly",
            "active",
            (t, t + 2_592_000),
        );
        let event = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
        let object = serde_json::from_slice::<serde_json::Value>(&event).expect("json")["data"]["object"].clone();
        api.put(object);
        if i % 2 == 0 {
            assert_eq!(ingest.post_signed(&event).await.status(), 200);
        }
    }
    let projector = TestProjector::start(db.service_pool(4), catalog(), 500).await;
    projector.caught_up(&db.pool).await;
    projector.stop().await;

    let settings = Settings {
        read: ReadSettings {
            api_base: api.url.clone(),
            api_key: SecretString::from("rk_test_bench"),
            max_attempts: 3,
            backoff: Duration::from_millis(10),
            requests_per_second: 0,
        },
        objects: vec![Kind::Subscriptions],
        since: None,
        apply: false,
        page_size: 100,
        restart: true,
    };
    let started = Instant::now();
    let report = reconcile::Report { line: &mut |_| {}, progress: &mut |_| {} };
    let summary = reconcile::run(&db.pool, &settings, &catalog(), report).await.expect("reconcile");
    let elapsed = started.elapsed().as_secs_f64();
    let requests = api.requests();
    println!(
        "reconcile of {n} subscriptions: {} compared, {} drifted, {} pages in {elapsed:.2} s: {:.0} objects/s",
        summary.compared,
        summary.drifted,
        requests.len(),
        summary.compared as f64 / elapsed
    );

    // The same pages fetched alone, without comparing: what the fetches cost.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut query = vec![("limit", "100".to_owned()), ("status", "all".to_owned())];
        query.extend(cursor.iter().map(|c| ("starting_after", c.clone())));
        let page: serde_json::Value = http
            .get(format!("{}/v1/subscriptions", api.url))
            .query(&query)
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        pages += 1;
        cursor = page["data"].as_array().and_then(|d| d.last()).and_then(|o| o["id"].as_str()).map(str::to_owned);
        if page["has_more"] != true {
            break;
        }
    }
    let alone = started.elapsed().as_secs_f64();
    println!(
        "  the {pages} page fetches alone: {alone:.2} s ({:.0} % of the run); comparing and recording: {:.2} s",
        alone / elapsed * 100.0,
        elapsed - alone
    );
}
