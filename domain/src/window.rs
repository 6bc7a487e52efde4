//! The live projector's working set: per batch, only the rows its events read, so the projector's
//! memory does not grow with the number of customers (`docs/projector.md`, "Per-batch loading").
//!
//! The fold reads the projections only through a [`View`], which notes every key it asks for. A
//! batch is folded against a window: the rows of the keys loaded so far. When the fold asked for a
//! key the window does not hold, the attempt is dropped, the missing keys are loaded (from the
//! [`Cache`], else from the tables) and the batch is folded again. An attempt that asked for no
//! missing key read only rows that are exactly as in the whole state, so it is the fold over the
//! whole state: live equals rebuild. Pure: the runner does the loading ([`crate::store::load_keys`]).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::Catalog;
use crate::stripe;

use crate::fold::{Account, Changes, Decoded, FoldConfig, Instance, Intent, Projections, SubscriptionRow, TokenWant};

/// Keys of the projections, by what the fold asks for: what a window holds, or what it missed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reads {
    /// Account rows, by customer id.
    pub accounts: BTreeSet<String>,
    /// Subscription rows, by subscription id.
    pub subscriptions: BTreeSet<String>,
    /// Customers all of whose subscription rows are asked for.
    pub customer_subscriptions: BTreeSet<String>,
    /// Instance targets, by subscription id.
    pub instances: BTreeSet<String>,
    /// Token wants, by customer id.
    pub tokens: BTreeSet<String>,
    /// Grants, by key.
    pub credit_grants: BTreeSet<String>,
    /// Anomalies, by key.
    pub anomalies: BTreeSet<String>,
    /// Anomalies whose key starts with one of these.
    pub anomaly_prefixes: BTreeSet<String>,
}

/// One set of [`Reads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// [`Reads::accounts`].
    Account,
    /// [`Reads::subscriptions`].
    Subscription,
    /// [`Reads::customer_subscriptions`].
    CustomerSubscriptions,
    /// [`Reads::instances`].
    Instance,
    /// [`Reads::tokens`].
    Token,
    /// [`Reads::credit_grants`].
    CreditGrant,
    /// [`Reads::anomalies`].
    Anomaly,
    /// [`Reads::anomaly_prefixes`].
    AnomalyPrefix,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 8] = [
        Kind::Account,
        Kind::Subscription,
        Kind::CustomerSubscriptions,
        Kind::Instance,
        Kind::Token,
        Kind::CreditGrant,
        Kind::Anomaly,
        Kind::AnomalyPrefix,
    ];
}

impl Reads {
    /// The keys of one kind.
    pub fn of(&self, kind: Kind) -> &BTreeSet<String> {
        match kind {
            Kind::Account => &self.accounts,
            Kind::Subscription => &self.subscriptions,
            Kind::CustomerSubscriptions => &self.customer_subscriptions,
            Kind::Instance => &self.instances,
            Kind::Token => &self.tokens,
            Kind::CreditGrant => &self.credit_grants,
            Kind::Anomaly => &self.anomalies,
            Kind::AnomalyPrefix => &self.anomaly_prefixes,
        }
    }

    fn of_mut(&mut self, kind: Kind) -> &mut BTreeSet<String> {
        match kind {
            Kind::Account => &mut self.accounts,
            Kind::Subscription => &mut self.subscriptions,
            Kind::CustomerSubscriptions => &mut self.customer_subscriptions,
            Kind::Instance => &mut self.instances,
            Kind::Token => &mut self.tokens,
            Kind::CreditGrant => &mut self.credit_grants,
            Kind::Anomaly => &mut self.anomalies,
            Kind::AnomalyPrefix => &mut self.anomaly_prefixes,
        }
    }

    /// True when no key is named.
    pub fn is_empty(&self) -> bool {
        Kind::ALL.iter().all(|&kind| self.of(kind).is_empty())
    }

    /// Keys named in total.
    pub fn len(&self) -> usize {
        Kind::ALL.iter().map(|&kind| self.of(kind).len()).sum()
    }

    /// Adds the keys of `other`.
    pub fn extend(&mut self, mut other: Reads) {
        for kind in Kind::ALL {
            let keys = std::mem::take(other.of_mut(kind));
            self.of_mut(kind).extend(keys);
        }
    }
}

/// The projections as one fold sees them: the whole state, or a window that notes what it misses.
pub struct View<'a> {
    rows: &'a Projections,
    loaded: Option<&'a Reads>,
    misses: RefCell<Reads>,
}

impl<'a> View<'a> {
    /// The whole state: nothing is missing.
    pub fn whole(rows: &'a Projections) -> Self {
        Self { rows, loaded: None, misses: RefCell::default() }
    }

    /// A window holding the rows of `loaded` (and what the batch applied since).
    pub fn window(rows: &'a Projections, loaded: &'a Reads) -> Self {
        Self { rows, loaded: Some(loaded), misses: RefCell::default() }
    }

