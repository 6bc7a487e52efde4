//! A projector instance under test, in-process, serving on 127.0.0.1:0.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use domain::catalog::Catalog;
use domain::clock::{Clock, SystemClock};
use domain::fold::FoldConfig;
use domain::state::Projections;
use projector::ProjectorSettings;
use projector::effects::EffectSettings;
use projector::effects::mail::MailConfig;
use projector::runner::{RunnerSettings, RunnerStatus};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::wait;

/// The billing API key of [`TestProjector::start_billing`].
pub const BILLING_KEY: &str = "sl_test_billing_key_0123456789";

/// The example catalog the tests project with.
pub fn catalog() -> Catalog {
    Catalog::example().expect("example catalog")
}

/// Rows the projectors under test keep between batches: few, so that the tests also fold batches
/// whose rows were evicted and read back from the tables.
pub const CACHE_ROWS: usize = 64;

/// `/v1/access` answers the projectors under test keep: on, as in production.
pub const ACCESS_CACHE_ROWS: usize = 1_000;

/// The settings of [`TestProjector::start_with`]: no billing API, a small access pool.
pub fn settings(catalog: Catalog, batch_size: usize, effects: EffectSettings) -> ProjectorSettings {
    ProjectorSettings {
        addr: "127.0.0.1:0".parse().expect("addr"),
        admin_addr: "127.0.0.1:0".parse().expect("addr"),
        catalog,
        runner: RunnerSettings { batch_size, cache_rows: CACHE_ROWS, fold: FoldConfig::default() },
        effects,
        pool: shared::db::PoolSettings::default(),
        api_connections: 4,
        access_cache_rows: ACCESS_CACHE_ROWS,
        billing: projector::settings::BillingSettings::default(),
        console: api::console::ConsoleSettings::default(),
        roles: shared::config::Roles::default(),
    }
}

/// The origins the billing tests redirect to: `https://app.test`.
pub fn redirect_origins() -> shared::config::RedirectOrigins {
    shared::config::RedirectOrigins::parse("https://app.test", false).expect("origins")
}

/// A running projector.
pub struct TestProjector {
    /// What its runner reports.
    pub status: Arc<RunnerStatus>,
    /// Where it serves the API and health.
    pub addr: std::net::SocketAddr,
    /// Where it serves the console and metrics.
    pub admin_addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _mail_dir: Option<tempfile::TempDir>,
}

/// Effect settings for tests: no provisioner, mails as files in `dir`, fast retries.
pub fn effect_settings(dir: &std::path::Path) -> EffectSettings {
    EffectSettings {
        provisioner: None,
        mail: MailConfig { smtp_url: None, from: "billing@ledger.test".to_owned(), dir: dir.to_path_buf() },
        admin_email: Some("ops@ledger.test".to_owned()),
        dashboard_url: None,
        max_attempts: 4,
        backoff: Duration::from_millis(20),
        concurrency: 4,
        poll_interval: Duration::from_millis(50),
        // Long: the tests' passes look at what is pending, as in production between sweeps.
        sweep_interval: Duration::from_secs(3600),
    }
}

impl TestProjector {
    /// Starts a projector with `catalog` and `batch_size`, effects going to a temporary mail dir.
    pub async fn start(pool: PgPool, catalog: Catalog, batch_size: usize) -> Self {
        let dir = tempfile::tempdir().expect("mail dir");
        let effects = effect_settings(dir.path());
        let mut projector = Self::start_with(pool, catalog, batch_size, effects, Arc::new(SystemClock)).await;
        projector._mail_dir = Some(dir);
        projector
    }

    /// Starts a projector with explicit effect settings and clock.
    pub async fn start_with(
        pool: PgPool,
        catalog: Catalog,
        batch_size: usize,
        effects: EffectSettings,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self::start_settings(settings(catalog, batch_size, effects), pool, clock).await
    }

    /// Starts a projector whose billing API takes [`BILLING_KEY`] and calls the Stripe API at
    /// `stripe` (a fake), each call timing out after a second.
    pub async fn start_billing(pool: PgPool, stripe: &str) -> Self {
        Self::start_billing_with(pool, catalog(), Some(stripe), Arc::new(SystemClock)).await
    }

