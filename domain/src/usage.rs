//! Quota windows, decided purely: where each window of a moment starts and resets, which window
//! is the tightest, which one refused, how long a refused caller waits, how counts read in answers
//! and in the IETF `RateLimit-Policy` / `RateLimit` header fields. The conditional write that
//! counts is `ledger.count_usage_batch` (migrations/0039_quota_windows.sql); docs/usage.md holds
//! the model.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike as _, Days, Months, NaiveDate, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::catalog::{Catalog, Quota, Tier, Window};

/// The UTC calendar day `now` counts in.
pub fn day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive()
}

/// 00:00 UTC after `day`: when its counts stop applying.
pub fn resets_at(day: NaiveDate) -> DateTime<Utc> {
    day.checked_add_days(Days::new(1)).unwrap_or(day).and_time(chrono::NaiveTime::MIN).and_utc()
}

/// `Retry-After` for a window resetting at `resets`, asked at `now`: whole seconds, at least 1.
pub fn retry_after(resets: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    let micros = (resets - now).num_microseconds().unwrap_or(0);
    u64::try_from(micros).unwrap_or(0).div_ceil(1_000_000).max(1)
}

/// A billing period (`current_period_start`, `current_period_end`, unix seconds) as the fold
/// knows it.
pub type Period = (Option<i64>, Option<i64>);

/// A live subscription as quotas see it: its tier and billing period (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    /// The tier its price sells.
    pub tier: String,
    /// `current_period_start`, `current_period_end`, as the fold knows them.
    pub period: Period,
}

/// The highest of `live` the catalog ranks: the tier whose quotas are in force, and the billing
/// period its `_per_period` windows follow (of several subscriptions on that tier, the latest
/// period). Names the catalog does not know never count.
pub fn highest<'a>(catalog: &'a Catalog, live: &[Live]) -> Option<(&'a Tier, Period)> {
    let best = live
        .iter()
        .filter_map(|l| catalog.rank(&l.tier).map(|rank| (rank, l.period.0, l)))
        .max_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)).then_with(|| a.2.tier.cmp(&b.2.tier)))?;
    catalog.tier(&best.2.tier).map(|tier| (tier, best.2.period))
}

/// Where one window of a moment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Which window.
    pub window: Window,
    /// Its start: the counter's key.
    pub starts_at: DateTime<Utc>,
    /// When it resets.
    pub resets_at: DateTime<Utc>,
}

/// The `window` that `now` counts in. Minutes, hours and days are UTC-aligned. A billing period
/// runs from `current_period_start` to `current_period_end`; past its end (Stripe's renewal not
/// folded yet) the next one is taken to start at that end, as Stripe's renewal will say, so the
/// count resets on time and the renewal lands on the same counter. A period the fold does not
/// know (no start yet) is the UTC calendar month.
pub fn span(window: Window, now: DateTime<Utc>, period: Period) -> Span {
    let aligned = |secs: i64| {
        let start = now.timestamp().div_euclid(secs) * secs;
        let at = |s| DateTime::from_timestamp(s, 0).unwrap_or(now);
        Span { window, starts_at: at(start), resets_at: at(start + secs) }
    };
    match window {
        Window::Minute => aligned(60),
        Window::Hour => aligned(3_600),
        Window::Day => {
            let today = day(now);
            Span { window, starts_at: today.and_time(chrono::NaiveTime::MIN).and_utc(), resets_at: resets_at(today) }
        }
        Window::Period => period_span(now, period),
    }
}

