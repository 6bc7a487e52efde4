//! What `/readyz` and the console's overview say about the fold, read from the database (the
//! checkpoint's catalog hash, the leader lock in `pg_locks`), never from another role's memory:
//! an API-only replica answers the same as the process that folds.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::PgPool;

/// The fold as the database shows it to this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldState {
    /// The session holding the runner's leader lock (`None`: no projector folds).
    pub leader: Option<String>,
    /// That session is this process's.
    pub leads_here: bool,
    /// The projections were built with another catalog than this process's.
    pub catalog_mismatch: bool,
    /// The projections were built with other fold settings than this process's
    /// (`STRIPE_LIVEMODE`, `GRACE_PERIOD_DAYS`): a rebuild is needed.
    pub settings_mismatch: bool,
}

/// Health of this process and of the fold.
#[derive(Clone)]
pub struct Health {
    pool: PgPool,
    catalog_hash: String,
    settings_hash: String,
    session: store::leader::Session,
    stopping: Arc<AtomicBool>,
}

impl Health {
    /// Reads on `pool`; `catalog_hash` and `settings_hash` are this process's catalog and fold
    /// settings, `session` the name its leader sessions carry.
    pub fn new(pool: PgPool, catalog_hash: String, settings_hash: String, session: store::leader::Session) -> Self {
        Self { pool, catalog_hash, settings_hash, session, stopping: Arc::default() }
    }

    /// This process's catalog hash.
    pub fn catalog_hash(&self) -> &str {
        &self.catalog_hash
    }

    /// Marks the process as stopping (a supervised task ended on its own): `/readyz` fails.
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether the process is stopping.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Who folds, and with which catalog and fold settings, as the database holds it.
    pub async fn fold(&self) -> anyhow::Result<FoldState> {
        let mut conn = self.pool.acquire().await?;
        let leader = store::leader::holder(&mut conn, store::leader::RUNNER).await?;
        let built_with = sqlx::query!(
            "SELECT catalog_hash, fold_settings_hash FROM projection.checkpoint WHERE name = $1",
            store::CHECKPOINT
        )
        .fetch_optional(&mut *conn)
        .await?;
        Ok(FoldState {
            leads_here: leader.as_deref() == Some(self.session.name()),
            leader,
            catalog_mismatch: built_with.as_ref().is_some_and(|b| b.catalog_hash != self.catalog_hash),
            // '' is a checkpoint of before the hash was recorded: the next runner adopts its own.
            settings_mismatch: built_with
                .as_ref()
                .is_some_and(|b| !b.fold_settings_hash.is_empty() && b.fold_settings_hash != self.settings_hash),
        })
    }
}
