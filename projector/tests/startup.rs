//! The real `projector` binary started while its database is unreachable waits for it, says so,
//! and stops at once on SIGTERM.

use std::time::Duration;

use ledger_tests::bin::{self, exit_within, spawn_projector, terminate};
use ledger_tests::wait;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_database_outage_at_start_up_stops_the_projector_within_seconds() {
    let dir = tempfile::tempdir().expect("dir");
    let log_path = dir.path().join("projector.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    // Nothing listens there: every connection is refused.
    let url = format!("postgres://ledger@127.0.0.1:{}/stripe_ledger", bin::free_port());
    let mail_dir = dir.path().join("mail");
    let mut child = spawn_projector(
        &[("DATABASE_URL", &url), ("MAIL_DIR", mail_dir.to_str().expect("utf-8")), ("RUST_LOG", "info")],
        log,
    );
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();
    wait::until(Duration::from_secs(30), "two attempts to reach the database", || async {
        (logs().matches("database unavailable at start-up").count() >= 2).then_some(())
    })
    .await;
    assert!(child.try_wait().expect("wait").is_none(), "it waits for the database instead of exiting");

    terminate(&child);
    let (status, took) = exit_within(&mut child, Duration::from_secs(10)).await;
    assert!(status.success(), "a clean stop: {status}");
    assert!(took < Duration::from_secs(5), "stopped in {took:?}");
    assert!(logs().contains("shutdown asked for before the database became reachable"), "{}", logs());
    assert!(!logs().contains("\u{1b}["), "no colour codes in a log file");
}
