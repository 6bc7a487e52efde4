//! The real `projector` binary at the most verbose log level issues a token and mails it over
//! SMTP: the plaintext reaches the mail and appears nowhere in the logs.

use std::time::Duration;

use ledger_tests::bin::spawn_projector;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::smtp::SmtpServer;
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_plaintext_is_mailed_and_never_logged() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let smtp = SmtpServer::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let log_path = dir.path().join("projector.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let url = db.url().await;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SMTP_URL", &smtp.url),
        ("ALLOW_INSECURE_SMTP", "true"), // the test SMTP server has no TLS
        ("MAIL_FROM", "billing@ledger.test"),
        ("RUST_LOG", "trace"),
    ];
    let mut child = spawn_projector(&env, log);

    let t = stripe::now();
    let customer = stripe::customer_event("customer.created", t, Shape::Basil, "cus_l", "l@example.com");
    let snap = SubSnapshot::new("sub_l", "cus_l", "price_enterprise_monthly", "active", (t, t + 2_592_000));
    let created = stripe::subscription_event("customer.subscription.created", t, Shape::Basil, &snap);
    for body in [customer, created] {
        assert_eq!(ingest.post_signed(&body).await.status(), 200);
    }
    let mail = wait::until(Duration::from_secs(60), "the token mail", || async {
        smtp.received().into_iter().find(|m| m.data.contains("Subject: Your API token"))
    })
    .await;
    // The issuance is logged after the delivery is recorded, which follows the mail.
    wait::until(Duration::from_secs(30), "the issuance in the log", || async {
        std::fs::read_to_string(&log_path).ok().filter(|logs| logs.contains("token issued")).map(|_| ())
    })
    .await;
    child.kill().expect("stop");
    child.wait().expect("reaped");

    assert_eq!(mail.to, ["l@example.com"]);
    let token = mail
        .text()
        .lines()
        .find_map(|l| l.trim().strip_prefix("sl_").map(|t| format!("sl_{t}")))
        .expect("a token in the mail");
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(logs.len() > 10_000, "trace-level logs: {} bytes", logs.len());
    assert!(!logs.contains(&token), "the plaintext is not in the logs");
    assert!(!logs.contains(&token["sl_".len()..]), "nor its random part");
}
