//! Customers: every account, newest first (Stripe's `created`), keyset-paged, searchable by
//! customer, subscription or event id, or by email or name; each row links to the customer and
//! to each of its subscriptions (two clicks from the overview).

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleState, PAGE, layout, parts, urlencode};

/// `?q=<search>&before=<created, Unix seconds>&id=<cus_>`: the page after the row (created, id).
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    q: Option<String>,
    before: Option<f64>,
    id: Option<String>,
}

/// One row: id, email, name, deleted, created (`-inf` when unknown), subscriptions as JSON
/// `[[id, tier, status], ...]`, MRR as JSON `[[currency, minor units], ...]`.
type Row = (String, Option<String>, Option<String>, bool, f64, String, String);

/// `GET /console/customers`.
pub async fn page(State(state): State<ConsoleState>, Query(params): Query<Params>) -> Response {
    match render(&state, params).await {
        Ok(page) => page.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState, params: Params) -> anyhow::Result<Markup> {
    let q = params.q.as_deref().map(str::trim).unwrap_or_default().to_owned();
    let rows = read(state, &q, params.before.unwrap_or(f64::INFINITY), params.id.as_deref().unwrap_or("")).await?;
    let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| (r.4, r.0.clone()))).flatten();
    let body = html! {
        form method="get" action="/console/customers" {
            input type="search" name="q" value=(q) placeholder="cus_…, sub_…, evt_…, an email or a name" autofocus;
            " " button type="submit" { "Search" }
            @if !q.is_empty() { " " a href="/console/customers" { "all customers" } }
        }
        div.wrap { table {
            tr { th { "customer" } th { "email" } th { "name" } th { "created" } th { "subscriptions (tier, status)" } th { "MRR" } }
            @for (id, email, name, deleted, created, subscriptions, mrr) in &rows {
                tr {
                    td { (layout::customer_link(id)) @if *deleted { " " span.bad { "deleted" } } }
                    td { (email.as_deref().unwrap_or("")) }
                    td { (name.as_deref().unwrap_or("")) }
                    td { @if created.is_finite() { (super::time(*created as i64)) } @else { span.muted { "unknown" } } }
                    td { (subscription_list(subscriptions)) }
                    td.n { (mrr_list(mrr)) }
                }
            }
            @if rows.is_empty() { tr { td.muted colspan="6" { @if q.is_empty() { "no customer yet" } @else { "no customer matches" } } } }
        } }
        @if let Some((created, id)) = next {
            p.more { a href={ "/console/customers?q=" (urlencode(&q)) "&before=" (created) "&id=" (urlencode(&id)) } { "older →" } }
        }
    };
    layout::page(state, "Customers", body).await
}

/// The page of customers after (`before`, `after_id`), newest first, matching `q`: an exact
/// customer, subscription or event id or email, or a part of an email, a name or an id.
async fn read(state: &ConsoleState, q: &str, before: f64, after_id: &str) -> sqlx::Result<Vec<Row>> {
    let pattern = format!("%{}%", like_escaped(&q.to_lowercase()));
    sqlx::query_as(
        r"SELECT a.stripe_customer_id, a.email, a.name, a.deleted,
                 extract(epoch FROM coalesce(a.created, '-infinity'))::float8,
                 coalesce((SELECT json_agg(json_build_array(s.stripe_subscription_id, s.tier, s.status)
                                           ORDER BY s.stripe_subscription_id)
                           FROM projection.subscriptions s WHERE s.stripe_customer_id = a.stripe_customer_id), '[]')::text,
                 coalesce((SELECT json_agg(json_build_array(m.currency, m.mrr_after) ORDER BY m.currency)
                           FROM (SELECT DISTINCT ON (currency) currency, mrr_after FROM projection.mrr_movements
                                 WHERE stripe_customer_id = a.stripe_customer_id ORDER BY currency, key DESC) m
                           WHERE m.mrr_after > 0), '[]')::text
          FROM projection.accounts a
          WHERE (coalesce(a.created, '-infinity'), a.stripe_customer_id) < (to_timestamp($1), $2)
            AND ($3 = '' OR a.stripe_customer_id = $3 OR lower(a.email) = lower($3)
                 OR a.stripe_customer_id = (SELECT stripe_customer_id FROM projection.subscriptions WHERE stripe_subscription_id = $3)
                 OR a.stripe_customer_id = (SELECT customer_id FROM ledger.events WHERE stripe_event_id = $3)
                 OR lower(a.email) LIKE $4 OR lower(a.name) LIKE $4 OR lower(a.stripe_customer_id) LIKE $4)
          ORDER BY coalesce(a.created, '-infinity') DESC, a.stripe_customer_id DESC LIMIT $5",
    )
    .bind(before)
    .bind(if before == f64::INFINITY { "\u{10FFFF}" } else { after_id })
    .bind(q)
    .bind(pattern)
    .bind(PAGE)
    .fetch_all(&state.pool)
    .await
}

/// `[[currency, minor units], ...]` as amounts with their currency.
fn mrr_list(json: &str) -> Markup {
    let mrr: Vec<(String, i64)> = serde_json::from_str(json).unwrap_or_default();
    html! {
        @for (currency, amount) in &mrr { (super::revenue::money(currency, *amount)) " " (currency) br; }
        @if mrr.is_empty() { span.muted { "-" } }
    }
}

/// `text` as a literal part of a `LIKE` pattern (its `%`, `_` and `\` escaped).
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// `[[id, tier, status], ...]` as links with their tier and status.
fn subscription_list(json: &str) -> Markup {
    let subscriptions: Vec<(String, String, String)> = serde_json::from_str(json).unwrap_or_default();
    html! {
        @for (id, tier, status) in &subscriptions {
            (layout::subscription_link(id)) " " (tier) " · " span class=(parts::status_class(status)) { (status) } br;
        }
        @if subscriptions.is_empty() { span.muted { "none" } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(like_escaped("a_b%c\\d"), "a\\_b\\%c\\\\d");
        assert_eq!(like_escaped("ada@example.com"), "ada@example.com");
    }
}
