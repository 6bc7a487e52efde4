//! The fold's state: the rows of the projections ([`Projections`], one type per table), what one
//! event changes ([`Delta`]), the keys a fold reads or a batch changes ([`Reads`]), the rules
//! every reader of a subscription row shares ([`SubscriptionRow::entitled_until`]), and the
//! [`View`] the fold reads them through. The fold (`crate::fold`) and the live projector's working
//! set (`crate::window`) both build on it; it imports neither.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::{Limits, UNKNOWN_TIER};
use crate::keys::{EffectKey, FetchKey, IntentKind, MailKey, Subject, TokenKey};
use crate::stripe::{self, SubscriptionStatus};

/// Which snapshot of an object is newest: Stripe's `created`, then precedence, then log position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Version {
    /// The event's `created`.
    pub created: i64,
    /// Precedence within one second (later lifecycle states rank higher).
    pub rank: u8,
    /// Log position.
    pub position: i64,
}

/// `projection.prices`: what a price charges, from Stripe's own objects (price events and the
/// prices embedded in subscriptions), never typed by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRow {
    /// The price as the newest snapshot describes it.
    pub price: stripe::Price,
    /// Version of that snapshot.
    pub version: Version,
}

/// `projection.discounts`: a discount (a coupon applied to a customer or a subscription), from
/// `customer.discount.*` events and the discounts subscriptions carry expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscountRow {
    /// The discount as the newest snapshot describes it (its `id` is set).
    pub discount: stripe::Discount,
    /// A `customer.discount.deleted` was seen: it no longer applies.
    pub deleted: bool,
    /// Version of that snapshot.
    pub version: Version,
}

/// `projection.revenue`: a customer's revenue points (one per subscription snapshot) and how
/// many movements they make (the rows of `projection.mrr_movements` keyed `<customer>/<n>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revenue {
    /// `cus_...`.
    pub stripe_customer_id: String,
    /// Every subscription snapshot's point.
    pub points: Vec<crate::revenue::Point>,
    /// Every discount event's point.
    pub discounts: Vec<crate::revenue::DiscountPoint>,
    /// Movements the points make (keys `<customer>/000000` up).
    pub movements: usize,
}

/// `projection.mrr_movements`: one change of a customer's MRR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementRow {
    /// `<customer>/<n>`, n from 0 in time order.
    pub key: String,
    /// `cus_...`.
    pub stripe_customer_id: String,
    /// The change.
    pub movement: crate::revenue::Movement,
}

/// The key of the `n`-th movement of `customer`.
pub fn movement_key(customer: &str, n: usize) -> String {
    format!("{customer}/{n:06}")
}

/// `projection.accounts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// `cus_...`.
    pub stripe_customer_id: String,
    /// Email.
    pub email: Option<String>,
    /// Name.
    pub name: Option<String>,
    /// Deleted in Stripe (sticky).
    pub deleted: bool,
    /// When Stripe created the customer (Unix seconds; `None` until a snapshot says).
    pub created: Option<i64>,
    /// Version of the applied snapshot (`None`: only known from references so far).
    pub version: Option<Version>,
}

/// `projection.subscriptions`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscriptionRow {
    /// `sub_...`.
    pub stripe_subscription_id: String,
    /// Its customer (None only while known solely from an invoice without customer).
    pub stripe_customer_id: Option<String>,
    /// Price of the first item.
    pub price_id: Option<String>,
    /// Tier through the catalog, or `unknown`.
    pub tier: String,
    /// Limits of the tier (None for `unknown`).
    pub limits: Option<Limits>,
    /// Stripe status ([`SubscriptionStatus::Unknown`] while only referenced).
    pub status: SubscriptionStatus,
    /// Current period start (the quota windows `_per_period` count from it).
    pub current_period_start: Option<i64>,
    /// Current period end.
    pub current_period_end: Option<i64>,
    /// Trial end.
    pub trial_end: Option<i64>,
    /// Cancels at period end.
    pub cancel_at_period_end: bool,
    /// Cancellation requested at.
    pub canceled_at: Option<i64>,
    /// Ended at.
    pub ended_at: Option<i64>,
    /// A `customer.subscription.deleted` was seen (sticky).
    pub deleted: bool,
    /// Latest paid invoice event time.
    pub last_paid_at: Option<i64>,
    /// Latest failed payment event time.
    pub last_payment_failed_at: Option<i64>,
    /// Until when a failed payment keeps the instance running.
    pub grace_until: Option<i64>,
    /// The terms of the discount the applied snapshot carries (expanded); the discount itself is
    /// a row of `projection.discounts`.
    pub discount: Option<crate::revenue::Terms>,
    /// Version of the applied snapshot (`None`: only known from references so far).
    pub version: Option<Version>,
}

