//! Graceful shutdown finishes in-flight appends: every 200 ever sent is a stored event.

use std::time::Duration;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::{stripe, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_is_stored_when_shutdown_interrupts_traffic() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let shutdown = ingest.shutdown_token();
    let url = ingest.url("/webhooks/stripe");

    let mut clients = Vec::new();
    for client in 0..32u64 {
        let (http, url, stop) = (ingest.client.clone(), url.clone(), shutdown.clone());
        clients.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0..1_000u64 {
                if stop.is_cancelled() && n % 2 == 1 {
                    break;
                }
                let id = stripe::event_id();
                let body = stripe::subscription_updated(&id, client * 1_000 + n);
                match http.post(&url).header("stripe-signature", stripe::sign(&body)).body(body).send().await {
                    Ok(response) if response.status() == 200 => acknowledged.push(id),
                    Ok(response) => {
                        assert_eq!(response.status(), 503, "only 200 or 503 while stopping")
                    }
                    Err(_) => break, // listener closed
                }
            }
            acknowledged
        }));
    }
    wait::until(Duration::from_secs(30), "some events to be stored", || async {
        (db.event_count().await >= 100).then_some(())
    })
    .await;
    ingest.stop().await.expect("graceful stop returns Ok");

    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.expect("client finished"));
    }
    assert!(acknowledged.len() >= 100);
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT stripe_event_id FROM ledger.events").fetch_all(&db.pool).await.expect("rows");
    let stored: std::collections::HashSet<String> = stored.into_iter().collect();
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(missing.is_empty(), "{} acknowledged events are not stored", missing.len());
}
