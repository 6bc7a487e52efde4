//! The `/v1/access` cache: each replica keeps the answers it gave, by token hash, until a write
//! that can change one commits. Writes name their customers on channel [`store::ACCESS_CHANNEL`] (triggers of
//! migration 0021); a replica drops those customers' answers when the notification arrives, all
//! answers when its listening connection breaks, and caches nothing while it is not listening
//! (docs/access.md).
//!
//! An answer read before a write committed must not be stored after its notification was applied:
//! a check takes a [`Ticket`] before it reads, and its answer is stored only if no invalidation of
//! its customer (or of everyone) came in since.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A token's SHA-256: the cache's key.
pub type TokenHash = [u8; 32];

/// Invalidations remembered for checks in flight; an older ticket stores nothing.
const RECENT: usize = 4096;

/// What a notification asks to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// These customers' answers.
    Customers(Vec<String>),
    /// Every answer.
    All,
}

impl Dropped {
    /// A notification's payload: a JSON array of customer ids, or `*`. Anything else drops
    /// everything (never keep an answer on a message we cannot read).
    pub fn parse(payload: &str) -> Self {
        match serde_json::from_str::<Vec<String>>(payload) {
            Ok(customers) => Self::Customers(customers),
            Err(_) => Self::All,
        }
    }

    /// The payload naming `customers` (as the triggers of migration 0021 build it): everyone
    /// above [`MAX_PAYLOAD`] bytes.
    pub fn payload(customers: &[String]) -> String {
        match serde_json::to_string(customers) {
            Ok(named) if named.len() <= MAX_PAYLOAD => named,
            _ => "*".to_owned(),
        }
    }
}

/// Largest payload sent (a notification's payload must stay under 8000 bytes).
const MAX_PAYLOAD: usize = 7000;

/// Notifications of [`Notifier`] are at least this far apart.
pub const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// Tells every replica which customers' answers changed, for writes too frequent to notify inside
/// their own transaction (usage counts): a notification in a transaction that writes holds a
/// database-wide lock through its commit's WAL flush, serializing every such commit. These are
/// sent after the write committed, coalesced: at most one notification per [`NOTIFY_INTERVAL`],
/// naming every customer queued meanwhile (each one wakes every listening backend and replica).
/// Lost if the process dies in between: other replicas then show the old usage for up to a minute
/// (docs/access.md).
#[derive(Debug, Clone)]
pub struct Notifier {
    queue: mpsc::UnboundedSender<String>,
}

impl Notifier {
    /// Starts the sender on `pool`; it stops when every clone is dropped.
    pub fn start(pool: PgPool) -> Self {
        let (queue, mut pending) = mpsc::unbounded_channel::<String>();
        tokio::spawn(async move {
            while let Some(first) = pending.recv().await {
                let mut customers = BTreeSet::from([first]);
                while let Ok(next) = pending.try_recv() {
                    customers.insert(next);
                }
                let customers: Vec<String> = customers.into_iter().collect();
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(store::ACCESS_CHANNEL)
                    .bind(Dropped::payload(&customers))
                    .execute(&pool)
                    .await;
                if let Err(error) = sent {
                    tracing::warn!(%error, "access cache: other replicas not told of a usage change (they catch up within a minute)");
                }
                tokio::time::sleep(NOTIFY_INTERVAL).await;
            }
        });
        Self { queue }
    }

    /// `customer`'s answers changed (its write committed).
    pub fn changed(&self, customer: &str) {
        // The sender lives as long as any clone of this.
        let _ = self.queue.send(customer.to_owned());
    }
}

/// Taken before a check reads the database; see the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    seq: u64,
}

#[derive(Debug)]
struct Entry<A> {
    customer: String,
    answer: A,
    /// When it was read (a clock set back does not reuse it) and until when it holds.
    valid: std::ops::Range<DateTime<Utc>>,
}

#[derive(Debug)]
struct Inner<A> {
    listening: bool,
    /// Invalidations so far.
    seq: u64,
    /// The last [`RECENT`] invalidations: `(seq, customer)`, `None` for everyone.
    recent: VecDeque<(u64, Option<String>)>,
    entries: HashMap<TokenHash, Entry<A>>,
    by_customer: HashMap<String, Vec<TokenHash>>,
}

