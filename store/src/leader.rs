//! Leadership: a PostgreSQL session advisory lock held on a connection of its own.
//!
//! The lock lives exactly as long as that session: if the process dies or its connection breaks,
//! PostgreSQL releases it and a standby takes over. The runner and the dispatcher each lead
//! through one [`LeaderLock`] of their own name. The lock's session carries the projector's
//! [`Session`] name as its `application_name`, so anyone reading `pg_locks` can tell who leads
//! ([`holder`]) without asking that process.

use anyhow::Context;
use sqlx::{Connection, PgConnection, PgPool};

/// Leadership of the projector's runner (folding the log).
pub const RUNNER: &str = "stripe-ledger/projector";
/// Leadership of the dispatcher (carrying out intents).
pub const DISPATCHER: &str = "stripe-ledger/dispatcher";

/// A held leader lock.
#[derive(Debug)]
pub struct LeaderLock {
    conn: PgConnection,
    name: &'static str,
}

impl LeaderLock {
    /// Tries to take the lock `name` once, on a dedicated connection taken out of `pool`.
    /// `None`: another session holds it (this instance is a standby).
    pub async fn try_acquire(pool: &PgPool, name: &'static str, session: &Session) -> anyhow::Result<Option<Self>> {
        let mut conn = pool.acquire().await.context("a connection for the leader lock")?.detach();
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(session.name())
            .execute(&mut conn)
            .await
            .context("naming the leader's session")?;
        let acquired =
            sqlx::query_scalar!(r#"SELECT pg_try_advisory_lock(hashtextextended($1, 0)) AS "acquired!""#, name)
                .fetch_one(&mut conn)
                .await?;
        if !acquired {
            let _ = conn.close().await;
            return Ok(None);
        }
        Ok(Some(Self { conn, name }))
    }

    /// Fails when the lock may have been lost. The lock belongs to the session, and only this
    /// session can release it, so a session that still answers still holds it.
    pub async fn check(&mut self) -> anyhow::Result<()> {
        sqlx::query!("SELECT 1 AS one")
            .fetch_one(&mut self.conn)
            .await
            .with_context(|| format!("the connection holding {} was lost", self.name))?;
        Ok(())
    }

    /// Releases the lock by ending its session.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}

/// The name a projector's leader sessions carry (`application_name`): `projector <host> pid
/// <pid> #<n>`, `n` counting the projectors of this process (tests run several), cut to the 63
/// bytes PostgreSQL keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session(std::sync::Arc<str>);

impl Session {
    /// A name no other projector has.
    pub fn new() -> Self {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host: String = host.trim().chars().take(32).collect();
        Self(format!("projector {host} pid {} #{n}", std::process::id()).into())
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

/// The `application_name` of the session holding lock `name` in this database, as `pg_locks`
/// records it (`None`: nobody leads). Needs no privilege beyond `CONNECT`.
pub async fn holder(conn: &mut PgConnection, name: &str) -> anyhow::Result<Option<String>> {
    let holder = sqlx::query_scalar!(
        r#"SELECT coalesce(a.application_name, '') AS "name!"
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             AND l.classid = ((hashtextextended($1, 0) >> 32) & 4294967295)::oid
             AND l.objid = (hashtextextended($1, 0) & 4294967295)::oid"#,
        name
    )
    .fetch_optional(&mut *conn)
    .await
    .context("reading who holds the leader lock")?;
    Ok(holder)
}
