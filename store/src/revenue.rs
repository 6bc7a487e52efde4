//! MRR per day and currency from `projection.mrr_movements` (docs/analytics.md): what
//! `GET /v1/analytics/mrr`, the console's Revenue page and `replay analytics mrr` show. For each
//! day: previous MRR + new + expansion + reactivation - contraction - churn = MRR at the day's end;
//! `customers` counts those paying at the day's end (a start adds one, a churn takes one).

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;
use sqlx::PgPool;

/// One day of one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Day {
    /// The UTC day.
    pub date: NaiveDate,
    /// MRR at its end, in minor units.
    pub mrr: i64,
    /// Customers paying at its end.
    pub customers: i64,
    /// MRR of customers who started paying for the first time.
    pub new: i64,
    /// Increases.
    pub expansion: i64,
    /// Decreases to a non-zero amount.
    pub contraction: i64,
    /// Decreases to zero.
    pub churn: i64,
    /// Customers paying again.
    pub reactivation: i64,
}

impl Day {
    /// Whether anything moved that day.
    pub fn moved(&self) -> bool {
        self.new != 0 || self.expansion != 0 || self.contraction != 0 || self.churn != 0 || self.reactivation != 0
    }
}

/// Per currency, one [`Day`] per day of `from..=to`, carried from the movements before `from`.
pub async fn daily(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> sqlx::Result<BTreeMap<String, Vec<Day>>> {
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

/// The days from the totals before `from` and the range's movements grouped by (currency, day,
/// kind) with their sum and count.
fn series(
    before: Vec<(String, i64, i64)>,
    rows: Vec<(String, NaiveDate, String, i64, i64)>,
    from: NaiveDate,
    to: NaiveDate,
) -> BTreeMap<String, Vec<Day>> {
    let mut start: BTreeMap<String, (i64, i64)> = before.into_iter().map(|(c, mrr, n)| (c, (mrr, n))).collect();
    let mut moved: BTreeMap<(String, NaiveDate), (Day, i64)> = BTreeMap::new();
    for (currency, date, kind, amount, count) in rows {
        start.entry(currency.clone()).or_default();
        let (day, starts) = moved.entry((currency, date)).or_default();
        match kind.as_str() {
            "new" => (day.new, *starts) = (day.new + amount, *starts + count),
            "reactivation" => (day.reactivation, *starts) = (day.reactivation + amount, *starts + count),
            "churn" => (day.churn, *starts) = (day.churn + amount, *starts - count),
            "expansion" => day.expansion += amount,
            "contraction" => day.contraction += amount,
            _ => {}
        }
    }
    let mut out = BTreeMap::new();
    for (currency, (mut mrr, mut customers)) in start {
        let mut days = Vec::new();
        for date in from.iter_days().take_while(|d| *d <= to) {
            let (mut day, starts) = moved.get(&(currency.clone(), date)).copied().unwrap_or_default();
            mrr += day.new + day.expansion + day.reactivation - day.contraction - day.churn;
            customers += starts;
            (day.date, day.mrr, day.customers) = (date, mrr, customers);
            days.push(day);
        }
        out.insert(currency, days);
    }
    out
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
        let usd: Vec<(i64, i64)> = out["usd"].iter().map(|d| (d.mrr, d.customers)).collect();
        assert_eq!(usd, [(5_000, 2), (6_900, 2), (13_900, 2)]);
        assert_eq!((out["usd"][1].new, out["usd"][1].churn, out["usd"][1].date), (2_900, 1_000, day(2)));
        assert!(!out["usd"][0].moved() && out["usd"][1].moved());
        let eur: Vec<i64> = out["eur"].iter().map(|d| d.mrr).collect();
        assert_eq!(eur, [0, 0, 3_000], "a currency first seen in the range starts at 0");
    }
}
