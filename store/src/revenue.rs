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

/// Sums of one day's movements in one currency, as `projection.mrr_days` keeps them (migration
/// 0034): amounts by kind, and starts (new and reactivation +1, churn -1).
#[derive(Debug, Clone, sqlx::FromRow)]
struct DayRow {
    currency: String,
    day: NaiveDate,
    new: i64,
    expansion: i64,
    contraction: i64,
    churn: i64,
    reactivation: i64,
    starts: i64,
}

/// Per currency, one [`Day`] per day of `from..=to`, carried from the days before `from`: two
/// reads of `projection.mrr_days` (at most a row per currency and day), run at once.
pub async fn daily(pool: &PgPool, from: NaiveDate, to: NaiveDate) -> sqlx::Result<BTreeMap<String, Vec<Day>>> {
    let before = sqlx::query_as::<_, (String, i64, i64)>(
        "SELECT currency, sum(new + expansion + reactivation - contraction - churn)::bigint, sum(starts)::bigint
         FROM projection.mrr_days WHERE day < $1 GROUP BY currency",
    )
    .bind(from)
    .fetch_all(pool);
    let rows = sqlx::query_as::<_, DayRow>(
        "SELECT currency, day, new, expansion, contraction, churn, reactivation, starts FROM projection.mrr_days
         WHERE day >= $1 AND day <= $2",
    )
    .bind(from)
    .bind(to)
    .fetch_all(pool);
    let (before, rows) = tokio::try_join!(before, rows)?;
    Ok(series(before, rows, from, to))
}

/// Fills `projection.mrr_days` from `projection.mrr_movements` (a rebuild's new tables, before
/// the triggers that keep it are carried over).
pub(crate) async fn fill_days(conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
    sqlx::query(
        "SELECT ledger.add_mrr_days(array_agg(currency), array_agg(day), array_agg(kind), array_agg(amount),
                                    array_agg(1)) FROM projection.mrr_movements",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The days from the totals before `from` and the range's day rows.
fn series(
    before: Vec<(String, i64, i64)>,
    rows: Vec<DayRow>,
    from: NaiveDate,
    to: NaiveDate,
) -> BTreeMap<String, Vec<Day>> {
    let mut start: BTreeMap<String, (i64, i64)> = before.into_iter().map(|(c, mrr, n)| (c, (mrr, n))).collect();
    let mut moved: BTreeMap<(String, NaiveDate), (Day, i64)> = BTreeMap::new();
    for r in rows {
        start.entry(r.currency.clone()).or_default();
        let day = Day {
            new: r.new,
            expansion: r.expansion,
            contraction: r.contraction,
            churn: r.churn,
            reactivation: r.reactivation,
            ..Day::default()
        };
        moved.insert((r.currency, r.day), (day, r.starts));
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
        let row = |currency: &str, d, (new, expansion, churn), starts| DayRow {
            currency: currency.to_owned(),
            day: day(d),
            new,
            expansion,
            contraction: 0,
            churn,
            reactivation: 0,
            starts,
        };
        let rows =
            vec![row("usd", 2, (2_900, 0, 1_000), 0), row("usd", 3, (0, 7_000, 0), 0), row("eur", 3, (3_000, 0, 0), 1)];
        let out = series(before, rows, day(1), day(3));
        let usd: Vec<(i64, i64)> = out["usd"].iter().map(|d| (d.mrr, d.customers)).collect();
        assert_eq!(usd, [(5_000, 2), (6_900, 2), (13_900, 2)]);
        assert_eq!((out["usd"][1].new, out["usd"][1].churn, out["usd"][1].date), (2_900, 1_000, day(2)));
        assert!(!out["usd"][0].moved() && out["usd"][1].moved());
        let eur: Vec<i64> = out["eur"].iter().map(|d| d.mrr).collect();
        assert_eq!(eur, [0, 0, 3_000], "a currency first seen in the range starts at 0");
    }
}
