//! Revenue, decided purely (issue 30; definitions and the policy in docs/analytics.md): what a
//! price is worth per month, what a subscription adds to its customer's monthly recurring revenue
//! (MRR) under the catalog's analytics policy, and which movement a change of a customer's MRR is.
//! Amounts are in the currency's minor unit; currencies are never mixed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stripe::{Discount, Price, SubscriptionStatus};

/// The catalog's `[analytics]` section: how revenue is counted. Part of the catalog's hash when
/// not the default, so changing it asks for a rebuild, which recomputes all history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Whether an active discount lowers MRR.
    #[serde(default)]
    pub discounts: DiscountPolicy,
    /// Whether a past-due subscription still counts.
    #[serde(default)]
    pub past_due: PastDuePolicy,
}

impl Policy {
    /// True for the defaults (left out of the catalog's hash, so catalogs written before the
    /// section existed keep their hash).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// `discounts = "subtract" | "ignore"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscountPolicy {
    /// Percent and amount off lower MRR while the discount lasts (Stripe's, ChartMogul's and
    /// Baremetrics' default).
    #[default]
    Subtract,
    /// MRR at list price (Paddle's).
    Ignore,
}

impl DiscountPolicy {
    /// As the catalog and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subtract => "subtract",
            Self::Ignore => "ignore",
        }
    }
}

/// `past_due = "count" | "churn_after_grace"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PastDuePolicy {
    /// A past-due subscription counts until Stripe cancels it (Stripe's definition).
    #[default]
    Count,
    /// It stops counting once its grace period (`GRACE_PERIOD_DAYS`) has run out.
    ChurnAfterGrace,
}

impl PastDuePolicy {
    /// As the catalog and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "count",
            Self::ChurnAfterGrace => "churn_after_grace",
        }
    }
}

/// What a subscription is, for revenue: its items (price, quantity), status, whether its grace
/// period still runs, its discount.
#[derive(Debug, Clone, PartialEq)]
pub struct Billed<'a> {
    /// Items: the price (as Stripe describes it) and the quantity.
    pub items: &'a [(Price, u64)],
    /// Status.
    pub status: &'a SubscriptionStatus,
    /// A past-due subscription still within its grace period.
    pub in_grace: bool,
    /// Its discount, if any.
    pub discount: Option<&'a Discount>,
    /// Deleted in Stripe.
    pub deleted: bool,
}

/// `amount` charged every `interval_count` `interval`s, per month, rounded to the nearest minor
/// unit: a year is 12 months, a week 52/12 of a month... per month (x 52 / 12), a day x 365 / 12.
/// `None` for an interval Stripe does not have.
pub fn monthly(amount: i64, interval: &str, interval_count: u32) -> Option<i64> {
    let (num, den): (i128, i128) = match interval {
        "month" => (1, 1),
        "year" => (1, 12),
        "week" => (52, 12),
        "day" => (365, 12),
        _ => return None,
    };
    let den = den * i128::from(interval_count.max(1));
    let scaled = i128::from(amount) * num;
    let rounded = (scaled + scaled.signum() * den / 2) / den;
    i64::try_from(rounded).ok()
}

/// An item's monthly amount: unit amount x quantity, per month. Metered, one-time and tiered
/// prices count 0 (`None`), as in Stripe's definition.
pub fn item_monthly(price: &Price, quantity: u64) -> Option<(String, i64)> {
    let recurring = price.recurring.as_ref().filter(|r| r.usage_type == "licensed")?;
    let amount = price.unit_amount?.checked_mul(i64::try_from(quantity).ok()?)?;
    Some((price.currency.clone()?, monthly(amount, &recurring.interval, recurring.interval_count)?))
}

/// What `sub` adds to its customer's MRR at `at`, per currency (empty: nothing): its
/// [`list_mrr`] with its discount applied ([`with_discount`]).
pub fn subscription_mrr(sub: &Billed<'_>, at: i64, policy: &Policy) -> BTreeMap<String, i64> {
    with_discount(&list_mrr(sub, policy), sub.discount, cycle(sub.items).as_ref(), at, policy)
}

