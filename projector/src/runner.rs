//! The runner: one active projector folds the log into the projection tables.
//!
//! Leadership is a session advisory lock held on a dedicated connection; other instances wait as
//! hot standbys and take over when the leader's connection ends. Each batch is one transaction:
//! lock the checkpoint row (fencing: a second projector waits, then sees the advanced position),
//! read `position > checkpoint`, fold, write the changed rows, the intents and the checkpoint,
//! commit. The fold reads only the rows its batch's events need ([`domain::window`]), from a bounded
//! cache of recent rows or else from the tables; the cache is emptied whenever it may differ from
//! the tables (takeover, a failed batch, a checkpoint moved by someone else).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use domain::catalog::Catalog;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use domain::fold::FoldConfig;
use domain::window::{Batch, Cache, Folded};
use store::CHECKPOINT;
use store::leader::{self, LeaderLock};

/// How often standbys retry leadership and the leader polls without a notification.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabel {
    event_type: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

/// What the runner reports, shared with the HTTP handlers.
#[derive(Debug, Default)]
pub struct RunnerStatus {
    /// The name this projector's leader sessions carry.
    pub session: leader::Session,
    /// This instance holds leadership.
    pub leader: AtomicBool,
    /// The projections were built with another catalog (a rebuild settles it).
    pub catalog_mismatch: AtomicBool,
    /// The projections were built with other fold settings (a rebuild settles it).
    pub settings_mismatch: AtomicBool,
    /// Last committed checkpoint.
    pub checkpoint: AtomicI64,
    lag_events: Gauge,
    lag_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    applied: Family<TypeLabel, Counter>,
    anomalies: Family<KindLabel, Gauge>,
    batch_errors: Counter,
    quarantined: Counter,
    leader_gauge: Gauge,
    cache_rows: Gauge,
    rows_read: Counter,
}

impl RunnerStatus {
    /// Registers the metrics.
    pub fn register(&self, registry: &mut Registry) {
        registry.register("projector_lag_events", "Events in the log not yet projected", self.lag_events.clone());
        registry.register(
            "projector_lag_seconds",
            "While events wait: seconds since the last projected event was received (the oldest waiting one arrived no earlier); 0 when caught up",
            self.lag_seconds.clone(),
        );
        registry.register("projector_events_applied", "Events folded, by type", self.applied.clone());
        registry.register("projector_anomalies", "Open anomalies, by kind", self.anomalies.clone());
        registry.register("projector_batch_errors", "Batches that failed and were retried", self.batch_errors.clone());
        registry.register(
            "projector_quarantined_events",
            "Events passed over because they could not be projected (see the quarantined anomalies)",
            self.quarantined.clone(),
        );
        registry.register("projector_cache_rows", "Rows the fold keeps between batches", self.cache_rows.clone());
        registry.register(
            "projector_rows_read",
            "Projection rows the fold read from the tables (not found in its cache)",
            self.rows_read.clone(),
        );
        registry.register(
            "projector_leader",
            "1 while this instance is the active projector",
            self.leader_gauge.clone(),
        );
    }
}

/// The runner's settings.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Events per transaction.
    pub batch_size: usize,
    /// Rows kept between batches ([`Cache`]).
    pub cache_rows: usize,
    /// Fold settings.
    pub fold: FoldConfig,
}

/// Runs until `shutdown`: waits for leadership, then projects.
pub async fn run(
    pool: PgPool,
    catalog: Arc<Catalog>,
    settings: RunnerSettings,
    status: Arc<RunnerStatus>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match lead(&pool, &catalog, &settings, &status, &wake, &shutdown).await {
            Ok(()) => {}
            Err(error) => {
                status.batch_errors.inc();
                tracing::error!(error = format!("{error:#}"), "projector stopped leading, will retry");
            }
        }
        set_leader(&status, false);
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
    tracing::info!("projector stopped");
}

fn set_leader(status: &RunnerStatus, leader: bool) {
    status.leader.store(leader, Ordering::Relaxed);
    status.leader_gauge.set(i64::from(leader));
}

