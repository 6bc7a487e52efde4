//! Leadership: a PostgreSQL session advisory lock held on a connection of its own.
//!
//! The lock lives exactly as long as that session: if the process dies or its connection breaks,
//! PostgreSQL releases it and a standby takes over. The runner and the dispatcher each lead
//! through one [`LeaderLock`] of their own name.

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
    pub async fn try_acquire(pool: &PgPool, name: &'static str) -> anyhow::Result<Option<Self>> {
        let mut conn = pool.acquire().await.context("a connection for the leader lock")?.detach();
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
