//! The embedded default database: a local PostgreSQL cluster under `./.data/pg`, created with the
//! installed PostgreSQL binaries (`initdb`, `pg_ctl`) on first use and reused afterwards.
//!
//! Used when `DATABASE_URL` is unset, by the binaries and by the tests. It listens on 127.0.0.1 only,
//! on a port chosen at creation and kept in `.data/pg/port`, with `trust` authentication: a
//! development convenience, never a deployment. PostgreSQL refuses to run as root, so when we are
//! root the cluster belongs to the `postgres` user and its commands run through `runuser`.
//! Concurrent starters (ingest, projector, parallel test processes) serialize on a file lock.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use sqlx::postgres::PgConnectOptions;

/// Server settings appended to `postgresql.conf` at creation. fsync and synchronous_commit keep
/// their durable defaults: what ingest acknowledges must survive a crash, even locally.
const SERVER_SETTINGS: &str = "
# stripe-ledger embedded cluster
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 400
shared_buffers = 256MB
";

/// A local cluster rooted at a directory (normally `./.data`).
#[derive(Debug, Clone)]
pub struct LocalCluster {
    root: PathBuf,
}

/// A running server of the local cluster.
#[derive(Debug, Clone)]
pub struct Server {
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

impl Server {
    /// Connect options for `database` as the `postgres` superuser.
    pub fn options(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new().host("127.0.0.1").port(self.port).username("postgres").database(database)
    }

    /// A URL for `database` (no password: the local cluster trusts loopback).
    pub fn database_url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }
}

impl LocalCluster {
    /// A cluster whose files live under `root/pg`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.root.join("pg").join("data")
    }

    /// Creates the cluster if needed and starts it if it is not running.
    pub async fn ensure_running(&self) -> anyhow::Result<Server> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || ensure_running_blocking(&root)).await?
    }

    /// Stops the server (fast shutdown: open transactions are rolled back, committed data stays).
    pub async fn stop(&self) -> anyhow::Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let root = std::path::absolute(&root)?;
            let _lock = lock(&root)?;
            let data = root.join("pg").join("data");
            if is_running(&data)? {
                run_pg(Command::new("pg_ctl").arg("stop").arg("-D").arg(&data).args(["-m", "fast", "-w", "-t", "60"]))
                    .context("pg_ctl stop")?;
            }
            Ok(())
        })
        .await?
    }

    /// Restarts the server as a crash would leave it (`pg_ctl restart -m immediate`: no shutdown
    /// checkpoint, WAL replayed at start); for fault tests (`scripts/chaos`).
    pub async fn crash_restart(&self) -> anyhow::Result<()> {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            let root = std::path::absolute(&root)?;
            let _lock = lock(&root)?;
            let pg_dir = root.join("pg");
            run_pg(
                Command::new("pg_ctl")
                    .arg("restart")
                    .arg("-D")
                    .arg(pg_dir.join("data"))
                    .arg("-l")
                    .arg(pg_dir.join("server.log"))
                    .args(["-m", "immediate", "-w", "-t", "60"]),
            )
            .context("pg_ctl restart -m immediate")?;
            Ok(())
        })
        .await?
    }
}

fn ensure_running_blocking(root: &Path) -> anyhow::Result<Server> {
    fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let root = std::path::absolute(root)?;
    let _lock = lock(&root)?;
    let pg_dir = root.join("pg");
    let data = pg_dir.join("data");
    let port_file = pg_dir.join("port");
    let as_root = running_as_root();

    if !data.join("PG_VERSION").exists() {
        fs::create_dir_all(&pg_dir)?;
        if as_root {
            run(Command::new("chown").arg("-R").arg("postgres:postgres").arg(&pg_dir)).context("chown to postgres")?;
            let reachable = Command::new("runuser")
                .args(["-u", "postgres", "--", "test", "-w"])
                .arg(&pg_dir)
                .status()
                .context("running runuser")?;
            if !reachable.success() {
                bail!(
                    "the postgres user cannot reach {} (a parent directory is not traversable); \
                     set LEDGER_DATA_DIR to a directory under /tmp or set DATABASE_URL",
                    pg_dir.display()
                );
            }
        }
        tracing::info!(data_dir = %data.display(), "creating the embedded PostgreSQL cluster");
        run_pg(Command::new("initdb").arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]))
        .context("initdb (are the PostgreSQL server binaries on PATH?)")?;
        let conf = data.join("postgresql.conf");
        OpenOptions::new().append(true).open(&conf)?.write_all(SERVER_SETTINGS.as_bytes())?;
        fs::write(&port_file, free_port()?.to_string())?;
    }

    let mut port: u16 = fs::read_to_string(&port_file)
        .with_context(|| format!("reading {}", port_file.display()))?
        .trim()
        .parse()
        .context("the port file holds no port")?;
    if !is_running(&data)? {
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            // Our port was taken while the cluster was stopped: move to a free one.
            port = free_port()?;
            fs::write(&port_file, port.to_string())?;
        }
        tracing::info!(port, "starting the embedded PostgreSQL");
        run_pg(
            Command::new("pg_ctl")
                .arg("start")
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(pg_dir.join("server.log"))
                .args(["-w", "-t", "60", "-o"])
                .arg(format!("-p {port}")),
        )
        .with_context(|| format!("pg_ctl start (see {})", pg_dir.join("server.log").display()))?;
    }
    Ok(Server { port })
}

/// Holds an exclusive lock on `root/pg.lock` until dropped.
fn lock(root: &Path) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.join("pg.lock"))
        .context("opening the cluster lock file")?;
    file.lock().context("locking the cluster lock file")?;
    Ok(file)
}

fn is_running(data: &Path) -> anyhow::Result<bool> {
    if !data.join("PG_VERSION").exists() {
        return Ok(false);
    }
    let output = pg_command(Command::new("pg_ctl").arg("status").arg("-D").arg(data)).output()?;
    Ok(output.status.success())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

fn running_as_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A PostgreSQL command, run as the `postgres` user when we are root.
fn pg_command(command: &mut Command) -> Command {
    if running_as_root() {
        let mut wrapped = Command::new("runuser");
        wrapped.args(["-u", "postgres", "--"]).arg(command.get_program()).args(command.get_args());
        wrapped
    } else {
        let mut plain = Command::new(command.get_program());
        plain.args(command.get_args());
        plain
    }
}

fn run_pg(command: &mut Command) -> anyhow::Result<Output> {
    run(&mut pg_command(command))
}

fn run(command: &mut Command) -> anyhow::Result<Output> {
    let output = command.output().with_context(|| format!("running {:?}", command.get_program()))?;
    if !output.status.success() {
        bail!(
            "{:?} failed ({}): {}{}",
            command.get_program(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}
