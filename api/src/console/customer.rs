//! Customer: found by `cus_`, `sub_`, email or event id; the account, subscriptions, credits and
//! today's usage, then the customer's events in log order (with the intents and anomalies each
//! raised), the effects on the customer and its subscriptions, and the billing commands.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sqlx::PgPool;

use super::{ConsoleState, PAGE, layout, urlencode};

/// `?q=<cus_|sub_|evt_|email>&after=<position>`.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    q: Option<String>,
    after: Option<i64>,
}

/// One event of the timeline: position, id, type, created, source, and what it raised.
type EventRow = (i64, String, String, i64, String, Vec<String>, Vec<String>);

/// `GET /console/customer`.
pub async fn page(State(state): State<ConsoleState>, Query(params): Query<Params>) -> Response {
    match render(&state, params).await {
        Ok(page) => page.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState, params: Params) -> anyhow::Result<Markup> {
    let q = params.q.as_deref().map(str::trim).unwrap_or_default();
    let found = if q.is_empty() { None } else { find(&state.pool, q).await? };
    let body = html! {
        form method="get" action="/console/customer" {
            input type="search" name="q" value=(q) placeholder="cus_…, sub_…, evt_… or an email" autofocus;
            " " button type="submit" { "Find" }
        }
        @match (&found, q.is_empty()) {
            (Some(customer), _) => { (customer_story(&state.pool, customer, params.after.unwrap_or(0)).await?) }
            (None, false) => { p.bad { "No customer found for " code { (q) } "." } }
            (None, true) => {}
        }
    };
    let title = found.as_deref().map_or_else(|| "Customer".to_owned(), |c| format!("Customer {c}"));
    layout::page(state, &title, body).await
}

/// The customer `q` names.
async fn find(pool: &PgPool, q: &str) -> sqlx::Result<Option<String>> {
    if q.starts_with("cus_") && !q.contains('@') {
        return Ok(Some(q.to_owned()));
    }
    let sql = if q.contains('@') {
        "SELECT stripe_customer_id FROM projection.accounts WHERE lower(email) = lower($1) ORDER BY stripe_customer_id LIMIT 1"
    } else if q.starts_with("sub_") {
        "SELECT stripe_customer_id FROM projection.subscriptions WHERE stripe_subscription_id = $1"
    } else if q.starts_with("evt_") {
        "SELECT customer_id FROM ledger.events WHERE stripe_event_id = $1"
    } else {
        return Ok(None);
    };
    Ok(sqlx::query_scalar::<_, Option<String>>(sql).bind(q).fetch_optional(pool).await?.flatten())
}

async fn customer_story(pool: &PgPool, customer: &str, after: i64) -> anyhow::Result<Markup> {
    let account: Option<(Option<String>, Option<String>, bool)> =
        sqlx::query_as("SELECT email, name, deleted FROM projection.accounts WHERE stripe_customer_id = $1")
            .bind(customer)
            .fetch_optional(pool)
            .await?;
    let subscriptions: Vec<(String, String, String, Option<i64>)> = sqlx::query_as(
        "SELECT s.stripe_subscription_id, s.status, s.tier, extract(epoch FROM s.current_period_end)::bigint
         FROM projection.subscriptions s WHERE s.stripe_customer_id = $1 ORDER BY 1",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    let events = timeline(pool, customer, after).await?;
    let next = (events.len() as i64 == PAGE).then(|| events.last().map(|e| e.0)).flatten();
    Ok(html! {
        h2 { "Account" }
        @match &account {
            Some((email, name, deleted)) => {
                p { b { (name.as_deref().unwrap_or("(no name)")) } " · " (email.as_deref().unwrap_or("(no email)"))
                    @if *deleted { " · " span.bad { "deleted" } } }
            }
            None => { p.muted { "No account row (no customer event seen yet)." } }
        }
        h2 { "Subscriptions" }
        table { tr { th { "subscription" } th { "status" } th { "tier" } th { "period end" } }
            @for (id, status, tier, end) in &subscriptions {
                tr { td { code { (id) } } td { (status) } td { (tier) } td { @if let Some(end) = end { (super::time(*end)) } } }
            }
            @if subscriptions.is_empty() { tr { td.muted colspan="4" { "none" } } }
        }
        (credits_and_usage(pool, customer).await?)
        h2 { "Events, in log order" }
        div.wrap { table {
            tr { th { "position" } th { "created" } th { "type" } th { "source" } th { "what it raised" } th {} }
            @for (position, id, kind, created, source, intents, anomalies) in &events {
                tr {
                    td.n { (layout::event_link(*position)) }
                    td { (super::time(*created)) }
                    td { code { (kind) } br; span.muted { (id) } }
                    td { (source) }
                    td {
                        @for key in intents { code { (key) } br; }
                        @for key in anomalies { span.bad { "anomaly " code { (key) } } br; }
                    }
                    td { a href={ "/console/event/" (position) "/raw" } { "raw" } }
                }
            }
            @if events.is_empty() { tr { td.muted colspan="6" { "no event" } } }
        } }
        @if let Some(position) = next {
            p.more { a href={ "/console/customer?q=" (urlencode(customer)) "&after=" (position) } { "later events →" } }
        }
        (effects(pool, customer).await?)
        (commands(pool, customer).await?)
    })
}

async fn timeline(pool: &PgPool, customer: &str, after: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "SELECT e.position, e.stripe_event_id, e.event_type, extract(epoch FROM e.created)::bigint, e.source,
                coalesce((SELECT array_agg(i.key ORDER BY i.key) FROM ledger.intents i WHERE i.position = e.position), '{}'),
                coalesce((SELECT array_agg(a.key ORDER BY a.key) FROM projection.anomalies a WHERE a.position = e.position), '{}')
         FROM ledger.events e WHERE e.customer_id = $1 AND e.position > $2 ORDER BY e.position LIMIT $3",
    )
    .bind(customer)
    .bind(after)
    .bind(PAGE)
    .fetch_all(pool)
    .await
}

async fn credits_and_usage(pool: &PgPool, customer: &str) -> sqlx::Result<Markup> {
    let grants: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT key, credits, extract(epoch FROM granted_for)::bigint FROM projection.credit_grants
         WHERE stripe_customer_id = $1 ORDER BY granted_for DESC, key LIMIT 20",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    let usage: Vec<(String, i64)> = sqlx::query_as(
        "SELECT metric, used FROM ledger.usage_counters
         WHERE stripe_customer_id = $1 AND day = (now() AT TIME ZONE 'UTC')::date ORDER BY 1",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    Ok(html! {
        h2 { "Credits granted (latest 20) and usage today" }
        div.cards {
            table { tr { th { "grant" } th { "credits" } th { "at" } }
                @for (key, credits, at) in &grants { tr { td { code { (key) } } td.n { (credits) } td { (super::time(*at)) } } }
                @if grants.is_empty() { tr { td.muted colspan="3" { "none" } } }
            }
            table { tr { th { "metric" } th { "used today" } }
                @for (metric, used) in &usage { tr { td { code { (metric) } } td.n { (used) } } }
                @if usage.is_empty() { tr { td.muted colspan="2" { "none" } } }
            }
        }
        p.muted { "The balance (grants minus debits, rollover caps in time order) is " code { "GET /v1/customers/{id}" } "." }
    })
}