fn period_span(now: DateTime<Utc>, period: Period) -> Span {
    let at = |s: i64| DateTime::from_timestamp(s, 0);
    match (period.0.and_then(at), period.1.and_then(at)) {
        (Some(start), Some(end)) if start < end && start <= now => {
            let length = end - start;
            let mut span = Span { window: Window::Period, starts_at: start, resets_at: end };
            if now >= end {
                let skipped = (now - end).num_seconds() / length.num_seconds().max(1);
                span.starts_at = end + length * i32::try_from(skipped).unwrap_or(0);
                span.resets_at = span.starts_at + length;
            }
            span
        }
        _ => {
            let month = day(now).with_day0(0).unwrap_or(day(now)).and_time(chrono::NaiveTime::MIN).and_utc();
            let next = month.checked_add_months(Months::new(1)).unwrap_or(month + TimeDelta::days(31));
            Span { window: Window::Period, starts_at: month, resets_at: next }
        }
    }
}

/// The windows of `metric` under `tier` at `now`, with their quotas (`None` tier: no live plan,
/// a quota of 0 in a day window).
pub fn windows(tier: Option<&Tier>, metric: &str, now: DateTime<Utc>, period: Period) -> Vec<(Span, Quota)> {
    match tier.and_then(|t| t.quotas.get(metric)) {
        Some(quotas) => quotas.iter().map(|(window, quota)| (span(*window, now, period), *quota)).collect(),
        None => vec![(span(Window::Day, now, period), Quota::Max(0))],
    }
}

/// One window's count against its quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowCount {
    /// Where the window stands.
    pub span: Span,
    /// Counted in it so far.
    pub used: u64,
    /// Its quota.
    pub quota: Quota,
}

impl WindowCount {
    /// What is left; `None` when unlimited.
    pub fn remaining(&self) -> Option<u64> {
        match self.quota {
            Quota::Unlimited => None,
            Quota::Max(limit) => Some(limit.saturating_sub(self.used)),
        }
    }

    /// The quota as the API shows it: a number, or null for unlimited.
    pub fn limit(&self) -> Option<u64> {
        match self.quota {
            Quota::Unlimited => None,
            Quota::Max(limit) => Some(limit),
        }
    }

    /// Whether `quantity` more would pass the quota.
    pub fn refuses(&self, quantity: u64) -> bool {
        self.remaining().is_some_and(|left| left < quantity)
    }

    /// `{window, used, limit, remaining, resets_at}`.
    pub fn json(&self) -> Value {
        json!({
            "window": self.span.window.as_str(),
            "used": self.used,
            "limit": self.limit(),
            "remaining": self.remaining(),
            "resets_at": self.span.resets_at.to_rfc3339(),
        })
    }
}

/// The tightest of `windows`: the least left (unlimited is never tighter than a number), then the
/// latest reset (the longer wait).
pub fn tightest(windows: &[WindowCount]) -> Option<&WindowCount> {
    windows.iter().min_by(|a, b| {
        let left = |w: &WindowCount| w.remaining().map_or((1, 0), |r| (0, r));
        left(a).cmp(&left(b)).then(b.span.resets_at.cmp(&a.span.resets_at))
    })
}

/// The window that refuses `quantity` more, if any: of several, the one that resets last (the
/// request can count only once every window has room).
pub fn refusing(windows: &[WindowCount], quantity: u64) -> Option<&WindowCount> {
    windows.iter().filter(|w| w.refuses(quantity)).max_by_key(|w| w.span.resets_at)
}

/// `{metric, used, limit, remaining, resets_at, windows: [...]}`: the top-level fields describe
/// the tightest window.
pub fn answer(metric: &str, windows: &[WindowCount]) -> Value {
    let mut out = tightest(windows).map_or_else(|| json!({}), WindowCount::json);
    if let Some(object) = out.as_object_mut() {
        object.remove("window");
        object.insert("metric".to_owned(), json!(metric));
        object.insert("windows".to_owned(), Value::Array(windows.iter().map(WindowCount::json).collect()));
    }
    out
}