/// What the instance of a subscription should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    /// Not provisioned (not started yet, or tier unknown).
    Absent,
    /// Provisioned and running with the tier's limits.
    Running,
    /// Torn down.
    Deprovisioned,
}

impl Desired {
    /// Stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Absent => "absent",
            Self::Running => "running",
            Self::Deprovisioned => "deprovisioned",
        }
    }
}

/// `projection.instance_targets`: the desired side of an instance (the `projection.instances`
/// view joins it with what the dispatcher observed).
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// The subscription it serves.
    pub stripe_subscription_id: String,
    /// Its customer.
    pub stripe_customer_id: Option<String>,
    /// Desired state.
    pub desired: Desired,
    /// Tier it is sized for.
    pub tier: String,
    /// Limits it is sized for.
    pub limits: Option<Limits>,
}

/// `projection.tokens` (desired side): one live token per paying customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenWant {
    /// The customer.
    pub stripe_customer_id: String,
    /// A live token is wanted.
    pub wanted: bool,
    /// Highest tier among the customer's running instances.
    pub tier: Option<String>,
}

/// One grant of credits (the balance it leads to, with usage, is [`crate::credits`]'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditGrant {
    /// `invoice:in_...` or `checkout:cs_...`: once per key.
    pub key: String,
    /// The customer credited.
    pub stripe_customer_id: String,
    /// Credits granted.
    pub credits: u64,
    /// Cycle grants cap the carried-over balance first; packs just add.
    pub rollover_cap: Option<u64>,
    /// Sort key: period start of a cycle, else event time.
    pub at: i64,
}

impl CreditGrant {
    /// As the balance rule reads it, with no usage before it.
    pub fn unspent(&self) -> crate::credits::Grant {
        crate::credits::Grant {
            key: self.key.clone(),
            at: chrono::DateTime::from_timestamp(self.at, 0).unwrap_or_default(),
            credits: self.credits,
            rollover_cap: self.rollover_cap,
            consumed_before: 0,
        }
    }
}

/// `projection.anomalies`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anomaly {
    /// What it is about (e.g. `unknown_price:sub_1`): one row per key.
    pub key: String,
    /// `unknown_price`, `undecodable`, `wrong_mode`, `checkout_without_items`,
    /// `checkout_without_customer`, `invoice_without_known_price`, `subscription_without_period`,
    /// `thin_event` (and `quarantined`, raised by the runner for an event it could not write).
    pub kind: String,
    /// Human-readable detail.
    pub detail: String,
    /// Position of the event that raised it.
    pub position: i64,
}

/// An effect to carry out later, under a deterministic idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Idempotency key.
    pub key: EffectKey,
    /// What it asks for.
    pub kind: IntentKind,
    /// What it acts on.
    pub subject: Subject,
    /// What to do, for people reading the outbox.
    pub detail: String,
}

impl Intent {
    /// The instance of `subscription` as the event at `position` wants it.
    pub fn instance(subscription: &str, position: i64, detail: String) -> Self {
        let key = EffectKey::Instance { subscription: subscription.to_owned(), position };
        Self { key, kind: IntentKind::Instance, subject: Subject::Subscription(subscription.to_owned()), detail }
    }

    /// The token of `customer` as the event at `position` wants it.
    pub fn token(customer: &str, position: i64, detail: String) -> Self {
        let key = EffectKey::Token(TokenKey { customer: customer.to_owned(), position, reissue: None });
        Self { key, kind: IntentKind::Token, subject: Subject::Customer(customer.to_owned()), detail }
    }

    /// A mail about `subscription`.
    pub fn mail(mail: MailKey, subscription: &str, detail: String) -> Self {
        let subject = Subject::Subscription(subscription.to_owned());
        Self { key: EffectKey::Mail(mail), kind: IntentKind::Email, subject, detail }
    }