async fn effects(pool: &PgPool, customer: &str) -> sqlx::Result<Markup> {
    let rows: Vec<(String, String, i32, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT key, kind, attempt, outcome, error, extract(epoch FROM at)::bigint FROM ledger.effects
         WHERE subject = $1 OR subject IN (SELECT stripe_subscription_id FROM projection.subscriptions WHERE stripe_customer_id = $1)
         ORDER BY id DESC LIMIT 50",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    Ok(html! {
        h2 { "Effects (latest 50)" }
        div.wrap { table { tr { th { "key" } th { "kind" } th { "attempt" } th { "outcome" } th { "error" } th { "at" } }
            @for (key, kind, attempt, outcome, error, at) in &rows {
                tr { td { code { (key) } } td { (kind) } td.n { (attempt) }
                     td class=(if outcome == "failed" { "bad" } else { "" }) { (outcome) }
                     td { (error.as_deref().unwrap_or("")) } td { (super::time(*at)) } }
            }
            @if rows.is_empty() { tr { td.muted colspan="6" { "none" } } }
        } }
    })
}

async fn commands(pool: &PgPool, customer: &str) -> sqlx::Result<Markup> {
    let rows: Vec<(String, String, i32, Option<i32>, i64)> = sqlx::query_as(
        "SELECT endpoint, caller, response_status, stripe_status, extract(epoch FROM at)::bigint FROM ledger.commands
         WHERE customer = $1 ORDER BY id DESC LIMIT 20",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    Ok(html! {
        h2 { "Billing commands (latest 20)" }
        table { tr { th { "endpoint" } th { "caller" } th { "our answer" } th { "Stripe" } th { "at" } }
            @for (endpoint, caller, status, stripe, at) in &rows {
                tr { td { code { (endpoint) } } td { (caller) } td.n { (status) }
                     td.n { @if let Some(s) = stripe { (s) } } td { (super::time(*at)) } }
            }
            @if rows.is_empty() { tr { td.muted colspan="5" { "none" } } }
        }
    })
}
