//! One order, forever: concurrent appends through two ingest instances give dense positions that
//! commit in order, so a reader following `position > checkpoint` sees every event.

use std::collections::HashSet;
use std::time::Duration;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::{TestIngest, settings};
use ledger_tests::stripe;

const CLIENTS: usize = 16;
const EVENTS_PER_CLIENT: usize = 500;

/// SQL recomputation of the hash chain, independent of the append function's code.
pub const BROKEN_CHAIN_LINKS: &str = r"
    SELECT count(*) FROM (
      SELECT position, prev_hash, chain_hash, body_sha256, raw_body,
             lag(chain_hash) OVER (ORDER BY position) AS expected_prev,
             sha256(coalesce(prev_hash, '\x'::bytea) || int8send(position) || sha256(raw_body)
                    || sha256(convert_to(coalesce(stripe_signature, ''), 'UTF8'))
                    || int8send((extract(epoch FROM received_at) * 1000000)::bigint)
                    || sha256(convert_to(source, 'UTF8'))
                    -- chain format 2 (from ledger.chain_formats) covers every envelope column too
                    || CASE WHEN position >= (SELECT from_position FROM ledger.chain_formats WHERE version = 2)
                       THEN sha256(convert_to(concat_ws('|',
                              coalesce(octet_length(stripe_event_id) || ':' || stripe_event_id, '-'),
                              coalesce(octet_length(event_type) || ':' || event_type, '-'),
                              coalesce(octet_length(api_version) || ':' || api_version, '-'),
                              CASE WHEN livemode THEN 't' ELSE 'f' END,
                              extract(epoch FROM created)::bigint::text,
                              coalesce(octet_length(received_by) || ':' || received_by, '-'),
                              coalesce(octet_length(object_type) || ':' || object_type, '-'),
                              coalesce(octet_length(object_id) || ':' || object_id, '-'),
                              coalesce(octet_length(customer_id) || ':' || customer_id, '-')), 'UTF8'))
                       ELSE '\x'::bytea END) AS recomputed
      FROM ledger.events) s
    WHERE prev_hash IS DISTINCT FROM expected_prev
       OR chain_hash <> recomputed
       OR body_sha256 <> sha256(raw_body)";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_through_two_instances_are_dense_ordered_and_chained() {
    let db = TestDb::new().await;
    let a = TestIngest::spawn(settings("ingest-a"), db.service_pool(8)).await;
    let b = TestIngest::spawn(settings("ingest-b"), db.service_pool(8)).await;
    let total = CLIENTS * EVENTS_PER_CLIENT;

    // A follower reading position > checkpoint while the writers run.
    let reader_pool = db.service_pool(1);
    let reader = tokio::spawn(async move {
        let mut checkpoint = 0i64;
        let mut seen = Vec::with_capacity(total);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while seen.len() < total {
            assert!(tokio::time::Instant::now() < deadline, "the reader saw only {} events", seen.len());
            let rows: Vec<(i64, String)> = sqlx::query_as(
                "SELECT position, stripe_event_id FROM ledger.events WHERE position > $1 ORDER BY position LIMIT 1000",
            )
            .bind(checkpoint)
            .fetch_all(&reader_pool)
            .await
            .expect("read page");
            if rows.is_empty() {
                // Nothing new yet: poll again shortly (a follower's poll interval, not a synchronization).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            for (position, id) in rows {
                assert_eq!(position, checkpoint + 1, "the reader skipped from {checkpoint} to {position}");
                checkpoint = position;
                seen.push(id);
            }
        }
        seen
    });

    let mut writers = Vec::new();
    for client in 0..CLIENTS {
        let target = if client % 2 == 0 { &a } else { &b };
        let (http, url) = (target.client.clone(), target.url("/webhooks/stripe"));
        writers.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(EVENTS_PER_CLIENT);
            for n in 0..EVENTS_PER_CLIENT {
                let id = stripe::event_id();
                let body = stripe::subscription_updated(&id, (client * EVENTS_PER_CLIENT + n) as u64);
                let response = http
                    .post(&url)
                    .header("stripe-signature", stripe::sign(&body))
                    .body(body)
                    .send()
                    .await
                    .expect("request completes");
                assert_eq!(response.status(), 200);
                ids.push(id);
            }
            ids
        }));
    }
    let mut posted = HashSet::with_capacity(total);
    for writer in writers {
        posted.extend(writer.await.expect("writer finished"));
    }
    assert_eq!(posted.len(), total);

    let seen = reader.await.expect("reader finished");
    assert_eq!(seen.iter().cloned().collect::<HashSet<_>>(), posted, "the reader saw exactly the posted events");

    let (count, min, max): (i64, Option<i64>, Option<i64>) =
        sqlx::query_as("SELECT count(*), min(position), max(position) FROM ledger.events")
            .fetch_one(&db.pool)
            .await
            .expect("stats");
    assert_eq!((count, min, max), (total as i64, Some(1), Some(total as i64)), "positions are 1..=N with no gap");
    let broken: i64 = sqlx::query_scalar(BROKEN_CHAIN_LINKS).fetch_one(&db.pool).await.expect("chain check");
    assert_eq!(broken, 0, "hash chain verifies");
    let instances: i64 = sqlx::query_scalar("SELECT count(DISTINCT received_by) FROM ledger.events")
        .fetch_one(&db.pool)
        .await
        .expect("instances");
    assert_eq!(instances, 2, "both instances appended");
    let (_, metrics) = a.admin_get("/metrics").await;
    assert!(metrics.contains("ingest_batch_size_count"), "{metrics}");
    a.stop().await.expect("clean stop");
    b.stop().await.expect("clean stop");
}
