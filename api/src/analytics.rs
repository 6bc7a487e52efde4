//! `GET /v1/analytics/mrr?from=YYYY-MM-DD&to=YYYY-MM-DD` (the backend key only): MRR and its
//! movements per day and currency, from `projection.mrr_movements` (docs/analytics.md). For each
//! day: previous MRR + new + expansion + reactivation - contraction - churn = MRR at the day's end;
//! `customers` counts those paying at the day's end (a start adds one, a churn takes one).

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate};
use domain::revenue::Policy;
use serde::Deserialize;
use serde_json::{Value, json};

use super::BillingState;
use super::auth::Caller;
use super::error::{ApiError, Code};

/// Most days one answer spans.
const MAX_DAYS: u64 = 3_660;

/// `?from=&to=` (both optional: the last 30 days up to today, UTC).
#[derive(Debug, Deserialize)]
pub struct Range {
    from: Option<String>,
    to: Option<String>,
}

/// The day's flows in one currency: new, expansion, contraction, churn, reactivation, and the
/// change in paying customers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Flows {
    new: i64,
    expansion: i64,
    contraction: i64,
    churn: i64,
    reactivation: i64,
    customers: i64,
}

impl Flows {
    fn net(&self) -> i64 {
        self.new + self.expansion + self.reactivation - self.contraction - self.churn
    }
}