    /// A part an event left out, to fetch from Stripe.
    pub fn fetch(fetch: FetchKey, subject: Subject, detail: String) -> Self {
        Self { key: EffectKey::Fetch(fetch), kind: IntentKind::Fetch, subject, detail }
    }
}

/// Everything the projections hold (in memory; the runner mirrors it in SQL).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Projections {
    /// By customer id.
    pub accounts: BTreeMap<String, Account>,
    /// By subscription id.
    pub subscriptions: BTreeMap<String, SubscriptionRow>,
    /// By subscription id.
    pub instances: BTreeMap<String, Instance>,
    /// By customer id.
    pub tokens: BTreeMap<String, TokenWant>,
    /// By grant key.
    pub credit_grants: BTreeMap<String, CreditGrant>,
    /// By anomaly key.
    pub anomalies: BTreeMap<String, Anomaly>,
    /// By price id.
    pub prices: BTreeMap<String, PriceRow>,
    /// By discount id.
    pub discounts: BTreeMap<String, DiscountRow>,
    /// By customer id.
    pub revenue: BTreeMap<String, Revenue>,
    /// By [`movement_key`].
    pub mrr_movements: BTreeMap<String, MovementRow>,
    /// Index: subscription ids by customer (derived; kept by [`Projections::apply`]).
    pub subscriptions_by_customer: BTreeMap<String, std::collections::BTreeSet<String>>,
    /// Index: grant keys by customer (derived; kept by [`Projections::apply`]).
    pub grants_by_customer: BTreeMap<String, std::collections::BTreeSet<String>>,
}

/// What one event changes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Delta {
    /// Account rows to upsert.
    pub accounts: Vec<Account>,
    /// Subscription rows to upsert.
    pub subscriptions: Vec<SubscriptionRow>,
    /// Instance rows to upsert.
    pub instances: Vec<Instance>,
    /// Token rows to upsert.
    pub tokens: Vec<TokenWant>,
    /// Grants to insert.
    pub credit_grants: Vec<CreditGrant>,
    /// Anomalies to upsert.
    pub anomalies: Vec<Anomaly>,
    /// Price rows to upsert.
    pub prices: Vec<PriceRow>,
    /// Discount rows to upsert.
    pub discounts: Vec<DiscountRow>,
    /// Revenue rows to upsert.
    pub revenue: Vec<Revenue>,
    /// Movement rows to upsert (a customer's, all of them, when their points changed).
    pub mrr_movements: Vec<MovementRow>,
    /// Movement keys no longer made by their customer's points.
    pub dropped_movements: Vec<String>,
    /// Anomaly keys resolved.
    pub resolved: Vec<String>,
    /// Intents to journal.
    pub intents: Vec<Intent>,
}

/// Keys a batch of events changed: what the runner writes back. The row-keyed sets of [`Reads`]
/// (`anomalies` also holds the keys removed: the state tells which); `customer_subscriptions` and
/// `anomaly_prefixes` stay empty.
pub type Changes = Reads;

impl Reads {
    /// Adds the keys `delta` changes.
    pub(crate) fn record(&mut self, delta: &Delta) {
        self.accounts.extend(delta.accounts.iter().map(|r| r.stripe_customer_id.clone()));
        self.subscriptions.extend(delta.subscriptions.iter().map(|r| r.stripe_subscription_id.clone()));
        self.instances.extend(delta.instances.iter().map(|r| r.stripe_subscription_id.clone()));
        self.tokens.extend(delta.tokens.iter().map(|r| r.stripe_customer_id.clone()));
        self.credit_grants.extend(delta.credit_grants.iter().map(|g| g.key.clone()));
        self.anomalies.extend(delta.anomalies.iter().map(|a| a.key.clone()));
        self.anomalies.extend(delta.resolved.iter().cloned());
        self.prices.extend(delta.prices.iter().map(|p| p.price.id.clone()));
        self.discounts.extend(delta.discounts.iter().filter_map(|d| d.discount.id.clone()));
        self.revenue.extend(delta.revenue.iter().map(|r| r.stripe_customer_id.clone()));
        self.mrr_movements.extend(delta.mrr_movements.iter().map(|m| m.key.clone()));
        self.mrr_movements.extend(delta.dropped_movements.iter().cloned());
    }
}

