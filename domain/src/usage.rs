//! Daily quotas, decided purely: the UTC day a moment counts in, when it resets, how long a
//! refused caller waits, and how a count reads in answers. The conditional write that counts is
//! `ledger.count_usage` (migrations/0012_usage.sql); docs/usage.md holds the model.

use std::collections::BTreeMap;

use crate::catalog::{Catalog, Quota, Tier};
use chrono::{DateTime, Days, NaiveDate, Utc};
use serde_json::{Value, json};

/// The UTC calendar day `now` counts in.
pub fn day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// 00:00 UTC after `day`: when its counts stop applying.
pub fn resets_at(day: NaiveDate) -> DateTime<Utc> {
    day.checked_add_days(Days::new(1)).unwrap_or(day).and_time(chrono::NaiveTime::MIN).and_utc()
}

/// `Retry-After` for a refusal at `now`: whole seconds until the next 00:00 UTC, at least 1.
pub fn retry_after(now: DateTime<Utc>) -> u64 {
    let micros = (resets_at(day(now)) - now).num_microseconds().unwrap_or(0);
    u64::try_from(micros).unwrap_or(0).div_ceil(1_000_000).max(1)
}

/// The highest of `tiers` (names from live subscriptions) the catalog ranks: the one whose limits
/// are in force. Names the catalog does not know never count.
pub fn highest_tier<'a>(catalog: &'a Catalog, tiers: &[String]) -> Option<&'a Tier> {
    tiers.iter().filter_map(|t| catalog.rank(t).map(|rank| (rank, t))).max().and_then(|(_, t)| catalog.tier(t))
}

/// One metric's count on one day against its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Count {
    /// The metric.
    pub metric: String,
    /// Counted so far that day.
    pub used: u64,
    /// The quota in force.
    pub quota: Quota,
    /// The UTC day.
    pub day: NaiveDate,
}

impl Count {
    /// What is left today; `None` when unlimited.
    pub fn remaining(&self) -> Option<u64> {
        match self.quota {
            Quota::Unlimited => None,
            Quota::PerDay(limit) => Some(limit.saturating_sub(self.used)),
        }
    }

    /// The quota as the API shows it: a number, or null for unlimited.
    pub fn limit(&self) -> Option<u64> {
        match self.quota {
            Quota::Unlimited => None,
            Quota::PerDay(limit) => Some(limit),
        }
    }

    /// `{metric, used, limit, remaining, resets_at}`.
    pub fn json(&self) -> Value {
        json!({
            "metric": self.metric,
            "used": self.used,
            "limit": self.limit(),
            "remaining": self.remaining(),
            "resets_at": resets_at(self.day).to_rfc3339(),
        })
    }
}

/// Today's usage of every quota metric under `tier` (`None`: no live tier, every limit 0), from
/// the day's counters: `{metric: {used, limit, remaining, resets_at}}`.
pub fn today(catalog: &Catalog, tier: Option<&Tier>, used: &BTreeMap<String, u64>, day: NaiveDate) -> Value {
    let mut out = serde_json::Map::new();
    for metric in catalog.quota_metrics() {
        let quota = tier.and_then(|t| t.quotas.get(metric).copied()).unwrap_or(Quota::PerDay(0));
        let count = Count { metric: metric.to_owned(), used: used.get(metric).copied().unwrap_or(0), quota, day };
        let mut entry = count.json();
        if let Some(object) = entry.as_object_mut() {
            object.remove("metric");
        }
        out.insert(metric.to_owned(), entry);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, h, m, s).single().expect("time")
    }

    #[test]
    fn the_last_second_counts_for_today_and_midnight_starts_the_next_day() {
        assert_eq!(day(t(23, 59, 59)), NaiveDate::from_ymd_opt(2026, 11, 28).expect("day"));
        let midnight = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).single().expect("time");
        assert_eq!(day(midnight), NaiveDate::from_ymd_opt(2026, 11, 29).expect("day"));
        assert_eq!(resets_at(day(t(23, 59, 59))), midnight);
        assert_eq!(retry_after(t(23, 59, 59)), 1);
        assert_eq!(retry_after(midnight), 86_400);
        assert_eq!(retry_after(t(12, 0, 0)), 43_200);
        assert_eq!(retry_after(t(23, 59, 59) + chrono::Duration::milliseconds(500)), 1, "rounded up");
    }

    #[test]
    fn the_highest_live_tier_rules_and_unknown_names_never_count() {
        let catalog = Catalog::example().expect("catalog");
        let tiers = ["starter".to_owned(), "unknown".to_owned(), "professional".to_owned()];
        assert_eq!(highest_tier(&catalog, &tiers).map(|t| t.name.as_str()), Some("professional"));
        assert_eq!(highest_tier(&catalog, &["unknown".to_owned()]), None);
        assert_eq!(highest_tier(&catalog, &[]), None);
    }

    #[test]
    fn unlimited_reads_as_null_never_as_minus_one() {
        let count = |quota| Count { metric: "messages".into(), used: 7, quota, day: day(t(1, 0, 0)) };
        assert_eq!(count(Quota::Unlimited).json()["limit"], Value::Null);
        assert_eq!(count(Quota::Unlimited).json()["remaining"], Value::Null);
        assert_eq!(count(Quota::PerDay(5)).remaining(), Some(0), "never negative");
        assert_eq!(count(Quota::PerDay(50)).json()["remaining"], 43);
        let catalog = Catalog::example().expect("catalog");
        let used = BTreeMap::from([("messages".to_owned(), 3)]);
        let today = today(&catalog, catalog.tier("enterprise"), &used, day(t(1, 0, 0)));
        assert_eq!(today["messages"]["used"], 3);
        assert_eq!(today["api_calls"]["limit"], Value::Null);
        assert_eq!(today["messages"]["resets_at"], "2026-11-29T00:00:00+00:00");
    }
}
