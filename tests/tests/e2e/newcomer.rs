//! The first ten minutes: `scripts/send-sample-event` against a running ingest and the real
//! projector binary sends a customer and a subscription, finds the token mail, and prints curl
//! commands for `/v1/access` and `/v1/usage` that work as printed.

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::stripe;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_lifecycle_gives_a_newcomer_a_token_and_working_curl_commands() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let dir = tempfile::tempdir().expect("dir");
    let mail_dir = dir.path().join("mail");
    let url = db.url().await;
    let log = std::fs::File::create(dir.path().join("projector.log")).expect("log");
    let mail_dir_text = mail_dir.to_str().expect("utf-8 path");
    let env = [("DATABASE_URL", url.as_str()), ("MAIL_DIR", mail_dir_text), ("RUST_LOG", "warn")];
    let mut projector = ledger_tests::bin::start("projector", "PROJECTOR_ADDR", &env, log).await;

    let webhook = format!("http://{}/webhooks/stripe", ingest.addr);
    let output = tokio::process::Command::new(ledger_tests::db::workspace_root().join("scripts/send-sample-event"))
        .args([webhook.as_str(), stripe::SECRET])
        .env("PROJECTOR_URL", &projector.url)
        .env("MAIL_DIR", mail_dir_text)
        .output()
        .await
        .expect("the script runs");
    let printed = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{printed}{}", String::from_utf8_lossy(&output.stderr));
    assert!(printed.contains("customer.created") && printed.contains("customer.subscription.created"), "{printed}");
    assert!(printed.contains("the token mail went to") && printed.contains(mail_dir_text), "{printed}");

    // The printed commands, run as printed.
    let curls: Vec<&str> = printed.lines().filter(|l| l.starts_with("curl ")).collect();
    assert_eq!(curls.len(), 2, "{printed}");
    let mut answers = Vec::new();
    for curl in curls {
        let out = tokio::process::Command::new("sh").args(["-c", curl]).output().await.expect("curl runs");
        assert!(out.status.success(), "{curl}");
        answers.push(serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("a JSON answer"));
    }
    assert_eq!(answers[0]["tier"], "starter", "{}", answers[0]);
    assert_eq!(answers[1]["used"], 1, "{}", answers[1]);
    ledger_tests::bin::terminate(&projector.child);
    ledger_tests::bin::exit_within(&mut projector.child, std::time::Duration::from_secs(30)).await;
    ingest.stop().await.expect("stop");
}
