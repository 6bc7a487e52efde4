//! `replay reconcile` and `replay check-catalog` against a fake Stripe API (a real HTTP server on
//! loopback) holding customers, subscriptions and prices, with a live projector folding what
//! reconcile appends.

use std::time::Duration;

use ledger_tests::db::TestDb;
use ledger_tests::ingest::TestIngest;
use ledger_tests::projector::{TestProjector, catalog};
use ledger_tests::stripe::{self, Shape, SubSnapshot};
use ledger_tests::stripe_api::FakeStripe;
use replay::reconcile::{self, Kind, Settings};
use replay::stripe_read::{ReadSettings, Reader};
use secrecy::SecretString;
use serde_json::{Value, json};

fn read(api: &FakeStripe) -> ReadSettings {
    ReadSettings {
        api_base: api.url.clone(),
        api_key: SecretString::from("rk_test_reconcile"),
        max_attempts: 2,
        backoff: Duration::from_millis(10),
        requests_per_second: 0,
    }
}

fn settings(api: &FakeStripe, objects: Vec<Kind>, apply: bool) -> Settings {
    Settings { read: read(api), objects, since: None, apply, page_size: 2, restart: false }
}

/// A subscription object (basil shape) on Stripe's example, as Stripe would hold it now.
fn sub_object(snap: &SubSnapshot) -> Value {
    let event = stripe::subscription_event("customer.subscription.updated", stripe::now(), Shape::Basil, snap);
    serde_json::from_slice::<Value>(&event).expect("json")["data"]["object"].clone()
}

struct World {
    db: TestDb,
    ingest: TestIngest,
    projector: TestProjector,
    api: FakeStripe,
}

