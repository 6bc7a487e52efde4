//! Migrations that rewrite existing rows, tested on rows as the previous version wrote them.

use ledger_tests::db::{TestDb, workspace_root};

async fn apply(db: &TestDb, file: &str) {
    let sql = std::fs::read_to_string(workspace_root().join("migrations").join(file)).expect("migration file");
    let mut tx = db.pool.begin().await.expect("begin");
    sqlx::raw_sql(&sql).execute(&mut *tx).await.unwrap_or_else(|e| panic!("{file}: {e}"));
    tx.commit().await.expect("commit");
}

/// Applies the migrations whose file names sort before `first` (as the version before it left
/// the database) and returns the later ones, in order.
async fn migrate_before(db: &TestDb, first: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(workspace_root().join("migrations"))
        .expect("migrations dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let (before, after): (Vec<String>, Vec<String>) = files.into_iter().partition(|f| f.as_str() < first);
    for file in &before {
        apply(db, file).await;
    }
    after
}

async fn rows(db: &TestDb, sql: &str) -> Vec<(String, String, String)> {
    sqlx::query_as(sql).fetch_all(&db.pool).await.expect(sql)
}

#[tokio::test]
async fn effect_subjects_are_backfilled_alerts_move_out_of_the_outbox_and_failures_become_a_view() {
    let db = TestDb::unmigrated().await;
    let after = migrate_before(&db, "0010").await;
    // What the dispatcher and the fold wrote before 0010 (alerts were intents, failures anomalies).
    sqlx::raw_sql(
        "INSERT INTO ledger.intents (key, kind, detail, position) VALUES
           ('instance:sub_1:3', 'instance', 'running starter cus_1', 3),
           ('token:cus_1:3', 'token', 'issue starter', 3),
           ('email:welcome:sub_1', 'email', 'welcome cus_1 to starter', 3),
           ('email:payment_failed:in_9', 'email', 'payment failed for sub_1; grace until 123', 5),
           ('email:alert:instance:sub_1:3', 'email', 'POST /provision sub_1 failed', 3),
           ('email:alert:email:token:cus_1:3#2', 'email', 'the token of cus_1 could not be mailed', 0);
         INSERT INTO ledger.effects (key, kind, attempt, request, outcome) VALUES
           ('instance:sub_1:3', 'provision', 4, 'POST /provision sub_1 tier=starter', 'failed'),
           ('email:token:cus_1:3', 'email', 1, 'mail the starter token of cus_1', 'failed'),
           ('email:alert:instance:sub_1:3', 'email', 1, 'mail email:alert:instance:sub_1:3', 'succeeded'),
           ('revoke:token:cus_1:3', 'token', 1, 'revoke the token of cus_1', 'succeeded'),
           ('retier:token:cus_1:3/2:premium', 'token', 1, 'tier of the token of cus_1', 'succeeded'),
           ('email:payment_failed:in_9', 'email', 1, 'mail email:payment_failed:in_9', 'succeeded');
         INSERT INTO projection.anomalies (key, kind, detail, position) VALUES
           ('effect_failed:instance:sub_1:3', 'effect_failed', 'instance:sub_1:3: HTTP 500', 3);",
    )
    .execute(&db.pool)
    .await
    .expect("old rows");
    for file in &after {
        apply(&db, file).await;
    }

    let intents = rows(&db, "SELECT key, subject_type, subject FROM ledger.intents ORDER BY key").await;
    let expected = [
        ("email:payment_failed:in_9", "subscription", "sub_1"),
        ("email:welcome:sub_1", "subscription", "sub_1"),
        ("instance:sub_1:3", "subscription", "sub_1"),
        ("token:cus_1:3", "customer", "cus_1"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect();
    assert_eq!(intents, expected, "alerts left the outbox; every subject backfilled");
    let alerts = rows(&db, "SELECT key, subject_type, subject FROM ledger.alerts ORDER BY key").await;
    assert_eq!(alerts.len(), 2);
    assert_eq!((alerts[0].1.as_str(), alerts[0].2.as_str()), ("customer", "cus_1"), "{alerts:?}");
    assert_eq!((alerts[1].1.as_str(), alerts[1].2.as_str()), ("subscription", "sub_1"), "{alerts:?}");
    let effects = rows(&db, "SELECT key, kind || ' ' || subject_type, subject FROM ledger.effects ORDER BY key").await;
    assert!(
        effects.iter().any(|e| e.0 == "email:alert:instance:sub_1:3" && e.1 == "alert subscription" && e.2 == "sub_1"),
        "{effects:?}"
    );
    assert!(
        effects.iter().any(|e| e.0 == "email:payment_failed:in_9" && e.2 == "sub_1"),
        "from the intent: {effects:?}"
    );
    assert!(effects.iter().any(|e| e.0 == "retier:token:cus_1:3/2:premium" && e.2 == "cus_1"), "{effects:?}");
    assert!(effects.iter().all(|e| !e.2.is_empty()));
    // 0018: the mails and alerts with no ending journal row are pending; sent ones are not.
    let pending: Vec<String> = sqlx::query_scalar("SELECT key FROM ledger.pending_effects ORDER BY key")
        .fetch_all(&db.pool)
        .await
        .expect("pending");
    assert_eq!(pending, ["email:alert:email:token:cus_1:3#2", "email:welcome:sub_1"]);

    let fold_anomalies: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection.anomalies").fetch_one(&db.pool).await.expect("count");
    assert_eq!(fold_anomalies, 0, "failed effects are not the fold's rows any more");
    let shown: Vec<String> =
        sqlx::query_scalar("SELECT key FROM audit.anomalies ORDER BY key").fetch_all(&db.pool).await.expect("view");
    assert_eq!(shown, ["effect_failed:email:token:cus_1:3", "effect_failed:instance:sub_1:3"]);
    let update = sqlx::query("UPDATE ledger.intents SET detail = 'x'").execute(&db.pool).await;
    assert!(update.is_err(), "the outbox is append-only again");
    let update = sqlx::query("UPDATE ledger.effects SET error = 'x'").execute(&db.pool).await;
    assert!(update.is_err(), "the journal is append-only again");
}

/// `pg_dump --schema-only` of a freshly migrated database, without what changes from dump to
/// dump (the server's version lines, pg_dump's random `\restrict` key) and without sqlx's own
/// bookkeeping table: the schema as the migrations leave it today.
async fn current_schema(db: &TestDb) -> String {
    let output = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--exclude-table=public._sqlx_migrations", "--dbname"])
        .arg(db.url().await)
        .output()
        .expect("pg_dump runs (it comes with the PostgreSQL client beside the server binaries)");
    assert!(output.status.success(), "pg_dump: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).expect("utf-8 dump");
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with("\\restrict") || l.starts_with("\\unrestrict") || l.starts_with("-- Dumped ")))
        .collect();
    kept.join("\n") + "\n"
}

/// `schema/current.sql` is what the migrations make: one file to read for what runs today
/// (functions, views, tables, indexes, triggers, grants), kept true by this test. Regenerate it
/// with `scripts/schema-dump` after adding a migration.
#[tokio::test]
async fn schema_current_sql_is_what_the_migrations_make_today() {
    let db = TestDb::new().await;
    let dump = current_schema(&db).await;
    let path = workspace_root().join("schema").join("current.sql");
    if std::env::var("LEDGER_WRITE_SCHEMA").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("schema dir");
        std::fs::write(&path, &dump).expect("write schema/current.sql");
        return;
    }
    let file = std::fs::read_to_string(&path).unwrap_or_default();
    if file != dump {
        let line = file.lines().zip(dump.lines()).position(|(a, b)| a != b).map_or_else(
            || format!("the files differ in length ({} and {} lines)", file.lines().count(), dump.lines().count()),
            |i| format!("first difference at line {}: {:?} vs {:?}", i + 1, file.lines().nth(i), dump.lines().nth(i)),
        );
        panic!("schema/current.sql is not what the migrations make ({line}): run scripts/schema-dump");
    }
}

/// What `ledger.effect_failures` listed before 0028, computed from the whole journal: the
/// reference the kept table must always equal.
const FAILURES_FROM_THE_WHOLE_JOURNAL: &str = "
    SELECT f.key, f.id
    FROM (SELECT DISTINCT ON (key) * FROM ledger.effects ORDER BY key, id DESC) f
    WHERE f.outcome = 'failed'
      AND NOT (f.kind IN ('provision', 'update', 'deprovision') AND EXISTS (
        SELECT 1 FROM ledger.effects s
        WHERE s.subject = f.subject AND s.subject_type = f.subject_type AND s.id > f.id
          AND s.kind IN ('provision', 'update', 'deprovision') AND s.outcome = 'succeeded'))
    ORDER BY key";

/// Rows of `ledger.effects` the plan of `sql` read (every scan node on it, times its loops).
async fn journal_rows_read(db: &TestDb, sql: &str) -> i64 {
    fn walk(node: &serde_json::Value) -> i64 {
        let own = if node["Relation Name"] == "effects" {
            node["Actual Rows"].as_i64().unwrap_or(0) * node["Actual Loops"].as_i64().unwrap_or(1)
        } else {
            0
        };
        own + node["Plans"].as_array().map_or(0, |plans| plans.iter().map(walk).sum())
    }
    let plan: serde_json::Value = sqlx::query_scalar(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"))
        .fetch_one(&db.pool)
        .await
        .expect("explain");
    walk(&plan[0]["Plan"])
}

/// Issue 29, item 12: failures are kept as the journal grows (a trigger), equal to what the whole
/// journal says at every step, and reading them reads no journal row at all.
#[tokio::test]
async fn failed_effects_are_kept_as_written_and_read_without_scanning_the_journal() {
    let db = TestDb::new().await;
    // A random journal, in rounds (each round one statement, its rows in random order): 300 keys
    // of every kind, instance calls sharing 40 subjects, every outcome, failures most often.
    db.execute("SELECT setseed(0.29)").await;
    for round in 0..6 {
        db.execute(
            "INSERT INTO ledger.effects (key, kind, attempt, request, outcome, subject_type, subject)
             SELECT 'k' || k, (ARRAY['provision','update','deprovision','email','token','alert','fetch'])[k % 7 + 1],
                    1, 'r', (ARRAY['failed','failed','succeeded','retry','skipped','sending'])[1 + floor(random() * 6)::int],
                    'subscription', 'sub_' || (k % 40)
             FROM (SELECT floor(random() * 300)::int AS k FROM generate_series(1, 500) ORDER BY random()) r",
        )
        .await;
        let kept: Vec<(String, i64)> = sqlx::query_as("SELECT key, id FROM ledger.effect_failures ORDER BY key")
            .fetch_all(&db.pool)
            .await
            .expect("kept");
        let reference: Vec<(String, i64)> =
            sqlx::query_as(FAILURES_FROM_THE_WHOLE_JOURNAL).fetch_all(&db.pool).await.expect("reference");
        assert!(!reference.is_empty(), "round {round}: the journal has open failures");
        assert_eq!(kept, reference, "round {round}");
    }
    let settled_by_a_later_call: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT DISTINCT ON (key) * FROM ledger.effects ORDER BY key, id DESC) f
         WHERE f.outcome = 'failed' AND f.key NOT IN (SELECT key FROM ledger.effect_failures)",
    )
    .fetch_one(&db.pool)
    .await
    .expect("count");
    assert!(settled_by_a_later_call > 0, "the journal exercised instance failures settled by another call");

    let journal: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.effects").fetch_one(&db.pool).await.expect("n");
    let failures: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.effect_failures").fetch_one(&db.pool).await.expect("n");
    for read in [
        "SELECT count(*) FROM ledger.effect_failures",
        "SELECT * FROM ledger.effect_failures ORDER BY id DESC LIMIT 50",
    ] {
        let rows = journal_rows_read(&db, read).await;
        assert_eq!(rows, 0, "{read}: read {rows} journal rows for {failures} failures (journal {journal})");
    }
}

