//! The log is append-only: grants for the application roles, triggers for everyone.

use bytes::Bytes;
use ledger_tests::db::TestDb;
use ledger_tests::stripe;
use shared::log::{AppendOutcome, NewEvent, Source, append_events};
use sqlx::PgPool;

/// `body` as ingest would take it, signed now.
fn signed(body: Vec<u8>) -> NewEvent {
    let signature = stripe::sign(&body);
    NewEvent::decode(Bytes::from(body), Some(signature)).expect("an event")
}

async fn one_event(db: &TestDb) -> NewEvent {
    let body = serde_json::to_vec(&stripe::event(
        &stripe::event_id(),
        "customer.created",
        stripe::now(),
        stripe::customer("cus_ao"),
    ))
    .expect("serializable");
    let event = signed(body);
    let outcome = append_events(&db.pool, std::slice::from_ref(&event), Source::Webhook, "test").await.expect("append");
    assert!(matches!(outcome[..], [AppendOutcome::Appended { .. }]));
    event
}

/// Runs `sql` as `role` in a transaction that is rolled back; returns the SQLSTATE on failure.
async fn as_role(pool: &PgPool, role: &str, sql: &str) -> Result<(), (String, String)> {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query(&format!("SET LOCAL ROLE {role}")).execute(&mut *tx).await.expect("set role");
    let result = sqlx::query(sql).execute(&mut *tx).await;
    tx.rollback().await.expect("rollback");
    result.map(|_| ()).map_err(|e| match e {
        sqlx::Error::Database(db) => (db.code().unwrap_or_default().into_owned(), db.message().to_owned()),
        other => (String::new(), other.to_string()),
    })
}

#[tokio::test]
async fn the_ingest_role_can_only_append() {
    let db = TestDb::new().await;
    one_event(&db).await;
    for sql in [
        "UPDATE ledger.events SET event_type = 'forged'",
        "DELETE FROM ledger.events",
        "TRUNCATE ledger.events",
        "SELECT * FROM ledger.events",
        "INSERT INTO ledger.events (position, stripe_event_id, event_type, livemode, created, received_at, source, received_by, raw_body, stripe_signature, body_sha256, chain_hash) VALUES (99, 'evt_x', 't', false, now(), now(), 'webhook', 'x', '\\x00', 's', sha256('\\x00'), sha256('\\x00'))",
    ] {
        let (code, message) = as_role(&db.pool, "ledger_ingest", sql).await.expect_err(sql);
        assert_eq!(code, "42501", "{sql}: {message}");
        assert!(message.contains("permission denied"), "{sql}: {message}");
    }
    // Its one permitted path works.
    let body = serde_json::to_vec(&stripe::event(
        &stripe::event_id(),
        "customer.updated",
        stripe::now(),
        stripe::customer("cus_ao"),
    ))
    .expect("serializable");
    let event = signed(body);
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::query("SET LOCAL ROLE ledger_ingest").execute(&mut *tx).await.expect("set role");
    let outcome = append_events(&mut *tx, &[event], Source::Webhook, "test").await.expect("ingest may append");
    assert_eq!(outcome, [AppendOutcome::Appended { position: 2 }]);
    tx.commit().await.expect("commit");
    assert_eq!(db.event_count().await, 2);
}

#[tokio::test]
async fn the_owner_cannot_update_delete_or_truncate_either() {
    let db = TestDb::new().await;
    one_event(&db).await;
    for sql in ["UPDATE ledger.events SET event_type = 'forged'", "DELETE FROM ledger.events", "TRUNCATE ledger.events"]
    {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        let db_err = err.as_database_error().expect("a database error");
        assert_eq!(db_err.code().as_deref(), Some("42501"), "{sql}");
        assert!(db_err.message().contains("append-only"), "{sql}: {}", db_err.message());
    }
    // ENABLE ALWAYS: replication mode does not switch the triggers off.
    let mut conn = db.pool.acquire().await.expect("connection");
    sqlx::query("SET session_replication_role = replica").execute(&mut *conn).await.expect("superuser setting");
    let err = sqlx::query("DELETE FROM ledger.events").execute(&mut *conn).await.expect_err("still rejected");
    assert!(err.to_string().contains("append-only"), "{err}");
    sqlx::query("RESET session_replication_role").execute(&mut *conn).await.expect("reset");
    drop(conn);
    assert_eq!(db.event_count().await, 1);
}

#[tokio::test]
async fn the_projector_reads_and_the_auditor_has_no_direct_access() {
    let db = TestDb::new().await;
    one_event(&db).await;
    as_role(&db.pool, "ledger_projector", "SELECT raw_body FROM ledger.events").await.expect("projector reads");
    let (code, _) = as_role(&db.pool, "ledger_projector", "UPDATE ledger.events SET event_type = 'x'")
        .await
        .expect_err("no update");
    assert_eq!(code, "42501");
    let (code, _) = as_role(&db.pool, "ledger_auditor", "SELECT * FROM ledger.events")
        .await
        .expect_err("auditor reads audit views only");
    assert_eq!(code, "42501");
}

