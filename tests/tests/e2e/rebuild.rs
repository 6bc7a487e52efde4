//! `replay rebuild`: the same fold from position 1, diffed or swapped in while a projector runs.

use std::time::Duration;

use domain::catalog::Catalog;
use domain::fold::FoldConfig;
use domain::state::Desired;
use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, catalog, fold_whole_log, load_tables};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::{lifecycle, wait};
use store::rebuild;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_of_an_unchanged_log_changes_nothing_and_the_live_projector_carries_on() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let live = TestProjector::start(db.service_pool(4), catalog(), 20).await;
    lifecycle::post(&ingest, 0..8, 21).await;
    live.caught_up(&db.pool).await;
    let before = load_tables(&db.pool).await;
    let indexes_before = projection_indexes(&db.pool).await;
    // A grant no rebuild code knows of, as a later migration (or an operator) would add one.
    sqlx::query("GRANT SELECT ON projection.anomalies TO ledger_auditor").execute(&db.pool).await.expect("grant");
    let grants_before = projection_grants(&db.pool).await;
    assert!(grants_before.iter().any(|g| g == "ledger_auditor SELECT anomalies"), "{grants_before:?}");

    let folded = rebuild::fold_log(&db.pool, &catalog(), &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    let diff = store::diff::diff(&before, &folded.state);
    assert!(diff.is_empty(), "{}", diff.render());

    // Swap while webhooks keep arriving and the live projector keeps running.
    let head = folded.position;
    let intents_upto = |position: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledger.intents WHERE position <= $1")
                .bind(position)
                .fetch_one(&pool)
                .await
                .expect("intents")
        }
    };
    let journaled = intents_upto(head).await;
    let more = async { lifecycle::post(&ingest, 8..12, 22).await };
    let (catalog, config) = (catalog(), FoldConfig::default());
    let swap = rebuild::swap_in(&db.pool, folded, &catalog, &config, false);
    let (_, swapped) = tokio::join!(more, swap);
    let swapped = swapped.expect("swap");
    assert_eq!(intents_upto(head).await, journaled, "every intent of the unchanged log was journaled already");
    // Events that arrived during the swap may have their intents journaled by the swap's catch-up
    // instead of the live projector (the same keys: whoever comes second inserts nothing).
    let later = intents_upto(i64::MAX).await - journaled;
    assert!(swapped.new_intents <= later as u64, "{} new intents, {later} after the rebuilt head", swapped.new_intents);
    let build: String =
        sqlx::query_scalar("SELECT build_id FROM projection.checkpoint").fetch_one(&db.pool).await.expect("build");
    assert_eq!(build, swapped.build_id);
    assert_eq!(projection_indexes(&db.pool).await, indexes_before, "the new tables have the old ones' indexes");
    assert_eq!(projection_grants(&db.pool).await, grants_before, "and the old ones' grants, read from the catalogs");

    lifecycle::post(&ingest, 12..14, 23).await;
    live.caught_up(&db.pool).await;
    assert_eq!(load_tables(&db.pool).await, fold_whole_log(&db.pool, &catalog).await);
    let old_schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'projection_%'")
        .fetch_one(&db.pool)
        .await
        .expect("schemas");
    assert_eq!(old_schemas, 0, "the replaced schema is dropped");
    live.stop().await;
    ingest.stop().await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_catalog_and_a_rebuild_repair_an_unknown_price() {
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(4)).await;
    let live = TestProjector::start(db.service_pool(4), catalog(), 20).await;
    let snap = SubSnapshot::new("sub_team", "cus_team", "price_team_2026", "active", (1_760_000_000, 1_762_592_000));
    let body = stripe::subscription_event("customer.subscription.created", 1_760_000_000, Shape::Basil, &snap);
    assert_eq!(ingest.post_signed(&body).await.status(), 200);
    live.caught_up(&db.pool).await;
    let broken = load_tables(&db.pool).await;
    assert_eq!(broken.subscriptions["sub_team"].tier, "unknown");
    assert_eq!(broken.instances["sub_team"].desired, Desired::Absent);
    assert!(broken.anomalies.contains_key("unknown_price:sub_team"));

    let fixed = Catalog::parse(
        &domain::catalog::EXAMPLE
            .replace("\"price_professional_yearly\"]", "\"price_professional_yearly\", \"price_team_2026\"]"),
    )
    .expect("fixed catalog");
    let folded = rebuild::fold_log(&db.pool, &fixed, &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    let diff = store::diff::diff(&broken, &folded.state);
    let by_table =
        |t: &str| diff.tables.iter().find(|d| d.table == t).map(|d| (d.added, d.changed, d.removed)).expect("table");
    assert_eq!(by_table("subscriptions"), (0, 1, 0));
    assert_eq!(by_table("instance_targets"), (0, 1, 0));
    assert_eq!(by_table("tokens"), (0, 1, 0));
    assert_eq!(by_table("anomalies"), (0, 0, 1));
    assert_eq!(load_tables(&db.pool).await, broken, "a dry run changes nothing");

    // What the operator reads: the real binary, through a pipe, one line per changed row with only
    // its changed columns; and the same as JSON for scripts.
    let dir = tempfile::tempdir().expect("dir");
    let catalog_path = dir.path().join("catalog.toml");
    std::fs::write(
        &catalog_path,
        domain::catalog::EXAMPLE
            .replace("\"price_professional_yearly\"]", "\"price_professional_yearly\", \"price_team_2026\"]"),
    )
    .expect("catalog file");
    let url = db.url().await;
    let replay = |args: &[&str]| {
        let out = std::process::Command::new(ledger_tests::bin::path("replay"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &url)
            .env("CATALOG_PATH", &catalog_path)
            .args(args)
            .output()
            .expect("replay runs");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (text, _) = replay(&["rebuild", "--dry-run"]);
    let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_owned();
    let sub = line("~ subscription sub_team: ");
    assert!(sub.contains("tier unknown -> professional"), "{text}");
    assert!(!sub.contains("price_id") && !sub.contains("status"), "only the changed columns: {sub}");
    assert!(line("~ instance_target sub_team: ").contains("desired absent -> running"), "{text}");
    assert!(line("- anomaly unknown_price:sub_team: ").contains("kind unknown_price"), "{text}");
    assert!(line("subscriptions ").contains("~1"), "{text}");
    assert!(!text.contains("SubscriptionRow {"), "no Debug dumps: {text}");
    let (json, _) = replay(&["rebuild", "--dry-run", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).expect("stdout is one JSON document");
    let row = json["rows"].as_array().expect("rows").iter().find(|r| r["table"] == "subscriptions").expect("a row");
    assert_eq!(row["change"], "changed");
    assert!(
        row["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .any(|c| c["name"] == "tier" && c["old"] == "unknown" && c["new"] == "professional")
    );
    assert_eq!(load_tables(&db.pool).await, broken, "neither dry run changed anything");

    let intents_before: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.intents").fetch_one(&db.pool).await.expect("n");
    let swapped = rebuild::swap_in(&db.pool, folded, &fixed, &FoldConfig::default(), false).await.expect("swap");
    let repaired = load_tables(&db.pool).await;
    assert_eq!(repaired.subscriptions["sub_team"].tier, "professional");
    assert_eq!(repaired.instances["sub_team"].desired, Desired::Running);
    let open: Vec<&String> = repaired.anomalies.keys().filter(|k| !k.starts_with("price_amount_unknown:")).collect();
    assert!(open.is_empty(), "{open:?}");
    let new_keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM ledger.intents ORDER BY key").fetch_all(&db.pool).await.expect("keys");
    assert!(new_keys.contains(&"email:welcome:sub_team".to_owned()), "{new_keys:?}");
    assert!(new_keys.iter().any(|k| k.starts_with("instance:sub_team:")), "{new_keys:?}");
    let intents_after: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.intents").fetch_one(&db.pool).await.expect("n");
    assert_eq!(intents_after - intents_before, swapped.new_intents as i64);
    assert!(swapped.new_intents >= 2, "the now-missing effects are asked for: {}", swapped.new_intents);

    // The live projector kept running through the swap at the same position: its next batch must
    // reload the rebuilt tables, not write its stale copy (tier `unknown`) back over them.
    let of = stripe::InvoiceOf {
        id: "in_team_1",
        customer: "cus_team",
        subscription: "sub_team",
        price: "price_team_2026",
        period: snap.period,
    };
    let invoice = stripe::invoice_event("invoice.paid", 1_760_000_100, Shape::Basil, &of);
    assert_eq!(ingest.post_signed(&invoice).await.status(), 200);
    live.caught_up(&db.pool).await;
    let after = load_tables(&db.pool).await;
    assert_eq!(after.subscriptions["sub_team"].tier, "professional", "the live projector reloaded the rebuild");
    assert_eq!(after.subscriptions["sub_team"].last_paid_at, Some(1_760_000_100));
    live.stop().await;

    // A second rebuild asks for nothing new.
    let again = rebuild::fold_log(&db.pool, &fixed, &FoldConfig::default(), &mut |_, _| {}).await.expect("fold");
    let second = rebuild::swap_in(&db.pool, again, &fixed, &FoldConfig::default(), true).await.expect("swap");
    assert_eq!(second.new_intents, 0);
    assert!(second.old_schema.is_some_and(|s| s.starts_with("projection_old_")));

    // A projector with the fixed catalog is ready again.
    let repaired_live = TestProjector::start(db.service_pool(4), fixed, 20).await;
    wait::until(Duration::from_secs(10), "readiness", || async {
        (repaired_live.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    repaired_live.stop().await;
    ingest.stop().await.expect("stop");
}

/// Every index of the projection tables, by name, with its definition and the constraint it
/// backs (if any).
/// Every privilege granted on the projection schema and its relations: `grantee privilege name`.
async fn projection_grants(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT r.rolname || ' ' || a.privilege_type || ' ' || c.relname
         FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a JOIN pg_roles r ON r.oid = a.grantee
         WHERE c.relnamespace = 'projection'::regnamespace AND a.grantee <> c.relowner
         UNION ALL
         SELECT r.rolname || ' ' || a.privilege_type || ' schema'
         FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a JOIN pg_roles r ON r.oid = a.grantee
         WHERE n.nspname = 'projection' AND a.grantee <> n.nspowner
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("grants")
}

async fn projection_indexes(pool: &sqlx::PgPool) -> Vec<(String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT i.relname::text, pg_get_indexdef(x.indexrelid), con.contype::text
         FROM pg_index x
         JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_class t ON t.oid = x.indrelid
         LEFT JOIN pg_constraint con ON con.conindid = x.indexrelid AND con.conrelid = t.oid
         WHERE t.relnamespace = 'projection'::regnamespace
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .expect("indexes")
}
