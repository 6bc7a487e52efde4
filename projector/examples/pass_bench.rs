//! Dispatcher pass cost on a big database (issue 14, goal 4): on `DATABASE_URL` (the database of
//! `scripts/bench-projector-memory`, its projections rebuilt), every running instance is recorded
//! as provisioned and every wanted token as delivered, so nothing is out of sync. Then: one pass
//! that sweeps everything; then `pending` subjects are changed (instance targets resized, tokens
//! re-tiered, as an intent would) and marked, and passes are timed until they are settled again.
//! Calls go to a fake provisioner on loopback that answers at once; mails to a directory.
//!
//! usage: DATABASE_URL=... cargo run --release -p projector --example pass_bench -- [pending]

use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::clock::SystemClock;
use ledger_tests::projector::effect_settings;
use ledger_tests::provisioner::FakeProvisioner;
use projector::effects::dispatcher::Dispatcher;
use projector::effects::provisioner::ProvisionerConfig;
use sqlx::PgPool;

async fn run(pool: &PgPool, sql: &str) -> u64 {
    sqlx::query(sql).execute(pool).await.expect(sql).rows_affected()
}

async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

#[tokio::main]
async fn main() {
    let pending: i64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let url = std::env::var("DATABASE_URL").expect("set DATABASE_URL");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await.expect("connect");
    let provisioner = FakeProvisioner::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let mut settings = effect_settings(dir.path());
    settings.provisioner =
        Some(ProvisionerConfig { url: provisioner.url.clone(), api_key: None, timeout: Duration::from_secs(30) });
    settings.sweep_interval = Duration::from_secs(3600);
    let in_sync = run(
        &pool,
        "INSERT INTO ledger.instances_observed (stripe_subscription_id, status, app_name, tier, limit_agents,
           limit_messages_per_day, limit_memory_mb, limit_cpu, key)
         SELECT stripe_subscription_id, 'running', 'app-' || stripe_subscription_id, tier, limit_agents,
           limit_messages_per_day, limit_memory_mb, limit_cpu, 'instance:' || stripe_subscription_id || ':1'
         FROM projection.instance_targets WHERE desired = 'running'
         ON CONFLICT (stripe_subscription_id) DO NOTHING",
    )
    .await;
    // Those writes marked every instance pending; all are in sync by construction.
    run(&pool, "DELETE FROM ledger.pending_subjects").await;
    let subscriptions = count(&pool, "SELECT count(*) FROM projection.instance_targets").await;
    let tokens = count(&pool, "SELECT count(*) FROM projection.tokens").await;
    println!("{subscriptions} instance targets ({in_sync} newly recorded as running), {tokens} token wants");

    let dispatcher =
        Dispatcher::new(pool.clone(), settings, Arc::new(SystemClock), &mut Default::default()).expect("dispatcher");
    let started = Instant::now();
    let pass = dispatcher.pass().await.expect("sweep");
    println!("sweep (every instance and token): {:.0} ms, {} attempts", ms(started), pass.attempts);
    let started = Instant::now();
    let pass = dispatcher.pass().await.expect("pass");
    let marked = count(&pool, "SELECT count(*) FROM ledger.pending_subjects").await;
    println!("pass with nothing pending: {:.1} ms, {} attempts, {marked} marks left", ms(started), pass.attempts);

    // `pending` instances resized and `pending` tokens re-tiered, each marked as an intent would.
    let resized = run(
        &pool,
        &format!(
            "WITH picked AS (SELECT stripe_subscription_id FROM projection.instance_targets
                             WHERE desired = 'running' ORDER BY random() LIMIT {pending})
             UPDATE projection.instance_targets t SET limit_agents = coalesce(t.limit_agents, 0) + 1
             FROM picked p WHERE t.stripe_subscription_id = p.stripe_subscription_id"
        ),
    )
    .await;
    run(
        &pool,
        &format!(
            "INSERT INTO ledger.pending_subjects (kind, subject, seq)
             SELECT 'instance', o.stripe_subscription_id, nextval('ledger.pending_subjects_seq')
             FROM ledger.instances_observed o JOIN projection.instance_targets t USING (stripe_subscription_id)
             WHERE o.limit_agents IS DISTINCT FROM t.limit_agents LIMIT {pending}
             ON CONFLICT DO NOTHING"
        ),
    )
    .await;
    println!("{resized} instances resized and marked pending");
    for round in 1..=4 {
        let started = Instant::now();
        let pass = dispatcher.pass().await.expect("pass");
        let marked = count(&pool, "SELECT count(*) FROM ledger.pending_subjects").await;
        println!("pass {round}: {:.1} ms, {} attempts, {marked} marks left", ms(started), pass.attempts);
    }
    let mut idle: Vec<f64> = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        dispatcher.pass().await.expect("pass");
        idle.push(ms(started));
    }
    idle.sort_by(f64::total_cmp);
    println!(
        "20 passes with nothing pending: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        idle[0],
        idle[idle.len() / 2],
        idle[idle.len() - 1]
    );
    println!("provisioner calls: {}", provisioner.calls().len());
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}