/// The IETF `RateLimit-Policy` and `RateLimit` field values (draft-ietf-httpapi-ratelimit-headers:
/// an sf-string policy name, `q` the quota and `w` the window in seconds; `r` what remains and
/// `t` the seconds until it resets). The one place these fields are written.
pub fn rate_limit_fields(
    policy: &str,
    quota: u64,
    window_secs: u64,
    remaining: u64,
    reset_secs: u64,
) -> [(&'static str, String); 2] {
    [
        ("ratelimit-policy", format!("\"{policy}\";q={quota};w={window_secs}")),
        ("ratelimit", format!("\"{policy}\";r={remaining};t={reset_secs}")),
    ]
}

/// The header fields for the tightest of `windows` at `now` (none when every window is unlimited):
/// the policy is named after its tier limit (`messages_per_minute`).
pub fn headers(metric: &str, windows: &[WindowCount], now: DateTime<Utc>) -> Vec<(&'static str, String)> {
    let Some(tight) = tightest(windows) else { return Vec::new() };
    let (Some(limit), Some(left)) = (tight.limit(), tight.remaining()) else { return Vec::new() };
    let length = u64::try_from((tight.span.resets_at - tight.span.starts_at).num_seconds()).unwrap_or(0);
    let reset = retry_after(tight.span.resets_at, now);
    rate_limit_fields(&tight.span.window.limit_name(metric), limit, length, left, reset).to_vec()
}

/// A window as a counted request keeps it (`ledger.usage.windows`).
#[derive(Deserialize)]
struct StoredWindow {
    window: String,
    starts_at: DateTime<Utc>,
    resets_at: DateTime<Utc>,
    used: u64,
    limit: Option<u64>,
}

/// The windows a count answered with, as `ledger.count_usage_batch` returns them and
/// `ledger.usage` keeps them (a JSON array); nothing readable: none.
pub fn parse_windows(json: &str) -> Vec<WindowCount> {
    let stored: Vec<StoredWindow> = serde_json::from_str(json).unwrap_or_default();
    stored
        .into_iter()
        .filter_map(|w| {
            Some(WindowCount {
                span: Span { window: Window::parse(&w.window)?, starts_at: w.starts_at, resets_at: w.resets_at },
                used: w.used,
                quota: w.limit.map_or(Quota::Unlimited, Quota::Max),
            })
        })
        .collect()
}

/// A counter as stored: one metric in one window starting at `starts_at`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Counter {
    /// The metric.
    pub metric: String,
    /// The window's name.
    pub window: String,
    /// The window's start.
    pub starts_at: DateTime<Utc>,
    /// Counted in it.
    pub used: u64,
}

/// The starts of the day, hour and minute `now` counts in (the counters an answer may show,
/// besides the period's).
pub fn current_starts(now: DateTime<Utc>) -> [DateTime<Utc>; 3] {
    [Window::Day, Window::Hour, Window::Minute].map(|w| span(w, now, (None, None)).starts_at)
}

/// The counters `ledger.current_counters` returns (a JSON array); nothing readable: none.
pub fn parse_counters(json: &str) -> Vec<Counter> {
    serde_json::from_str(json).unwrap_or_default()
}

/// Where every quota metric of `tier` stands at `now`, from the customer's current counters:
/// `{metric: {used, limit, remaining, resets_at, windows}}` (`None` tier: no live plan, every
/// limit 0).
pub fn standing(
    catalog: &Catalog,
    tier: Option<&Tier>,
    period: Period,
    counters: &[Counter],
    now: DateTime<Utc>,
) -> Value {
    let mut out = serde_json::Map::new();
    for metric in catalog.quota_metrics() {
        let counts = counts(tier, metric, period, counters, now);
        let mut entry = answer(metric, &counts);
        if let Some(object) = entry.as_object_mut() {
            object.remove("metric");
        }
        out.insert(metric.to_owned(), entry);
    }
    Value::Object(out)
}

