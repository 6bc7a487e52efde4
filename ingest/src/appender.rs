//! Group commit: one task per ingest instance turns concurrent requests into batched appends.
//!
//! Handlers send their event with a reply channel and wait. The task takes everything queued (up to
//! `max_batch`), appends it with one `ledger.append_events()` call (one lock, one commit, one
//! fsync) and answers each request with its own outcome. While one batch commits the next one
//! queues, so batches grow with load and the lock and fsync are paid per batch, not per event.
//! If the call fails, every request of the batch gets the error (nothing of it was committed).

use std::sync::Arc;
use std::time::Instant;

use shared::log::{AppendOutcome, NewEvent, Source, append_events};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::metrics::Metrics;

/// Why an append failed; shared by every request of the failed batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// The database is unreachable or refusing work right now.
    #[error("database unavailable")]
    Unavailable(#[source] Arc<sqlx::Error>),
    /// Any other database error.
    #[error("append failed")]
    Failed(#[source] Arc<sqlx::Error>),
    /// The appender has stopped (shutdown).
    #[error("appender stopped")]
    Stopped,
}

struct Pending {
    event: NewEvent,
    reply: oneshot::Sender<Result<AppendOutcome, AppendError>>,
}

/// The handlers' side of the appender.
#[derive(Clone)]
pub struct AppenderHandle {
    tx: mpsc::Sender<Pending>,
}

impl AppenderHandle {
    /// Queues `event` and waits until it is durable (or the batch failed).
    pub async fn append(&self, event: NewEvent) -> Result<AppendOutcome, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { event, reply }).await.map_err(|_| AppendError::Stopped)?;
        answer.await.map_err(|_| AppendError::Stopped)?
    }
}

/// Spawns `appenders` tasks sharing one queue. Two or more let one batch hash its bodies in the
/// database (before the append lock) while another holds the lock and commits, so the work is no
/// longer confined to one database backend; but each batch is then smaller, and a group commit
/// has a fixed cost. Hence the default of one: on two cores one appender spent 20-40 % less
/// database CPU per event than two (docs/benchmarks.md). The order of the log is still decided by
/// the lock, never by which task took which batch.
///
/// The tasks stop once every [`AppenderHandle`] is dropped and the queue is drained, so dropping the
/// router after a graceful HTTP shutdown finishes in-flight appends.
pub fn spawn(
    pool: PgPool,
    appenders: usize,
    max_batch: usize,
    received_by: String,
    metrics: Arc<Metrics>,
) -> (AppenderHandle, tokio::task::JoinSet<()>) {
    // Room for a few batches: beyond that, handlers wait to send (backpressure), they are not refused.
    let (tx, rx) = mpsc::channel(max_batch * 4);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..appenders.max(1) {
        tasks.spawn(run(pool.clone(), rx.clone(), max_batch, received_by.clone(), metrics.clone()));
    }
    (AppenderHandle { tx }, tasks)
}

/// Appends one batch in one call and returns one result per event, in order.
///
/// If the call fails for a reason other than unavailability, nothing of the batch was stored and
/// the culprit is unknown, so each event is retried alone: one event the database refuses (say, an
/// id too long for its index) then fails by itself instead of failing every batch that Stripe's
/// retries of it would land in.
pub async fn append_batch(
    pool: &PgPool,
    events: &[NewEvent],
    received_by: &str,
    metrics: &Metrics,
) -> Vec<Result<AppendOutcome, AppendError>> {
    match append_timed(pool, events, received_by, metrics).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(error) if shared::db::is_unavailable(&error) || events.len() == 1 => {
            tracing::error!(%error, batch_size = events.len(), "append failed, nothing of it was stored");
            vec![Err(classify(error)); events.len()]
        }
        Err(error) => {
            tracing::warn!(%error, batch_size = events.len(), "group commit failed, retrying its events one by one");
            let mut results = Vec::with_capacity(events.len());
            for event in events {
                let result = append_timed(pool, std::slice::from_ref(event), received_by, metrics).await;
                results.push(match result {
                    // append_events returns exactly one outcome per event, or an error.
                    Ok(mut outcome) => Ok(outcome.pop().expect("one outcome for one event")),
                    Err(error) => {
                        tracing::error!(%error, stripe_event_id = %event.envelope.id, "append of this event failed, it was not stored");
                        Err(classify(error))
                    }
                });
            }
            results
        }
    }
}

async fn append_timed(
    pool: &PgPool,
    events: &[NewEvent],
    received_by: &str,
    metrics: &Metrics,
) -> Result<Vec<AppendOutcome>, sqlx::Error> {
    let started = Instant::now();
    let result = append_events(pool, events, Source::Webhook, received_by)
        .instrument(tracing::info_span!("ingest.append", batch_size = events.len()))
        .await;
    metrics.batch(events.len(), started.elapsed().as_secs_f64());
    result
}

fn classify(error: sqlx::Error) -> AppendError {
    if shared::db::is_unavailable(&error) {
        AppendError::Unavailable(Arc::new(error))
    } else {
        AppendError::Failed(Arc::new(error))
    }
}

async fn run(
    pool: PgPool,
    rx: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>,
    max_batch: usize,
    received_by: String,
    metrics: Arc<Metrics>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    // The queue lock is held only while taking a batch, not while appending it.
    while rx.lock().await.recv_many(&mut batch, max_batch).await > 0 {
        let (events, replies): (Vec<NewEvent>, Vec<_>) = batch.drain(..).map(|p| (p.event, p.reply)).unzip();
        let results = append_batch(&pool, &events, &received_by, &metrics).await;
        for (reply, result) in replies.into_iter().zip(results) {
            // The requester may have gone away; a stored event is durable regardless.
            let _ = reply.send(result);
        }
    }
    tracing::info!("appender drained and stopped");
}
