//! The SQL image of the projections: written batch by batch, it reads back exactly as one full fold.

use domain::fold::FoldConfig;

use domain::state::Projections;
use domain::state::Reads;
use ledger_tests::db::TestDb;
use ledger_tests::lifecycle;

use ledger_tests::projector::catalog;

#[tokio::test]
async fn projections_written_in_random_batches_read_back_as_one_full_fold() {
    let db = TestDb::new().await;
    let catalog = catalog();
    let config = FoldConfig::default();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut events: Vec<Vec<u8>> =
        (0..40).flat_map(|n| lifecycle::lifecycle(n, &mut rng, 1_750_000_000)).map(|e| e.body).collect();
    // Something unknown and something broken, so anomalies are written (and one resolved) too.
    events.push(ledger_tests::stripe::subscription_event(
        "customer.subscription.updated",
        1_760_000_000,
        ledger_tests::stripe::Shape::Basil,
        &ledger_tests::stripe::SubSnapshot::new(
            "sub_odd",
            "cus_odd",
            "price_not_in_catalog",
            "active",
            (1_760_000_000, 1_762_592_000),
        ),
    ));
    events.push(b"{ not json".to_vec());

    // One full fold, in memory: what a rebuild computes.
    let mut full = Projections::default();
    let (_, all_intents) =
        full.fold_batch(events.iter().enumerate().map(|(i, b)| (i as i64 + 1, b.as_slice())), &catalog, &config);

    // Live: random batch sizes, each written with its checkpoint and intents in one transaction.
    let mut live = Projections::default();
    let mut next = 0usize;
    let mut journaled = 0;
    while next < events.len() {
        let size = rng.usize(1..50).min(events.len() - next);
        let batch = (next..next + size).map(|i| (i as i64 + 1, events[i].as_slice()));
        let (changes, intents) = live.fold_batch(batch, &catalog, &config);
        let mut tx = db.pool.begin().await.expect("begin");
        store::write_changes(&mut tx, &live, &changes).await.expect("write");
        journaled += store::record_intents(&mut tx, &intents).await.expect("intents");
        store::save_checkpoint(&mut tx, "main", (next + size) as i64, catalog.hash()).await.expect("checkpoint");
        tx.commit().await.expect("commit");
        next += size;
    }
    assert_eq!(live, full, "batching does not change the fold");

    let mut conn = db.pool.acquire().await.expect("connection");
    let loaded = store::load(&mut conn).await.expect("load");
    assert_eq!(loaded, full, "the tables hold exactly the folded state");
    assert!(loaded.subscriptions.len() >= 40 && !loaded.credit_grants.is_empty() && !loaded.anomalies.is_empty());
    let unknown_amounts = loaded.anomalies.values().filter(|a| a.kind == "price_amount_unknown").count();
    assert!(unknown_amounts > 0, "the catalog's yearly prices are never bought here");
    assert_eq!(loaded.anomalies.len() - unknown_amounts, 2, "{:?}", loaded.anomalies.keys());
    assert!(!loaded.prices.is_empty(), "the prices the subscriptions carry");
    assert!(!loaded.mrr_movements.is_empty(), "the lifecycles move revenue");
    assert!(!loaded.discounts.is_empty(), "the lifecycles' coupons");
    ledger_tests::projector::assert_mrr_days_follow_the_movements(&db.pool).await;

    // The live runner's per-batch loading: any set of keys reads as the whole state holds them.
    let every = |keys: Vec<&String>, n: usize| keys.into_iter().step_by(n).cloned().collect();
    let keys = Reads {
        accounts: every(full.accounts.keys().collect(), 5),
        subscriptions: every(full.subscriptions.keys().collect(), 3),
        customer_subscriptions: every(full.subscriptions_by_customer.keys().collect(), 4),
        instances: every(full.instances.keys().collect(), 2),
        tokens: every(full.tokens.keys().chain([&"cus_none".to_owned()]).collect(), 5),
        credit_grants: every(full.credit_grants.keys().collect(), 2),
        anomalies: ["unknown_price:sub_none".into()].into(),
        // A prefix is a prefix, never a LIKE pattern.
        anomaly_prefixes: ["undecodable:".into(), "unknown%".into(), "_".into()].into(),
        prices: every(full.prices.keys().chain([&"price_none".to_owned()]).collect(), 2),
        revenue: every(full.revenue.keys().collect(), 2),
        mrr_movements: every(full.mrr_movements.keys().collect(), 3),
        discounts: every(full.discounts.keys().chain([&"di_none".to_owned()]).collect(), 2),
    };
    let window = store::load_keys(&mut conn, &keys).await.expect("load keys");
    assert_eq!(window, full.select(&keys));
    assert!(window.subscriptions.len() > keys.subscriptions.len(), "with the customers' subscriptions");
    assert_eq!(window.anomalies.keys().collect::<Vec<_>>(), [&format!("undecodable:{}", events.len())]);
    let all = Reads { anomaly_prefixes: [String::new()].into(), ..Reads::default() };
    assert_eq!(store::load_keys(&mut conn, &all).await.expect("load all").anomalies, full.anomalies);
    let none = store::load_keys(&mut conn, &Reads::default()).await.expect("load nothing");
    assert!(none.is_empty());

    // Every intent is journaled once, and journaling them again (a replay) adds nothing.
    let unique: std::collections::BTreeSet<String> = all_intents.iter().map(|(_, i)| i.key.to_string()).collect();
    assert_eq!(journaled, unique.len() as u64);
    let mut tx = db.pool.begin().await.expect("begin");
    assert_eq!(store::record_intents(&mut tx, &all_intents).await.expect("replay"), 0);
    let checkpoint = store::lock_checkpoint(&mut tx, "main").await.expect("checkpoint");
    let checkpoint = checkpoint.expect("saved");
    assert_eq!((checkpoint.position, checkpoint.catalog_hash.as_str()), (events.len() as i64, catalog.hash()));
    tx.commit().await.expect("commit");
}