/// What `sub` adds to its customer's MRR at list price, per currency (empty: nothing). Counts
/// while `active`, or `past_due` under [`PastDuePolicy::Count`] (or within its grace under
/// [`PastDuePolicy::ChurnAfterGrace`]); a trial and every other status count 0.
pub fn list_mrr(sub: &Billed<'_>, policy: &Policy) -> BTreeMap<String, i64> {
    let counts = !sub.deleted
        && match sub.status {
            SubscriptionStatus::Active => true,
            SubscriptionStatus::PastDue => policy.past_due == PastDuePolicy::Count || sub.in_grace,
            _ => false,
        };
    let mut mrr: BTreeMap<String, i64> = BTreeMap::new();
    if !counts {
        return mrr;
    }
    for (price, quantity) in sub.items {
        if let Some((currency, amount)) = item_monthly(price, *quantity) {
            *mrr.entry(currency).or_default() += amount;
        }
    }
    mrr.retain(|_, amount| *amount > 0);
    mrr
}

/// `list` with `discount` applied at `at` under the policy (billed every `cycle`).
pub fn with_discount(
    list: &BTreeMap<String, i64>,
    discount: Option<&Discount>,
    cycle: Option<&(String, u32)>,
    at: i64,
    policy: &Policy,
) -> BTreeMap<String, i64> {
    let mut mrr = list.clone();
    if let Some(discount) = discount.filter(|_| policy.discounts == DiscountPolicy::Subtract) {
        discounted(&mut mrr, &Terms::from(discount), cycle, at);
    }
    mrr.retain(|_, amount| *amount > 0);
    mrr
}

/// A subscription's billing cycle (interval, count): its first recurring item's.
pub fn cycle(items: &[(Price, u64)]) -> Option<(String, u32)> {
    items.iter().find_map(|(p, _)| p.recurring.as_ref()).map(|r| (r.interval.clone(), r.interval_count))
}

/// What a discount takes off, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Percent off in hundredths of a percent.
    pub percent_off: Option<u32>,
    /// Amount off per invoice, in `currency`.
    pub amount_off: Option<i64>,
    /// Currency of `amount_off`.
    pub currency: Option<String>,
    /// When it stops applying (`None`: forever).
    pub end: Option<i64>,
}

impl From<&Discount> for Terms {
    fn from(d: &Discount) -> Self {
        Terms { percent_off: d.percent_off, amount_off: d.amount_off, currency: d.currency.clone(), end: d.end }
    }
}

/// Applies `terms` to `mrr` at `at` (nothing once they ended): a percentage off every currency, an
/// amount off (per invoice, normalized to a month by the billing `cycle`) from its currency, never
/// below 0.
fn discounted(mrr: &mut BTreeMap<String, i64>, terms: &Terms, cycle: Option<&(String, u32)>, at: i64) {
    if terms.end.is_some_and(|end| at >= end) {
        return;
    }
    if let Some(off) = terms.percent_off.filter(|p| *p > 0) {
        let kept = i128::from(10_000 - off.min(10_000));
        for amount in mrr.values_mut() {
            let scaled = i128::from(*amount) * kept;
            *amount = i64::try_from((scaled + 5_000) / 10_000).unwrap_or(0);
        }
    }
    if let (Some(off), Some(currency), Some((interval, count))) = (terms.amount_off, &terms.currency, cycle)
        && let Some(amount) = mrr.get_mut(&currency.to_ascii_lowercase())
    {
        let monthly_off = monthly(off, interval, *count).unwrap_or(0);
        *amount = (*amount - monthly_off).max(0);
    }
}

/// A change of one customer's MRR in one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MovementKind {
    /// From 0 to more, the first time.
    New,
    /// Up.
    Expansion,
    /// Down, still above 0.
    Contraction,
    /// Down to 0.
    Churn,
    /// From 0 to more, after having paid before.
    Reactivation,
}

impl MovementKind {
    /// As the API and the tables spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Expansion => "expansion",
            Self::Contraction => "contraction",
            Self::Churn => "churn",
            Self::Reactivation => "reactivation",
        }
    }

    /// +1 for what raises MRR, -1 for what lowers it.
    pub fn sign(self) -> i64 {
        match self {
            Self::New | Self::Expansion | Self::Reactivation => 1,
            Self::Contraction | Self::Churn => -1,
        }
    }
}

