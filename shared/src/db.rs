//! The database edge every binary shares: URL resolution, the pool and the one migrator.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions as _, PgPool};

use crate::config::{Config, DatabaseSource};
use crate::embedded::LocalCluster;

/// The one migrator: `migrations/` at the workspace root, embedded in every binary and test.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The name of the database the embedded cluster serves.
pub const EMBEDDED_DATABASE: &str = "stripe_ledger";

/// Resolves the database to use: `DATABASE_URL`, or the embedded cluster (started or reused).
pub async fn resolve_url(config: &Config) -> anyhow::Result<SecretString> {
    match &config.database {
        DatabaseSource::Url(url) => Ok(url.clone()),
        DatabaseSource::Embedded { data_dir } => {
            let cluster = LocalCluster::new(data_dir.clone());
            let server = cluster.ensure_running().await.context("starting the embedded PostgreSQL")?;
            ensure_database(&server, EMBEDDED_DATABASE).await?;
            let url = server.database_url(EMBEDDED_DATABASE);
            tracing::info!(database_url = %url, data_dir = %cluster.data_dir().display(), "using the embedded PostgreSQL");
            Ok(SecretString::from(url))
        }
    }
}

/// Creates `name` on the server if it does not exist yet.
pub async fn ensure_database(server: &crate::embedded::Server, name: &str) -> anyhow::Result<()> {
    let admin =
        PgPool::connect_with(server.options("postgres")).await.context("connecting to the postgres database")?;
    // Not compile-checked: this runs against the `postgres` maintenance database, before any
    // migration, and CREATE DATABASE takes an identifier, not a bind parameter.
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&admin)
        .await?;
    if !exists {
        let sql = format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0");
        match sqlx::query(&sql).execute(&admin).await {
            Ok(_) => {}
            // Another process created it between our check and our CREATE.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("creating the database"),
        }
    }
    admin.close().await;
    Ok(())
}

/// Pool settings for a service.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections.
    pub max_connections: u32,
    /// How long a caller waits for a connection (or for a connect) before the database counts
    /// as unavailable; ingest keeps this short so Stripe gets a 503 well within its timeout.
    pub acquire_timeout: Duration,
    /// Statements slower than this are logged as warnings (tools that stream the whole log raise it).
    pub slow_statement: Duration,
    /// `statement_timeout` of every session (None: the server's): a stuck query ends with an
    /// error instead of holding a connection, and its locks, forever.
    pub statement_timeout: Option<Duration>,
    /// `idle_in_transaction_session_timeout` of every session (None: the server's): a client
    /// stuck inside a transaction cannot hold the append lock or a row lock for long.
    pub idle_in_transaction_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
            slow_statement: Duration::from_secs(1),
            statement_timeout: None,
            idle_in_transaction_timeout: None,
        }
    }
}

/// The session parameters `settings` asks for, as sent in the connection's start-up packet (they
/// apply to whatever login user connects; a role-level `ALTER ROLE ... SET` on a NOLOGIN group
/// role would not reach its members).
pub fn session_parameters(settings: &PoolSettings) -> Vec<(&'static str, String)> {
    let mut parameters = Vec::new();
    if let Some(timeout) = settings.statement_timeout {
        parameters.push(("statement_timeout", format!("{}ms", timeout.as_millis())));
    }
    if let Some(timeout) = settings.idle_in_transaction_timeout {
        parameters.push(("idle_in_transaction_session_timeout", format!("{}ms", timeout.as_millis())));
    }
    parameters
}

/// Connects a pool lazily: the binaries start (and answer `/healthz`) while the database is down.
pub fn connect_lazy(url: &SecretString, settings: PoolSettings) -> anyhow::Result<PgPool> {
    let options = PgConnectOptions::from_str(url.expose_secret())
        .context("parsing DATABASE_URL")?
        .log_slow_statements(log::LevelFilter::Warn, settings.slow_statement)
        .options(session_parameters(&settings));
    Ok(PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(settings.acquire_timeout)
        .connect_lazy_with(options))
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR.run(pool).await.context("applying migrations")
}

