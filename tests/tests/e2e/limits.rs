//! Denial of service: a client that sends its headers slowly is cut off and does not hold up
//! webhooks; a flood of `/readyz` costs the database at most one query a second, on a connection
//! of its own, while webhooks are stored.

use std::time::{Duration, Instant};

use ledger_tests::db::TestDb;
use ledger_tests::ingest::{TestIngest, settings};
use ledger_tests::stripe;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_cut_off_and_webhooks_go_on_meanwhile() {
    let db = TestDb::new().await;
    let mut s = settings("limits");
    s.server.header_timeout = Duration::from_millis(500);
    s.server.max_connections = 8;
    let ingest = TestIngest::spawn(s, db.service_pool(2)).await;

    // Eight slowloris connections: each sends half a request head and then nothing.
    let mut slow = Vec::new();
    for _ in 0..8 {
        let mut tcp = tokio::net::TcpStream::connect(ingest.addr).await.expect("connect");
        tcp.write_all(b"POST /webhooks/stripe HTTP/1.1\r\nHost: ingest\r\nContent-Le").await.expect("write");
        slow.push(tcp);
    }
    // Every slot is taken by them, yet a webhook gets through once they are cut off.
    let body = serde_json::to_vec(&stripe::event(
        &stripe::event_id(),
        "customer.created",
        stripe::now(),
        stripe::customer("cus_l"),
    ))
    .expect("json");
    let response = tokio::time::timeout(Duration::from_secs(10), ingest.post_signed(&body)).await.expect("answered");
    assert_eq!(response.status(), 200);
    // The server closed each of them (EOF or a 408), it did not wait forever.
    for mut tcp in slow {
        let mut buf = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "a slow connection was left open");
    }
    assert_eq!(db.event_count().await, 1);
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readyz_flood_costs_one_query_a_second_and_webhooks_are_stored_meanwhile() {
    let db = TestDb::new().await;
    let readiness = shared::db::Readiness::new(&db.service_pool(2));
    let started = Instant::now();
    let flood: Vec<_> = (0..32)
        .map(|_| {
            let readiness = readiness.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    readiness.check().await.expect("ready");
                }
            })
        })
        .collect();
    // Webhooks through a real ingest whose /readyz is flooded at the same time.
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let url = format!("http://{}/readyz", ingest.addr);
    let http = reqwest::Client::new();
    let probes: Vec<_> = (0..16)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                for _ in 0..50 {
                    assert_eq!(http.get(&url).send().await.expect("readyz").status(), 200);
                }
            })
        })
        .collect();
    for n in 0..40 {
        let body = stripe::subscription_updated(&stripe::event_id(), n);
        assert_eq!(ingest.post_signed(&body).await.status(), 200, "webhook {n} during the flood");
    }
    for task in flood.into_iter().chain(probes) {
        task.await.expect("flood task");
    }
    let elapsed = started.elapsed().as_secs();
    assert!(
        readiness.database_checks() <= elapsed + 2,
        "{} database checks for 1600 probes in {elapsed} s",
        readiness.database_checks()
    );
    assert_eq!(db.event_count().await, 40);
    ingest.stop().await.expect("clean stop");
}
