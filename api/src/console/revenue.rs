//! Revenue: MRR at each day's end and the day's movements (new, expansion, reactivation up;
//! contraction, churn down) as charts with titled axes, the figures per day, and a day's
//! movements with the customers behind them one click away (docs/analytics.md).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use chrono::{Days, NaiveDate};
use maud::{Markup, html};
use serde::Deserialize;
use store::revenue::Day;

use super::charts::{self, Series};
use super::{ConsoleState, layout, urlencode};

/// Days shown.
const DAYS: u64 = 90;

/// `?currency=usd&day=YYYY-MM-DD`.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    currency: Option<String>,
    day: Option<NaiveDate>,
}

/// `GET /console/revenue`.
pub async fn page(State(state): State<ConsoleState>, Query(params): Query<Params>) -> Response {
    match render(&state, params).await {
        Ok(page) => page.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState, params: Params) -> anyhow::Result<Markup> {
    let to = state.clock.now().date_naive();
    let from = to.checked_sub_days(Days::new(DAYS - 1)).unwrap_or(to);
    let all = store::revenue::daily(&state.pool, from, to).await?;
    let currency = params
        .currency
        .filter(|c| all.contains_key(c))
        .or_else(|| all.iter().max_by_key(|(_, days)| days.last().map(|d| d.mrr)).map(|(c, _)| c.clone()));
    let policy = state.catalog.analytics();
    let body = html! {
        p.muted { "Policy (catalog [analytics]): discounts " code { (policy.discounts.as_str()) }
            ", past due " code { (policy.past_due.as_str()) }
            ". Recomputed from the log by every rebuild; definitions in docs/analytics.md." }
        @if all.len() > 1 {
            p { "Currency: " @for c in all.keys() { a href={ "/console/revenue?currency=" (urlencode(c)) } { code { (c) } } " " } }
        }
        @match currency.as_deref().and_then(|c| all.get(c).map(|days| (c, days))) {
            Some((currency, days)) => { (charts_and_table(currency, days)) }
            None => { p.muted { "No movement of MRR yet." } }
        }
        @if let Some(day) = params.day { (movements_of_day(state, day).await?) }
    };
    layout::page(state, "Revenue", body).await
}

fn charts_and_table(currency: &str, days: &[Day]) -> Markup {
    let labels: Vec<String> = days.iter().map(|d| d.date.to_string()).collect();
    let money = |v: i64| money(currency, v);
    let mrr = [Series { name: "MRR", color: "#3b6fd8", values: days.iter().map(|d| d.mrr).collect() }];
    let series = |name, color, value: fn(&Day) -> i64| Series { name, color, values: days.iter().map(value).collect() };
    let moved = [
        series("new", "#17803d", |d| d.new),
        series("expansion", "#3b6fd8", |d| d.expansion),
        series("reactivation", "#0e9384", |d| d.reactivation),
        series("contraction", "#dc6803", |d| -d.contraction),
        series("churn", "#b42318", |d| -d.churn),
    ];
    let x_title = format!("day (UTC), last {DAYS} days");
    html! {
        h2 { "MRR at each day's end (" (currency) ")" }
        (charts::stacked(&labels, &mrr, &format!("MRR, {currency}"), &x_title, &money))
        h2 { "Movements per day (" (currency) ")" }
        (charts::stacked(&labels, &moved, &format!("MRR moved, {currency}"), &x_title, &money))
        div.wrap { table.revenue {
            tr { th { "day" } th { "MRR" } th { "paying customers" } th { "new" } th { "expansion" } th { "reactivation" }
                 th { "contraction" } th { "churn" } }
            @for d in days.iter().rev().filter(|d| d.moved()) {
                tr {
                    td { a href={ "/console/revenue?currency=" (urlencode(currency)) "&day=" (d.date) } { (d.date) } }
                    td.n { (money(d.mrr)) } td.n { (d.customers) }
                    @for v in [d.new, d.expansion, d.reactivation, d.contraction, d.churn] { td.n { (money(v)) } }
                }
            }
        } }
    }
}

/// The movements of `day`, each with its customer and subscription (links) and the event.
async fn movements_of_day(state: &ConsoleState, day: NaiveDate) -> anyhow::Result<Markup> {
    type Row = (String, String, String, i64, i64, String, String);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT stripe_customer_id, currency, kind, amount, mrr_after, stripe_subscription_id, event_id
         FROM projection.mrr_movements WHERE day = $1 ORDER BY created, key LIMIT 500",
    )
    .bind(day)
    .fetch_all(&state.pool)
    .await?;
    Ok(html! {
        h2 { "Movements on " (day.to_string()) }
        div.wrap { table.day-movements {
            tr { th { "customer" } th { "kind" } th { "amount" } th { "MRR after" } th { "subscription" } th { "event" } }
            @for (customer, currency, kind, amount, after, subscription, event) in &rows {
                tr {
                    td { (layout::customer_link(customer)) }
                    td class=(if kind == "churn" || kind == "contraction" { "bad" } else { "ok" }) { (kind) }
                    td.n { (money(currency, *amount)) " " (currency) }
                    td.n { (money(currency, *after)) }
                    td { (layout::subscription_link(subscription)) }
                    td { a href={ "/console/customer?q=" (urlencode(event)) } { code { (event) } } }
                }
            }
            @if rows.is_empty() { tr { td.muted colspan="6" { "no movement that day" } } }
        } }
    })
}

/// Minor units as the currency writes them: `2900` usd is `29.00`, `2900` jpy is `2900` (Stripe's
/// zero-decimal currencies).
pub fn money(currency: &str, minor: i64) -> String {
    const ZERO_DECIMAL: [&str; 16] = [
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    ];
    if ZERO_DECIMAL.contains(&currency) {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", minor.unsigned_abs() / 100, minor.unsigned_abs() % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_read_in_their_currencys_unit() {
        assert_eq!(money("usd", 2_900), "29.00");
        assert_eq!(money("eur", 5), "0.05");
        assert_eq!(money("jpy", 2_900), "2900");
        assert_eq!(money("usd", -1_250), "-12.50");
    }
}
