//! A fresh, migrated database per test.

use std::path::PathBuf;
use std::str::FromStr;

use shared::embedded::LocalCluster;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::OnceCell;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the embedded cluster lives: `LEDGER_DATA_DIR`, as for the binaries, else `.data/` at the
/// workspace root (not the test's working directory, so every test binary shares one cluster).
pub fn data_dir() -> PathBuf {
    match std::env::var("LEDGER_DATA_DIR") {
        Ok(dir) if !dir.trim().is_empty() => PathBuf::from(dir),
        _ => workspace_root().join(".data"),
    }
}

static SERVER: OnceCell<(PgConnectOptions, String)> = OnceCell::const_new();

/// Connect options for the test server's maintenance database: `DATABASE_URL` when set (its role
/// must be a superuser: tests create databases, switch roles and set session_replication_role),
/// else the embedded cluster, started on first use.
pub async fn server_options() -> PgConnectOptions {
    server().await.0.clone()
}

/// The server's URL without a database name (`postgres://user@host:port`).
pub async fn server_url() -> String {
    server().await.1.clone()
}

async fn server() -> &'static (PgConnectOptions, String) {
    SERVER
        .get_or_init(|| async {
            match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => {
                    let options = PgConnectOptions::from_str(&url).expect("DATABASE_URL parses");
                    let base = url.split('?').next().unwrap_or(&url);
                    let base = base.rsplit_once('/').map_or(base, |(server, _)| server).to_owned();
                    (options, base)
                }
                _ => {
                    let cluster = LocalCluster::new(data_dir());
                    let server = cluster.ensure_running().await.expect("embedded PostgreSQL starts");
                    let url = server.database_url("postgres");
                    let base = url.rsplit_once('/').map_or(url.as_str(), |(server, _)| server).to_owned();
                    (server.options("postgres"), base)
                }
            }
        })
        .await
}

/// A database created for one test and migrated with the project's migrator.
pub struct TestDb {
    /// Pool connected as the owner (the migrating role).
    pub pool: PgPool,
    /// Connect options of this database.
    pub options: PgConnectOptions,
    /// Database name.
    pub name: String,
}

impl TestDb {
    /// Creates and migrates a new database.
    pub async fn new() -> Self {
        let db = Self::unmigrated().await;
        shared::db::migrate(&db.pool).await.expect("migrations apply");
        db
    }

    /// Creates a new, empty database (for tests that migrate it themselves).
    pub async fn unmigrated() -> Self {
        let server = server_options().await;
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin =
            PgPoolOptions::new().max_connections(1).connect_with(server.clone()).await.expect("connect to server");
        sqlx::query(&format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0"))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let options = server.database(&name);
        let pool = PgPoolOptions::new().max_connections(8).connect_with(options.clone()).await.expect("connect");
        Self { pool, options, name }
    }

    /// A URL of this database, for a process under test.
    pub async fn url(&self) -> String {
        format!("{}/{}", server_url().await, self.name)
    }

    /// A new pool on this database, for a service under test.
    pub fn service_pool(&self, max_connections: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(std::time::Duration::from_secs(2))
            .connect_lazy_with(self.options.clone())
    }

    /// Runs `sql` as the owner.
    pub async fn execute(&self, sql: &str) {
        sqlx::query(sql).execute(&self.pool).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Number of rows in the event log.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar!(r#"SELECT count(*) AS "n!" FROM ledger.events"#).fetch_one(&self.pool).await.expect("count")
    }
}

/// A test that passed leaves nothing behind: its database is dropped (with the connections still
/// open to it, its own processes' included). A failing test keeps it, to look at.
impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test database {} kept for inspection", self.name);
            return;
        }
        let name = self.name.clone();
        // Drop cannot await: a thread of its own with a small runtime does the work.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let admin = PgPoolOptions::new().max_connections(1).connect_with(server_options().await).await.ok()?;
                let dropped =
                    sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).execute(&admin).await;
                admin.close().await;
                dropped.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("test database {} could not be dropped", self.name);
        }
    }
}