/// The movement from `before` to `after` (a customer's MRR in one currency), with its amount as
/// a positive number; `paid_before`: the customer had MRR in this currency at some earlier time.
/// `None` when nothing changed.
pub fn movement(before: i64, after: i64, paid_before: bool) -> Option<(MovementKind, i64)> {
    let kind = match (before, after) {
        (b, a) if a == b => return None,
        (0, _) if paid_before => MovementKind::Reactivation,
        (0, _) => MovementKind::New,
        (_, 0) => MovementKind::Churn,
        (b, a) if a > b => MovementKind::Expansion,
        _ => MovementKind::Contraction,
    };
    Some((kind, (after - before).abs()))
}

/// One snapshot of a subscription, for revenue: what it adds to its customer's MRR from its
/// moment on. Recorded for every snapshot, applied to the row or not, so a customer's points are a
/// function of the set of events (as credit grants are) and their order is the versions', not the
/// deliveries'.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Point {
    /// `sub_...`.
    pub subscription: String,
    /// The event that carried the snapshot (with `created` and `rank`, its place in time).
    pub event_id: String,
    /// The event's `created`.
    pub created: i64,
    /// The event's position in the log (said, never sorted on).
    #[serde(default)]
    pub position: i64,
    /// Precedence within a second (the subscription rows' version rank).
    pub rank: u8,
    /// Currency of `amount` (`None`: nothing billed).
    pub currency: Option<String>,
    /// Its MRR under the policy, in the currency's minor unit.
    pub amount: i64,
    /// `customer.subscription.deleted`: nothing of it counts from then on.
    pub deleted: bool,
    /// Its MRR at list price (no discount): what a discount known from an event applies to
    /// (`None` in points folded before discounts had rows: `amount`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gross: Option<i64>,
    /// The snapshot carries its own discount's terms (already in `amount`): no other applies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own_discount: bool,
    /// Discounts it names by id only, resolved by `customer.discount.*` events.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub discount_ids: Vec<String>,
    /// Its billing cycle (interval, count), to spread an amount off per invoice over months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cycle: Option<(String, u32)>,
}

impl Point {
    /// Its place in time: created, then (within a second) discounts before snapshots, rank, then
    /// subscription and event id (never the log position, so any delivery order sorts the same).
    fn order(&self) -> (i64, u8, u8, &str, &str) {
        (self.created, 1, self.rank, &self.subscription, &self.event_id)
    }

    /// What it adds to its customer's MRR at `at`, given the discounts in force.
    fn effective(
        &self,
        discounts: &BTreeMap<&str, &DiscountPoint>,
        at: i64,
        policy: DiscountPolicy,
    ) -> (Option<&str>, i64) {
        let currency = self.currency.as_deref();
        if self.deleted {
            return (None, 0);
        }
        if policy == DiscountPolicy::Ignore || self.own_discount {
            return (currency, self.amount);
        }
        let Some(currency) = currency else { return (None, 0) };
        let gross = self.gross.unwrap_or(self.amount);
        let own = discounts.values().find(|d| {
            d.subscription.as_deref() == Some(self.subscription.as_str()) || self.discount_ids.contains(&d.discount)
        });
        let terms =
            own.or_else(|| discounts.values().find(|d| d.subscription.is_none())).and_then(|d| d.terms.as_ref());
        let Some(terms) = terms else { return (Some(currency), gross) };
        let mut mrr = BTreeMap::from([(currency.to_owned(), gross)]);
        discounted(&mut mrr, terms, self.cycle.as_ref(), at);
        (Some(currency), mrr[currency])
    }
}

/// A discount of a customer as a `customer.discount.*` event states it: what it takes off from
/// then on (`terms: None`: deleted, or its coupon's terms unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscountPoint {
    /// `di_...`.
    pub discount: String,
    /// The event that stated it.
    pub event_id: String,
    /// The event's `created`.
    pub created: i64,
    /// The event's position in the log (said, never sorted on).
    #[serde(default)]
    pub position: i64,
    /// Precedence within a second (a deletion above a creation or an update).
    pub rank: u8,
    /// The subscription it applies to (`None`: the customer's, for every subscription without one).
    pub subscription: Option<String>,
    /// What it takes off.
    pub terms: Option<Terms>,
}

