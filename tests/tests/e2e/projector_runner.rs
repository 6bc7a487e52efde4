//! The projector over a real log: webhooks in, projection rows out; one active projector.

use std::time::Duration;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, catalog, fold_whole_log, load_tables};
use ledger_tests::{lifecycle, wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_reach_the_projections_exactly_as_one_fold_of_the_log() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let projector = TestProjector::start(db.service_pool(4), catalog(), 7).await;
    let posted = lifecycle::post(&ingest, 0..12, 1).await;
    projector.caught_up(&db.pool).await;

    let tables = load_tables(&db.pool).await;
    assert_eq!(tables, fold_whole_log(&db.pool, &catalog()).await, "live equals a rebuild from position 1");
    assert_eq!(tables.subscriptions.len(), 12);
    assert!(tables.instances.values().any(|i| i.desired == domain::state::Desired::Running));
    let intents: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.intents").fetch_one(&db.pool).await.expect("n");
    assert!(intents > 12, "instance, token and email intents journaled: {intents}");
    let (status, body) = projector.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready (active)"));
    let (_, metrics) = projector.admin_get("/metrics").await;
    assert!(metrics.contains("projector_lag_events 0"), "{metrics}");
    assert!(metrics.contains(r#"projector_events_applied_total{event_type="invoice.paid"}"#), "{metrics}");
    assert!(posted > 100);
    projector.stop().await;
    ingest.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_projectors_one_applies_and_the_other_takes_over() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let a = TestProjector::start(db.service_pool(4), catalog(), 5).await;
    let b = TestProjector::start(db.service_pool(4), catalog(), 5).await;
    wait::until(Duration::from_secs(10), "one leader", || async { (a.is_leader() || b.is_leader()).then_some(()) })
        .await;
    assert!(!(a.is_leader() && b.is_leader()), "never two active projectors");
    lifecycle::post(&ingest, 0..6, 2).await;
    let (leader, standby) = if a.is_leader() { (a, b) } else { (b, a) };
    leader.caught_up(&db.pool).await;
    assert!(!standby.is_leader());
    assert_eq!(standby.get("/readyz").await, (200, "ready (standby)".to_owned()));

    // The leader goes away; the standby takes over and continues from the checkpoint.
    leader.stop().await;
    lifecycle::post(&ingest, 6..12, 3).await;
    wait::until(Duration::from_secs(20), "the standby to take over", || async { standby.is_leader().then_some(()) })
        .await;
    standby.caught_up(&db.pool).await;

    let tables = load_tables(&db.pool).await;
    assert_eq!(tables, fold_whole_log(&db.pool, &catalog()).await, "nothing applied twice, nothing skipped");
    assert_eq!(tables.subscriptions.len(), 12);
    standby.stop().await;
    ingest.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_with_another_catalog_says_so_in_readyz() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let first = TestProjector::start(db.service_pool(4), catalog(), 50).await;
    lifecycle::post(&ingest, 0..2, 4).await;
    first.caught_up(&db.pool).await;
    first.stop().await;

    let changed = domain::catalog::Catalog::parse(
        &domain::catalog::EXAMPLE.replace("credits_per_cycle = 1000\n", "credits_per_cycle = 1500\n"),
    )
    .expect("valid");
    let second = TestProjector::start(db.service_pool(4), changed, 50).await;
    wait::until(Duration::from_secs(10), "the mismatch to be reported", || async {
        let (status, body) = second.get("/readyz").await;
        (status == 503 && body.contains("another catalog")).then_some(())
    })
    .await;
    second.stop().await;
    ingest.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_with_other_fold_settings_says_rebuild_needed_until_a_rebuild() {
    use domain::fold::FoldConfig;
    use std::sync::Arc;
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let first = TestProjector::start(db.service_pool(4), catalog(), 50).await;
    lifecycle::post(&ingest, 0..2, 4).await;
    first.caught_up(&db.pool).await;
    assert_eq!(first.get("/readyz").await.0, 200);
    first.stop().await;

    // The same catalog, a shorter grace period: the rows were folded by other rules.
    let three_days = FoldConfig { grace_period_secs: 3 * 24 * 3600, ..FoldConfig::default() };
    let dir = tempfile::tempdir().expect("mail dir");
    let mut settings =
        ledger_tests::projector::settings(catalog(), 50, ledger_tests::projector::effect_settings(dir.path()));
    settings.runner.fold = three_days;
    let clock = Arc::new(domain::clock::SystemClock);
    let second = TestProjector::start_settings(settings.clone(), db.service_pool(4), clock.clone()).await;
    let mut api_only = settings;
    api_only.roles = shared::config::Roles { fold: false, effects: false, api: true };
    let replica = TestProjector::start_settings(api_only, db.service_pool(4), clock).await;
    for projector in [&second, &replica] {
        let (status, body) = projector.get("/readyz").await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("rebuild_needed") && body.contains("GRACE_PERIOD_DAYS"), "{body}");
    }

    // A rebuild with these settings records them: ready again, on the folding process and the replica.
    let folded = store::rebuild::fold_log(&db.pool, &catalog(), &three_days, &mut |_, _| {}).await.expect("fold");
    store::rebuild::swap_in(&db.pool, folded, &catalog(), &three_days, false).await.expect("swap");
    for projector in [&second, &replica] {
        wait::until(Duration::from_secs(10), "ready after the rebuild", || async {
            (projector.get("/readyz").await.0 == 200).then_some(())
        })
        .await;
    }
    second.stop().await;
    replica.stop().await;
    ingest.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_the_tables_refuse_is_quarantined_and_everyone_else_is_projected() {
    use ledger_tests::stripe::{self, Shape};
    let db = TestDb::new().await;
    // A value the table refuses, as a constraint would: stands in for any write error of one event.
    sqlx::query("ALTER TABLE projection.accounts ADD CONSTRAINT test_poison CHECK (email IS DISTINCT FROM 'poison@example.com')")
        .execute(&db.pool)
        .await
        .expect("constraint");
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let t = stripe::now();
    for n in 0..12 {
        let email = if n == 5 { "poison@example.com".to_owned() } else { format!("c{n}@example.com") };
        let mut body: serde_json::Value = serde_json::from_slice(&stripe::customer_event(
            "customer.created",
            t,
            Shape::Basil,
            &format!("cus_q{n}"),
            &email,
        ))
        .expect("json");
        if n == 7 {
            // A NUL no text column holds: settled at the model boundary, not quarantined.
            body["data"]["object"]["name"] = serde_json::Value::from("Ann\u{0}Lee");
        }
        let body = serde_json::to_vec(&body).expect("json");
        assert_eq!(ingest.post_signed(&body).await.status(), 200);
    }
    let projector = TestProjector::start(db.service_pool(4), catalog(), 50).await;
    projector.caught_up(&db.pool).await;

    let accounts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection.accounts").fetch_one(&db.pool).await.expect("n");
    assert_eq!(accounts, 11, "every customer but the poisoned one");
    let quarantined: Vec<(String, i64)> =
        sqlx::query_as("SELECT key, position FROM projection.anomalies WHERE kind = 'quarantined'")
            .fetch_all(&db.pool)
            .await
            .expect("anomalies");
    assert_eq!(quarantined, vec![("quarantined:6".to_owned(), 6)]);
    let name: String = sqlx::query_scalar("SELECT name FROM projection.accounts WHERE stripe_customer_id = 'cus_q7'")
        .fetch_one(&db.pool)
        .await
        .expect("name");
    assert_eq!(name, "Ann\u{fffd}Lee");
    let (_, metrics) = projector.admin_get("/metrics").await;
    assert!(metrics.contains("projector_quarantined_events_total 1"), "{metrics}");

    // Later events still flow.
    let body = stripe::customer_event("customer.created", t + 1, Shape::Basil, "cus_after", "after@example.com");
    assert_eq!(ingest.post_signed(&body).await.status(), 200);
    projector.caught_up(&db.pool).await;
    let after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection.accounts WHERE stripe_customer_id = 'cus_after'")
            .fetch_one(&db.pool)
            .await
            .expect("n");
    assert_eq!(after, 1);
    // Open anomalies by kind are counted from the table (the projector no longer holds them all).
    let (_, metrics) = projector.admin_get("/metrics").await;
    assert!(metrics.contains(r#"projector_anomalies{kind="quarantined"} 1"#), "{metrics}");

    // A rebuild (the table still refuses the event) passes over the same event with the same
    // anomaly: it does not fail, and live == rebuild still holds.
    let live = load_tables(&db.pool).await;
    let config = domain::fold::FoldConfig::default();
    let folded = store::rebuild::fold_log(&db.pool, &catalog(), &config, &mut |_, _| {}).await.expect("fold");
    assert!(store::diff::diff(&live, &folded.state).is_empty(), "{}", store::diff::diff(&live, &folded.state).render());
    store::rebuild::swap_in(&db.pool, folded, &catalog(), &config, false).await.expect("the rebuild swaps in");
    assert_eq!(load_tables(&db.pool).await, live, "the rebuilt tables are the live ones");

    // The cause fixed, `--retry-quarantined` folds the event like any other.
    sqlx::query("ALTER TABLE projection.accounts DROP CONSTRAINT test_poison").execute(&db.pool).await.expect("fixed");
    let folded = store::rebuild::fold_log_retrying_quarantined(&db.pool, &catalog(), &config, &mut |_, _| {})
        .await
        .expect("fold");
    store::rebuild::swap_in(&db.pool, folded, &catalog(), &config, false).await.expect("swap");
    let repaired = load_tables(&db.pool).await;
    assert!(repaired.accounts.contains_key("cus_q5") && !repaired.anomalies.contains_key("quarantined:6"));
    projector.stop().await;
}

/// `PROJECTOR_ROLES`: an API-only replica serves the API and folds nothing; a fold+effects
/// leader folds and serves no API; an API replica learns of a catalog mismatch from the
/// database, not from another process's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_split_the_projector_into_api_replicas_and_a_fold_and_effects_leader() {
    use domain::clock::SystemClock;
    use shared::config::Roles;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let dir = tempfile::tempdir().expect("dir");
    let with_roles = |catalog: domain::catalog::Catalog, roles: Roles| {
        let mut settings =
            ledger_tests::projector::settings(catalog, 20, ledger_tests::projector::effect_settings(dir.path()));
        settings.roles = roles;
        settings
    };
    let api_only = Roles { fold: false, effects: false, api: true };
    let api =
        TestProjector::start_settings(with_roles(catalog(), api_only), db.service_pool(4), Arc::new(SystemClock)).await;
    let leader_roles = Roles { fold: true, effects: true, api: false };
    let leader =
        TestProjector::start_settings(with_roles(catalog(), leader_roles), db.service_pool(4), Arc::new(SystemClock))
            .await;
    lifecycle::post(&ingest, 0..3, 9).await;
    leader.caught_up(&db.pool).await;
    assert_eq!(api.status.checkpoint.load(Ordering::Relaxed), 0, "the API replica folded nothing");
    assert!(!api.is_leader());
    let (status, body) = api.get("/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready (no fold here)"));
    let (status, body) = api.get_json("/v1/access", "sl_not_a_token").await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")), "the API answers here");
    let (status, body) = leader.get_json("/v1/access", "sl_not_a_token").await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "and not on the leader");
    assert_eq!(leader.get("/readyz").await.0, 200);
    assert!(leader.admin_get("/metrics").await.1.contains("projector_leader 1"));

    let changed = domain::catalog::Catalog::parse(
        &domain::catalog::EXAMPLE.replace("credits_per_cycle = 1000\n", "credits_per_cycle = 1500\n"),
    )
    .expect("valid");
    let stale =
        TestProjector::start_settings(with_roles(changed, api_only), db.service_pool(4), Arc::new(SystemClock)).await;
    let (status, body) = stale.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("catalog_mismatch"), "read from the checkpoint in the database: {body}");
    stale.stop().await;
    api.stop().await;
    leader.stop().await;
    ingest.stop().await.expect("stop");
}
