//! The projection tables, each described once: its name, its key column and its row's SQL image
//! (a serde struct whose field names are the column names). Loading, writing a batch and the
//! rebuild's copy all go through these descriptions, so no list of columns is written twice.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDate, Utc};
use domain::catalog::{Limit, Limits};
use domain::revenue::{DiscountPoint, Movement, MovementKind, Point, Terms};
use domain::stripe::{Discount, Price, Recurring, SubscriptionStatus};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use domain::state::{
    Account, Anomaly, Changes, CreditGrant, Desired, DiscountRow, Instance, MovementRow, PriceRow, Projections,
    Revenue, SubscriptionRow, TokenWant, Version,
};

/// One projection table.
pub(super) trait Table {
    /// Its name in the projection schema.
    const NAME: &'static str;
    /// Its primary key column.
    const KEY: &'static str;
    /// What the fold holds per key.
    type Value;
    /// The row as stored.
    type Row: Serialize + DeserializeOwned;
    /// The fold's rows of this table, by key.
    fn rows(p: &Projections) -> &BTreeMap<String, Self::Value>;
    /// Same, to fill.
    fn rows_mut(p: &mut Projections) -> &mut BTreeMap<String, Self::Value>;
    /// The keys a batch changed.
    fn changed(c: &Changes) -> &BTreeSet<String>;
    /// The stored row of a value.
    fn row(key: &str, value: &Self::Value) -> Self::Row;
    /// The key and value of a stored row.
    fn value(row: Self::Row) -> (String, Self::Value);
}

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

fn secs(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp())
}

/// A snapshot [`Version`] as its three columns.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(super) struct VersionColumns {
    version_created: Option<i64>,
    version_rank: Option<i16>,
    version_position: Option<i64>,
}

impl From<Option<Version>> for VersionColumns {
    fn from(v: Option<Version>) -> Self {
        Self {
            version_created: v.map(|v| v.created),
            version_rank: v.map(|v| i16::from(v.rank)),
            version_position: v.map(|v| v.position),
        }
    }
}

impl From<VersionColumns> for Option<Version> {
    fn from(c: VersionColumns) -> Self {
        Some(Version {
            created: c.version_created?,
            rank: u8::try_from(c.version_rank?).unwrap_or(0),
            position: c.version_position?,
        })
    }
}

/// [`Limits`] as the four `limit_*` columns (-1 = unlimited; all NULL: no limits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LimitColumns {
    /// Agents.
    pub limit_agents: Option<f64>,
    /// Messages per day.
    pub limit_messages_per_day: Option<f64>,
    /// Memory in MB.
    pub limit_memory_mb: Option<f64>,
    /// CPUs.
    pub limit_cpu: Option<f64>,
}

impl From<Option<Limits>> for LimitColumns {
    fn from(limits: Option<Limits>) -> Self {
        match limits {
            None => Self::default(),
            Some(l) => Self {
                limit_agents: Some(l.agents.into()),
                limit_messages_per_day: Some(l.messages_per_day.into()),
                limit_memory_mb: Some(l.memory_mb.into()),
                limit_cpu: Some(l.cpu.into()),
            },
        }
    }
}

impl From<LimitColumns> for Option<Limits> {
    fn from(c: LimitColumns) -> Self {
        let limit = |value: f64| if value == -1.0 { Limit::Unlimited } else { Limit::Max(value) };
        Some(Limits {
            agents: limit(c.limit_agents?),
            messages_per_day: limit(c.limit_messages_per_day?),
            memory_mb: limit(c.limit_memory_mb?),
            cpu: limit(c.limit_cpu?),
        })
    }
}

/// A stored `desired` value; anything unknown reads as absent (never provisioned, never torn down).
pub fn desired_from(text: &str) -> Desired {
    match text {
        "running" => Desired::Running,
        "deprovisioned" => Desired::Deprovisioned,
        _ => Desired::Absent,
    }
}