/// At start-up: applies the pending migrations, or, when `MIGRATE_ON_START=false` (deployments
/// whose application roles may not run DDL; `replay migrate` runs them with the owner role), only
/// checks that every migration this build knows is applied.
pub async fn prepare(pool: &PgPool, migrate_on_start: bool) -> anyhow::Result<()> {
    if migrate_on_start {
        return migrate(pool).await;
    }
    // Not compile-checked: sqlx's own bookkeeping table, absent before the first migration.
    let applied: Vec<i64> = sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
        .fetch_all(pool)
        .await
        .context("reading the applied migrations (MIGRATE_ON_START=false: run `replay migrate` first)")?;
    let missing: Vec<String> = MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
        .map(|m| format!("{} {}", m.version, m.description))
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "MIGRATE_ON_START=false and the database lacks migrations [{}]: run `replay migrate` with the owner role",
            missing.join(", ")
        );
    }
    Ok(())
}

/// How [`prepare_when_reachable`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// The database is reachable and migrated.
    Ready,
    /// Shutdown was asked for before the database became reachable.
    Stopped,
}

/// [`prepare`] at a service's start-up: while the database cannot be reached, logs it and tries
/// again (every 1 s, up to every 10 s), so a service started before its database waits for it; a
/// shutdown signal ends the wait at once. Any other failure (a missing migration, a refused
/// login) ends start-up with its error.
pub async fn prepare_when_reachable(
    pool: &PgPool,
    migrate_on_start: bool,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Prepared> {
    let mut delay = Duration::from_secs(1);
    loop {
        let error = tokio::select! {
            _ = shutdown.cancelled() => return Ok(stopped()),
            result = prepare(pool, migrate_on_start) => match result {
                Ok(()) => return Ok(Prepared::Ready),
                Err(error) => error,
            },
        };
        if !error.chain().filter_map(|e| e.downcast_ref::<sqlx::Error>()).any(is_unavailable) {
            return Err(error);
        }
        tracing::warn!(error = format!("{error:#}"), retry_in = ?delay, "database unavailable at start-up, waiting for it");
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(stopped()),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(10));
    }
}

fn stopped() -> Prepared {
    tracing::info!("shutdown asked for before the database became reachable: stopping");
    Prepared::Stopped
}

/// True when the error means "the database cannot be reached right now" (503, retry later), as
/// opposed to a bug or bad data (500).
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // 08: connection exception; 57P: operator intervention (shutdown, crash recovery);
            // 53: insufficient resources; 55P03: lock_not_available (lock_timeout); 25006 read-only standby.
            code.starts_with("08")
                || code.starts_with("57P")
                || code.starts_with("53")
                || code == "55P03"
                || code == "25006"
        }),
        _ => false,
    }
}

/// A separate small pool to the same database as `pool` (same options and session settings): work
/// that must never take a connection the main work needs (readiness probes, `/v1/access`).
pub fn side_pool(pool: &PgPool, max_connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with((*pool.connect_options()).clone())
}

/// When the database was last asked, and what it answered.
type LastCheck = (std::time::Instant, Result<(), String>);

/// `/readyz` for unauthenticated callers: at most one database check per second, on its own
/// connection, whatever the request rate; every other caller gets the last answer. A flood of
/// probes costs the database nothing and never takes a connection from the work.
#[derive(Debug, Clone)]
pub struct Readiness {
    pool: PgPool,
    last: std::sync::Arc<tokio::sync::Mutex<Option<LastCheck>>>,
    checks: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Readiness {
    /// How long an answer is reused.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// Checks the database of `pool` on a pool of its own.
    pub fn new(pool: &PgPool) -> Self {
        Self { pool: side_pool(pool, 1), last: std::sync::Arc::default(), checks: std::sync::Arc::default() }
    }

    /// How many times the database was actually asked.
    pub fn database_checks(&self) -> u64 {
        self.checks.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether the database answers (an answer at most [`Readiness::FRESH`] old).
    pub async fn check(&self) -> Result<(), String> {
        // While one caller checks, the others wait for its answer rather than start another.
        let mut last = self.last.lock().await;
        if let Some((at, answer)) = last.as_ref()
            && at.elapsed() < Self::FRESH
        {
            return answer.clone();
        }
        self.checks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let answer = check_ready(&self.pool).await.map_err(|e| format!("{e:#}"));
        *last = Some((std::time::Instant::now(), answer.clone()));
        answer
    }
}

/// Readiness: the database answers a trivial query within two seconds.
pub async fn check_ready(pool: &PgPool) -> anyhow::Result<()> {
    let check = sqlx::query_scalar!(r#"SELECT 1 AS "one!""#).fetch_one(pool);
    match tokio::time::timeout(Duration::from_secs(2), check).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error).context("database check failed"),
        Err(_) => anyhow::bail!("database check timed out after 2s"),
    }
}
