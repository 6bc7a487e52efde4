//! Database down: 503 (Stripe retries), and once it is back the retry lands exactly once.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ledger_tests::ingest::TestIngest;
use ledger_tests::{stripe, wait};
use shared::embedded::LocalCluster;
use sqlx::postgres::PgPoolOptions;

#[tokio::test]
async fn a_stopped_database_gives_503_and_the_retry_lands_once_after_restart() {
    // A cluster of its own: stopping the shared one would break the other tests.
    let dir = tempfile::tempdir().expect("temp dir");
    // The postgres user (we may be root) must be able to traverse it.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cluster = LocalCluster::new(dir.path().join(".data"));
    let server = cluster.ensure_running().await.expect("cluster starts");
    shared::db::ensure_database(&server, "outage").await.expect("database");
    let options = server.options("outage");
    let owner = PgPoolOptions::new().max_connections(2).connect_with(options.clone()).await.expect("connect");
    shared::db::migrate(&owner).await.expect("migrate");
    owner.close().await;
    let service_pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(options.clone());
    let ingest = TestIngest::start(service_pool).await;

    let first = serde_json::to_vec(&stripe::event(
        &stripe::event_id(),
        "customer.created",
        stripe::now(),
        stripe::customer("cus_o1"),
    ))
    .expect("serializable");
    assert_eq!(ingest.post_signed(&first).await.status(), 200);

    cluster.stop().await.expect("cluster stops");
    let second_id = stripe::event_id();
    let second =
        serde_json::to_vec(&stripe::event(&second_id, "customer.updated", stripe::now(), stripe::customer("cus_o1")))
            .expect("serializable");
    let response = ingest.post_signed(&second).await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(ingest.get("/readyz").await.0, 503);
    assert_eq!(ingest.get("/healthz").await.0, 200, "alive, just not ready");
    let (_, metrics) = ingest.admin_get("/metrics").await;
    assert!(metrics.contains(r#"ingest_rejections_total{reason="database_unavailable"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"ingest_requests_total{outcome="unavailable"} 1"#), "{metrics}");

    cluster.ensure_running().await.expect("cluster restarts");
    // Stripe retries until it gets a 2xx; so do we, with a bound.
    wait::until(Duration::from_secs(30), "the retried event to be accepted", || async {
        (ingest.post_signed(&second).await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(ingest.post_signed(&second).await.status(), 200, "a further retry is a duplicate");

    let reader = PgPoolOptions::new().max_connections(1).connect_with(options).await.expect("connect");
    let ids: Vec<String> = sqlx::query_scalar("SELECT stripe_event_id FROM ledger.events ORDER BY position")
        .fetch_all(&reader)
        .await
        .expect("rows");
    assert_eq!(ids.len(), 2);
    assert_eq!(ids[1], second_id);
    reader.close().await;
    ingest.stop().await.expect("clean stop");
    cluster.stop().await.expect("cluster stops");
}

#[tokio::test]
async fn a_projector_without_its_database_answers_access_checks_with_503_never_a_verdict() {
    // A pool to a port nothing listens on: every query fails as a database outage does.
    let url = format!("postgres://ledger@127.0.0.1:{}/stripe_ledger", ledger_tests::bin::free_port());
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy(&url)
        .expect("lazy pool");
    let projector = ledger_tests::projector::TestProjector::start(pool, ledger_tests::projector::catalog(), 10).await;
    let response = reqwest::Client::new()
        .get(format!("http://{}/v1/access", projector.addr))
        .bearer_auth("sl_any_token")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 503, "not 401 (the token may be valid) and not 200");
    assert_eq!(projector.get("/readyz").await.0, 503);
    assert_eq!(projector.get("/healthz").await.0, 200);
    let (_, metrics) = projector.admin_get("/metrics").await;
    assert!(metrics.contains(r#"access_checks_total{result="unavailable"} 1"#), "{metrics}");
    projector.kill();
}