/// One rule per fact: who is entitled at a time, and whose subscription is live, read the same
/// from the stored columns (what every SQL reader asks: `entitled_until > t`, `live`) as from
/// the fold's Rust rule, for random lifecycles (trials, failed payments in and past their grace,
/// cancellations, unpaid) and times around every grace deadline.
#[tokio::test]
async fn who_is_entitled_when_reads_the_same_from_sql_as_from_the_rust_rule() {
    use std::collections::BTreeSet;

    let db = TestDb::new().await;
    let catalog = catalog();
    let config = FoldConfig { grace_period_secs: 3 * 86_400, ..FoldConfig::default() };
    let t0 = 1_750_000_000;
    let mut rng = fastrand::Rng::with_seed(28);
    let events: Vec<Vec<u8>> = (0..80).flat_map(|n| lifecycle::lifecycle(n, &mut rng, t0)).map(|e| e.body).collect();
    let mut state = Projections::default();
    state.fold_batch(events.iter().zip(1..).map(|(body, p)| (p, body.as_slice())), &catalog, &config);
    let mut conn = db.pool.acquire().await.expect("connection");
    store::copy_all(&mut conn, "projection", &state).await.expect("copy");

    let subs = &state.subscriptions;
    let graces: Vec<i64> = subs.values().filter_map(|s| s.grace_until).collect();
    assert!(graces.len() >= 3, "lifecycles with failed payments: {}", graces.len());
    let mut times: Vec<i64> = graces.iter().flat_map(|g| [g - 1, *g, g + 1]).collect();
    times.extend((0..40).map(|_| rng.i64(t0 - 86_400..t0 + 120 * 86_400)));
    let (mut ever_in, mut ever_out) = (false, false);
    for t in times {
        let sql: BTreeSet<String> = sqlx::query_scalar(
            "SELECT stripe_subscription_id FROM projection.subscriptions WHERE entitled_until > to_timestamp($1)",
        )
        .bind(t as f64)
        .fetch_all(&mut *conn)
        .await
        .expect("entitled")
        .into_iter()
        .collect();
        let rust: BTreeSet<String> =
            subs.values().filter(|s| s.entitled_at(t)).map(|s| s.stripe_subscription_id.clone()).collect();
        assert_eq!(sql, rust, "entitled at {t}");
        ever_in |= !rust.is_empty();
        ever_out |= rust.len() < subs.len();
    }
    assert!(ever_in && ever_out, "the times cover both answers");
    let live_sql: BTreeSet<String> =
        sqlx::query_scalar("SELECT stripe_subscription_id FROM projection.subscriptions WHERE live")
            .fetch_all(&mut *conn)
            .await
            .expect("live")
            .into_iter()
            .collect();
    let live_rust: BTreeSet<String> =
        subs.values().filter(|s| s.is_live()).map(|s| s.stripe_subscription_id.clone()).collect();
    assert_eq!(live_sql, live_rust);
    assert!(!live_rust.is_empty() && live_rust.len() < subs.len(), "some live, some not");
}