impl Projections {
    /// Rebuilds the derived indexes from the rows (after loading rows directly).
    pub fn reindex(&mut self) {
        self.subscriptions_by_customer.clear();
        for (id, row) in &self.subscriptions {
            if let Some(customer) = &row.stripe_customer_id {
                self.subscriptions_by_customer.entry(customer.clone()).or_default().insert(id.clone());
            }
        }
        self.grants_by_customer.clear();
        for (key, grant) in &self.credit_grants {
            self.grants_by_customer.entry(grant.stripe_customer_id.clone()).or_default().insert(key.clone());
        }
    }

    /// The balance `customer`'s grants alone give (before any usage: debits are the product's
    /// facts, not the log's; the API adds them, see [`crate::credits`]).
    pub fn granted_balance(&self, customer: &str) -> u64 {
        let grants: Vec<crate::credits::Grant> = self
            .grants_by_customer
            .get(customer)
            .into_iter()
            .flatten()
            .filter_map(|key| self.credit_grants.get(key))
            .map(CreditGrant::unspent)
            .collect();
        crate::credits::balance(&grants, 0)
    }

    /// Applies a delta.
    pub fn apply(&mut self, delta: Delta) {
        for row in delta.accounts {
            self.accounts.insert(row.stripe_customer_id.clone(), row);
        }
        for row in delta.subscriptions {
            self.put_subscription(row);
        }
        for row in delta.instances {
            self.instances.insert(row.stripe_subscription_id.clone(), row);
        }
        for row in delta.tokens {
            self.tokens.insert(row.stripe_customer_id.clone(), row);
        }
        for grant in delta.credit_grants {
            self.grants_by_customer.entry(grant.stripe_customer_id.clone()).or_default().insert(grant.key.clone());
            self.credit_grants.insert(grant.key.clone(), grant);
        }
        for key in delta.resolved {
            self.anomalies.remove(&key);
        }
        for anomaly in delta.anomalies {
            self.anomalies.insert(anomaly.key.clone(), anomaly);
        }
        for row in delta.prices {
            self.prices.insert(row.price.id.clone(), row);
        }
        for row in delta.discounts {
            if let Some(id) = row.discount.id.clone() {
                self.discounts.insert(id, row);
            }
        }
        for row in delta.revenue {
            self.revenue.insert(row.stripe_customer_id.clone(), row);
        }
        for key in delta.dropped_movements {
            self.mrr_movements.remove(&key);
        }
        for row in delta.mrr_movements {
            self.mrr_movements.insert(row.key.clone(), row);
        }
    }

    /// Inserts or replaces a subscription row, keeping the index by customer.
    pub fn put_subscription(&mut self, row: SubscriptionRow) {
        let id = row.stripe_subscription_id.clone();
        let customer = row.stripe_customer_id.clone();
        let previous = self.subscriptions.insert(id.clone(), row);
        if let Some(old) = previous.and_then(|p| p.stripe_customer_id)
            && Some(&old) != customer.as_ref()
            && let Some(set) = self.subscriptions_by_customer.get_mut(&old)
        {
            set.remove(&id);
            if set.is_empty() {
                self.subscriptions_by_customer.remove(&old);
            }
        }
        if let Some(customer) = customer {
            self.subscriptions_by_customer.entry(customer).or_default().insert(id);
        }
    }
}

/// The instance a subscription row asks for (the grace deadline is enforced by the dispatcher).
pub fn desired_instance(row: &SubscriptionRow) -> Desired {
    if row.deleted || row.status.has_ended() {
        return Desired::Deprovisioned;
    }
    if row.tier == UNKNOWN_TIER {
        return Desired::Absent;
    }
    if row.status.is_live() { Desired::Running } else { Desired::Absent }
}

impl SubscriptionRow {
    /// Stripe still bills it and it was not deleted: a tier checkout for its customer would make a
    /// second subscription (stored as `live`).
    pub fn is_live(&self) -> bool {
        !self.deleted && self.status.is_live()
    }

