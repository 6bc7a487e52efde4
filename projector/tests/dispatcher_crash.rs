//! The real `projector` binary, killed with SIGKILL while a provisioner call is in flight (after
//! the call, before its journal row): the restarted one re-sends the same idempotency key, and the
//! instance ends up provisioned once. And the binary reaches an HTTPS provisioner signed by a
//! private CA through `SSL_CERT_FILE`.

use std::process::{Child, Stdio};
use std::time::Duration;

use ledger_tests::bin::spawn_projector;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::provisioner::FakeProvisioner;
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::wait;

fn start(url: &str, provisioner: &str, mail_dir: &std::path::Path) -> Child {
    let env = [
        ("DATABASE_URL", url),
        ("PROVISIONER_URL", provisioner),
        ("PROVISIONER_API_KEY", "crash-key"),
        ("ALLOW_INSECURE_HTTP", "true"), // the fake provisioner speaks plain HTTP on loopback
        ("MAIL_DIR", mail_dir.to_str().expect("utf-8")),
        ("EFFECT_BACKOFF_MS", "20"),
    ];
    spawn_projector(&env, Stdio::null())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_between_the_call_and_the_journal_resends_the_same_key() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let provisioner = FakeProvisioner::start().await;
    let mail_dir = tempfile::tempdir().expect("mail dir");
    let url = db.url().await;
    let t = stripe::now();
    let customer = stripe::customer_event("customer.created", t, Shape::Legacy, "cus_k", "k@example.com");
    let snap = SubSnapshot::new("sub_k", "cus_k", "price_starter_monthly", "active", (t, t + 2_592_000));
    let created = stripe::subscription_event("customer.subscription.created", t, Shape::Legacy, &snap);
    for body in [customer, created] {
        assert_eq!(ingest.post_signed(&body).await.status(), 200);
    }

    provisioner.hold(); // the call is received and recorded, and its answer never comes
    let mut first = start(&url, &provisioner.url, mail_dir.path());
    let calls = provisioner.wait_calls(1).await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let journaled: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.effects WHERE kind = 'provision'")
        .fetch_one(&db.pool)
        .await
        .expect("journal");
    assert_eq!(journaled, 0, "killed before the journal row");

    provisioner.release();
    let mut second = start(&url, &provisioner.url, mail_dir.path());
    let status = wait::until(Duration::from_secs(60), "the instance to run", || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM projection.instances WHERE stripe_subscription_id = 'sub_k'")
                .fetch_optional(&db.pool)
                .await
                .expect("view")
                .flatten();
        (status.as_deref() == Some("running")).then_some(status)
    })
    .await;
    second.kill().expect("stop");
    second.wait().expect("reaped");

    let all = provisioner.calls();
    assert_eq!(status.as_deref(), Some("running"));
    assert_eq!(all.len(), 2, "the interrupted call and its resend: {all:#?}");
    assert_eq!(all[0].idempotency_key, all[1].idempotency_key, "the same key");
    assert_eq!(all[0].idempotency_key, calls[0].idempotency_key);
    assert!(all.iter().all(|c| c.path == "/provision" && c.api_key.as_deref() == Some("crash-key")));
    let outcomes: Vec<String> = sqlx::query_scalar("SELECT outcome FROM ledger.effects WHERE kind = 'provision'")
        .fetch_all(&db.pool)
        .await
        .expect("journal");
    assert_eq!(outcomes, ["succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_provisions_over_https_through_a_private_ca() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let ca = ledger_tests::tls::TestCa::new();
    let provisioner = FakeProvisioner::start_tls(&ca).await;
    let mail_dir = tempfile::tempdir().expect("mail dir");
    let t = stripe::now();
    let customer = stripe::customer_event("customer.created", t, Shape::Basil, "cus_s", "s@example.com");
    let snap = SubSnapshot::new("sub_s", "cus_s", "price_starter_monthly", "active", (t, t + 2_592_000));
    let created = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
    for body in [customer, created] {
        assert_eq!(ingest.post_signed(&body).await.status(), 200);
    }
    // With DATABASE_URL set and no ALLOW_INSECURE_HTTP: https is the only way, trusted through
    // SSL_CERT_FILE.
    let (url, ca_path) = (db.url().await, ca.ca_path());
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("PROVISIONER_URL", &provisioner.url),
        ("PROVISIONER_API_KEY", "tls-key"),
        ("SSL_CERT_FILE", &ca_path),
        ("MAIL_DIR", mail_dir.path().to_str().expect("utf-8")),
    ];
    let mut child = spawn_projector(&env, Stdio::null());
    wait::until(Duration::from_secs(60), "the instance to run", || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM projection.instances WHERE stripe_subscription_id = 'sub_s'")
                .fetch_optional(&db.pool)
                .await
                .expect("status")
                .flatten();
        (status.as_deref() == Some("running")).then_some(())
    })
    .await;
    child.kill().expect("stop");
    child.wait().expect("reaped");
    let calls = provisioner.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].api_key.as_deref(), Some("tls-key"), "the key travelled, over TLS");
}