    /// The keys asked for that the window does not hold.
    pub fn into_misses(self) -> Reads {
        self.misses.into_inner()
    }

    fn note(&self, kind: Kind, key: &str) {
        if let Some(loaded) = self.loaded
            && !loaded.of(kind).contains(key)
        {
            self.misses.borrow_mut().of_mut(kind).insert(key.to_owned());
        }
    }

    /// The account of a customer.
    pub fn account(&self, id: &str) -> Option<&'a Account> {
        self.note(Kind::Account, id);
        self.rows.accounts.get(id)
    }

    /// A subscription row.
    pub fn subscription(&self, id: &str) -> Option<&'a SubscriptionRow> {
        self.note(Kind::Subscription, id);
        self.rows.subscriptions.get(id)
    }

    /// Every subscription row of a customer.
    pub fn subscriptions_of(&self, customer: &str) -> impl Iterator<Item = &'a SubscriptionRow> + use<'a> {
        self.note(Kind::CustomerSubscriptions, customer);
        let rows = self.rows;
        rows.subscriptions_by_customer.get(customer).into_iter().flatten().filter_map(|id| rows.subscriptions.get(id))
    }

    /// The instance target of a subscription.
    pub fn instance(&self, id: &str) -> Option<&'a Instance> {
        self.note(Kind::Instance, id);
        self.rows.instances.get(id)
    }

    /// The token want of a customer.
    pub fn token(&self, customer: &str) -> Option<&'a TokenWant> {
        self.note(Kind::Token, customer);
        self.rows.tokens.get(customer)
    }

    /// Whether a grant exists.
    pub fn has_grant(&self, key: &str) -> bool {
        self.note(Kind::CreditGrant, key);
        self.rows.credit_grants.contains_key(key)
    }

    /// Whether an anomaly is open.
    pub fn has_anomaly(&self, key: &str) -> bool {
        self.note(Kind::Anomaly, key);
        self.rows.anomalies.contains_key(key)
    }

    /// The keys of the open anomalies that start with `prefix`.
    pub fn anomalies_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.note(Kind::AnomalyPrefix, prefix);
        with_prefix(&self.rows.anomalies, prefix).map(|(key, _)| key.clone()).collect()
    }
}

fn with_prefix<'m, V>(map: &'m BTreeMap<String, V>, prefix: &str) -> impl Iterator<Item = (&'m String, &'m V)> {
    let prefix = prefix.to_owned();
    map.range(prefix.clone()..).take_while(move |(key, _)| key.starts_with(&prefix))
}

impl Projections {
    /// The rows of `keys`: what [`crate::store::load_keys`] reads from the tables (the
    /// specification of it, and the loader of the tests).
    pub fn select(&self, keys: &Reads) -> Projections {
        let mut out = Projections::default();
        copy(&self.accounts, &mut out.accounts, &keys.accounts);
        copy(&self.subscriptions, &mut out.subscriptions, &keys.subscriptions);
        for customer in &keys.customer_subscriptions {
            for id in self.subscriptions_by_customer.get(customer).into_iter().flatten() {
                copy(&self.subscriptions, &mut out.subscriptions, std::iter::once(id));
            }
        }
        copy(&self.instances, &mut out.instances, &keys.instances);
        copy(&self.tokens, &mut out.tokens, &keys.tokens);
        copy(&self.credit_grants, &mut out.credit_grants, &keys.credit_grants);
        copy(&self.anomalies, &mut out.anomalies, &keys.anomalies);
        for prefix in &keys.anomaly_prefixes {
            out.anomalies.extend(with_prefix(&self.anomalies, prefix).map(|(k, v)| (k.clone(), v.clone())));
        }
        out.reindex();
        out
    }

    /// Adds the rows of `other` (rows of keys this one does not hold).
    pub fn absorb(&mut self, other: Projections) {
        self.accounts.extend(other.accounts);
        self.subscriptions.extend(other.subscriptions);
        self.instances.extend(other.instances);
        self.tokens.extend(other.tokens);
        self.credit_grants.extend(other.credit_grants);
        self.anomalies.extend(other.anomalies);
        self.reindex();
    }

    /// True when no row is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows held, all tables together.
    pub fn len(&self) -> usize {
        self.accounts.len()
            + self.subscriptions.len()
            + self.instances.len()
            + self.tokens.len()
            + self.credit_grants.len()
            + self.anomalies.len()
    }
}

fn copy<'k, V: Clone>(
    from: &BTreeMap<String, V>,
    to: &mut BTreeMap<String, V>,
    keys: impl IntoIterator<Item = &'k String>,
) {
    for key in keys {
        if let Some(value) = from.get(key) {
            to.insert(key.clone(), value.clone());
        }
    }
}

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
