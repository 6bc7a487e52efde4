//! `replay backfill` against a fake Stripe API (a real HTTP server on loopback): the events the
//! webhooks missed are appended once, present ones skipped, 429 and 5xx retried (Retry-After
//! honoured), an interrupted run resumes from its cursor, and the projections end as the webhooks
//! alone would have made them.

use std::time::Duration;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::lifecycle;
use ledger_tests::projector::{TestProjector, catalog, fold_whole_log, load_tables, without_positions};
use ledger_tests::stripe_api::FakeStripe;
use replay::backfill::{self, Settings};
use replay::stripe_read::ReadSettings;
use secrecy::SecretString;

fn settings(api: &FakeStripe) -> Settings {
    Settings {
        read: ReadSettings {
            api_base: api.url.clone(),
            api_key: SecretString::from("rk_test_backfill"),
            max_attempts: 3,
            backoff: Duration::from_millis(10),
            requests_per_second: 0,
        },
        since: None,
        types: Vec::new(),
        page_size: 7,
        restart: false,
    }
}

async fn ids(db: &TestDb) -> (i64, i64) {
    sqlx::query_as("SELECT count(*), count(DISTINCT stripe_event_id) FROM ledger.events")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_appends_what_the_webhooks_missed_once_retries_resumes_and_projects_the_same() {
    let mut rng = fastrand::Rng::with_seed(5);
    let events: Vec<Vec<u8>> =
        (0..5).flat_map(|n| lifecycle::lifecycle(n, &mut rng, 1_750_000_000)).map(|e| e.body).collect();
    let total = events.len() as i64;

    // The reference: every event delivered by webhook.
    let reference_db = TestDb::new().await;
    let reference_ingest = TestIngest::start(reference_db.service_pool(2)).await;
    for body in &events {
        assert_eq!(reference_ingest.post_signed(body).await.status(), 200);
    }
    let reference = fold_whole_log(&reference_db.pool, &catalog()).await;

    // The webhooks delivered only every third event.
    let db = TestDb::new().await;
    let ingest = TestIngest::start(db.service_pool(2)).await;
    let delivered: Vec<&Vec<u8>> = events.iter().step_by(3).collect();
    for body in &delivered {
        assert_eq!(ingest.post_signed(body).await.status(), 200);
    }
    let api = FakeStripe::start(events.clone()).await;
    api.script(&[(429, Some(1)), (500, None)]);
    api.fail_after(3, 503); // Stripe goes away after three pages: the run stops, resumable
    let pool = db.service_pool(2);
    let mut retries = Vec::new();
    let first = backfill::run(&pool, &settings(&api), &mut |_| {}, &mut |line| retries.push(line)).await;
    let error = format!("{:#}", first.expect_err("Stripe went away"));
    assert!(error.contains("run the command again to resume"), "{error}");
    assert!(retries.len() >= 2, "{retries:?}");
    let requests = api.requests();
    assert_eq!(requests[0].status, 429);
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1), "Retry-After: 1 honoured");
    assert_eq!(requests[1].status, 500);
    assert!(requests.iter().all(|r| r.authorization.as_deref() == Some("Bearer rk_test_backfill")));
    let (rows, distinct) = ids(&db).await;
    assert_eq!(rows, distinct);
    assert!(rows > delivered.len() as i64 && rows < total, "three pages in: {rows} of {total}");

    // Resumed: continues after the last appended page, not from the top.
    api.heal();
    let seen = api.requests().len();
    let summary = backfill::run(&pool, &settings(&api), &mut |_| {}, &mut |_| {}).await.expect("resumed run");
    assert!(summary.resumed);
    let resumed_query = &api.requests()[seen].query;
    assert!(resumed_query.contains("starting_after=evt_"), "{resumed_query}");
    assert_eq!(summary.fetched, total);
    assert_eq!(summary.present, delivered.len() as i64);
    assert_eq!(summary.appended, total - delivered.len() as i64);
    assert_eq!(ids(&db).await, (total, total), "every event once");
    let backfilled: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.events WHERE source = 'backfill'")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(backfilled, summary.appended);

    // A second run finds everything present.
    let again = backfill::run(&pool, &settings(&api), &mut |_| {}, &mut |_| {}).await.expect("run");
    assert!(!again.resumed);
    assert_eq!((again.fetched, again.appended, again.present), (total, 0, total));

    // The projector picks the backfilled events up like any other.
    let projector = TestProjector::start(db.service_pool(4), catalog(), 50).await;
    projector.caught_up(&db.pool).await;
    assert_eq!(without_positions(&load_tables(&db.pool).await), without_positions(&reference));
    projector.stop().await;
}

/// The real binary, as deployed: `DATABASE_URL` set, nothing else from the test's environment.
fn replay_backfill(db_url: &str, api_base: &str, extra: &[(&str, &str)]) -> (bool, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", db_url)
        .env("STRIPE_API_KEY", "rk_test_backfill")
        .env("STRIPE_API_BASE", api_base)
        .envs(extra.iter().copied())
        .arg("backfill")
        .output()
        .expect("replay runs");
    let out = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_speaks_https_to_a_stripe_signed_by_a_private_ca_and_names_a_tls_failure() {
    let mut rng = fastrand::Rng::with_seed(9);
    let events: Vec<Vec<u8>> = lifecycle::lifecycle(0, &mut rng, 1_750_000_000).into_iter().map(|e| e.body).collect();
    let ca = ledger_tests::tls::TestCa::new();
    let api = FakeStripe::start_tls(events.clone(), &ca).await;
    let db = TestDb::new().await;
    let url = db.url().await;

    // The CA is not trusted: a TLS failure, said so at once (not retried for minutes), nothing sent.
    let (ok, out) = replay_backfill(&url, &api.url, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("TLS: "), "the cause is named: {out}");
    assert!(api.requests().is_empty(), "no request got past the handshake");
    assert_eq!(db.event_count().await, 0);

    // Trusted through SSL_CERT_FILE, as with a private CA in production.
    let (ok, out) = replay_backfill(&url, &api.url, &[("SSL_CERT_FILE", &ca.ca_path())]);
    assert!(ok, "{out}");
    assert_eq!(db.event_count().await, events.len() as i64);
    assert!(api.requests().iter().all(|r| r.authorization.as_deref() == Some("Bearer rk_test_backfill")));

    // Plain http:// with a real database would send the key in clear text: refused before any call.
    let plain = FakeStripe::start(events.clone()).await;
    let (ok, out) = replay_backfill(&url, &plain.url, &[]);
    assert!(!ok, "{out}");
    assert!(out.contains("STRIPE_API_BASE") && out.contains("ALLOW_INSECURE_HTTP"), "{out}");
    assert!(plain.requests().is_empty());
    let (ok, out) = replay_backfill(&url, &plain.url, &[("ALLOW_INSECURE_HTTP", "true")]);
    assert!(ok, "explicitly allowed: {out}");
}