    /// [`Self::start_billing`] with `catalog`, `clock` and, if any, a fake Stripe at `stripe`.
    pub async fn start_billing_with(
        pool: PgPool,
        catalog: Catalog,
        stripe: Option<&str>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("mail dir");
        let settings = ProjectorSettings {
            addr: "127.0.0.1:0".parse().expect("addr"),
            admin_addr: "127.0.0.1:0".parse().expect("addr"),
            catalog,
            runner: RunnerSettings { batch_size: 50, cache_rows: CACHE_ROWS, fold: FoldConfig::default() },
            effects: effect_settings(dir.path()),
            pool: shared::db::PoolSettings::default(),
            api_connections: 8,
            access_cache_rows: ACCESS_CACHE_ROWS,
            billing: projector::settings::BillingSettings {
                api_keys: vec![BILLING_KEY.into()],
                stripe: stripe.map(|url| (url.to_owned(), "sk_test_fake_key".into())),
                stripe_timeout: Duration::from_secs(1),
                portal_configuration: Some("bpc_test_catalog".to_owned()),
                redirects: redirect_origins(),
                ..Default::default()
            },
            console: api::console::ConsoleSettings::default(),
            roles: shared::config::Roles::default(),
        };
        let mut projector = Self::start_settings(settings, pool, clock).await;
        projector._mail_dir = Some(dir);
        projector
    }

