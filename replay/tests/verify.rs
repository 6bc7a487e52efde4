//! The real `replay verify` binary over a real log: a clean log passes and prints its head; a body
//! byte altered, a row deleted, two rows reordered (as superuser, trigger disabled) are reported
//! at the right position with a non-zero exit; a rewrite that also fixes every hash is still
//! caught by the signatures; a truncated tail is caught by a recorded head.

use std::process::Command;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::lifecycle;
use sha2::{Digest, Sha256};

async fn logged_db() -> TestDb {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    lifecycle::post(&ingest, 0..2, 3).await;
    ingest.stop().await.expect("stop");
    db
}

async fn replay_verify(db: &TestDb, args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db.url().await)
        .env("STRIPE_WEBHOOK_SECRET", ledger_tests::stripe::SECRET)
        .arg("verify")
        .args(args)
        .output()
        .expect("replay runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    (output.status.success(), format!("{stdout}{}", String::from_utf8_lossy(&output.stderr)))
}

/// Runs SQL as the owner with the append-only triggers off, as a tampering owner would.
async fn tamper(db: &TestDb, sql: &str) {
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("ALTER TABLE ledger.events DISABLE TRIGGER events_no_update_delete")
        .execute(&mut *tx)
        .await
        .expect("off");
    sqlx::query(sql).execute(&mut *tx).await.expect(sql);
    sqlx::query("ALTER TABLE ledger.events ENABLE ALWAYS TRIGGER events_no_update_delete")
        .execute(&mut *tx)
        .await
        .expect("on");
    tx.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_log_passes_and_each_tampering_is_reported_at_its_position() {
    let db = logged_db().await;
    let (ok, out) = replay_verify(&db, &["--signatures"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("every webhook signature verified"), "{out}");
    let head_line = out.lines().find(|l| l.starts_with("head ")).expect("head printed").to_owned();
    let head = head_line.trim_start_matches("head ").to_owned();
    let (position, hash) = head.split_once(':').expect("position:hash");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT chain_hash FROM ledger.events ORDER BY position DESC LIMIT 1")
        .fetch_one(&db.pool)
        .await
        .expect("head");
    assert_eq!(hash, hex::encode(stored));
    let (ok, out) = replay_verify(&db, &["--expect-head", &head]).await;
    assert!(ok && out.contains(&format!("the recorded head {position} is intact")), "{out}");

    // A truncated tail: the chain that is left is intact, the recorded head is not.
    tamper(&db, "DELETE FROM ledger.events WHERE position = (SELECT max(position) FROM ledger.events)").await;
    let (ok, _) = replay_verify(&db, &[]).await;
    assert!(ok, "what is left is a valid chain");
    let (ok, out) = replay_verify(&db, &["--expect-head", &head]).await;
    assert!(!ok && out.contains("truncated"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_altered_byte_is_found_and_a_full_rewrite_is_caught_by_the_signatures() {
    let db = logged_db().await;
    tamper(
        &db,
        "UPDATE ledger.events SET raw_body = overlay(raw_body PLACING '\\x20'::bytea FROM 3 FOR 1) WHERE position = 7",
    )
    .await;
    let (ok, out) = replay_verify(&db, &[]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN at position 7") && out.contains("sha256"), "{out}");
    assert!(out.contains("checked 6 events before it"), "{out}");

    // The owner rewrites body hashes and the whole chain from there on: the columns no longer say
    // what the altered body says.
    rewrite_chain(&db).await;
    let (ok, out) = replay_verify(&db, &[]).await;
    assert!(!ok && out.contains("BROKEN at position 7") && out.contains("do not match the raw body"), "{out}");
    // ... so the owner makes every column agree too: only the signatures can tell.
    tamper(
        &db,
        "UPDATE ledger.events SET api_version = convert_from(raw_body, 'UTF8')::jsonb ->> 'api_version'
         WHERE position = 7",
    )
    .await;
    rewrite_chain(&db).await;
    let (ok, out) = replay_verify(&db, &[]).await;
    assert!(ok, "a consistent rewrite passes the hash checks: {out}");
    let (ok, out) = replay_verify(&db, &["--signatures"]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("BROKEN at position 7") && out.contains("Stripe-Signature"), "{out}");
}

/// Recomputes every body hash and the whole chain, as an owner covering tracks would.
async fn rewrite_chain(db: &TestDb) {
    let rows: Vec<replay::verify::Row> = sqlx::query_as(replay::verify::ROWS).fetch_all(&db.pool).await.expect("rows");
    let format_2_from = replay::verify::format_2_from(&db.pool).await.expect("formats");
    let mut prev: Option<Vec<u8>> = None;
    let mut tx = db.pool.begin().await.expect("tx");
    sqlx::query("ALTER TABLE ledger.events DISABLE TRIGGER events_no_update_delete")
        .execute(&mut *tx)
        .await
        .expect("off");
    for row in rows {
        let (position, sha) = (row.position, Sha256::digest(&row.raw_body).to_vec());
        let hash = replay::verify::row_hash(prev.as_deref(), &row, &sha, format_2_from);
        sqlx::query("UPDATE ledger.events SET body_sha256 = $2, prev_hash = $3, chain_hash = $4 WHERE position = $1")
            .bind(position)
            .bind(&sha)
            .bind(prev.as_deref())
            .bind(hash.as_slice())
            .execute(&mut *tx)
            .await
            .expect("rewrite");
        prev = Some(hash.to_vec());
    }
    tx.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_and_two_reordered_rows_are_found_where_they_happened() {
    let deleted = logged_db().await;
    tamper(&deleted, "DELETE FROM ledger.events WHERE position = 5").await;
    let (ok, out) = replay_verify(&deleted, &[]).await;
    assert!(!ok && out.contains("BROKEN at position 5") && out.contains("missing"), "{out}");

    let reordered = logged_db().await;
    tamper(
        &reordered,
        "UPDATE ledger.events SET position = CASE position WHEN 3 THEN 1000003 ELSE 1000004 END WHERE position IN (3, 4)",
    )
    .await;
    tamper(&reordered, "UPDATE ledger.events SET position = position - 1000000 + CASE position WHEN 1000003 THEN 1 ELSE -1 END WHERE position > 1000000").await;
    let (ok, out) = replay_verify(&reordered, &[]).await;
    assert!(!ok && out.contains("BROKEN at position 3"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_column_that_audits_filter_on_breaks_the_chain() {
    for (column, value) in
        [("customer_id", "'cus_forged'"), ("event_type", "'forged.type'"), ("received_by", "'elsewhere'")]
    {
        let db = logged_db().await;
        tamper(&db, &format!("UPDATE ledger.events SET {column} = {value} WHERE position = 4")).await;
        let (ok, out) = replay_verify(&db, &[]).await;
        assert!(!ok && out.contains("BROKEN at position 4"), "{column}: {out}");
    }
}