/// Tries to lead once; returns when leadership is lost, on shutdown, or when not acquired.
async fn lead(
    pool: &PgPool,
    catalog: &Catalog,
    settings: &RunnerSettings,
    status: &RunnerStatus,
    wake: &Notify,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let Some(mut lock) = LeaderLock::try_acquire(pool, leader::RUNNER, &status.session).await? else {
        return Ok(()); // standby: the caller retries after POLL_INTERVAL
    };
    set_leader(status, true);
    tracing::info!("this projector is now the active one");
    let mut listener = PgListener::connect_with(pool).await.context("LISTEN connection")?;
    listener.listen("ledger_events").await?;
    let mut state: Option<(Cache, i64, String)> = None;
    let mut quarantine = Quarantine::default();
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // Still leader? (A broken lock connection means another instance may lead now.)
        lock.check().await?;
        let limit = quarantine.batch_limit(settings.batch_size);
        let folded = match batch(pool, catalog, settings, limit, status, &mut state).await {
            Ok(folded) => {
                quarantine.succeeded(folded);
                if folded > 0 {
                    wake.notify_one(); // the dispatcher looks at the new intents now
                }
                folded
            }
            Err(error) => {
                // Nothing of the batch was committed; empty the cache to be safe.
                state = None;
                status.batch_errors.inc();
                let message = format!("{error:#}");
                if is_unavailable(&error) {
                    tracing::warn!(error = message, "database unavailable, retrying the batch from the checkpoint");
                } else if quarantine.failed(limit, settings.batch_size) {
                    quarantine_next(pool, &message).await?;
                    status.quarantined.inc();
                    continue;
                } else {
                    tracing::error!(
                        error = message,
                        limit,
                        "batch failed, retrying from the checkpoint event by event"
                    );
                }
                0
            }
        };
        if folded == 0 {
            // Caught up (or failed): wait for a notification, the poll interval or shutdown.
            tokio::select! {
                _ = shutdown.cancelled() => break,
                notification = listener.recv() => {
                    if let Err(error) = notification {
                        tracing::warn!(%error, "notification listener failed, polling until it reconnects");
                        tokio::time::sleep(POLL_INTERVAL).await;
                    }
                }
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    }
    lock.release().await;
    Ok(())
}

/// One event must never stop the projections of everyone else. After a batch fails for a reason
/// other than an unreachable database, the next `batch_size` events are folded one per batch; when
/// a one-event batch fails [`Quarantine::ATTEMPTS`] times, that event is quarantined: recorded as a
/// `quarantined` anomaly (with the error) and passed over, and the projector goes on.
#[derive(Debug, Default)]
struct Quarantine {
    /// Events still to fold one at a time.
    careful: usize,
    /// Consecutive failures of a one-event batch.
    failures: u32,
}

impl Quarantine {
    const ATTEMPTS: u32 = 3;

    fn batch_limit(&self, batch_size: usize) -> usize {
        if self.careful > 0 { 1 } else { batch_size }
    }

    fn succeeded(&mut self, folded: usize) {
        self.careful = self.careful.saturating_sub(folded);
        self.failures = 0;
    }

    /// Records a failed batch of `limit` events; true when the next event is to be quarantined.
    fn failed(&mut self, limit: usize, batch_size: usize) -> bool {
        if limit > 1 {
            self.careful = batch_size;
            return false;
        }
        self.failures += 1;
        if self.failures < Self::ATTEMPTS {
            return false;
        }
        self.failures = 0;
        self.careful = self.careful.saturating_sub(1);
        true
    }
}

/// True when the error means the database is unreachable (retry; never quarantine for it).
fn is_unavailable(error: &anyhow::Error) -> bool {
    error.chain().filter_map(|e| e.downcast_ref::<sqlx::Error>()).any(shared::db::is_unavailable)
}

/// Passes over the event after the checkpoint: a `quarantined` anomaly names it and the error, and
/// the checkpoint moves past it, in one transaction.
async fn quarantine_next(pool: &PgPool, error: &str) -> anyhow::Result<()> {
    let mut tx = pool.begin().await?;
    let checkpoint = store::lock_checkpoint(&mut tx, CHECKPOINT).await?.context("checkpoint row")?;
    let Some(position) =
        sqlx::query_scalar!("SELECT min(position) FROM ledger.events WHERE position > $1", checkpoint.position)
            .fetch_one(&mut *tx)
            .await?
    else {
        return Ok(());
    };
    let detail: String =
        format!("event at position {position} could not be projected: {error}").chars().take(2000).collect();
    sqlx::query!(
        "INSERT INTO projection.anomalies (key, kind, detail, position) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET detail = EXCLUDED.detail",
        format!("{QUARANTINED}:{position}"),
        QUARANTINED,
        detail.replace('\0', ""),
        position
    )
    .execute(&mut *tx)
    .await?;
    // The hash the rows were built with stays: another catalog shows as a mismatch until a rebuild.
    store::save_checkpoint(&mut tx, CHECKPOINT, position, &checkpoint.catalog_hash).await?;
    tx.commit().await?;
    tracing::error!(position, error, "event quarantined: recorded as an anomaly and passed over");
    Ok(())
}

pub use store::QUARANTINED;

/// Folds one batch of at most `limit` events in one transaction; returns how many it folded. A
/// panic in the fold is an error of this batch (and its event can be quarantined), not the end of
/// the runner.
async fn batch(
    pool: &PgPool,
    catalog: &Catalog,
    settings: &RunnerSettings,
    limit: usize,
    status: &RunnerStatus,
    state: &mut Option<(Cache, i64, String)>,
) -> anyhow::Result<usize> {
    let mut tx = pool.begin().await?;
    let settings_hash = settings.fold.hash();
    sqlx::query!(
        "INSERT INTO projection.checkpoint (name, position, catalog_hash, fold_settings_hash) VALUES ($1, 0, $2, $3)
         ON CONFLICT (name) DO UPDATE SET fold_settings_hash = EXCLUDED.fold_settings_hash
         WHERE projection.checkpoint.fold_settings_hash = ''",
        CHECKPOINT,
        catalog.hash(),
        settings_hash
    )
    .execute(&mut *tx)
    .await?;
    let store::Checkpoint { position: checkpoint, catalog_hash: built_with, build_id, fold_settings_hash } =
        store::lock_checkpoint(&mut tx, CHECKPOINT).await?.context("checkpoint row")?;
    if fold_settings_hash != settings_hash && !status.settings_mismatch.swap(true, Ordering::Relaxed) {
        tracing::error!(
            built_with = fold_settings_hash,
            configured = settings_hash,
            "the projections were built with other fold settings (STRIPE_LIVEMODE, GRACE_PERIOD_DAYS): run `replay rebuild`"
        );
    }
    let mismatch = built_with != catalog.hash();
    if mismatch && !status.catalog_mismatch.swap(true, Ordering::Relaxed) {
        tracing::error!(
            built_with,
            configured = catalog.hash(),
            "the projections were built with another catalog: run `replay rebuild` to rebuild them with this one"
        );
    }
    // Empty the cache when it may differ from the tables: first batch, another writer moved the
    // checkpoint, or `replay rebuild` swapped in new tables.
    let reset = state.as_ref().is_none_or(|(_, at, build)| *at != checkpoint || *build != build_id);
    if reset {
        tracing::info!(checkpoint, build_id, "projecting from the checkpoint");
        *state = Some((Cache::new(settings.cache_rows), checkpoint, build_id));
    }
    let rows = sqlx::query!(
        r#"SELECT position, event_type, raw_body, received_at FROM ledger.events
           WHERE position > $1 ORDER BY position LIMIT $2"#,
        checkpoint,
        i64::try_from(limit).unwrap_or(i64::MAX)
    )
    .fetch_all(&mut *tx)
    .await?;
    let head: i64 = sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM ledger.events"#)
        .fetch_one(&mut *tx)
        .await?;
    let Some(last) = rows.last().map(|r| r.position) else {
        if reset {
            report_anomalies(status, count_anomalies(&mut tx).await?);
        }
        tx.commit().await?;
        report_lag(status, head - checkpoint, None);
        status.checkpoint.store(checkpoint, Ordering::Relaxed);
        return Ok(0);
    };
    let Some((cache, at, _)) = state.as_mut() else { anyhow::bail!("no cache") };
    let events: Vec<(i64, &[u8])> = rows.iter().map(|r| (r.position, r.raw_body.as_slice())).collect();
    let Folded { state: window, loaded, changes, intents, .. } =
        fold_window(&mut tx, cache, &events, catalog, &settings.fold, status).await?;
    store::write_changes(&mut tx, &window, &changes).await?;
    store::record_intents(&mut tx, &intents).await?;
    // The hash the rows were built with stays: another catalog shows as a mismatch until a rebuild.
    store::save_checkpoint(&mut tx, CHECKPOINT, last, &built_with).await?;
    let anomalies = if reset || !changes.anomalies.is_empty() { Some(count_anomalies(&mut tx).await?) } else { None };
    tx.commit().await?;
    cache.keep(&window, &loaded, &changes);
    status.cache_rows.set(i64::try_from(cache.len()).unwrap_or(i64::MAX));
    *at = last;
    status.checkpoint.store(last, Ordering::Relaxed);
    for row in &rows {
        status.applied.get_or_create(&TypeLabel { event_type: row.event_type.clone() }).inc();
    }
    if let Some(by_kind) = anomalies {
        report_anomalies(status, by_kind);
    }
    let oldest_pending = if head > last { rows.last().map(|r| r.received_at) } else { None };
    report_lag(status, head - last, oldest_pending);
    tracing::debug!(from = checkpoint + 1, to = last, intents = intents.len(), "batch projected");
    Ok(rows.len())
}

/// Folds a batch over the rows its events read: from the cache, else from the tables, loaded
/// until the fold misses none. A panic in the fold is an error of this batch.
async fn fold_window(
    tx: &mut sqlx::PgConnection,
    cache: &Cache,
    events: &[(i64, &[u8])],
    catalog: &Catalog,
    config: &FoldConfig,
    status: &RunnerStatus,
) -> anyhow::Result<Folded> {
    let (first, last) = (events.first().map_or(0, |e| e.0), events.last().map_or(0, |e| e.0));
    let panicked = || anyhow::anyhow!("the fold panicked on positions {first}..={last}");
    let mut batch =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Batch::new(events))).map_err(|_| panicked())?;
    loop {
        let misses = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batch.fold(catalog, config))) {
            Err(_) => return Err(panicked()),
            Ok(Ok(folded)) => return Ok(folded),
            Ok(Err(misses)) => misses,
        };
        if batch.rounds() >= Batch::MAX_ROUNDS {
            anyhow::bail!("positions {first}..={last}: the fold still misses rows after {} rounds", batch.rounds());
        }
        let rest = batch.from_cache(cache, misses);
        if !rest.is_empty() {
            let rows = store::load_keys(&mut *tx, &rest).await?;
            status.rows_read.inc_by(u64::try_from(rows.len()).unwrap_or(0));
            batch.add(rows);
        }
    }
}

/// Open anomalies by kind.
async fn count_anomalies(tx: &mut sqlx::PgConnection) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT kind, count(*) FROM projection.anomalies GROUP BY kind").fetch_all(&mut *tx).await
}

fn report_anomalies(status: &RunnerStatus, by_kind: Vec<(String, i64)>) {
    status.anomalies.clear();
    for (kind, count) in by_kind {
        status.anomalies.get_or_create(&KindLabel { kind }).set(count);
    }
}

fn report_lag(status: &RunnerStatus, events: i64, oldest_pending: Option<chrono::DateTime<chrono::Utc>>) {
    status.lag_events.set(events);
    let seconds = oldest_pending.map_or(0.0, |t| (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0);
    status.lag_seconds.set(seconds.max(0.0));
}