    /// Starts a projector with `settings` (see [`settings`]).
    pub async fn start_settings(settings: ProjectorSettings, pool: PgPool, clock: Arc<dyn Clock>) -> Self {
        let app = projector::Application::build(settings, pool, clock).await.expect("projector builds");
        let (status, addr, admin_addr) = (app.status(), app.local_addr(), app.admin_addr());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run_until_stopped(shutdown.clone()));
        Self { status, addr, admin_addr, shutdown, task, _mail_dir: None }
    }

    /// Kills it: the tasks are dropped wherever they are, as a crash would leave them.
    pub fn kill(self) {
        self.task.abort();
    }

    /// True while this instance is the active projector.
    pub fn is_leader(&self) -> bool {
        self.status.leader.load(Ordering::Relaxed)
    }

    /// Waits until the checkpoint reaches the head of the log.
    pub async fn caught_up(&self, pool: &PgPool) {
        wait::until(Duration::from_secs(60), "the projector to reach the log head", || async {
            let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM ledger.events")
                .fetch_one(pool)
                .await
                .expect("head");
            (head > 0 && self.status.checkpoint.load(Ordering::Relaxed) == head).then_some(())
        })
        .await;
    }

    /// GETs `path` with `Authorization: Bearer <bearer>`: the status and the JSON body (null if none).
    pub async fn get_json(&self, path: &str, bearer: &str) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", self.addr);
        let response = reqwest::Client::new().get(url).bearer_auth(bearer).send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// GETs a path of its admin listener (`/metrics`, `/console`).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin_addr)).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// GETs a path of its HTTP server.
    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.addr)).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Waits until its dispatcher has completed `n` more passes than now: everything due at the
    /// time of the call has been looked at (and, from the second pass, done or scheduled).
    pub async fn dispatcher_passes(&self, n: u64) {
        let passes = || async {
            let (_, metrics) = self.admin_get("/metrics").await;
            metrics
                .lines()
                .find_map(|l| l.strip_prefix("dispatcher_passes_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        let start = passes().await;
        wait::until(Duration::from_secs(30), &format!("{n} dispatcher passes"), || async {
            (passes().await >= start + n).then_some(())
        })
        .await;
    }

    /// Stops it gracefully.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.expect("no panic").expect("clean stop");
    }
}

/// A live API token of `customer`, stored as the dispatcher stores one (only its hash).
pub async fn customer_token(pool: &PgPool, customer: &str) -> String {
    let token = domain::token::new_token().expect("token");
    sqlx::query(
        "INSERT INTO ledger.api_tokens (token_sha256, stripe_customer_id, tier, key, issued_at, expires_at)
         VALUES ($1, $2, 'starter', 'token:' || $2 || ':1', now(), now() + interval '1 day')",
    )
    .bind(domain::token::token_hash(&token))
    .bind(customer)
    .execute(pool)
    .await
    .expect("token");
    token
}

/// What one fold of the whole log from position 1 gives: the reference for "live equals rebuild".
pub async fn fold_whole_log(pool: &PgPool, catalog: &Catalog) -> Projections {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT position, raw_body FROM ledger.events ORDER BY position")
        .fetch_all(pool)
        .await
        .expect("log");
    let mut state = Projections::default();
    state.fold_batch(rows.iter().map(|(p, b)| (*p, b.as_slice())), catalog, &FoldConfig::default());
    state
}

/// The projections without log positions (in versions and anomalies): positions are assigned by
/// arrival, so they differ between delivery orders (or webhook and backfill) by design; everything
/// else must converge.
pub fn without_positions(p: &Projections) -> Projections {
    let mut p = p.clone();
    for a in p.accounts.values_mut() {
        if let Some(v) = a.version.as_mut() {
            v.position = 0;
        }
    }
    for s in p.subscriptions.values_mut() {
        if let Some(v) = s.version.as_mut() {
            v.position = 0;
        }
    }
    for a in p.anomalies.values_mut() {
        a.position = 0;
    }
    for price in p.prices.values_mut() {
        price.version.position = 0;
    }
    for discount in p.discounts.values_mut() {
        discount.version.position = 0;
    }
    for revenue in p.revenue.values_mut() {
        revenue.points.iter_mut().for_each(|point| point.position = 0);
        revenue.discounts.iter_mut().for_each(|point| point.position = 0);
    }
    for row in p.mrr_movements.values_mut() {
        row.movement.position = 0;
    }
    p
}

/// Asserts that `projection.mrr_days` (kept by triggers, migration 0034) holds exactly the sums of
/// `projection.mrr_movements` per currency and day (days whose sums all went back to 0 aside).
pub async fn assert_mrr_days_follow_the_movements(pool: &PgPool) {
    let differing: Vec<(String, String)> = sqlx::query_as(
        "WITH want AS (
           SELECT currency, day,
                  coalesce(sum(amount) FILTER (WHERE kind = 'new'), 0)::bigint AS new,
                  coalesce(sum(amount) FILTER (WHERE kind = 'expansion'), 0)::bigint AS expansion,
                  coalesce(sum(amount) FILTER (WHERE kind = 'contraction'), 0)::bigint AS contraction,
                  coalesce(sum(amount) FILTER (WHERE kind = 'churn'), 0)::bigint AS churn,
                  coalesce(sum(amount) FILTER (WHERE kind = 'reactivation'), 0)::bigint AS reactivation,
                  sum(CASE kind WHEN 'new' THEN 1 WHEN 'reactivation' THEN 1 WHEN 'churn' THEN -1 ELSE 0 END)::bigint
                    AS starts
           FROM projection.mrr_movements WHERE day IS NOT NULL GROUP BY currency, day),
         have AS (SELECT * FROM projection.mrr_days
                  WHERE (new, expansion, contraction, churn, reactivation, starts) <> (0, 0, 0, 0, 0, 0))
         SELECT 'want', w::text FROM (SELECT * FROM want EXCEPT SELECT * FROM have) w
         UNION ALL SELECT 'have', h::text FROM (SELECT * FROM have EXCEPT SELECT * FROM want) h",
    )
    .fetch_all(pool)
    .await
    .expect("compare");
    assert!(differing.is_empty(), "mrr_days differs from the movements: {differing:?}");
    let days: i64 = sqlx::query_scalar("SELECT count(*) FROM projection.mrr_days").fetch_one(pool).await.expect("n");
    let moved: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection.mrr_movements").fetch_one(pool).await.expect("n");
    assert!(moved == 0 || days > 0, "days are kept");
}

/// The projection tables as they are.
pub async fn load_tables(pool: &PgPool) -> Projections {
    let mut conn = pool.acquire().await.expect("connection");
    store::load(&mut conn).await.expect("load")
}