/// Issue 29, item 7: accounts folded before 0029 learn when Stripe created the customer from the
/// customer objects in the log (what a rebuild writes); one known only from references stays
/// unknown.
#[tokio::test]
async fn accounts_folded_before_0029_learn_when_stripe_created_them_from_the_log() {
    let db = TestDb::unmigrated().await;
    let after = migrate_before(&db, "0029").await;
    let mut customer = ledger_tests::stripe::customer("cus_old");
    customer["created"] = serde_json::json!(1_690_000_000);
    let event = ledger_tests::stripe::event("evt_old_1", "customer.created", 1_700_000_000, customer);
    sqlx::query(
        "SELECT * FROM ledger.append_events(ARRAY['evt_old_1'], ARRAY['customer.created'], ARRAY['2025-03-31.basil'],
           ARRAY[false], ARRAY[1700000000::bigint], ARRAY['customer'], ARRAY['cus_old'], ARRAY['cus_old'],
           ARRAY[NULL::text], ARRAY[$1::bytea], ARRAY['t=1,v1=00'], 'webhook', 'test')",
    )
    .bind(serde_json::to_vec(&event).expect("json"))
    .execute(&db.pool)
    .await
    .expect("append");
    db.execute(
        "INSERT INTO projection.accounts (stripe_customer_id, email, deleted) VALUES ('cus_old', 'old@example.com', false),
           ('cus_referenced', NULL, false)",
    )
    .await;
    for file in &after {
        apply(&db, file).await;
    }
    let created: Vec<(String, Option<i64>)> = sqlx::query_as(
        "SELECT stripe_customer_id, extract(epoch FROM created)::bigint FROM projection.accounts ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .expect("accounts");
    assert_eq!(created, [("cus_old".to_owned(), Some(1_690_000_000)), ("cus_referenced".to_owned(), None)]);
}