impl World {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let ingest = TestIngest::start(db.service_pool(2)).await;
        let projector = TestProjector::start(db.service_pool(4), catalog(), 50).await;
        let api = FakeStripe::start(Vec::new()).await;
        Self { db, ingest, projector, api }
    }

    /// Delivers `snap` by webhook, created at `created`.
    async fn delivered(&self, snap: &SubSnapshot, created: i64) {
        let event = stripe::subscription_event("customer.subscription.created", created, Shape::Basil, snap);
        assert_eq!(self.ingest.post_signed(&event).await.status(), 200);
    }

    async fn reconcile(&self, objects: Vec<Kind>, apply: bool) -> (reconcile::Summary, Vec<String>) {
        self.reconcile_on(&self.db.pool, objects, apply).await
    }

    async fn reconcile_on(
        &self,
        pool: &sqlx::PgPool,
        objects: Vec<Kind>,
        apply: bool,
    ) -> (reconcile::Summary, Vec<String>) {
        let mut lines = Vec::new();
        let report = reconcile::Report { line: &mut |l| lines.push(l), progress: &mut |_| {} };
        let summary =
            reconcile::run(pool, &settings(&self.api, objects, apply), &catalog(), report).await.expect("reconcile");
        (summary, lines)
    }

    /// A pool logged in as a user holding only `ledger_replay`, as the docs recommend for the tool.
    async fn as_replay_role(&self) -> sqlx::PgPool {
        let user = format!("replay_{}", &self.db.name[2..]);
        sqlx::query(&format!("CREATE ROLE \"{user}\" LOGIN IN ROLE ledger_replay"))
            .execute(&self.db.pool)
            .await
            .expect("login user");
        let url = self.db.url().await;
        let (_, host) = url.rsplit_once('@').expect("url with a user");
        sqlx::PgPool::connect(&format!("postgres://{user}@{host}")).await.expect("connect as the replay user")
    }

    async fn scalar(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.db.pool).await.expect(sql)
    }

    async fn subscription(&self, id: &str) -> Option<(String, String, bool)> {
        sqlx::query_as(
            "SELECT status, tier, cancel_at_period_end FROM projection.subscriptions WHERE stripe_subscription_id = $1",
        )
        .bind(id)
        .fetch_optional(&self.db.pool)
        .await
        .expect("row")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_reports_drift_repairs_it_through_the_log_and_then_finds_none() {
    let w = World::start().await;
    let t = stripe::now() - 600;
    let period = (t, t + 2_592_000);
    let in_sync = SubSnapshot::new("sub_ok", "cus_ok", "price_starter_monthly", "active", period);
    let lost_cancel = SubSnapshot::new("sub_lc", "cus_lc", "price_starter_monthly", "active", period);
    let mut newer = SubSnapshot::new("sub_new", "cus_new", "price_starter_monthly", "active", period);
    let only_stripe = SubSnapshot::new("sub_m", "cus_m", "price_professional_monthly", "active", period);
    let gone = SubSnapshot::new("sub_gone", "cus_gone", "price_starter_monthly", "active", period);
    w.delivered(&in_sync, t).await;
    w.delivered(&lost_cancel, t).await;
    newer.cancel_at_period_end = true;
    w.delivered(&newer, stripe::now() + 300).await; // a webhook newer than any fetch below
    w.delivered(&gone, t).await;
    w.projector.caught_up(&w.db.pool).await;

    w.api.put(sub_object(&in_sync));
    let mut canceled = lost_cancel.clone();
    canceled.status = "canceled".into();
    canceled.ended_at = Some(t + 60);
    canceled.canceled_at = Some(t + 60);
    w.api.put(sub_object(&canceled)); // its customer.subscription.deleted never reached us
    newer.cancel_at_period_end = false;
    w.api.put(sub_object(&newer)); // Stripe's listing is older than our webhook
    w.api.put(sub_object(&only_stripe)); // never reached the log at all

    let (found, lines) = w.reconcile(vec![Kind::Subscriptions], false).await;
    assert_eq!((found.compared, found.newer_here, found.drifted, found.appended), (5, 1, 3, 0), "{lines:#?}");
    assert!(lines.contains(&"subscription sub_m: missing here".to_owned()), "{lines:#?}");
    assert!(lines.contains(&"subscription sub_gone: missing in Stripe".to_owned()), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("subscription sub_lc: status: ours active, Stripe canceled")));
    assert!(w.api.requests().iter().filter(|r| r.path == "/v1/subscriptions").all(|r| r.query.contains("status=all")));
    let events_before = w.scalar("SELECT count(*) FROM ledger.events").await;

    let replay_role = w.as_replay_role().await;
    let (applied, _) = w.reconcile_on(&replay_role, vec![Kind::Subscriptions], true).await;
    assert_eq!((applied.drifted, applied.appended), (3, 2), "sub_gone has nothing to append");
    assert_eq!(w.scalar("SELECT count(*) FROM ledger.events WHERE source = 'reconcile'").await, 2);
    w.projector.caught_up(&w.db.pool).await;
    assert_eq!(w.subscription("sub_m").await, Some(("active".into(), "professional".into(), false)));
    assert_eq!(w.subscription("sub_lc").await.map(|s| s.0), Some("canceled".into()));
    assert_eq!(w.subscription("sub_new").await.map(|s| s.2), Some(true), "the newer webhook stands");
    let running =
        w.scalar("SELECT count(*) FROM ledger.intents WHERE subject = 'sub_m' AND detail LIKE 'running professional%'");
    assert_eq!(running.await, 1, "an instance for the repaired subscription");

    let (again, lines) = w.reconcile(vec![Kind::Subscriptions], true).await;
    assert_eq!((again.drifted, again.appended), (1, 0), "only sub_gone, which Stripe lacks: {lines:#?}");
    assert_eq!(w.scalar("SELECT count(*) FROM ledger.events").await, events_before + 2, "nothing appended twice");
    let absent =
        w.scalar("SELECT count(*) FROM ledger.intents WHERE subject = 'sub_lc' AND detail LIKE 'deprovisioned%'");
    assert_eq!(absent.await, 1, "deprovisioned once");

    // Reconciled rows are chained like the others: the log still verifies.
    let verify = std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", w.db.url().await)
        .arg("verify")
        .output()
        .expect("replay runs");
    assert!(
        verify.status.success(),
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    w.projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_and_interrupted_run_resumes_where_it_stopped() {
    let w = World::start().await;
    for i in 0..7 {
        let t = stripe::now();
        let snap =
            SubSnapshot::new(&format!("sub_{i}"), &format!("cus_{i}"), "price_starter_monthly", "active", (t, t + 60));
        w.api.put(sub_object(&snap));
    }
    w.api.script(&[(429, Some(1))]);
    w.api.fail_after(2, 503); // after the 429 and two pages, Stripe goes away
    let mut lines = Vec::new();
    let report = reconcile::Report { line: &mut |l| lines.push(l), progress: &mut |_| {} };
    let first =
        reconcile::run(&w.db.pool, &settings(&w.api, vec![Kind::Subscriptions], true), &catalog(), report).await;
    let error = format!("{:#}", first.expect_err("Stripe went away"));
    assert!(error.contains("run the command again to resume"), "{error}");
    let requests = w.api.requests();
    assert_eq!(requests[0].status, 429);
    assert!(requests[1].at - requests[0].at >= Duration::from_secs(1), "Retry-After: 1 honoured");
    assert_eq!(w.scalar("SELECT count(*) FROM ledger.events").await, 4, "two pages of two appended");

    w.api.heal();
    let seen = w.api.requests().len();
    let (resumed, _) = w.reconcile(vec![Kind::Subscriptions], true).await;
    assert!(resumed.resumed);
    assert!(w.api.requests()[seen].query.contains("starting_after=sub_"), "{:?}", w.api.requests()[seen]);
    assert_eq!((resumed.compared, resumed.drifted, resumed.appended), (7, 7, 7));
    assert_eq!(w.scalar("SELECT count(DISTINCT stripe_event_id) FROM ledger.events").await, 7);
    w.projector.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_drift_by_email_and_a_deleted_customer_is_fetched_by_id() {
    let w = World::start().await;
    let t = stripe::now() - 60;
    for (id, email) in [("cus_a", "a@old.test"), ("cus_d", "d@x.test")] {
        let event = stripe::customer_event("customer.created", t, Shape::Basil, id, email);
        assert_eq!(w.ingest.post_signed(&event).await.status(), 200);
    }
    w.projector.caught_up(&w.db.pool).await;
    let mut a = stripe::customer("cus_a");
    a["email"] = json!("a@new.test");
    w.api.put(a);
    w.api.put(json!({ "id": "cus_d", "object": "customer", "deleted": true }));
    let (code, out, err) = replay_reconcile_piped(&w, &["--objects", "customers"]).await;
    assert_eq!(code, Some(1), "drift found: {out}{err}");
    assert!(out.contains("drifted 2 (deleted 1, email 1), appended 0"), "{out}");
    // Through a pipe the report names every drifted object on stdout, and no progress is drawn.
    assert!(out.contains("customer cus_a: email: ours a@old.test, Stripe a@new.test\n"), "{out}");
    assert!(out.contains("customer cus_d: deleted: ours false, Stripe true\n"), "{out}");
    assert!(!err.contains("compared"), "no progress on a pipe: {err}");
    let (found, lines) = w.reconcile(vec![Kind::Customers], true).await;
    assert_eq!(found.drifted, 2, "{lines:#?}");
    assert!(lines.contains(&"customer cus_a: email: ours a@old.test, Stripe a@new.test".to_owned()), "{lines:#?}");
    assert!(lines.contains(&"customer cus_d: deleted: ours false, Stripe true".to_owned()), "{lines:#?}");
    w.projector.caught_up(&w.db.pool).await;
    let (again, lines) = w.reconcile(vec![Kind::Customers], false).await;
    assert_eq!(again.drifted, 0, "{lines:#?}");
    let (code, out) = replay_reconcile(&w, &["--objects", "customers", "--restart"]).await;
    assert_eq!(code, Some(0), "no drift: {out}");
    w.projector.stop().await;
}

/// The real binary, as deployed, against the fake, its output through pipes (as from a script or
/// cron): (exit code, stdout, stderr).
async fn replay_reconcile_piped(w: &World, args: &[&str]) -> (Option<i32>, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_replay"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", w.db.url().await)
        .env("STRIPE_API_KEY", "rk_test_reconcile")
        .env("STRIPE_API_BASE", &w.api.url)
        .env("ALLOW_INSECURE_HTTP", "true")
        .arg("reconcile")
        .args(args)
        .output()
        .expect("replay runs");
    let (out, err) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.code(), out.into_owned(), err.into_owned())
}

/// [`replay_reconcile_piped`] with stdout and stderr together.
async fn replay_reconcile(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let (code, out, err) = replay_reconcile_piped(w, args).await;
    (code, out + &err)
}

fn price(id: &str, kind: &str, active: bool) -> Value {
    json!({ "id": id, "object": "price", "active": active, "type": kind, "currency": "usd", "unit_amount": 900 })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_catalog_finds_missing_archived_and_mistyped_prices_and_warns_about_unlisted_ones() {
    let api = FakeStripe::start(Vec::new()).await;
    let catalog = catalog();
    for (id, _, sold) in replay::check_catalog::catalog_prices(&catalog) {
        let kind = if sold == replay::check_catalog::Sold::Tier { "recurring" } else { "one_time" };
        api.put(price(&id, kind, true));
    }
    let mut reader = Reader::new(read(&api)).expect("reader");
    let clean = replay::check_catalog::run(&mut reader, &catalog, &mut |_| {}).await.expect("check");
    assert!(clean.is_empty(), "{clean:?}");

    api.put(price("price_starter_yearly", "recurring", false));
    api.put(price("price_enterprise_monthly", "one_time", true));
    api.put(price("price_summer_sale", "recurring", true));
    api.put(price("price_old_promo", "recurring", false));
    let fake_without = FakeStripe::start(Vec::new()).await;
    for (id, _, sold) in replay::check_catalog::catalog_prices(&catalog) {
        if id != "price_credits_1000" {
            let kind = if sold == replay::check_catalog::Sold::Tier { "recurring" } else { "one_time" };
            fake_without.put(price(&id, kind, true));
        }
    }
    let findings = replay::check_catalog::run(&mut reader, &catalog, &mut |_| {}).await.expect("check");
    let lines: Vec<&str> = findings.iter().map(|f| f.line.as_str()).collect();
    assert_eq!(findings.iter().filter(|f| f.error).count(), 2, "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("error: price_starter_yearly (tier starter): archived")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("error: price_enterprise_monthly") && l.contains("one_time")));
    assert!(lines.iter().any(|l| l.starts_with("warning: price_summer_sale")), "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("price_old_promo")), "archived prices are not offered: no warning");

    let mut reader = Reader::new(read(&fake_without)).expect("reader");
    let missing = replay::check_catalog::run(&mut reader, &catalog, &mut |_| {}).await.expect("check");
    assert_eq!(missing.len(), 1);
    assert!(
        missing[0].error
            && missing[0].line.contains("price_credits_1000 (pack credits_1000): Stripe has no such price")
    );
}

/// Issue 30: `replay reconcile --objects prices` snapshots Stripe's current prices into the log,
/// so a price created before the webhook endpoint gets its amount (and the pricing page with it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_snapshots_stripes_prices_into_the_log_and_the_catalog_shows_their_amounts() {
    let w = World::start().await;
    let created = |p: &Value| stripe::price_event("price.created", stripe::now() - 600, p.clone());
    let in_sync = stripe::price("price_starter_monthly", 2_900);
    let repriced = stripe::price("price_professional_monthly", 9_900);
    assert_eq!(w.ingest.post_signed(&created(&in_sync)).await.status(), 200);
    assert_eq!(w.ingest.post_signed(&created(&repriced)).await.status(), 200);
    w.projector.caught_up(&w.db.pool).await;
    w.api.put(in_sync);
    w.api.put(stripe::price("price_professional_monthly", 12_900)); // its price.updated never reached us
    w.api.put(stripe::price("price_starter_yearly", 29_000)); // made before the webhook endpoint existed

    let (found, lines) = w.reconcile(vec![Kind::Prices], false).await;
    assert_eq!((found.compared, found.drifted, found.appended), (3, 2, 0), "{lines:#?}");
    assert!(lines.contains(&"price price_starter_yearly: missing here".to_owned()), "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.starts_with("price price_professional_monthly: unit_amount: ours 9900, Stripe 12900")),
        "{lines:#?}"
    );
    let replay_role = w.as_replay_role().await;
    let (applied, _) = w.reconcile_on(&replay_role, vec![Kind::Prices], true).await;
    assert_eq!((applied.drifted, applied.appended), (2, 2));
    w.projector.caught_up(&w.db.pool).await;
    let catalog: Value = reqwest::get(format!("http://{}/v1/catalog", w.projector.addr))
        .await
        .expect("request")
        .json()
        .await
        .expect("json");
    let amount = |tier: usize, id: &str| {
        catalog["tiers"][tier]["prices"]
            .as_array()
            .expect("prices")
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["amount"].clone())
    };
    assert_eq!(amount(1, "price_starter_yearly"), Some(json!(29_000)), "{catalog}");
    assert_eq!(amount(2, "price_professional_monthly"), Some(json!(12_900)));
    let (again, lines) = w.reconcile(vec![Kind::Prices], false).await;
    assert_eq!(again.drifted, 0, "{lines:#?}");
}
