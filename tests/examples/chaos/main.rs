//! The chaos run (docs/reliability.md): release ingest and two projectors (one active, one
//! standby) on a fresh PostgreSQL cluster of their own, with a fake provisioner and an SMTP server;
//! a Stripe-like client delivers thousands of customers' lifecycles, shuffled, with duplicate
//! deliveries; meanwhile ingest and the active projector are SIGKILLed several times and
//! PostgreSQL is restarted with `-m immediate`. Once everything has settled, the invariants are
//! checked and printed; the exit code is non-zero if one fails.
//!
//! usage: scripts/chaos [--customers 5000] [--duplicates 0.1] [--concurrency 32] [--seed 1]

mod checks;
mod client;
mod services;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use ledger_tests::provisioner::FakeProvisioner;
use ledger_tests::smtp::SmtpServer;
use services::Service;
use shared::embedded::LocalCluster;

#[derive(Debug, Parser)]
struct Args {
    /// Customers whose lifecycles are delivered (about 12 events each).
    #[arg(long, default_value_t = 5_000)]
    customers: u64,
    /// Fraction of events delivered twice.
    #[arg(long, default_value_t = 0.1)]
    duplicates: f64,
    /// Deliveries in flight.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Seed of the lifecycles, the shuffle and the duplicates.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

const SECRET: &str = "whsec_chaos";

/// A fault and when it strikes: once this fraction of the deliveries was acknowledged.
#[derive(Debug, Clone, Copy)]
enum Fault {
    KillIngest,
    KillProjector,
    CrashPostgres,
}

const PLAN: [(f64, Fault); 9] = [
    (0.08, Fault::KillIngest),
    (0.16, Fault::KillProjector),
    (0.25, Fault::KillIngest),
    (0.35, Fault::CrashPostgres),
    (0.45, Fault::KillProjector),
    (0.55, Fault::KillIngest),
    (0.65, Fault::KillProjector),
    (0.75, Fault::KillIngest),
    (0.85, Fault::KillProjector),
];

struct Deployment {
    ingest: Service,
    projectors: [Service; 2],
    cluster: LocalCluster,
    env: Vec<(String, String)>,
    takeovers: Vec<Duration>,
    postgres_restarts: Vec<Duration>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = tempfile::Builder::new().prefix("stripe-ledger-chaos.").tempdir_in("/tmp")?;
    std::fs::set_permissions(root.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let cluster = LocalCluster::new(root.path());
    let server = cluster.ensure_running().await?;
    let admin = sqlx::PgPool::connect_with(server.options("postgres")).await?;
    sqlx::query("CREATE DATABASE chaos ENCODING 'UTF8' TEMPLATE template0").execute(&admin).await?;
    admin.close().await;
    let database_url = server.database_url("chaos");

    let provisioner = FakeProvisioner::start().await;
    let smtp = SmtpServer::start().await;
    let env = environment(&database_url, &provisioner.url, &smtp.url);
    let mut deployment = Deployment::start(root.path(), cluster, env).await;
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect_lazy(&database_url)?;

    let (deliveries, events) = client::deliveries(args.customers, args.duplicates, args.seed);
    println!(
        "chaos: {} customers, {events} events, {} deliveries ({} duplicates), concurrency {}",
        args.customers,
        deliveries.len(),
        deliveries.len() - events,
        args.concurrency
    );
    let started = Instant::now();
    let progress = Arc::new(client::Progress::default());
    let total = deliveries.len();
    let sender = tokio::spawn(client::send_all(
        format!("{}/webhooks/stripe", deployment.ingest.url()),
        SECRET.to_owned(),
        deliveries,
        args.concurrency,
        progress.clone(),
    ));
    deployment.strike_while_sending(&progress, total, &sender).await;
    sender.await?;
    println!("{}", client::summary(&progress, started));
    let settled = deployment.settle(&pool).await;
    println!("settled {:.1} s after the last delivery", settled.as_secs_f64());
    deployment.stop().await;
    println!("{}", deployment.faults());

    let acknowledged = std::mem::take(&mut *progress.acknowledged.lock().expect("lock"));
    let mut results = checks::log(&pool, &acknowledged).await;
    results.extend(checks::provisioner(&pool, &provisioner).await);
    results.extend(checks::mails(&pool, &smtp).await);
    results.extend(checks::failures(&pool).await);
    results.extend(checks::replay(&deployment.env));
    pool.close().await;
    let failed = results.iter().filter(|c| !c.ok).count();
    for c in &results {
        println!("{} {}", if c.ok { "ok  " } else { "FAIL" }, c.what);
    }
    if failed > 0 || progress.gave_up.load(Ordering::Relaxed) > 0 {
        let kept = root.keep();
        anyhow::bail!("{failed} invariants failed; the cluster and logs are kept in {}", kept.display());
    }
    deployment.cluster.stop().await?;
    println!("chaos: all invariants held");
    Ok(())
}

fn environment(database_url: &str, provisioner: &str, smtp: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", database_url),
        ("STRIPE_WEBHOOK_SECRET", SECRET),
        ("RUST_LOG", "warn"),
        ("PROVISIONER_URL", provisioner),
        ("PROVISIONER_API_KEY", "chaos-provisioner-key"),
        ("SMTP_URL", smtp),
        ("ADMIN_EMAIL", "ops@chaos.test"),
        ("ALLOW_INSECURE_HTTP", "true"),
        ("ALLOW_INSECURE_SMTP", "true"),
        ("EFFECT_BACKOFF_MS", "100"),
        ("MIGRATE_ON_START", "false"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

impl Deployment {
    async fn start(root: &std::path::Path, cluster: LocalCluster, env: Vec<(String, String)>) -> Self {
        let vars: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (migrated, output) = ledger_tests::bin::run("replay", &vars, &["migrate"]);
        assert!(migrated, "replay migrate: {output}");
        let mut ingest = Service::new("ingest", "ingest", "INGEST_ADDR", &env, root);
        let mut projectors = [
            Service::new("projector-a", "projector", "PROJECTOR_ADDR", &env, root),
            Service::new("projector-b", "projector", "PROJECTOR_ADDR", &env, root),
        ];
        ingest.spawn();
        projectors.iter_mut().for_each(Service::spawn);
        ingest.wait_ready(Duration::from_secs(60)).await;
        for projector in &projectors {
            projector.wait_ready(Duration::from_secs(60)).await;
        }
        println!("logs: {}", root.display());
        Self { ingest, projectors, cluster, env, takeovers: Vec::new(), postgres_restarts: Vec::new() }
    }

    /// Strikes the faults of [`PLAN`] as the deliveries progress; restarts what exits by itself.
    async fn strike_while_sending(
        &mut self,
        progress: &client::Progress,
        total: usize,
        sender: &tokio::task::JoinHandle<()>,
    ) {
        let mut plan = PLAN.iter().peekable();
        while !sender.is_finished() {
            self.revive();
            let done = progress.delivered.load(Ordering::Relaxed) as f64 / total as f64;
            if let Some((_, fault)) = plan.next_if(|(at, _)| done >= *at) {
                println!("chaos: {fault:?} at {:.0} % of the deliveries", done * 100.0);
                self.strike(*fault).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (at, fault) in plan {
            println!("chaos: {fault:?} (planned at {:.0} %) after the last delivery", at * 100.0);
            self.strike(*fault).await;
        }
    }

    async fn strike(&mut self, fault: Fault) {
        match fault {
            Fault::KillIngest => {
                self.ingest.kill();
                self.ingest.spawn();
            }
            Fault::KillProjector => self.kill_active_projector().await,
            Fault::CrashPostgres => {
                let started = Instant::now();
                self.cluster.crash_restart().await.expect("pg_ctl restart -m immediate");
                self.postgres_restarts.push(started.elapsed());
            }
        }
    }

    /// SIGKILLs the active projector, waits for the standby to take over, then restarts the killed
    /// one (it becomes the standby).
    async fn kill_active_projector(&mut self) {
        let active = ledger_tests::wait::until(Duration::from_secs(60), "an active projector", || async {
            for (i, p) in self.projectors.iter().enumerate() {
                if p.is_active().await {
                    return Some(i);
                }
            }
            None
        })
        .await;
        self.projectors[active].kill();
        let killed_at = Instant::now();
        let other = &self.projectors[1 - active];
        ledger_tests::wait::until(Duration::from_secs(60), "the standby to take over", || async {
            other.is_active().await.then_some(())
        })
        .await;
        self.takeovers.push(killed_at.elapsed());
        self.projectors[active].spawn();
    }

    fn revive(&mut self) {
        self.ingest.revive();
        for p in &mut self.projectors {
            p.revive();
        }
    }

    /// Waits (bounded) until the projector is at the log head and the effects are quiet: no key
    /// waiting for a retry and no journal row for 5 s. Returns the time since the start.
    async fn settle(&mut self, pool: &sqlx::PgPool) -> Duration {
        let started = Instant::now();
        let (mut last_rows, mut quiet_since) = (-1_i64, Instant::now());
        loop {
            assert!(started.elapsed() < Duration::from_secs(900), "the run did not settle within 15 minutes");
            self.revive();
            if let Ok((at_head, rows, retrying)) = sqlx::query_as::<_, (bool, i64, i64)>(SETTLED).fetch_one(pool).await
            {
                if rows != last_rows {
                    (last_rows, quiet_since) = (rows, Instant::now());
                }
                if at_head && retrying == 0 && quiet_since.elapsed() >= Duration::from_secs(5) {
                    return started.elapsed();
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn stop(&mut self) {
        self.ingest.stop().await;
        for p in &mut self.projectors {
            p.stop().await;
        }
    }

    fn faults(&self) -> String {
        let ms = |d: &[Duration]| d.iter().map(|d| format!("{} ms", d.as_millis())).collect::<Vec<_>>().join(", ");
        let projector = &self.projectors;
        format!(
            "faults: ingest SIGKILLed {}x (exited by itself {}x); projectors SIGKILLed {}x (exited by itself {}x), \
             standby took over in {}; PostgreSQL restarted -m immediate {}x in {}",
            self.ingest.kills,
            self.ingest.crashes,
            projector[0].kills + projector[1].kills,
            projector[0].crashes + projector[1].crashes,
            ms(&self.takeovers),
            self.postgres_restarts.len(),
            ms(&self.postgres_restarts),
        )
    }
}

/// At the head, journal rows so far, keys whose latest attempt asks for a retry (or is a mail
/// still being sent).
const SETTLED: &str = "
SELECT (SELECT coalesce(max(position), 0) FROM ledger.events)
         = (SELECT coalesce(max(position), 0) FROM projection.checkpoint),
       (SELECT count(*) FROM ledger.effects),
       (SELECT count(*) FROM (SELECT DISTINCT ON (key) outcome FROM ledger.effects ORDER BY key, id DESC) l
         WHERE outcome IN ('retry', 'sending'))";