    /// Until when it entitles its customer to its tier (Unix seconds; stored as
    /// `entitled_until`): while it runs its instance (live, on a tier the catalog knows), up to
    /// its grace deadline after a failed payment, else [`stripe::MAX_TIME`]. `None`: not at all.
    /// The one rule behind access checks, quotas, tokens and instances: SQL reads the column,
    /// never the statuses (`entitled_until > now`).
    pub fn entitled_until(&self) -> Option<i64> {
        (desired_instance(self) == Desired::Running).then(|| self.grace_until.unwrap_or(stripe::MAX_TIME))
    }

    /// Whether it entitles its customer at `t` (Unix seconds).
    pub fn entitled_at(&self, t: i64) -> bool {
        self.entitled_until().is_some_and(|until| t < until)
    }
}

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
    /// Prices, by id.
    pub prices: BTreeSet<String>,
    /// Discounts, by id.
    pub discounts: BTreeSet<String>,
    /// Revenue rows, by customer id.
    pub revenue: BTreeSet<String>,
    /// Movement rows, by key (written, never read by the fold).
    pub mrr_movements: BTreeSet<String>,
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
    /// [`Reads::prices`].
    Price,
    /// [`Reads::discounts`].
    Discount,
    /// [`Reads::revenue`].
    Revenue,
    /// [`Reads::mrr_movements`].
    MrrMovement,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 12] = [
        Kind::Account,
        Kind::Subscription,
        Kind::CustomerSubscriptions,
        Kind::Instance,
        Kind::Token,
        Kind::CreditGrant,
        Kind::Anomaly,
        Kind::AnomalyPrefix,
        Kind::Price,
        Kind::Discount,
        Kind::Revenue,
        Kind::MrrMovement,
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
            Kind::Price => &self.prices,
            Kind::Discount => &self.discounts,
            Kind::Revenue => &self.revenue,
            Kind::MrrMovement => &self.mrr_movements,
        }
    }

    pub(crate) fn of_mut(&mut self, kind: Kind) -> &mut BTreeSet<String> {
        match kind {
            Kind::Account => &mut self.accounts,
            Kind::Subscription => &mut self.subscriptions,
            Kind::CustomerSubscriptions => &mut self.customer_subscriptions,
            Kind::Instance => &mut self.instances,
            Kind::Token => &mut self.tokens,
            Kind::CreditGrant => &mut self.credit_grants,
            Kind::Anomaly => &mut self.anomalies,
            Kind::AnomalyPrefix => &mut self.anomaly_prefixes,
            Kind::Price => &mut self.prices,
            Kind::Discount => &mut self.discounts,
            Kind::Revenue => &mut self.revenue,
            Kind::MrrMovement => &mut self.mrr_movements,
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

    /// A price row.
    pub fn price(&self, id: &str) -> Option<&'a PriceRow> {
        self.note(Kind::Price, id);
        self.rows.prices.get(id)
    }

    /// A discount row.
    pub fn discount(&self, id: &str) -> Option<&'a DiscountRow> {
        self.note(Kind::Discount, id);
        self.rows.discounts.get(id)
    }

    /// A customer's revenue row.
    pub fn revenue(&self, customer: &str) -> Option<&'a Revenue> {
        self.note(Kind::Revenue, customer);
        self.rows.revenue.get(customer)
    }

    /// The keys of the open anomalies that start with `prefix`.
    pub fn anomalies_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.note(Kind::AnomalyPrefix, prefix);
        with_prefix(&self.rows.anomalies, prefix).map(|(key, _)| key.clone()).collect()
    }
}

/// The entries of `map` whose key starts with `prefix`.
pub(crate) fn with_prefix<'m, V>(
    map: &'m BTreeMap<String, V>,
    prefix: &str,
) -> impl Iterator<Item = (&'m String, &'m V)> {
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
        copy(&self.prices, &mut out.prices, &keys.prices);
        copy(&self.discounts, &mut out.discounts, &keys.discounts);
        copy(&self.revenue, &mut out.revenue, &keys.revenue);
        copy(&self.mrr_movements, &mut out.mrr_movements, &keys.mrr_movements);
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
        self.prices.extend(other.prices);
        self.discounts.extend(other.discounts);
        self.revenue.extend(other.revenue);
        self.mrr_movements.extend(other.mrr_movements);
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
            + self.prices.len()
            + self.discounts.len()
            + self.revenue.len()
            + self.mrr_movements.len()
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