/// `metric`'s windows under `tier` at `now`, each with what `counters` hold for its span.
pub fn counts(
    tier: Option<&Tier>,
    metric: &str,
    period: Period,
    counters: &[Counter],
    now: DateTime<Utc>,
) -> Vec<WindowCount> {
    let used = |span: &Span| {
        counters
            .iter()
            .find(|c| c.metric == metric && c.window == span.window.as_str() && c.starts_at == span.starts_at)
            .map_or(0, |c| c.used)
    };
    windows(tier, metric, now, period)
        .into_iter()
        .map(|(span, quota)| WindowCount { used: used(&span), span, quota })
        .collect()
}

/// When the soonest of `tier`'s windows resets after `now` (an answer showing usage holds until
/// then at most).
pub fn next_reset(tier: Option<&Tier>, period: Period, now: DateTime<Utc>) -> DateTime<Utc> {
    let windows: BTreeSet<Window> =
        tier.into_iter().flat_map(|t| t.quotas.values().flat_map(|q| q.keys().copied())).collect();
    windows
        .iter()
        .map(|w| span(*w, now, period).resets_at)
        .chain([resets_at(day(now))])
        .filter(|at| *at > now)
        .min()
        .unwrap_or_else(|| resets_at(day(now)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, h, m, s).single().expect("time")
    }

    fn windowed_catalog() -> Catalog {
        let mut text = include_str!("../../catalog.example.toml").to_owned();
        for (day, minute, period) in
            [("100", "5", "2000"), ("1000", "60", "20000"), ("10000", "600", "-1"), ("-1", "-1", "-1")]
        {
            text = text.replacen(
                &format!("messages_per_day = {day},"),
                &format!("messages_per_day = {day}, messages_per_minute = {minute}, messages_per_period = {period},"),
                1,
            );
        }
        Catalog::parse(&text).expect("catalog")
    }

    #[test]
    fn the_last_second_counts_for_today_and_midnight_starts_the_next_day() {
        assert_eq!(day(t(23, 59, 59)), NaiveDate::from_ymd_opt(2026, 11, 28).expect("day"));
        let midnight = Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).single().expect("time");
        assert_eq!(day(midnight), NaiveDate::from_ymd_opt(2026, 11, 29).expect("day"));
        assert_eq!(resets_at(day(t(23, 59, 59))), midnight);
        assert_eq!(retry_after(midnight, t(23, 59, 59)), 1);
        assert_eq!(retry_after(resets_at(day(midnight)), midnight), 86_400);
        assert_eq!(retry_after(midnight, t(12, 0, 0)), 43_200);
        assert_eq!(retry_after(midnight, t(23, 59, 59) + chrono::Duration::milliseconds(500)), 1, "rounded up");
    }

    #[test]
    fn minutes_and_hours_are_utc_aligned_and_periods_follow_the_subscription() {
        let none = (None, None);
        let minute = span(Window::Minute, t(10, 41, 59), none);
        assert_eq!((minute.starts_at, minute.resets_at), (t(10, 41, 0), t(10, 42, 0)));
        assert_eq!(span(Window::Minute, t(10, 42, 0), none).starts_at, t(10, 42, 0), "a new minute, a new count");
        let hour = span(Window::Hour, t(10, 41, 59), none);
        assert_eq!((hour.starts_at, hour.resets_at), (t(10, 0, 0), t(11, 0, 0)));
        // A period from the 15th to the 15th, not the calendar month, not midnight.
        let (start, end) = (t(9, 30, 0) - TimeDelta::days(13), t(9, 30, 0) + TimeDelta::days(17));
        let period = (Some(start.timestamp()), Some(end.timestamp()));
        let p = span(Window::Period, t(10, 0, 0), period);
        assert_eq!((p.starts_at, p.resets_at), (start, end));
        // Past its end, before the renewal is folded: the next period starts at that end.
        let late = span(Window::Period, end + TimeDelta::minutes(5), period);
        assert_eq!((late.starts_at, late.resets_at), (end, end + (end - start)));
        // Unknown: the calendar month.
        let month = span(Window::Period, t(10, 0, 0), (None, Some(end.timestamp())));
        assert_eq!(month.starts_at, Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).single().expect("t"));
        assert_eq!(month.resets_at, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).single().expect("t"));
    }

    #[test]
    fn the_highest_live_tier_rules_with_its_period_and_unknown_names_never_count() {
        let catalog = Catalog::example().expect("catalog");
        let live = |tier: &str, start| Live { tier: tier.to_owned(), period: (Some(start), Some(start + 100)) };
        let plans = [live("starter", 1), live("unknown", 2), live("professional", 3)];
        let (tier, period) = highest(&catalog, &plans).expect("one");
        assert_eq!((tier.name.as_str(), period.0), ("professional", Some(3)));
        assert_eq!(highest(&catalog, &[live("unknown", 1)]), None);
        assert_eq!(highest(&catalog, &[]), None);
    }

    #[test]
    fn the_tightest_window_leads_the_answer_and_the_longest_refusal_is_named() {
        let catalog = windowed_catalog();
        let free = catalog.tier("free");
        let now = t(10, 41, 30);
        let counters = [
            Counter { metric: "messages".into(), window: "minute".into(), starts_at: t(10, 41, 0), used: 5 },
            Counter { metric: "messages".into(), window: "minute".into(), starts_at: t(10, 40, 0), used: 3 },
            Counter { metric: "messages".into(), window: "day".into(), starts_at: t(0, 0, 0), used: 40 },
        ];
        let counts = counts(free, "messages", (None, None), &counters, now);
        assert_eq!(counts.iter().map(|c| c.used).collect::<Vec<_>>(), [0, 40, 5], "period, day, this minute");
        let body = answer("messages", &counts);
        assert_eq!(
            (body["used"].clone(), body["limit"].clone(), body["remaining"].clone()),
            (json!(5), json!(5), json!(0))
        );
        assert_eq!(body["windows"].as_array().map(Vec::len), Some(3));
        assert_eq!(
            body["windows"][1],
            json!({ "window": "day", "used": 40, "limit": 100, "remaining": 60, "resets_at": "2026-11-29T00:00:00+00:00" })
        );
        assert_eq!(refusing(&counts, 1).map(|w| w.span.window), Some(Window::Minute));
        assert_eq!(refusing(&counts, 61).map(|w| w.span.window), Some(Window::Day), "the later reset");
        assert_eq!(refusing(&counts, 2_001).map(|w| w.span.window), Some(Window::Period));
        let fields = headers("messages", &counts, now);
        assert_eq!(
            fields,
            [
                ("ratelimit-policy", "\"messages_per_minute\";q=5;w=60".to_owned()),
                ("ratelimit", "\"messages_per_minute\";r=0;t=30".to_owned())
            ]
        );
        assert_eq!(next_reset(free, (None, None), now), t(10, 42, 0));
    }

    #[test]
    fn unlimited_reads_as_null_never_as_minus_one_and_sends_no_header() {
        let catalog = Catalog::example().expect("catalog");
        let now = t(1, 0, 0);
        let counters = [Counter { metric: "messages".into(), window: "day".into(), starts_at: t(0, 0, 0), used: 3 }];
        let standing = standing(&catalog, catalog.tier("enterprise"), (None, None), &counters, now);
        assert_eq!(standing["messages"]["used"], 3);
        assert_eq!(standing["messages"]["limit"], Value::Null);
        assert_eq!(standing["api_calls"]["remaining"], Value::Null);
        assert_eq!(standing["messages"]["resets_at"], "2026-11-29T00:00:00+00:00");
        let counts = counts(catalog.tier("enterprise"), "messages", (None, None), &counters, now);
        assert!(headers("messages", &counts, now).is_empty());
        let over = WindowCount { span: span(Window::Day, now, (None, None)), used: 7, quota: Quota::Max(5) };
        assert_eq!(over.remaining(), Some(0), "never negative");
    }
}
