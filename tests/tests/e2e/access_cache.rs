//! The `/v1/access` cache: a replica keeps the answers it gave until a write that changes one
//! commits (notified by the triggers of migration 0021), whoever writes it.

use std::time::{Duration, Instant};

use domain::fold::FoldConfig;
use ledger_tests::db::TestDb;
use ledger_tests::projector::{TestProjector, catalog, customer_token};
use ledger_tests::wait;
use serde_json::Value;
use store::rebuild;

/// A projector, and a token of `cus_c` with a live starter subscription (written as the fold and
/// the dispatcher would, straight into the tables: no log behind them).
async fn started() -> (TestDb, TestProjector, String) {
    let db = TestDb::new().await;
    let token = customer_token(&db.pool, "cus_c").await;
    db.execute(
        "INSERT INTO projection.subscriptions (stripe_subscription_id, stripe_customer_id, tier, status,
           cancel_at_period_end, deleted, live, entitled_until)
         VALUES ('sub_c', 'cus_c', 'starter', 'active', false, false, true, '9999-12-31T23:59:59Z')",
    )
    .await;
    let projector = TestProjector::start(db.service_pool(4), catalog(), 20).await;
    (db, projector, token)
}

async fn lookups(projector: &TestProjector, result: &str) -> u64 {
    let (_, metrics) = projector.admin_get("/metrics").await;
    let name = format!("access_cache_lookups_total{{result=\"{result}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Checks until the answer comes from the cache (the replica listens), and returns it.
async fn cached(projector: &TestProjector, token: &str) -> (u16, Value) {
    wait::until(Duration::from_secs(10), "an answer from the cache", || async {
        let hits = lookups(projector, "hit").await;
        let answer = projector.get_json("/v1/access", token).await;
        (lookups(projector, "hit").await > hits).then_some(answer)
    })
    .await
}

/// Waits (bounded: a cached answer otherwise lives a minute) until the check satisfies `expected`;
/// returns how long that took.
async fn changes(
    projector: &TestProjector,
    token: &str,
    what: &str,
    expected: impl Fn(u16, &Value) -> bool,
) -> Duration {
    let start = Instant::now();
    wait::until(Duration::from_secs(10), what, || async {
        let (status, body) = projector.get_json("/v1/access", token).await;
        expected(status, &body).then_some(())
    })
    .await;
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_goes_when_a_write_that_changes_it_commits() {
    let (db, projector, token) = started().await;
    let (status, body) = cached(&projector, &token).await;
    assert_eq!((status, body["tier"].as_str()), (200, Some("starter")));

    db.execute("UPDATE projection.subscriptions SET tier = 'professional' WHERE stripe_subscription_id = 'sub_c'")
        .await;
    changes(&projector, &token, "the new tier", |s, b| s == 200 && b["tier"] == "professional").await;

    // Usage counted on another replica: its writer notifies after the commit.
    let other = TestProjector::start(db.service_pool(4), catalog(), 20).await;
    assert_eq!(cached(&projector, &token).await.1["usage"]["api_calls"]["used"], 0);
    let counted = reqwest::Client::new()
        .post(format!("http://{}/v1/usage", other.addr))
        .bearer_auth(&token)
        .json(&serde_json::json!({ "metric": "api_calls", "quantity": 5, "idempotency_key": "u1" }))
        .send()
        .await
        .expect("usage");
    assert_eq!(counted.status(), 200);
    changes(&projector, &token, "today's usage", |_, b| b["usage"]["api_calls"]["used"] == 5).await;
    other.stop().await;

    // A denial is cached too, and goes the same way.
    cached(&projector, &token).await;
    db.execute(
        "UPDATE projection.subscriptions SET status = 'canceled', live = false, entitled_until = NULL
         WHERE stripe_subscription_id = 'sub_c'",
    )
    .await;
    changes(&projector, &token, "no live subscription", |s, _| s == 401).await;
    cached(&projector, &token).await;
    db.execute(
        "UPDATE projection.subscriptions SET status = 'active', live = true, entitled_until = '9999-12-31T23:59:59Z'
         WHERE stripe_subscription_id = 'sub_c'",
    )
    .await;
    changes(&projector, &token, "live again", |s, _| s == 200).await;

    cached(&projector, &token).await;
    db.execute("UPDATE ledger.api_tokens SET revoked_at = now() WHERE stripe_customer_id = 'cus_c'").await;
    let took = changes(&projector, &token, "the revocation", |s, _| s == 401).await;
    eprintln!("revocation effective after {took:?} (including the polling)");
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_drops_every_cached_answer_and_its_tables_notify_as_before() {
    let (db, projector, token) = started().await;
    assert_eq!(cached(&projector, &token).await.0, 200);
    // The log is empty: the rebuilt subscriptions table is too. The swap writes no row through a
    // trigger; only its own notification can drop the cached answer.
    let folded = rebuild::fold_log(&db.pool, &catalog(), &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    rebuild::swap_in(&db.pool, folded, &catalog(), &FoldConfig::default(), false).await.expect("swap");
    changes(&projector, &token, "the rebuilt tables' answer", |s, _| s == 401).await;

    cached(&projector, &token).await;
    db.execute(
        "INSERT INTO projection.subscriptions (stripe_subscription_id, stripe_customer_id, tier, status,
           cancel_at_period_end, deleted, live, entitled_until)
         VALUES ('sub_c', 'cus_c', 'starter', 'active', false, false, true, '9999-12-31T23:59:59Z')",
    )
    .await;
    changes(&projector, &token, "the new table's write", |s, _| s == 200).await;
    projector.stop().await;
}

/// `replay rebuild --keep-old` renames the replaced schema instead of dropping it: the API's
/// long-lived connections and their prepared statements must read the new tables, not the
/// renamed old ones (a plan bound to the old tables' OIDs would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rebuild_that_keeps_the_old_tables_the_api_reads_the_new_ones() {
    let (db, projector, token) = started().await;
    // A check reads the tables (preparing its statement on a pooled connection), then the cache.
    for _ in 0..8 {
        assert_eq!(projector.get_json("/v1/access", &token).await.0, 200);
    }
    let folded = rebuild::fold_log(&db.pool, &catalog(), &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    let swapped = rebuild::swap_in(&db.pool, folded, &catalog(), &FoldConfig::default(), true).await.expect("swap");
    let old = swapped.old_schema.expect("the old tables are kept");
    let kept: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {old}.subscriptions WHERE stripe_subscription_id = 'sub_c'"))
            .fetch_one(&db.pool)
            .await
            .expect("old tables");
    assert_eq!(kept, 1, "the old table still grants access");
    // The new (empty) tables: every connection answers from them, repeatedly.
    changes(&projector, &token, "the rebuilt tables' answer", |s, _| s == 401).await;
    for _ in 0..8 {
        assert_eq!(projector.get_json("/v1/access", &token).await.0, 401, "never the renamed old table");
    }
    db.execute(
        "INSERT INTO projection.subscriptions (stripe_subscription_id, stripe_customer_id, tier, status,
           cancel_at_period_end, deleted, live, entitled_until)
         VALUES ('sub_c', 'cus_c', 'starter', 'active', false, false, true, '9999-12-31T23:59:59Z')",
    )
    .await;
    changes(&projector, &token, "the new table's write", |s, _| s == 200).await;
    // A write to the old table (its triggers still notify: the cache is dropped and read again).
    db.execute(&format!("DELETE FROM {old}.subscriptions")).await;
    let read_again = wait::until(Duration::from_secs(10), "a check that reads the tables again", || async {
        let misses = lookups(&projector, "miss").await;
        let (status, _) = projector.get_json("/v1/access", &token).await;
        (lookups(&projector, "miss").await > misses).then_some(status)
    })
    .await;
    assert_eq!(read_again, 200, "the old table is not read");
    projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_loses_its_listening_connection_listens_again() {
    let (db, projector, token) = started().await;
    cached(&projector, &token).await;
    let listener = |db: &TestDb| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i32>(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%ledger_access%'",
            )
            .fetch_optional(&pool)
            .await
            .expect("activity")
        }
    };
    let pid = listener(&db).await.expect("a listening connection");
    let terminated: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&db.pool).await.expect("terminate");
    assert!(terminated);
    wait::until(Duration::from_secs(10), "listening again", || async {
        listener(&db).await.filter(|p| *p != pid).map(|_| ())
    })
    .await;
    cached(&projector, &token).await;
    db.execute("UPDATE ledger.api_tokens SET revoked_at = now() WHERE stripe_customer_id = 'cus_c'").await;
    changes(&projector, &token, "the revocation", |s, _| s == 401).await;
    projector.stop().await;
}