/// Answers by token hash, at most `capacity` of them (emptied when full).
#[derive(Debug)]
pub struct AccessCache<A> {
    capacity: usize,
    inner: Mutex<Inner<A>>,
}

impl<A: Clone> AccessCache<A> {
    /// An empty cache, not listening yet (it stores nothing until [`Self::set_listening`]).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                listening: false,
                seq: 0,
                recent: VecDeque::new(),
                entries: HashMap::new(),
                by_customer: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<A>> {
        // Nothing here panics while holding the lock; a poisoned one is still consistent.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer for `key` if one is stored and still valid at `now`.
    pub fn get(&self, key: &TokenHash, now: DateTime<Utc>) -> Option<A> {
        let mut inner = self.lock();
        let entry = inner.entries.get(key)?;
        if entry.valid.contains(&now) {
            return Some(entry.answer.clone());
        }
        inner.remove(key);
        None
    }

    /// A ticket for a check about to read (None: not listening, store nothing).
    pub fn ticket(&self) -> Option<Ticket> {
        let inner = self.lock();
        (inner.listening && self.capacity > 0).then_some(Ticket { seq: inner.seq })
    }

    /// Stores what a check read after taking `ticket`, valid over `valid`, unless its customer was
    /// invalidated since. Returns whether it was stored.
    pub fn insert(
        &self,
        ticket: Ticket,
        key: TokenHash,
        customer: &str,
        answer: A,
        valid: std::ops::Range<DateTime<Utc>>,
    ) -> bool {
        let mut inner = self.lock();
        if !inner.listening || !inner.unchanged_since(ticket, customer) {
            return false;
        }
        if inner.entries.len() >= self.capacity {
            inner.entries.clear();
            inner.by_customer.clear();
        }
        inner.remove(&key);
        inner.by_customer.entry(customer.to_owned()).or_default().push(key);
        inner.entries.insert(key, Entry { customer: customer.to_owned(), answer, valid });
        true
    }

    /// Drops what `dropped` names.
    pub fn invalidate(&self, dropped: &Dropped) {
        let mut inner = self.lock();
        match dropped {
            Dropped::All => inner.drop_all(),
            Dropped::Customers(customers) => {
                for customer in customers {
                    inner.note(Some(customer.clone()));
                    for key in inner.by_customer.remove(customer).unwrap_or_default() {
                        inner.entries.remove(&key);
                    }
                }
            }
        }
    }

    /// Whether notifications are being received; either way everything stored is dropped (what
    /// was missed in between is unknown).
    pub fn set_listening(&self, listening: bool) {
        let mut inner = self.lock();
        inner.drop_all();
        inner.listening = listening;
    }

    /// Answers stored.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// No answer stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<A> Inner<A> {
    fn note(&mut self, customer: Option<String>) {
        self.seq += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.seq, customer));
    }

    fn drop_all(&mut self) {
        self.note(None);
        self.entries.clear();
        self.by_customer.clear();
    }

    fn unchanged_since(&self, ticket: Ticket, customer: &str) -> bool {
        if ticket.seq == self.seq {
            return true;
        }
        // Every invalidation after the ticket must still be remembered, and none may name it.
        let oldest_kept = self.recent.front().map_or(self.seq + 1, |(seq, _)| *seq);
        oldest_kept <= ticket.seq + 1
            && self
                .recent
                .iter()
                .filter(|(seq, _)| *seq > ticket.seq)
                .all(|(_, named)| named.as_deref().is_some_and(|c| c != customer))
    }

    fn remove(&mut self, key: &TokenHash) {
        let Some(entry) = self.entries.remove(key) else { return };
        if let Some(keys) = self.by_customer.get_mut(&entry.customer) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.by_customer.remove(&entry.customer);
            }
        }
    }
}