impl DiscountPoint {
    fn order(&self) -> (i64, u8, u8, &str, &str) {
        (self.created, 0, self.rank, &self.discount, &self.event_id)
    }
}

/// Puts `points` in time order ([`movements`]' order): a customer's points are stored so, the
/// same whatever order they arrived in.
pub fn sort(points: &mut [Point]) {
    points.sort_by(|a, b| a.order().cmp(&b.order()));
}

/// Puts discount points in time order.
pub fn sort_discounts(points: &mut [DiscountPoint]) {
    points.sort_by(|a, b| a.order().cmp(&b.order()));
}

/// A change of a customer's MRR in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    /// ISO code, lowercase.
    pub currency: String,
    /// Which way.
    pub kind: MovementKind,
    /// How much (positive).
    pub amount: i64,
    /// The customer's MRR in the currency after it.
    pub mrr_after: i64,
    /// When (the event's `created`; the movement's day is its UTC date).
    pub created: i64,
    /// The subscription whose snapshot changed it.
    pub subscription: String,
    /// The event that carried the snapshot (or stated the discount) that changed it.
    pub event_id: String,
    /// That event's position in the log.
    #[serde(default)]
    pub position: i64,
}

/// One step of a customer's revenue history.
enum Step<'a> {
    Snapshot(&'a Point),
    Discount(&'a DiscountPoint),
}

impl Step<'_> {
    fn order(&self) -> (i64, u8, u8, &str, &str) {
        match self {
            Step::Snapshot(p) => p.order(),
            Step::Discount(d) => d.order(),
        }
    }
}

/// A customer's movements from their points: snapshots and discounts in time order (created,
/// discounts first within a second, rank, then ids, so any delivery order gives the same), each
/// subscription's amount replaced by its next snapshot's (a deletion is final) or re-priced by a
/// discount, the customer's total per currency summed, and each change classified by
/// [`movement`].
pub fn movements(points: &[Point], discounts: &[DiscountPoint], policy: DiscountPolicy) -> Vec<Movement> {
    let mut steps: Vec<Step<'_>> =
        points.iter().map(Step::Snapshot).chain(discounts.iter().map(Step::Discount)).collect();
    steps.sort_by(|a, b| a.order().cmp(&b.order()));
    let mut latest: BTreeMap<&str, &Point> = BTreeMap::new();
    let mut counted: BTreeMap<&str, (Option<&str>, i64)> = BTreeMap::new();
    let mut in_force: BTreeMap<&str, &DiscountPoint> = BTreeMap::new();
    let mut totals = Totals::default();
    let mut out = Vec::new();
    for step in steps {
        let (created, event_id, position, touched): (i64, &str, i64, Vec<&str>) = match step {
            Step::Snapshot(p) => {
                if latest.get(p.subscription.as_str()).is_some_and(|l| l.deleted) {
                    continue;
                }
                latest.insert(&p.subscription, p);
                (p.created, &p.event_id, p.position, vec![p.subscription.as_str()])
            }
            Step::Discount(d) => {
                match d.terms {
                    Some(_) => in_force.insert(&d.discount, d),
                    None => in_force.remove(d.discount.as_str()),
                };
                (d.created, &d.event_id, d.position, latest.keys().copied().collect())
            }
        };
        let mut changes: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
        for sub in touched {
            let next = latest[sub].effective(&in_force, created, policy);
            let before = counted.insert(sub, next).unwrap_or((None, 0));
            for (currency, change) in [(before.0, -before.1), (next.0, next.1)] {
                if let Some(currency) = currency.filter(|_| change != 0) {
                    changes.entry(currency).or_insert((0, sub)).0 += change;
                }
            }
        }
        for (currency, (change, sub)) in changes.into_iter().filter(|(_, (change, _))| *change != 0) {
            if let Some((kind, amount, mrr_after)) = totals.apply(currency, change) {
                out.push(Movement {
                    currency: currency.to_owned(),
                    kind,
                    amount,
                    mrr_after,
                    created,
                    subscription: sub.to_owned(),
                    event_id: event_id.to_owned(),
                    position,
                });
            }
        }
    }
    out
}

