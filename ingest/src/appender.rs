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

/// Spawns `appenders` tasks sharing one queue. Two or more let one batch parse and hash its
/// events in the database (before the append lock) while another holds the lock and commits, so
/// the work is no longer confined to one database backend. The order of the log is still decided
/// by the lock, never by which task took which batch.
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
        let started = Instant::now();
        let result = append_events(&pool, &events, Source::Webhook, &received_by)
            .instrument(tracing::info_span!("ingest.append", batch_size = events.len()))
            .await;
        metrics.batch(events.len(), started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    // The requester may have gone away; its event is durable regardless.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                let unavailable = shared::db::is_unavailable(&error);
                tracing::error!(error = %error, batch_size = events.len(), unavailable, "group commit failed, nothing of the batch was stored");
                let error = Arc::new(error);
                let shared_error =
                    if unavailable { AppendError::Unavailable(error) } else { AppendError::Failed(error) };
                for reply in replies {
                    let _ = reply.send(Err(shared_error.clone()));
                }
            }
        }
    }
    tracing::info!("appender drained and stopped");
}