/// The handler.
pub async fn mrr(State(state): State<BillingState>, headers: HeaderMap, Query(range): Query<Range>) -> Response {
    match answer(&state, &headers, &range).await {
        Ok(body) => axum::Json(body).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn answer(state: &BillingState, headers: &HeaderMap, range: &Range) -> Result<Value, ApiError> {
    if let Caller::Customer(_) = state.caller(headers).await? {
        return Err(ApiError::new(Code::Forbidden, "revenue is for the backend key, not a customer's token"));
    }
    let today = state.clock.now().date_naive();
    let (from, to) = days(range, today)?;
    let currencies = daily(&state.pool, from, to).await?;
    Ok(json!({ "policy": policy(state.catalog.analytics()), "from": from, "to": to, "currencies": currencies }))
}

/// Per currency, one entry per day of `from..=to`: `{date, mrr, customers, new, expansion,
/// contraction, churn, reactivation}` (what the endpoint and the console's Revenue page show).
pub async fn daily(pool: &sqlx::PgPool, from: NaiveDate, to: NaiveDate) -> sqlx::Result<BTreeMap<String, Vec<Value>>> {
    let before: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT currency, sum(CASE WHEN kind IN ('contraction', 'churn') THEN -amount ELSE amount END)::bigint,
                sum(CASE kind WHEN 'churn' THEN -1 WHEN 'new' THEN 1 WHEN 'reactivation' THEN 1 ELSE 0 END)::bigint
         FROM projection.mrr_movements WHERE day < $1 GROUP BY currency",
    )
    .bind(from)
    .fetch_all(pool)
    .await?;
    let rows: Vec<(String, NaiveDate, String, i64, i64)> = sqlx::query_as(
        "SELECT currency, day, kind, sum(amount)::bigint, count(*) FROM projection.mrr_movements
         WHERE day >= $1 AND day <= $2 GROUP BY currency, day, kind",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?;
    Ok(series(before, rows, from, to))
}

/// The range asked for: both days valid, `from` not after `to`, at most [`MAX_DAYS`].
fn days(range: &Range, today: NaiveDate) -> Result<(NaiveDate, NaiveDate), ApiError> {
    let parse = |field: &str, text: &Option<String>, default: NaiveDate| match text {
        None => Ok(default),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| ApiError::new(Code::InvalidRequest, format!("{field}: a date as YYYY-MM-DD"))),
    };
    let to = parse("to", &range.to, today)?;
    let from = parse("from", &range.from, to.checked_sub_days(Days::new(29)).unwrap_or(to))?;
    let span = (to - from).num_days();
    if span < 0 {
        return Err(ApiError::new(Code::InvalidRequest, "from: on or before to"));
    }
    if span.unsigned_abs() >= MAX_DAYS {
        return Err(ApiError::new(Code::InvalidRequest, format!("at most {MAX_DAYS} days at once")));
    }
    Ok((from, to))
}

/// One entry per day in `from..=to` for every currency seen: the flows of that day and the MRR
/// and paying customers at its end, carried from what came before `from`.
fn series(
    before: Vec<(String, i64, i64)>,
    rows: Vec<(String, NaiveDate, String, i64, i64)>,
    from: NaiveDate,
    to: NaiveDate,
) -> BTreeMap<String, Vec<Value>> {
    let mut start: BTreeMap<String, (i64, i64)> = before.into_iter().map(|(c, mrr, n)| (c, (mrr, n))).collect();
    let mut flows: BTreeMap<(String, NaiveDate), Flows> = BTreeMap::new();
    for (currency, day, kind, amount, count) in rows {
        start.entry(currency.clone()).or_default();
        let f = flows.entry((currency, day)).or_default();
        match kind.as_str() {
            "new" => (f.new, f.customers) = (f.new + amount, f.customers + count),
            "reactivation" => (f.reactivation, f.customers) = (f.reactivation + amount, f.customers + count),
            "churn" => (f.churn, f.customers) = (f.churn + amount, f.customers - count),
            "expansion" => f.expansion += amount,
            "contraction" => f.contraction += amount,
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (currency, (mut mrr, mut customers)) in start {
        let mut entries = Vec::new();
        for day in from.iter_days().take_while(|d| *d <= to) {
            let f = flows.get(&(currency.clone(), day)).copied().unwrap_or_default();
            mrr += f.net();
            customers += f.customers;
            entries.push(json!({
                "date": day, "mrr": mrr, "customers": customers, "new": f.new, "expansion": f.expansion,
                "contraction": f.contraction, "churn": f.churn, "reactivation": f.reactivation,
            }));
        }
        out.insert(currency, entries);
    }
    out
}

fn policy(policy: &Policy) -> Value {
    serde_json::to_value(policy).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).expect("day")
    }

    #[test]
    fn each_day_carries_the_mrr_and_adds_its_flows() {
        let before = vec![("usd".to_owned(), 5_000, 2)];
        let rows = vec![
            ("usd".to_owned(), day(2), "new".to_owned(), 2_900, 1),
            ("usd".to_owned(), day(2), "churn".to_owned(), 1_000, 1),
            ("usd".to_owned(), day(3), "expansion".to_owned(), 7_000, 1),
            ("eur".to_owned(), day(3), "new".to_owned(), 3_000, 1),
        ];
        let out = series(before, rows, day(1), day(3));
        let usd: Vec<(i64, i64)> =
            out["usd"].iter().map(|d| (d["mrr"].as_i64().expect("mrr"), d["customers"].as_i64().expect("n"))).collect();
        assert_eq!(usd, [(5_000, 2), (6_900, 2), (13_900, 2)]);
        assert_eq!(out["usd"][1]["new"], 2_900);
        assert_eq!(out["usd"][1]["churn"], 1_000);
        assert_eq!(out["usd"][1]["date"], "2026-03-02");
        let eur: Vec<i64> = out["eur"].iter().map(|d| d["mrr"].as_i64().expect("mrr")).collect();
        assert_eq!(eur, [0, 0, 3_000], "a currency first seen in the range starts at 0");
    }

    #[test]
    fn the_range_defaults_to_the_last_30_days_and_refuses_what_is_not_a_range() {
        let range = |from: Option<&str>, to: Option<&str>| Range { from: from.map(Into::into), to: to.map(Into::into) };
        assert_eq!(days(&range(None, None), day(31)).expect("range"), (day(2), day(31)));
        assert!(days(&range(Some("2026-03-05"), Some("2026-03-01")), day(31)).is_err());
        assert!(days(&range(Some("March"), None), day(31)).is_err());
        assert!(days(&range(Some("2000-01-01"), Some("2026-01-01")), day(31)).is_err(), "too long");
    }
}