#[tokio::test]
async fn mrr_movements_folded_before_0038_learn_their_event_s_position_from_the_log() {
    let db = TestDb::unmigrated().await;
    let after = migrate_before(&db, "0038").await;
    sqlx::query(
        "SELECT * FROM ledger.append_events(ARRAY['evt_other', 'evt_sub_1'], ARRAY['customer.created', 'customer.subscription.created'],
           ARRAY['2025-03-31.basil', '2025-03-31.basil'], ARRAY[false, false], ARRAY[1700000000, 1700000001]::bigint[],
           ARRAY['customer', 'subscription'], ARRAY['cus_o', 'sub_1'], ARRAY['cus_o', 'cus_1'], ARRAY[NULL, 'sub_1'],
           ARRAY[convert_to('{}', 'UTF8'), convert_to('{}', 'UTF8')], ARRAY['t=1,v1=00', 't=1,v1=00'], 'webhook', 'test')",
    )
    .execute(&db.pool)
    .await
    .expect("append");
    db.execute(
        r#"INSERT INTO projection.revenue (stripe_customer_id, points, movements, discounts) VALUES ('cus_1',
             '[{"subscription":"sub_1","event_id":"evt_sub_1","created":1700000001,"rank":1,"currency":"usd","amount":2900,"deleted":false},
               {"subscription":"sub_1","event_id":"evt_gone","created":1700000002,"rank":1,"currency":"usd","amount":2900,"deleted":false}]',
             1, '[]')"#,
    )
    .await;
    db.execute(
        r#"INSERT INTO projection.mrr_movements (key, stripe_customer_id, currency, kind, amount, mrr_after, created, day,
             stripe_subscription_id, event_id)
           VALUES ('cus_1/000000', 'cus_1', 'usd', 'new', 2900, 2900, 1700000001, '2023-11-14', 'sub_1', 'evt_sub_1')"#,
    )
    .await;
    for file in &after {
        apply(&db, file).await;
    }
    let moved: (i64, i64) =
        sqlx::query_as("SELECT position, amount FROM audit.mrr_movements").fetch_one(&db.pool).await.expect("movement");
    assert_eq!(moved, (2, 2_900));
    let points: Vec<Option<i64>> = sqlx::query_scalar(
        "SELECT (p->>'position')::bigint FROM projection.revenue, jsonb_array_elements(points) AS p ORDER BY p->>'event_id' DESC",
    )
    .fetch_all(&db.pool)
    .await
    .expect("points");
    assert_eq!(points, [Some(2), Some(0)], "a point whose event is not in the log reads 0");
}
