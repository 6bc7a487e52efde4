//! The real `projector` binary killed while an SMTP server holds a mail unanswered: the next
//! leader cannot know whether it went out, and says so (failed, "delivery unknown", the admin
//! alerted) instead of judging it no longer needed, even once it is not needed any more.

use std::time::Duration;

use ledger_tests::bin::spawn_projector;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_whose_sender_died_mid_delivery_is_delivery_unknown_never_skipped() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let smtp = SmtpServer::start().await;
    smtp.stall_messages_containing(Some("Subject: Welcome"));
    let url = db.url().await;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SMTP_URL", &smtp.url),
        ("ALLOW_INSECURE_SMTP", "true"), // the test SMTP server has no TLS
        ("MAIL_FROM", "billing@ledger.test"),
        ("ADMIN_EMAIL", "ops@ledger.test"),
        ("RUST_LOG", "warn"),
    ];
    let mut first = spawn_projector(&env, std::process::Stdio::null());
    let t = stripe::now();
    let mut snap = SubSnapshot::new("sub_m", "cus_m", "price_starter_monthly", "active", (t, t + 2_592_000));
    for body in [
        stripe::customer_event("customer.created", t, Shape::Basil, "cus_m", "m@example.com"),
        stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap),
    ] {
        assert_eq!(ingest.post_signed(&body).await.status(), 200);
    }
    let welcomes = || smtp.received().iter().filter(|m| m.data.contains("Subject: Welcome")).count();
    wait::until(Duration::from_secs(60), "the welcome handed to SMTP", || async { (welcomes() == 1).then_some(()) })
        .await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");

    // The subscription ends before anyone learns what became of the welcome.
    snap.status = "canceled".into();
    snap.ended_at = Some(t + 60);
    let deleted = stripe::subscription_event("customer.subscription.deleted", t + 60, Shape::Basil, &snap);
    assert_eq!(ingest.post_signed(&deleted).await.status(), 200);
    smtp.stall_messages_containing(None);
    let mut second = spawn_projector(&env, std::process::Stdio::null());
    let last = wait::until(Duration::from_secs(60), "the welcome's outcome", || async {
        let row: Option<(String, Option<String>)> = sqlx::query_as(
            "SELECT outcome, error FROM ledger.effects WHERE key = 'email:welcome:sub_m' ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("journal");
        row.filter(|(outcome, _)| outcome != "sending")
    })
    .await;
    assert_eq!(last.0, "failed", "not `skipped`: it may have gone out ({last:?})");
    assert!(last.1.as_deref().is_some_and(|e| e.contains("delivery unknown")), "{last:?}");
    wait::until(Duration::from_secs(60), "the admin alerted", || async {
        smtp.received()
            .iter()
            .any(|m| m.to == ["ops@ledger.test"] && m.data.contains("email:welcome:sub_m"))
            .then_some(())
    })
    .await;
    assert_eq!(welcomes(), 1, "never sent twice");
    second.kill().expect("stop");
    second.wait().expect("reaped");
}
