//! The webhook endpoint over real HTTP against real PostgreSQL.

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::stripe::{self, SECRET};
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn an_accepted_event_is_stored_byte_exact_with_its_envelope() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let id = stripe::event_id();
    // Pretty-printed, non-ASCII, Stripe's own example subscription: the stored bytes must be these.
    let mut sub = stripe::subscription("sub_byte_exact", "cus_byte_exact", "active");
    sub["metadata"] = json!({ "note": "Zoë — 日本 🚀", "spaces": "  kept  " });
    let body = serde_json::to_vec_pretty(&stripe::event(&id, "customer.subscription.created", 1_680_064_028, sub))
        .expect("serializable");
    let signature = stripe::sign(&body);

    let response = ingest.post(body.clone(), Some(&signature)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<serde_json::Value>().await.expect("json"), json!({ "received": true }));

    let row = sqlx::query!(
        r#"SELECT position, stripe_event_id, event_type, api_version, livemode, created, source,
                  received_by, object_type, object_id, customer_id, raw_body, stripe_signature,
                  body_sha256, subscription_id, prev_hash, chain_hash
           FROM ledger.events"#
    )
    .fetch_one(&db.pool)
    .await
    .expect("exactly one row");
    assert_eq!(row.raw_body, body, "raw body must be byte-identical");
    assert_eq!(row.body_sha256, Sha256::digest(&body).to_vec());
    assert_eq!(row.stripe_signature.as_deref(), Some(signature.as_str()));
    assert_eq!(row.position, 1);
    assert_eq!(row.stripe_event_id, id);
    assert_eq!(row.event_type, "customer.subscription.created");
    assert_eq!(row.api_version.as_deref(), Some("2022-11-15"));
    assert!(!row.livemode);
    assert_eq!(row.created.timestamp(), 1_680_064_028);
    assert_eq!(row.source, "webhook");
    assert_eq!(row.received_by, "test-ingest");
    assert_eq!(row.object_type.as_deref(), Some("subscription"));
    assert_eq!(row.object_id.as_deref(), Some("sub_byte_exact"));
    assert_eq!(row.customer_id.as_deref(), Some("cus_byte_exact"));
    assert_eq!(row.subscription_id.as_deref(), Some("sub_byte_exact"), "extracted at ingest");
    assert_eq!(row.prev_hash, None);
    assert_eq!(row.chain_hash.len(), 32);
    ingest.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_redelivered_event_gets_200_and_no_second_row() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let id = stripe::event_id();
    let body = serde_json::to_vec(&stripe::event(&id, "customer.created", stripe::now(), stripe::customer("cus_dup")))
        .expect("serializable");
    assert_eq!(ingest.post_signed(&body).await.status(), 200);
    // Stripe's retry (fresh signature) and a differently rendered copy of the same id.
    assert_eq!(ingest.post_signed(&body).await.status(), 200);
    let mut other_rendering = stripe::event(&id, "customer.created", stripe::now(), stripe::customer("cus_dup"));
    other_rendering["api_version"] = json!("2025-03-31.basil");
    let other = serde_json::to_vec_pretty(&other_rendering).expect("serializable");
    assert_eq!(ingest.post_signed(&other).await.status(), 200);

    // Many concurrent deliveries of one new event: all acknowledged, one row.
    let racing_id = stripe::event_id();
    let racing =
        serde_json::to_vec(&stripe::event(&racing_id, "invoice.paid", stripe::now(), stripe::object("invoice")))
            .expect("serializable");
    let posts = (0..20).map(|_| ingest.post_signed(&racing));
    for response in futures::future::join_all(posts).await {
        assert_eq!(response.status(), 200);
    }

    let stored: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT stripe_event_id, raw_body FROM ledger.events ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .expect("rows");
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0], (id, body), "the first copy is the one kept");
    assert_eq!(stored[1].0, racing_id);
    let (_, metrics) = ingest.admin_get("/metrics").await;
    assert!(metrics.contains("ingest_duplicates_total 21"), "{metrics}");
    assert!(metrics.contains(r#"ingest_requests_total{outcome="appended"} 2"#), "{metrics}");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test]
async fn rejected_requests_get_their_status_a_metric_and_no_row() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let body = serde_json::to_vec(&stripe::event(
        &stripe::event_id(),
        "customer.created",
        stripe::now(),
        stripe::customer("cus_x"),
    ))
    .expect("serializable");

    // Missing signature.
    assert_eq!(ingest.post(body.clone(), None).await.status(), 400);
    // Signed with another secret.
    let forged = domain::signature::sign_header("whsec_attacker", stripe::now(), &body);
    let response = ingest.post(body.clone(), Some(&forged)).await;
    assert_eq!(response.status(), 400);
    let answer: serde_json::Value = response.json().await.expect("json error body");
    assert_eq!(answer["reason"], "signature_mismatch");
    // Body changed by one byte after signing.
    let signature = stripe::sign(&body);
    let mut tampered = body.clone();
    let at = tampered.iter().position(|b| *b == b'x').expect("an x in the body");
    tampered[at] = b'y';
    assert_eq!(ingest.post(tampered, Some(&signature)).await.status(), 400);
    // Too old.
    let old = domain::signature::sign_header(SECRET, stripe::now() - 3600, &body);
    assert_eq!(ingest.post(body.clone(), Some(&old)).await.status(), 400);
    // Authentic but not a Stripe event.
    let not_event = br#"{"id":"cus_123","object":"customer"}"#.to_vec();
    let response = ingest.post_signed(&not_event).await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<serde_json::Value>().await.expect("json")["reason"], "not_an_event");
    // Above the 1 MiB limit (signed, so only the size is at fault).
    let mut huge = stripe::event(&stripe::event_id(), "customer.created", stripe::now(), stripe::customer("cus_big"));
    huge["data"]["object"]["description"] = serde_json::Value::String("a".repeat(1024 * 1024 + 1));
    let huge = serde_json::to_vec(&huge).expect("serializable");
    assert_eq!(ingest.post_signed(&huge).await.status(), 413);

    assert_eq!(db.event_count().await, 0, "no rejected request may leave a row");
    let (_, metrics) = ingest.admin_get("/metrics").await;
    for reason in ["missing_signature", "signature_mismatch", "timestamp_too_old", "not_an_event", "body_too_large"] {
        assert!(
            metrics.contains(&format!(r#"ingest_rejections_total{{reason="{reason}"}}"#)),
            "{reason} not counted: {metrics}"
        );
    }
    assert!(metrics.contains(r#"ingest_requests_total{outcome="rejected"} 6"#), "{metrics}");

    // The same event, properly signed, is then accepted: nothing was lost by the rejections.
    assert_eq!(ingest.post_signed(&body).await.status(), 200);
    assert_eq!(db.event_count().await, 1);
    ingest.stop().await.expect("clean stop");
}

#[tokio::test]
async fn health_and_readiness_answer_when_the_database_is_up() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    assert_eq!(ingest.get("/healthz").await, (200, "ok".to_owned()));
    assert_eq!(ingest.get("/readyz").await.0, 200);
    let (status, metrics) = ingest.admin_get("/metrics").await;
    assert_eq!(status, 200);
    assert!(metrics.contains("ingest_append_duration_seconds"));
    assert!(metrics.contains("ingest_batch_size"));
    ingest.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_database_refuses_fails_alone_not_its_batch() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    // A data.object.id too long for its btree index even compressed: PostgreSQL refuses the row.
    let poison_id = stripe::event_id();
    let incompressible: String = (0..300).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let poison = serde_json::to_vec(&stripe::event(
        &poison_id,
        "customer.created",
        stripe::now(),
        stripe::customer(&format!("cus_{incompressible}")),
    ))
    .expect("serializable");
    let good: Vec<(String, Vec<u8>)> = (0..40)
        .map(|n| {
            let id = stripe::event_id();
            let body = stripe::subscription_updated(&id, n);
            (id, body)
        })
        .collect();
    // Posted together: whether or not they share a group commit, only the refused one fails.
    let poison_post = ingest.post_signed(&poison);
    let good_posts = futures::future::join_all(good.iter().map(|(_, body)| ingest.post_signed(body)));
    let (poison_response, good_responses) = tokio::join!(poison_post, good_posts);
    assert_eq!(poison_response.status(), 500, "the refused event is not acknowledged");
    for response in good_responses {
        assert_eq!(response.status(), 200, "its batch-mates are stored");
    }
    assert_eq!(db.event_count().await, 40);
    let (_, metrics) = ingest.admin_get("/metrics").await;
    assert!(metrics.contains(r#"ingest_rejections_total{reason="internal"} 1"#), "{metrics}");
    ingest.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_failed_group_commit_is_retried_event_by_event() {
    let db = TestDb::new().await;
    let metrics = ingest::metrics::Metrics::default();
    let incompressible: String = (0..300).map(|_| uuid::Uuid::new_v4().simple().to_string()).collect();
    let bodies = [
        stripe::subscription_updated(&stripe::event_id(), 1),
        serde_json::to_vec(&stripe::event(
            &stripe::event_id(),
            "customer.created",
            stripe::now(),
            stripe::customer(&format!("cus_{incompressible}")),
        ))
        .expect("serializable"),
        stripe::subscription_updated(&stripe::event_id(), 2),
    ];
    let events: Vec<shared::log::NewEvent> = bodies
        .iter()
        .map(|body| {
            shared::log::NewEvent::decode(bytes::Bytes::copy_from_slice(body), Some(stripe::sign(body)))
                .expect("an event")
        })
        .collect();
    let results = ingest::appender::append_batch(&db.pool, &events, "test", &metrics).await;
    assert!(matches!(results[0], Ok(shared::log::AppendOutcome::Appended { position: 1 })), "{results:?}");
    assert!(matches!(results[1], Err(ingest::appender::AppendError::Failed(_))), "{results:?}");
    assert!(matches!(results[2], Ok(shared::log::AppendOutcome::Appended { position: 2 })), "{results:?}");
    assert_eq!(db.event_count().await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_body_with_an_event_id_is_kept_even_when_its_envelope_cannot_be_decoded() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let t = stripe::now();
    let float_created = format!(
        r#"{{"id":"evt_float","object":"event","type":"customer.created","created":{t}.25,"livemode":false,"data":{{"object":{{"id":"cus_f","object":"customer"}}}}}}"#
    )
    .into_bytes();
    let no_livemode = format!(
        r#"{{"id":"evt_nolive","object":"event","type":"customer.created","created":{t},"data":{{"object":{{"id":"cus_n","object":"customer"}}}}}}"#
    )
    .into_bytes();
    let mut invalid_utf8 = format!(
        r#"{{"id":"evt_latin1","object":"event","type":"customer.updated","created":{t},"livemode":false,"data":{{"object":{{"id":"cus_l","object":"customer","name":""#
    )
    .into_bytes();
    invalid_utf8.extend_from_slice(b"Jos\xe9\"}}}");
    let kept = [float_created, no_livemode, invalid_utf8];
    for body in &kept {
        let response = ingest.post_signed(body).await;
        assert_eq!(response.status(), 200, "{}", String::from_utf8_lossy(body));
    }
    // Without an event id there is nothing to store it under: refused, as before.
    let no_id = br#"{"object":"event","type":"customer.created"}"#.to_vec();
    assert_eq!(ingest.post_signed(&no_id).await.status(), 400);

    let stored: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT stripe_event_id, raw_body FROM ledger.events ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .expect("rows");
    let ids: Vec<&str> = stored.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["evt_float", "evt_nolive", "evt_latin1"]);
    for ((_, bytes), body) in stored.iter().zip(&kept) {
        assert_eq!(bytes, body, "byte-exact");
    }
    let (_, metrics) = ingest.admin_get("/metrics").await;
    // The envelope decoder skips the unreadable name, so only the first two needed salvaging.
    assert!(metrics.contains("ingest_undecodable_stored_total 2"), "{metrics}");

    // The body that is not UTF-8 breaks neither the audit view nor the fold of the others.
    let texts: Vec<Option<String>> = sqlx::query_scalar("SELECT body_text FROM audit.events ORDER BY position")
        .fetch_all(&db.pool)
        .await
        .expect("audit.events reads every row");
    assert_eq!(texts.len(), 3);
    assert!(texts[2].is_none(), "the unreadable body shows as NULL on its own row");
    let projections = ledger_tests::projector::fold_whole_log(&db.pool, &ledger_tests::projector::catalog()).await;
    let kinds: Vec<&str> = projections.anomalies.values().map(|a| a.kind.as_str()).collect();
    assert!(kinds.iter().filter(|k| **k == "undecodable").count() >= 2, "recorded as anomalies: {kinds:?}");
    ingest.stop().await.expect("clean stop");
}