#[tokio::test]
async fn usage_rows_are_append_only_and_counted_only_through_the_projector_role() {
    let db = TestDb::new().await;
    let count =
        "SELECT * FROM ledger.count_usage('cus_1', 'messages', 2, 'k1', 'backend', current_date, now(), true, 10)";
    as_role(&db.pool, "ledger_projector", count).await.expect("the projector counts");
    for role in ["ledger_ingest", "ledger_auditor"] {
        let (code, _) = as_role(&db.pool, role, count).await.expect_err("only the projector counts");
        assert_eq!(code, "42501", "{role}");
    }
    sqlx::query(count).execute(&db.pool).await.expect("counted by the owner");
    let used: i64 =
        sqlx::query_scalar("SELECT used FROM ledger.usage_counters").fetch_one(&db.pool).await.expect("used");
    assert_eq!(used, 2, "the same key counted once");
    for sql in ["UPDATE ledger.usage SET quantity = 1", "DELETE FROM ledger.usage", "TRUNCATE ledger.usage"] {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
}

/// A signed `customer.subscription.updated` event of Stripe's shape (about 3 KB) with `id`.
fn subscription_event(id: &str, sequence: u64) -> NewEvent {
    signed(stripe::subscription_updated(id, sequence))
}

/// Sequential and index scans of `ledger.events` counted so far, after `pool`'s one connection
/// flushed its statistics.
async fn log_scans(pool: &PgPool) -> (i64, i64) {
    sqlx::query("SELECT pg_stat_force_next_flush()").execute(pool).await.expect("flush");
    sqlx::query_as(
        "SELECT seq_scan, coalesce(idx_scan, 0) FROM pg_stat_user_tables WHERE relid = 'ledger.events'::regclass",
    )
    .fetch_one(pool)
    .await
    .expect("scans")
}

/// The append function plans its statements once per connection (migration 0022). The plan of a
/// connection's first append is made while the log is empty; appends after it must still find
/// existing ids through the index, never by reading the whole log.
#[tokio::test]
async fn appends_look_ids_up_through_the_index_whatever_the_log_held_when_planned() {
    let db = TestDb::new().await;
    let pool = db.service_pool(1);
    let first = subscription_event(&stripe::event_id(), 1);
    append_events(&pool, std::slice::from_ref(&first), Source::Webhook, "test").await.expect("first append");
    let (seq_before, idx_before) = log_scans(&pool).await;

    let batch = [subscription_event(&stripe::event_id(), 2), first.clone(), subscription_event(&stripe::event_id(), 3)];
    let outcomes = append_events(&pool, &batch, Source::Webhook, "test").await.expect("second append");
    assert!(
        matches!(
            outcomes[..],
            [
                AppendOutcome::Appended { position: 2 },
                AppendOutcome::Duplicate { position: 1 },
                AppendOutcome::Appended { position: 3 }
            ]
        ),
        "{outcomes:?}"
    );

    let (seq_after, idx_after) = log_scans(&pool).await;
    assert_eq!(seq_after, seq_before, "an append read the whole log");
    assert!(idx_after > idx_before, "the append's lookups went through an index ({idx_before} -> {idx_after})");
}

/// Bodies of Stripe's usual size are stored compressed in the row, not out of line (0022).
#[tokio::test]
async fn bodies_of_stripes_usual_size_stay_in_the_row() {
    let db = TestDb::new().await;
    let events: Vec<NewEvent> = (1..=20).map(|i| subscription_event(&stripe::event_id(), i)).collect();
    assert!(events.iter().all(|e| e.raw_body.len() > 2_500), "bodies larger than TOAST's 2 KB target");
    append_events(&db.pool, &events, Source::Webhook, "test").await.expect("append");
    let (toast_bytes, stored, raw): (i64, i64, i64) = sqlx::query_as(
        "SELECT pg_relation_size(c.reltoastrelid), (SELECT sum(pg_column_size(raw_body)) FROM ledger.events)::bigint,
                (SELECT sum(octet_length(raw_body)) FROM ledger.events)::bigint
         FROM pg_class c WHERE c.oid = 'ledger.events'::regclass",
    )
    .fetch_one(&db.pool)
    .await
    .expect("sizes");
    assert_eq!(toast_bytes, 0, "no body went out of line");
    assert!(stored * 10 < raw * 7, "bodies are stored compressed ({stored} of {raw} bytes)");
    let read: Vec<u8> = sqlx::query_scalar("SELECT raw_body FROM ledger.events WHERE position = 7")
        .fetch_one(&db.pool)
        .await
        .expect("a body");
    assert_eq!(read, events[6].raw_body.to_vec(), "the exact bytes come back");

    // A body that does not fit a page even compressed (an invoice with thousands of lines, here
    // 300 KB of incompressible text) still goes out of line: stored, not refused.
    let mut rng = fastrand::Rng::with_seed(14);
    let noise: String = (0..300_000).map(|_| rng.alphanumeric()).collect();
    let mut object = stripe::customer("cus_large");
    object["description"] = serde_json::json!(noise);
    let body = serde_json::to_vec(&stripe::event(&stripe::event_id(), "customer.updated", stripe::now(), object))
        .expect("serializable");
    let large = signed(body);
    let outcome = append_events(&db.pool, std::slice::from_ref(&large), Source::Webhook, "test").await.expect("append");
    assert!(matches!(outcome[..], [AppendOutcome::Appended { position: 21 }]), "{outcome:?}");
    let read: Vec<u8> = sqlx::query_scalar("SELECT raw_body FROM ledger.events WHERE position = 21")
        .fetch_one(&db.pool)
        .await
        .expect("the large body");
    assert_eq!(read, large.raw_body.to_vec(), "the exact bytes come back");
}
