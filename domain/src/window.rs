//! The live projector's working set: per batch, only the rows its events read, so the projector's
//! memory does not grow with the number of customers (`docs/projector.md`, "Per-batch loading").
//!
//! The fold reads the projections only through a [`crate::state::View`], which notes every key it asks for. A
//! batch is folded against a window: the rows of the keys loaded so far. When the fold asked for a
//! key the window does not hold, the attempt is dropped, the missing keys are loaded (from the
//! [`Cache`], else from the tables) and the batch is folded again. An attempt that asked for no
//! missing key read only rows that are exactly as in the whole state, so it is the fold over the
//! whole state: live equals rebuild. Pure: the runner does the loading ([`crate::store::load_keys`]).

use std::collections::BTreeMap;

use crate::catalog::Catalog;
use crate::stripe;

use crate::fold::{Decoded, FoldConfig};
use crate::state::{Changes, Intent, Kind, Projections, Reads, with_prefix};

/// Rows of recent batches as committed: a batch's window takes them before it reads the tables.
/// Bounded: past `capacity` keys it is emptied, and the next batches read the tables again. Valid
/// while this runner is the only writer of the tables (the runner empties it whenever that may
/// not hold: takeover, a failed batch, a checkpoint or build it did not write).
#[derive(Debug, Default)]
pub struct Cache {
    rows: Projections,
    held: Reads,
    capacity: usize,
}

impl Cache {
    /// An empty cache of at most `capacity` keys (0: none kept).
    pub fn new(capacity: usize) -> Self {
        Self { capacity, ..Self::default() }
    }

    /// Keys held (present or known absent).
    pub fn len(&self) -> usize {
        self.held.len().max(self.rows.len())
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies into `window` the rows of the keys of `wanted` the cache holds; returns the others.
    fn fill(&self, wanted: &Reads, window: &mut Projections) -> Reads {
        let (mut found, mut missing) = (Reads::default(), Reads::default());
        for kind in Kind::ALL {
            for key in wanted.of(kind) {
                let into = if self.held.of(kind).contains(key) { &mut found } else { &mut missing };
                into.of_mut(kind).insert(key.clone());
            }
        }
        if !found.is_empty() {
            window.absorb(self.rows.select(&found));
        }
        missing
    }

    /// Keeps a committed batch: the rows it loaded and the rows it changed, as `state` (the batch's
    /// window after the fold) has them.
    pub fn keep(&mut self, state: &Projections, loaded: &Reads, changes: &Changes) {
        let mut keys = loaded.clone();
        keys.extend(changes.clone());
        commit_keys(&mut self.rows, state, &keys);
        self.held.extend(keys);
        if self.len() > self.capacity {
            *self = Self::new(self.capacity);
        }
    }
}

/// Makes the rows of `keys` in `tables` what they are in `state` (absent there: removed).
fn commit_keys(tables: &mut Projections, state: &Projections, keys: &Reads) {
    let rows = state.select(keys);
    set(&mut tables.accounts, &rows.accounts, &keys.accounts);
    set(&mut tables.instances, &rows.instances, &keys.instances);
    set(&mut tables.tokens, &rows.tokens, &keys.tokens);
    set(&mut tables.credit_grants, &rows.credit_grants, &keys.credit_grants);
    for (key, grant) in &rows.credit_grants {
        tables.grants_by_customer.entry(grant.stripe_customer_id.clone()).or_default().insert(key.clone());
    }
    set(&mut tables.anomalies, &rows.anomalies, &keys.anomalies);
    for prefix in &keys.anomaly_prefixes {
        let stale: Vec<String> = with_prefix(&tables.anomalies, prefix).map(|(k, _)| k.clone()).collect();
        set(&mut tables.anomalies, &rows.anomalies, &stale);
        set(&mut tables.anomalies, &rows.anomalies, with_prefix(&rows.anomalies, prefix).map(|(k, _)| k));
    }
    set(&mut tables.prices, &rows.prices, &keys.prices);
    set(&mut tables.discounts, &rows.discounts, &keys.discounts);
    set(&mut tables.revenue, &rows.revenue, &keys.revenue);
    set(&mut tables.mrr_movements, &rows.mrr_movements, &keys.mrr_movements);
    for row in rows.subscriptions.into_values() {
        tables.put_subscription(row);
    }
}

fn set<'k, V: Clone>(
    tables: &mut BTreeMap<String, V>,
    rows: &BTreeMap<String, V>,
    keys: impl IntoIterator<Item = &'k String>,
) {
    for key in keys {
        match rows.get(key) {
            Some(value) => tables.insert(key.clone(), value.clone()),
            None => tables.remove(key),
        };
    }
}