/// Implements [`Table`] for a fold map: `$field` of [`Projections`] and [`Changes`].
macro_rules! table {
    ($marker:ident, $name:literal, $key:literal, $field:ident, $value:ty, $row:ty) => {
        /// The table of the same name.
        pub(super) struct $marker;

        impl Table for $marker {
            const NAME: &'static str = $name;
            const KEY: &'static str = $key;
            type Value = $value;
            type Row = $row;

            fn rows(p: &Projections) -> &BTreeMap<String, Self::Value> {
                &p.$field
            }

            fn rows_mut(p: &mut Projections) -> &mut BTreeMap<String, Self::Value> {
                &mut p.$field
            }

            fn changed(c: &Changes) -> &BTreeSet<String> {
                &c.$field
            }

            fn row(key: &str, value: &Self::Value) -> Self::Row {
                <$row>::from((key, value))
            }

            fn value(row: Self::Row) -> (String, Self::Value) {
                row.into()
            }
        }
    };
}

table!(Accounts, "accounts", "stripe_customer_id", accounts, Account, AccountImage);
table!(Subscriptions, "subscriptions", "stripe_subscription_id", subscriptions, SubscriptionRow, SubscriptionImage);
table!(InstanceTargets, "instance_targets", "stripe_subscription_id", instances, Instance, InstanceImage);
table!(Tokens, "tokens", "stripe_customer_id", tokens, TokenWant, TokenImage);
table!(CreditGrants, "credit_grants", "key", credit_grants, CreditGrant, GrantImage);
table!(Anomalies, "anomalies", "key", anomalies, Anomaly, AnomalyImage);
table!(Prices, "prices", "price_id", prices, PriceRow, PriceImage);
table!(Discounts, "discounts", "discount_id", discounts, DiscountRow, DiscountImage);
table!(RevenueRows, "revenue", "stripe_customer_id", revenue, Revenue, RevenueImage);
table!(MrrMovements, "mrr_movements", "key", mrr_movements, MovementRow, MovementImage);

#[derive(Serialize, Deserialize)]
pub(super) struct RevenueImage {
    stripe_customer_id: String,
    /// A jsonb array: the points are read back whole, never queried one by one.
    points: Vec<Point>,
    /// Likewise.
    discounts: Vec<DiscountPoint>,
    movements: i32,
}

impl From<(&str, &Revenue)> for RevenueImage {
    fn from((_, r): (&str, &Revenue)) -> Self {
        Self {
            stripe_customer_id: r.stripe_customer_id.clone(),
            points: r.points.clone(),
            discounts: r.discounts.clone(),
            movements: i32::try_from(r.movements).unwrap_or(i32::MAX),
        }
    }
}