/// A customer's MRR per currency, and the currencies they ever paid in.
#[derive(Default)]
struct Totals {
    mrr: BTreeMap<String, i64>,
    paid: std::collections::BTreeSet<String>,
}

impl Totals {
    /// Adds `change` in `currency`: the movement it makes and the MRR after.
    fn apply(&mut self, currency: &str, change: i64) -> Option<(MovementKind, i64, i64)> {
        let before = self.mrr.get(currency).copied().unwrap_or(0);
        let after = before + change;
        let made = movement(before, after, self.paid.contains(currency));
        self.mrr.insert(currency.to_owned(), after);
        if after > 0 {
            self.paid.insert(currency.to_owned());
        }
        made.map(|(kind, amount)| (kind, amount, after))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::stripe::Recurring;

    fn price(amount: i64, currency: &str, interval: &str, count: u32, usage: &str) -> Price {
        Price {
            id: format!("price_{amount}_{interval}"),
            product: None,
            unit_amount: Some(amount),
            currency: Some(currency.to_owned()),
            recurring: Some(Recurring {
                interval: interval.to_owned(),
                interval_count: count,
                usage_type: usage.to_owned(),
            }),
            active: true,
        }
    }

    fn billed<'a>(
        items: &'a [(Price, u64)],
        status: &'a SubscriptionStatus,
        discount: Option<&'a Discount>,
    ) -> Billed<'a> {
        Billed { items, status, in_grace: false, discount, deleted: false }
    }

    #[test]
    fn every_interval_is_normalized_to_a_month() {
        assert_eq!(monthly(2_900, "month", 1), Some(2_900));
        assert_eq!(monthly(24_000, "year", 1), Some(2_000), "a year is 12 months");
        assert_eq!(monthly(200_000, "year", 1), Some(16_667), "$2,000/yr = $166.67/mo, rounded");
        assert_eq!(monthly(1_000, "week", 1), Some(4_333), "x 52 / 12");
        assert_eq!(monthly(100, "day", 1), Some(3_042), "x 365 / 12");
        assert_eq!(monthly(9_000, "month", 3), Some(3_000), "every 3 months");
        assert_eq!(monthly(100, "fortnight", 1), None);
    }

    #[test]
    fn quantity_counts_metered_one_time_and_trials_do_not() {
        let active = SubscriptionStatus::Active;
        let seats = [(price(1_000, "usd", "month", 1, "licensed"), 3)];
        let mrr = subscription_mrr(&billed(&seats, &active, None), 0, &Policy::default());
        assert_eq!(mrr, [("usd".to_owned(), 3_000)].into());
        let metered = [(price(1_000, "usd", "month", 1, "metered"), 1)];
        assert!(subscription_mrr(&billed(&metered, &active, None), 0, &Policy::default()).is_empty());
        let mut one_time = price(1_000, "usd", "month", 1, "licensed");
        one_time.recurring = None;
        assert!(subscription_mrr(&billed(&[(one_time, 1)], &active, None), 0, &Policy::default()).is_empty());
        let trialing = SubscriptionStatus::Trialing;
        assert!(subscription_mrr(&billed(&seats, &trialing, None), 0, &Policy::default()).is_empty());
        let two = [(price(1_000, "usd", "month", 1, "licensed"), 1), (price(12_000, "eur", "year", 1, "licensed"), 1)];
        let mrr = subscription_mrr(&billed(&two, &active, None), 0, &Policy::default());
        assert_eq!(mrr, [("eur".to_owned(), 1_000), ("usd".to_owned(), 1_000)].into(), "currencies never mixed");
    }

    #[test]
    fn a_discount_lowers_mrr_while_it_lasts_unless_the_policy_ignores_it() {
        let active = SubscriptionStatus::Active;
        let items = [(price(5_000, "usd", "month", 1, "licensed"), 1)];
        let twenty = Discount { percent_off: Some(2_000), end: Some(100), ..Discount::default() };
        let mrr = |at, policy: Policy| subscription_mrr(&billed(&items, &active, Some(&twenty)), at, &policy)["usd"];
        assert_eq!(mrr(99, Policy::default()), 4_000);
        assert_eq!(mrr(100, Policy::default()), 5_000, "ended");
        assert_eq!(mrr(99, Policy { discounts: DiscountPolicy::Ignore, ..Policy::default() }), 5_000);
        let yearly = [(price(120_000, "usd", "year", 1, "licensed"), 1)];
        let off = Discount { amount_off: Some(12_000), currency: Some("USD".into()), ..Discount::default() };
        let mrr = subscription_mrr(&billed(&yearly, &active, Some(&off)), 0, &Policy::default());
        assert_eq!(mrr["usd"], 9_000, "120.00 off a yearly invoice is 10.00 a month");
        let all = Discount { percent_off: Some(10_000), ..Discount::default() };
        assert!(subscription_mrr(&billed(&items, &active, Some(&all)), 0, &Policy::default()).is_empty(), "free");
    }

    #[test]
    fn past_due_counts_or_churns_after_the_grace_as_the_policy_says() {
        let past_due = SubscriptionStatus::PastDue;
        let items = [(price(5_000, "usd", "month", 1, "licensed"), 1)];
        let churn = Policy { past_due: PastDuePolicy::ChurnAfterGrace, ..Policy::default() };
        let mut sub = billed(&items, &past_due, None);
        assert_eq!(subscription_mrr(&sub, 0, &Policy::default())["usd"], 5_000);
        assert!(subscription_mrr(&sub, 0, &churn).is_empty(), "grace over");
        sub.in_grace = true;
        assert_eq!(subscription_mrr(&sub, 0, &churn)["usd"], 5_000, "still within its grace");
        for status in [SubscriptionStatus::Canceled, SubscriptionStatus::Unpaid, SubscriptionStatus::Incomplete] {
            assert!(subscription_mrr(&billed(&items, &status, None), 0, &Policy::default()).is_empty(), "{status}");
        }
    }

    #[test]
    fn movements_follow_the_glossary() {
        assert_eq!(movement(0, 2_900, false), Some((MovementKind::New, 2_900)));
        assert_eq!(movement(0, 2_900, true), Some((MovementKind::Reactivation, 2_900)));
        assert_eq!(movement(2_900, 9_900, true), Some((MovementKind::Expansion, 7_000)));
        assert_eq!(movement(9_900, 2_900, true), Some((MovementKind::Contraction, 7_000)));
        assert_eq!(movement(2_900, 0, true), Some((MovementKind::Churn, 2_900)));
        assert_eq!(movement(2_900, 2_900, true), None);
    }

    #[test]
    fn the_policy_reads_from_the_catalog_section_and_refuses_unknown_values() {
        let policy: Policy =
            toml::from_str("discounts = \"ignore\"\npast_due = \"churn_after_grace\"").expect("policy");
        assert_eq!(policy, Policy { discounts: DiscountPolicy::Ignore, past_due: PastDuePolicy::ChurnAfterGrace });
        assert!(toml::from_str::<Policy>("discounts = \"sometimes\"").is_err());
        assert!(toml::from_str::<Policy>("").expect("defaults").is_default());
        let spelled = serde_json::to_value(policy).expect("json");
        assert_eq!(
            spelled,
            serde_json::json!({ "discounts": policy.discounts.as_str(), "past_due": policy.past_due.as_str() })
        );
    }

    proptest! {
        /// Whatever a customer's MRR does, its movements add up to the change, each kind says
        /// which way it went, and only a first start is `new`.
        #[test]
        fn movements_add_up_to_the_change_in_mrr(path in proptest::collection::vec(0i64..5, 1..40)) {
            let (mut mrr, mut paid, mut sum) = (0i64, false, 0i64);
            for step in path {
                let next = step * 1_000;
                if let Some((kind, amount)) = movement(mrr, next, paid) {
                    prop_assert!(amount > 0);
                    prop_assert_eq!(kind == MovementKind::New, mrr == 0 && !paid);
                    prop_assert_eq!(kind == MovementKind::Churn, next == 0);
                    sum += kind.sign() * amount;
                }
                paid |= next > 0;
                mrr = next;
            }
            prop_assert_eq!(sum, mrr);
        }
    }
}