/// The cache's metrics.
#[derive(Clone, Default)]
pub struct CacheMetrics {
    lookups: Family<LookupLabel, Counter>,
    invalidations: Family<LookupLabel, Counter>,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LookupLabel {
    result: &'static str,
}

impl CacheMetrics {
    /// Registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register("access_cache_lookups", "GET /v1/access cache lookups, by result", metrics.lookups.clone());
        registry.register(
            "access_cache_invalidations",
            "Notifications applied to the /v1/access cache, by what they dropped",
            metrics.invalidations.clone(),
        );
        metrics
    }

    /// A lookup's result (`hit`, `miss`).
    pub fn lookup(&self, result: &'static str) {
        self.lookups.get_or_create(&LookupLabel { result }).inc();
    }

    fn invalidated(&self, dropped: &Dropped) {
        let result = if matches!(dropped, Dropped::All) { "all" } else { "customers" };
        self.invalidations.get_or_create(&LookupLabel { result }).inc();
    }
}

/// Keeps `cache` fed with the notifications of [`store::ACCESS_CHANNEL`] until `shutdown`: listens on a
/// connection of `pool`'s (held for as long as it listens), and when that breaks, stops caching
/// and listens again (with backoff).
pub async fn keep_listening<A: Clone>(
    pool: PgPool,
    cache: std::sync::Arc<AccessCache<A>>,
    metrics: CacheMetrics,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        let subscribed = tokio::select! {
            _ = shutdown.cancelled() => return,
            subscribed = subscribe(&pool) => subscribed,
        };
        match subscribed {
            Ok(mut listener) => {
                cache.set_listening(true);
                backoff = Duration::from_millis(100);
                let stopped = tokio::select! {
                    _ = shutdown.cancelled() => true,
                    error = apply(&mut listener, &cache, &metrics) => {
                        tracing::warn!(error, "access cache: notifications lost, caching stops until listening again");
                        false
                    }
                };
                cache.set_listening(false);
                if stopped {
                    return;
                }
            }
            Err(error) => tracing::warn!(%error, "access cache: cannot listen, checks read the database"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn subscribe(pool: &PgPool) -> sqlx::Result<PgListener> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(store::ACCESS_CHANNEL).await?;
    Ok(listener)
}

/// Applies notifications until the connection breaks; returns why.
async fn apply<A: Clone>(listener: &mut PgListener, cache: &AccessCache<A>, metrics: &CacheMetrics) -> String {
    loop {
        match listener.try_recv().await {
            Ok(Some(notification)) => {
                let dropped = Dropped::parse(notification.payload());
                cache.invalidate(&dropped);
                metrics.invalidated(&dropped);
            }
            Ok(None) => return "the listening connection closed".to_owned(),
            Err(error) => return error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn listening(capacity: usize) -> AccessCache<&'static str> {
        let cache = AccessCache::new(capacity);
        cache.set_listening(true);
        cache
    }

    fn customers(names: &[&str]) -> Dropped {
        Dropped::Customers(names.iter().map(|n| (*n).to_owned()).collect())
    }

    #[test]
    fn an_answer_is_kept_until_its_customer_is_invalidated_or_it_expires() {
        let cache = listening(10);
        let ticket = cache.ticket().expect("listening");
        assert!(cache.insert(ticket, [1; 32], "cus_a", "a1", at(0)..at(60)));
        assert!(cache.insert(cache.ticket().expect("t"), [2; 32], "cus_a", "a2", at(0)..at(60)));
        assert!(cache.insert(cache.ticket().expect("t"), [3; 32], "cus_b", "b", at(0)..at(60)));
        assert_eq!(cache.get(&[1; 32], at(0)), Some("a1"));
        assert_eq!(cache.get(&[3; 32], at(60)), None, "valid until, not at");
        assert_eq!(cache.len(), 2);
        cache.invalidate(&customers(&["cus_a", "cus_z"]));
        assert_eq!((cache.get(&[1; 32], at(0)), cache.get(&[2; 32], at(0))), (None, None), "both of its tokens");
        assert!(cache.is_empty());
    }

    #[test]
    fn a_check_that_read_before_an_invalidation_of_its_customer_stores_nothing() {
        let cache = listening(10);
        let before = cache.ticket().expect("t");
        cache.invalidate(&customers(&["cus_b"]));
        assert!(cache.insert(before, [1; 32], "cus_a", "a", at(0)..at(60)), "another customer's write does not matter");
        let before = cache.ticket().expect("t");
        cache.invalidate(&customers(&["cus_b"]));
        cache.invalidate(&customers(&["cus_a"]));
        assert!(!cache.insert(before, [2; 32], "cus_a", "stale", at(0)..at(60)));
        let before = cache.ticket().expect("t");
        cache.invalidate(&Dropped::All);
        assert!(!cache.insert(before, [2; 32], "cus_a", "stale", at(0)..at(60)), "everyone includes it");
        assert_eq!(cache.get(&[2; 32], at(0)), None);
    }

    #[test]
    fn a_ticket_older_than_what_is_remembered_stores_nothing() {
        let cache = listening(10);
        let old = cache.ticket().expect("t");
        for i in 0..RECENT {
            cache.invalidate(&customers(&[&format!("cus_{i}")]));
        }
        assert!(cache.insert(old, [1; 32], "cus_a", "a", at(0)..at(60)), "every invalidation since is remembered");
        let old = cache.ticket().expect("t");
        for i in 0..=RECENT {
            cache.invalidate(&customers(&[&format!("cus_{i}")]));
        }
        assert!(
            !cache.insert(old, [2; 32], "cus_a", "a", at(0)..at(60)),
            "one was forgotten: it might have named cus_a"
        );
    }

    #[test]
    fn nothing_is_cached_while_not_listening_and_losing_the_connection_drops_everything() {
        let cache = AccessCache::new(10);
        assert!(cache.ticket().is_none());
        cache.set_listening(true);
        let ticket = cache.ticket().expect("t");
        assert!(cache.insert(ticket, [1; 32], "cus_a", "a", at(0)..at(60)));
        let in_flight = cache.ticket().expect("t");
        cache.set_listening(false);
        assert_eq!(cache.get(&[1; 32], at(0)), None);
        assert!(!cache.insert(in_flight, [2; 32], "cus_b", "b", at(0)..at(60)));
        cache.set_listening(true);
        assert!(!cache.insert(in_flight, [2; 32], "cus_b", "b", at(0)..at(60)), "read before listening again");
        assert!(listening(0).ticket().is_none(), "capacity 0: the cache is off");
    }

    #[test]
    fn a_full_cache_starts_again_and_a_key_stored_again_replaces_its_answer() {
        let cache = listening(2);
        for (i, customer) in ["cus_a", "cus_b", "cus_c"].iter().enumerate() {
            let key = [u8::try_from(i).expect("small"); 32];
            assert!(cache.insert(cache.ticket().expect("t"), key, customer, "x", at(0)..at(60)));
        }
        assert_eq!(cache.len(), 1, "emptied when full, then the new one stored");
        assert!(cache.insert(cache.ticket().expect("t"), [2; 32], "cus_d", "y", at(0)..at(60)));
        assert_eq!(cache.get(&[2; 32], at(0)), Some("y"));
        cache.invalidate(&customers(&["cus_c"]));
        assert_eq!(cache.get(&[2; 32], at(0)), Some("y"), "the key moved to cus_d");
        cache.invalidate(&customers(&["cus_d"]));
        assert!(cache.is_empty());
    }

    #[test]
    fn payloads_name_customers_or_everyone() {
        let named = vec!["cus_a".to_owned(), "cus b".to_owned()];
        assert_eq!(Dropped::parse(&Dropped::payload(&named)), Dropped::Customers(named));
        let many: Vec<String> = (0..1000).map(|i| format!("cus_{i:08}")).collect();
        assert_eq!(Dropped::payload(&many), "*", "too long for one notification");
        assert_eq!(Dropped::parse(r#"["cus_a","cus b"]"#), customers(&["cus_a", "cus b"]));
        assert_eq!(Dropped::parse("*"), Dropped::All);
        assert_eq!(Dropped::parse("garbage"), Dropped::All, "unreadable: drop everything");
    }
}