impl From<RevenueImage> for (String, Revenue) {
    fn from(r: RevenueImage) -> Self {
        let movements = usize::try_from(r.movements).unwrap_or(0);
        (
            r.stripe_customer_id.clone(),
            Revenue { stripe_customer_id: r.stripe_customer_id, points: r.points, discounts: r.discounts, movements },
        )
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct MovementImage {
    key: String,
    stripe_customer_id: String,
    currency: String,
    kind: MovementKind,
    amount: i64,
    mrr_after: i64,
    created: i64,
    /// Derived (the UTC date of `created`): written for SQL readers, ignored when read back.
    #[serde(default)]
    day: Option<NaiveDate>,
    stripe_subscription_id: String,
    event_id: String,
    position: i64,
}

impl From<(&str, &MovementRow)> for MovementImage {
    fn from((_, row): (&str, &MovementRow)) -> Self {
        let m = &row.movement;
        Self {
            key: row.key.clone(),
            stripe_customer_id: row.stripe_customer_id.clone(),
            currency: m.currency.clone(),
            kind: m.kind,
            amount: m.amount,
            mrr_after: m.mrr_after,
            created: m.created,
            day: DateTime::from_timestamp(m.created, 0).map(|t| t.date_naive()),
            stripe_subscription_id: m.subscription.clone(),
            event_id: m.event_id.clone(),
            position: m.position,
        }
    }
}

impl From<MovementImage> for (String, MovementRow) {
    fn from(r: MovementImage) -> Self {
        let movement = Movement {
            currency: r.currency,
            kind: r.kind,
            amount: r.amount,
            mrr_after: r.mrr_after,
            created: r.created,
            subscription: r.stripe_subscription_id,
            event_id: r.event_id,
            position: r.position,
        };
        (r.key.clone(), MovementRow { key: r.key, stripe_customer_id: r.stripe_customer_id, movement })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct DiscountImage {
    discount_id: String,
    coupon: Option<String>,
    percent_off: Option<i32>,
    amount_off: Option<i64>,
    currency: Option<String>,
    duration: Option<String>,
    duration_in_months: Option<i32>,
    promotion_code: Option<String>,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    stripe_customer_id: Option<String>,
    stripe_subscription_id: Option<String>,
    deleted: bool,
    #[serde(flatten)]
    version: VersionColumns,
}

impl From<(&str, &DiscountRow)> for DiscountImage {
    fn from((key, row): (&str, &DiscountRow)) -> Self {
        let d = row.discount.clone();
        Self {
            discount_id: key.to_owned(),
            coupon: d.coupon,
            percent_off: d.percent_off.and_then(|p| i32::try_from(p).ok()),
            amount_off: d.amount_off,
            currency: d.currency,
            duration: d.duration,
            duration_in_months: d.duration_in_months.and_then(|m| i32::try_from(m).ok()),
            promotion_code: d.promotion_code,
            start_at: ts(d.start),
            end_at: ts(d.end),
            stripe_customer_id: d.customer,
            stripe_subscription_id: d.subscription,
            deleted: row.deleted,
            version: Some(row.version).into(),
        }
    }
}

impl From<DiscountImage> for (String, DiscountRow) {
    fn from(r: DiscountImage) -> Self {
        let discount = Discount {
            id: Some(r.discount_id.clone()),
            coupon: r.coupon,
            percent_off: r.percent_off.and_then(|p| u32::try_from(p).ok()),
            amount_off: r.amount_off,
            currency: r.currency,
            duration: r.duration,
            duration_in_months: r.duration_in_months.and_then(|m| u32::try_from(m).ok()),
            promotion_code: r.promotion_code,
            start: secs(r.start_at),
            end: secs(r.end_at),
            customer: r.stripe_customer_id,
            subscription: r.stripe_subscription_id,
        };
        let version = Option::<Version>::from(r.version).unwrap_or_default();
        (r.discount_id, DiscountRow { discount, deleted: r.deleted, version })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct PriceImage {
    price_id: String,
    product: Option<String>,
    unit_amount: Option<i64>,
    currency: Option<String>,
    interval: Option<String>,
    interval_count: Option<i32>,
    usage_type: Option<String>,
    active: bool,
    #[serde(flatten)]
    version: VersionColumns,
}

impl From<(&str, &PriceRow)> for PriceImage {
    fn from((_, row): (&str, &PriceRow)) -> Self {
        let p = &row.price;
        Self {
            price_id: p.id.clone(),
            product: p.product.clone(),
            unit_amount: p.unit_amount,
            currency: p.currency.clone(),
            interval: p.recurring.as_ref().map(|r| r.interval.clone()),
            interval_count: p.recurring.as_ref().map(|r| i32::try_from(r.interval_count).unwrap_or(i32::MAX)),
            usage_type: p.recurring.as_ref().map(|r| r.usage_type.clone()),
            active: p.active,
            version: Some(row.version).into(),
        }
    }
}

impl From<PriceImage> for (String, PriceRow) {
    fn from(r: PriceImage) -> Self {
        let recurring = r.interval.map(|interval| Recurring {
            interval,
            interval_count: r.interval_count.and_then(|c| u32::try_from(c).ok()).unwrap_or(1),
            usage_type: r.usage_type.unwrap_or_else(|| "licensed".to_owned()),
        });
        let version = Option::<Version>::from(r.version).unwrap_or_default();
        let price = Price {
            id: r.price_id.clone(),
            product: r.product,
            unit_amount: r.unit_amount,
            currency: r.currency,
            recurring,
            active: r.active,
        };
        (r.price_id, PriceRow { price, version })
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct AccountImage {
    stripe_customer_id: String,
    email: Option<String>,
    name: Option<String>,
    deleted: bool,
    created: Option<DateTime<Utc>>,
    #[serde(flatten)]
    version: VersionColumns,
}

impl From<(&str, &Account)> for AccountImage {
    fn from((_, a): (&str, &Account)) -> Self {
        Self {
            stripe_customer_id: a.stripe_customer_id.clone(),
            email: a.email.clone(),
            name: a.name.clone(),
            deleted: a.deleted,
            created: ts(a.created),
            version: a.version.into(),
        }
    }
}

impl From<AccountImage> for (String, Account) {
    fn from(r: AccountImage) -> Self {
        let account = Account {
            stripe_customer_id: r.stripe_customer_id.clone(),
            email: r.email,
            name: r.name,
            deleted: r.deleted,
            created: secs(r.created),
            version: r.version.into(),
        };
        (r.stripe_customer_id, account)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct SubscriptionImage {
    stripe_subscription_id: String,
    stripe_customer_id: Option<String>,
    price_id: Option<String>,
    tier: String,
    status: String,
    current_period_start: Option<DateTime<Utc>>,
    current_period_end: Option<DateTime<Utc>>,
    trial_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    canceled_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    deleted: bool,
    last_paid_at: Option<DateTime<Utc>>,
    last_payment_failed_at: Option<DateTime<Utc>>,
    grace_until: Option<DateTime<Utc>>,
    /// Derived ([`SubscriptionRow::is_live`]): written for SQL readers, ignored when read back.
    #[serde(default)]
    live: bool,
    /// Derived ([`SubscriptionRow::entitled_until`]), likewise.
    #[serde(default)]
    entitled_until: Option<DateTime<Utc>>,
    #[serde(flatten)]
    limits: LimitColumns,
    #[serde(flatten)]
    discount: DiscountColumns,
    #[serde(flatten)]
    version: VersionColumns,
}

/// A subscription's discount [`Terms`] as its four `discount_*` columns (all NULL: none).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct DiscountColumns {
    discount_percent_off: Option<i32>,
    discount_amount_off: Option<i64>,
    discount_currency: Option<String>,
    discount_end: Option<DateTime<Utc>>,
    #[serde(default)]
    discount: bool,
}

impl From<Option<Terms>> for DiscountColumns {
    fn from(d: Option<Terms>) -> Self {
        match d {
            None => Self::default(),
            Some(d) => Self {
                discount_percent_off: d.percent_off.and_then(|p| i32::try_from(p).ok()),
                discount_amount_off: d.amount_off,
                discount_currency: d.currency,
                discount_end: ts(d.end),
                discount: true,
            },
        }
    }
}

impl From<DiscountColumns> for Option<Terms> {
    fn from(c: DiscountColumns) -> Self {
        c.discount.then(|| Terms {
            percent_off: c.discount_percent_off.and_then(|p| u32::try_from(p).ok()),
            amount_off: c.discount_amount_off,
            currency: c.discount_currency,
            end: secs(c.discount_end),
        })
    }
}

impl From<(&str, &SubscriptionRow)> for SubscriptionImage {
    fn from((_, s): (&str, &SubscriptionRow)) -> Self {
        Self {
            stripe_subscription_id: s.stripe_subscription_id.clone(),
            stripe_customer_id: s.stripe_customer_id.clone(),
            price_id: s.price_id.clone(),
            tier: s.tier.clone(),
            status: s.status.as_str().to_owned(),
            current_period_start: ts(s.current_period_start),
            current_period_end: ts(s.current_period_end),
            trial_end: ts(s.trial_end),
            cancel_at_period_end: s.cancel_at_period_end,
            canceled_at: ts(s.canceled_at),
            ended_at: ts(s.ended_at),
            deleted: s.deleted,
            last_paid_at: ts(s.last_paid_at),
            last_payment_failed_at: ts(s.last_payment_failed_at),
            grace_until: ts(s.grace_until),
            live: s.is_live(),
            entitled_until: ts(s.entitled_until()),
            limits: s.limits.into(),
            discount: s.discount.clone().into(),
            version: s.version.into(),
        }
    }
}

impl From<SubscriptionImage> for (String, SubscriptionRow) {
    fn from(r: SubscriptionImage) -> Self {
        let row = SubscriptionRow {
            stripe_subscription_id: r.stripe_subscription_id.clone(),
            stripe_customer_id: r.stripe_customer_id,
            price_id: r.price_id,
            tier: r.tier,
            limits: r.limits.into(),
            status: SubscriptionStatus::parse(&r.status),
            current_period_start: secs(r.current_period_start),
            current_period_end: secs(r.current_period_end),
            trial_end: secs(r.trial_end),
            cancel_at_period_end: r.cancel_at_period_end,
            canceled_at: secs(r.canceled_at),
            ended_at: secs(r.ended_at),
            deleted: r.deleted,
            last_paid_at: secs(r.last_paid_at),
            last_payment_failed_at: secs(r.last_payment_failed_at),
            grace_until: secs(r.grace_until),
            discount: r.discount.into(),
            version: r.version.into(),
        };
        (r.stripe_subscription_id, row)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct InstanceImage {
    stripe_subscription_id: String,
    stripe_customer_id: Option<String>,
    desired: String,
    tier: String,
    #[serde(flatten)]
    limits: LimitColumns,
}

impl From<(&str, &Instance)> for InstanceImage {
    fn from((_, i): (&str, &Instance)) -> Self {
        Self {
            stripe_subscription_id: i.stripe_subscription_id.clone(),
            stripe_customer_id: i.stripe_customer_id.clone(),
            desired: i.desired.as_str().to_owned(),
            tier: i.tier.clone(),
            limits: i.limits.into(),
        }
    }
}

impl From<InstanceImage> for (String, Instance) {
    fn from(r: InstanceImage) -> Self {
        let instance = Instance {
            stripe_subscription_id: r.stripe_subscription_id.clone(),
            stripe_customer_id: r.stripe_customer_id,
            desired: desired_from(&r.desired),
            tier: r.tier,
            limits: r.limits.into(),
        };
        (r.stripe_subscription_id, instance)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct TokenImage {
    stripe_customer_id: String,
    wanted: bool,
    tier: Option<String>,
}

impl From<(&str, &TokenWant)> for TokenImage {
    fn from((_, t): (&str, &TokenWant)) -> Self {
        Self { stripe_customer_id: t.stripe_customer_id.clone(), wanted: t.wanted, tier: t.tier.clone() }
    }
}

impl From<TokenImage> for (String, TokenWant) {
    fn from(r: TokenImage) -> Self {
        let token = TokenWant { stripe_customer_id: r.stripe_customer_id.clone(), wanted: r.wanted, tier: r.tier };
        (r.stripe_customer_id, token)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct GrantImage {
    key: String,
    stripe_customer_id: String,
    credits: i64,
    rollover_cap: Option<i64>,
    granted_for: DateTime<Utc>,
}

impl From<(&str, &CreditGrant)> for GrantImage {
    fn from((_, g): (&str, &CreditGrant)) -> Self {
        Self {
            key: g.key.clone(),
            stripe_customer_id: g.stripe_customer_id.clone(),
            credits: i64::try_from(g.credits).unwrap_or(i64::MAX),
            rollover_cap: g.rollover_cap.map(|c| i64::try_from(c).unwrap_or(i64::MAX)),
            granted_for: ts(Some(g.at)).unwrap_or_default(),
        }
    }
}

impl From<GrantImage> for (String, CreditGrant) {
    fn from(r: GrantImage) -> Self {
        let grant = CreditGrant {
            key: r.key.clone(),
            stripe_customer_id: r.stripe_customer_id,
            credits: u64::try_from(r.credits).unwrap_or(0),
            rollover_cap: r.rollover_cap.map(|c| u64::try_from(c).unwrap_or(0)),
            at: r.granted_for.timestamp(),
        };
        (r.key, grant)
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct AnomalyImage {
    key: String,
    kind: String,
    detail: String,
    position: i64,
}

impl From<(&str, &Anomaly)> for AnomalyImage {
    fn from((_, a): (&str, &Anomaly)) -> Self {
        Self { key: a.key.clone(), kind: a.kind.clone(), detail: a.detail.clone(), position: a.position }
    }
}

impl From<AnomalyImage> for (String, Anomaly) {
    fn from(r: AnomalyImage) -> Self {
        let anomaly = Anomaly { key: r.key.clone(), kind: r.kind, detail: r.detail, position: r.position };
        (r.key, anomaly)
    }
}