/// The image of [`crate::store::write_changes`] on a whole state standing in for the tables.
pub fn write_changes(tables: &mut Projections, state: &Projections, changes: &Changes) {
    commit_keys(tables, state, changes);
}

/// A batch of events folded against a window that grows until the fold misses nothing.
pub struct Batch<'e> {
    events: &'e [(i64, &'e [u8])],
    decoded: Vec<Decoded>,
    window: Projections,
    loaded: Reads,
    rounds: usize,
}

/// A batch folded with every row it read.
#[derive(Debug)]
pub struct Folded {
    /// The window after the fold: holds every changed row.
    pub state: Projections,
    /// The keys the window was loaded with.
    pub loaded: Reads,
    /// The keys changed.
    pub changes: Changes,
    /// The intents raised, with their positions.
    pub intents: Vec<(i64, Intent)>,
    /// Fold attempts it took.
    pub rounds: usize,
}

impl<'e> Batch<'e> {
    /// More attempts than any chain of reads in the fold needs: beyond, the batch fails.
    pub const MAX_ROUNDS: usize = 16;

    /// A batch of `(position, raw body)`, decoded once.
    pub fn new(events: &'e [(i64, &'e [u8])]) -> Self {
        let decoded = events.iter().map(|(_, raw)| stripe::decode(raw)).collect();
        Self { events, decoded, window: Projections::default(), loaded: Reads::default(), rounds: 0 }
    }

    /// Folds the batch over the window (a copy of it: the window stays as loaded). Err: the keys
    /// the fold asked for that the window lacks; hand them to [`Batch::from_cache`].
    pub fn fold(&mut self, catalog: &Catalog, config: &FoldConfig) -> Result<Folded, Box<Reads>> {
        self.rounds += 1;
        let mut state = self.window.clone();
        let events = self.events.iter().zip(&self.decoded).map(|(&(position, raw), decoded)| {
            // A decode error is not Clone: decode that body again (it fails the same way).
            let decoded = match decoded {
                Ok(event) => Ok(event.clone()),
                Err(_) => stripe::decode(raw),
            };
            (position, decoded)
        });
        let (changes, intents, misses) = state.fold_window_batch(&self.loaded, events, catalog, config);
        if !misses.is_empty() {
            return Err(Box::new(misses));
        }
        Ok(Folded { state, loaded: self.loaded.clone(), changes, intents, rounds: self.rounds })
    }

    /// Takes the rows of `misses` the cache holds into the window; returns the keys to read from
    /// the tables and hand to [`Batch::add`].
    pub fn from_cache(&mut self, cache: &Cache, misses: Box<Reads>) -> Reads {
        let rest = cache.fill(&misses, &mut self.window);
        self.loaded.extend(*misses);
        rest
    }

    /// Adds the rows read from the tables.
    pub fn add(&mut self, rows: Projections) {
        self.window.absorb(rows);
    }

    /// Fold attempts so far.
    pub fn rounds(&self) -> usize {
        self.rounds
    }
}

/// Folds a batch as the runner does, with `tables` (a whole state) standing in for the database.
pub fn fold_with(
    cache: &Cache,
    tables: &Projections,
    events: &[(i64, &[u8])],
    catalog: &Catalog,
    config: &FoldConfig,
) -> Folded {
    let mut batch = Batch::new(events);
    loop {
        match batch.fold(catalog, config) {
            Ok(folded) => return folded,
            Err(misses) => {
                assert!(batch.rounds() < Batch::MAX_ROUNDS, "the fold keeps missing rows: {misses:?}");
                let rest = batch.from_cache(cache, misses);
                batch.add(tables.select(&rest));
            }
        }
    }
}
