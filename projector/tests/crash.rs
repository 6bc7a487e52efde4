//! The real `projector` binary, killed with SIGKILL in the middle of its work and restarted,
//! applies every event exactly once: the tables equal one fold of the whole log (credits exact).

use std::process::{Child, Stdio};
use std::time::Duration;

use bytes::Bytes;
use ledger_tests::bin::spawn_projector;
use ledger_tests::db::TestDb;
use ledger_tests::projector::{catalog, fold_whole_log, load_tables};
use ledger_tests::{lifecycle, wait};
use shared::log::{NewEvent, Source, append_events};

fn start(url: &str, mail_dir: &std::path::Path) -> Child {
    let mail_dir = mail_dir.to_str().expect("utf-8");
    spawn_projector(&[("DATABASE_URL", url), ("MAIL_DIR", mail_dir), ("PROJECTOR_BATCH_SIZE", "3")], Stdio::null())
}

async fn checkpoint(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT coalesce((SELECT position FROM projection.checkpoint WHERE name = 'main'), 0)")
        .fetch_one(&db.pool)
        .await
        .expect("checkpoint")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_mid_batch_applies_every_event_exactly_once_after_restart() {
    let db = TestDb::new().await;
    let mut rng = fastrand::Rng::with_seed(11);
    let events: Vec<NewEvent> = (0..150)
        .flat_map(|n| lifecycle::lifecycle(n, &mut rng, 1_750_000_000))
        .map(|e| {
            let signature = ledger_tests::stripe::sign(&e.body);
            NewEvent::decode(Bytes::from(e.body), Some(signature)).expect("an event")
        })
        .collect();
    for chunk in events.chunks(500) {
        append_events(&db.pool, chunk, Source::Webhook, "crash-test").await.expect("append");
    }
    let head = events.len() as i64;
    let url = db.url().await;

    // Let it get going, then kill it without warning while batches are in flight.
    let mail_dir = tempfile::tempdir().expect("mail dir");
    let mut first = start(&url, mail_dir.path());
    let reached = wait::until(Duration::from_secs(60), "the first batches", || async {
        let at = checkpoint(&db).await;
        (at > 30).then_some(at)
    })
    .await;
    first.kill().expect("SIGKILL");
    first.wait().expect("reaped");
    let killed_at = checkpoint(&db).await;
    assert!(killed_at >= reached && killed_at < head, "killed mid-run: {killed_at} of {head}");

    let mut second = start(&url, mail_dir.path());
    wait::until(Duration::from_secs(120), "the restarted projector to catch up", || async {
        (checkpoint(&db).await == head).then_some(())
    })
    .await;
    second.kill().expect("stop");
    second.wait().expect("reaped");

    let tables = load_tables(&db.pool).await;
    let reference = fold_whole_log(&db.pool, &catalog()).await;
    assert_eq!(tables.credit_grants, reference.credit_grants, "credit grants exact");
    assert_eq!(tables, reference);
}
