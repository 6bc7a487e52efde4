//! The deployment the docs recommend, exactly: the owner runs `replay migrate`; login users that
//! hold only `ledger_ingest`, `ledger_projector` or `ledger_auditor` run the real binaries (with
//! `MIGRATE_ON_START=false`) and the audit queries; a lifecycle goes through end to end.

use std::time::Duration;

use ledger_tests::bin;
use ledger_tests::db::{TestDb, server_url};
use ledger_tests::lifecycle;
use ledger_tests::projector::{catalog, fold_whole_log, load_tables};
use ledger_tests::wait;
use sqlx::postgres::PgPoolOptions;

const SESSION_SECRET: &str = "cs_test_a1_secret_9f8e7d6c5b4a";

/// `postgres://<user>@<host:port>/<db>` on the test server.
async fn url_as(user: &str, db: &TestDb) -> String {
    let server = server_url().await;
    let host = server.rsplit_once('@').map_or(server.as_str(), |(_, host)| host).trim_start_matches("postgres://");
    format!("postgres://{user}@{host}/{}", db.name)
}

fn replay(args: &[&str], url: &str) -> (bool, String) {
    bin::run("replay", &[("DATABASE_URL", url), ("MIGRATE_ON_START", "false")], args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_users_holding_only_their_roles_run_ingest_projector_and_audit_end_to_end() {
    let db = TestDb::unmigrated().await;
    let owner = db.url().await;
    let (ok, out) = replay(&["migrate"], &owner);
    assert!(ok, "the owner migrates: {out}");

    let suffix = &db.name[2..];
    let users = [("ingest", "ledger_ingest"), ("projector", "ledger_projector"), ("auditor", "ledger_auditor")]
        .map(|(service, role)| (format!("{service}_{suffix}"), role));
    for (user, role) in &users {
        sqlx::query(&format!("CREATE ROLE \"{user}\" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE IN ROLE {role}"))
            .execute(&db.pool)
            .await
            .expect("login user");
    }
    let [ingest_url, projector_url, auditor_url] = [&users[0].0, &users[1].0, &users[2].0];
    let (ingest_url, projector_url, auditor_url) =
        (url_as(ingest_url, &db).await, url_as(projector_url, &db).await, url_as(auditor_url, &db).await);

    let logs = tempfile::tempdir().expect("dir");
    let mail_dir = logs.path().join("mail");
    let log = |name: &str| std::fs::File::create(logs.path().join(name)).expect("log file");
    let ingest = bin::start(
        "ingest",
        "INGEST_ADDR",
        &[
            ("DATABASE_URL", &ingest_url),
            ("MIGRATE_ON_START", "false"),
            ("STRIPE_WEBHOOK_SECRET", ledger_tests::stripe::SECRET),
        ],
        log("ingest.log"),
    )
    .await;
    let projector = bin::start(
        "projector",
        "PROJECTOR_ADDR",
        &[
            ("DATABASE_URL", &projector_url),
            ("MIGRATE_ON_START", "false"),
            ("MAIL_DIR", mail_dir.to_str().expect("utf-8 path")),
            ("EFFECT_BACKOFF_MS", "20"),
        ],
        log("projector.log"),
    )
    .await;

    let mut rng = fastrand::Rng::with_seed(21);
    let http = reqwest::Client::new();
    let mut posted = 0_i64;
    for n in 0..4 {
        for event in lifecycle::lifecycle(n, &mut rng, 1_750_000_000) {
            let response = http
                .post(format!("{}/webhooks/stripe", ingest.url))
                .header("stripe-signature", ledger_tests::stripe::sign(&event.body))
                .body(event.body)
                .send()
                .await
                .expect("post");
            assert_eq!(response.status(), 200);
            posted += 1;
        }
    }
    // A Checkout Session carries a client_secret: the log keeps it, auditors never see it.
    let mut session = ledger_tests::stripe::object("checkout.session");
    session["client_secret"] = serde_json::Value::from(SESSION_SECRET);
    let body = serde_json::to_vec(&ledger_tests::stripe::event(
        &ledger_tests::stripe::event_id(),
        "checkout.session.completed",
        ledger_tests::stripe::now(),
        session,
    ))
    .expect("json");
    let response = http
        .post(format!("{}/webhooks/stripe", ingest.url))
        .header("stripe-signature", ledger_tests::stripe::sign(&body))
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    posted += 1;
    assert_eq!(db.event_count().await, posted);

    wait::until(Duration::from_secs(60), "the projector (as ledger_projector) to reach the head", || async {
        let at: Option<i64> = sqlx::query_scalar("SELECT max(position) FROM projection.checkpoint")
            .fetch_one(&db.pool)
            .await
            .ok()
            .flatten();
        (at == Some(posted)).then_some(())
    })
    .await;
    assert_eq!(load_tables(&db.pool).await, fold_whole_log(&db.pool, &catalog()).await);

    // The auditor reads the audit views, and nothing else.
    let auditor = PgPoolOptions::new().max_connections(1).connect(&auditor_url).await.expect("auditor logs in");
    let seen: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit.events").fetch_one(&auditor).await.expect("audit.events");
    assert_eq!(seen, posted);
    let leaked: i64 = sqlx::query_scalar("SELECT count(*) FROM audit.events WHERE strpos(body_text, $1) > 0")
        .bind(SESSION_SECRET)
        .fetch_one(&auditor)
        .await
        .expect("search");
    assert_eq!(leaked, 0, "the client_secret is redacted for auditors");
    let redacted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit.events WHERE payload #>> '{data,object,client_secret}' = '[redacted]'",
    )
    .fetch_one(&auditor)
    .await
    .expect("search");
    assert_eq!(redacted, 1);
    let exact: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.events WHERE position(convert_to($1, 'UTF8') IN raw_body) > 0")
            .bind(SESSION_SECRET)
            .fetch_one(&db.pool)
            .await
            .expect("owner");
    assert_eq!(exact, 1, "the owner keeps the exact bytes");
    for forbidden in ["SELECT count(*) FROM ledger.events", "SELECT count(*) FROM ledger.api_tokens"] {
        let error = sqlx::query_scalar::<_, i64>(forbidden).fetch_one(&auditor).await.expect_err(forbidden);
        assert!(error.to_string().contains("permission denied"), "{forbidden}: {error}");
    }
    let (ok, out) = replay(&["export", "--format", "csv"], &auditor_url);
    assert!(ok, "replay export as the auditor: {out}");
    assert_eq!(out.lines().filter(|l| l.contains(",evt_")).count() as i64, posted, "{out}");
    assert!(!out.contains(SESSION_SECRET) && out.contains("secrets redacted"), "{out}");
    let (ok, out) = replay(&["timeline", "cus_life000001"], &auditor_url);
    assert!(ok && out.contains("customer.created"), "replay timeline as the auditor: {out}");

    // The ingest user reads nothing; its session limits come from its own connection (a role-level
    // setting on the NOLOGIN group role would never reach this login user).
    let settings = shared::db::PoolSettings {
        idle_in_transaction_timeout: Some(Duration::from_secs(10)),
        statement_timeout: Some(Duration::from_secs(15)),
        ..Default::default()
    };
    let ingest_pool =
        shared::db::connect_lazy(&secrecy::SecretString::from(ingest_url.clone()), settings).expect("ingest pool");
    let idle: String =
        sqlx::query_scalar("SHOW idle_in_transaction_session_timeout").fetch_one(&ingest_pool).await.expect("show");
    assert_eq!(idle, "10s");
    let statement: String = sqlx::query_scalar("SHOW statement_timeout").fetch_one(&ingest_pool).await.expect("show");
    assert_eq!(statement, "15s");

    // The ingest role cannot forge the log: no unsigned rows, no other source.
    let forged = "SELECT * FROM ledger.append_events(ARRAY['evt_forged'], ARRAY['customer.created'], ARRAY[NULL::text],
                  ARRAY[false], ARRAY[1700000000::bigint], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text],
                  ARRAY[NULL::text], ARRAY['{}'::bytea], ARRAY[NULL::text], 'backfill', 'forger')";
    let error = sqlx::query(forged).execute(&ingest_pool).await.expect_err("not the ingest role's entry point");
    assert!(error.to_string().contains("permission denied"), "{error}");
    let unsigned =
        "SELECT * FROM ledger.append_webhook_events(ARRAY['evt_forged'], ARRAY['customer.created'], ARRAY[NULL::text],
                    ARRAY[false], ARRAY[1700000000::bigint], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text],
                    ARRAY[NULL::text], ARRAY['{}'::bytea], ARRAY[NULL::text], 'forger')";
    let error = sqlx::query(unsigned).execute(&ingest_pool).await.expect_err("a webhook needs its signature");
    assert!(error.to_string().contains("Stripe-Signature"), "{error}");
    let fetched = |id: &str| {
        format!(
            "SELECT * FROM ledger.append_fetched_events(ARRAY['{id}'], ARRAY['customer.created'], ARRAY[NULL::text],
             ARRAY[false], ARRAY[1700000000::bigint], ARRAY[NULL::text], ARRAY[NULL::text], ARRAY[NULL::text],
             ARRAY[NULL::text], ARRAY['{{}}'::bytea], 'forger')"
        )
    };
    let error = sqlx::query(&fetched("evt_fetch_x")).execute(&ingest_pool).await.expect_err("the projector's entry");
    assert!(error.to_string().contains("permission denied"), "{error}");
    // The projector appends fetched facts only: under their own ids, as source `fetch`, nothing else.
    let projector_pool = sqlx::PgPool::connect(&projector_url).await.expect("projector user");
    let error = sqlx::query(forged).execute(&projector_pool).await.expect_err("not the projector's entry point");
    assert!(error.to_string().contains("permission denied"), "{error}");
    let error = sqlx::query(&fetched("evt_forged")).execute(&projector_pool).await.expect_err("not a fetched id");
    assert!(error.to_string().contains("evt_fetch_"), "{error}");
    assert_eq!(db.event_count().await, posted, "nothing forged got in");
    sqlx::query(&fetched("evt_fetch_x")).execute(&projector_pool).await.expect("a fetched fact");
    let source: String = sqlx::query_scalar("SELECT source FROM ledger.events WHERE stripe_event_id = 'evt_fetch_x'")
        .fetch_one(&db.pool)
        .await
        .expect("appended");
    assert_eq!(source, "fetch");
    let error = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM ledger.events")
        .fetch_one(&ingest_pool)
        .await
        .expect_err("no read");
    assert!(error.to_string().contains("permission denied"), "{error}");
    drop((ingest, projector));
}
