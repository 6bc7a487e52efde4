//! Customer: found by `cus_`, `sub_`, email or event id; the account, its subscriptions with
//! their instances and the provisioner's last answer, its API tokens (never the token), the credit
//! balance (the API's one credit rule), today's usage against each limit, then its events in log
//! order (what each raised, the body pretty-printed, the exact bytes a click away), the effects on
//! the customer and its subscriptions, and the billing commands.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use sqlx::PgPool;

use super::{ConsoleState, layout, parts, urlencode};

/// `?q=<cus_|sub_|evt_|email>&after=<position>`.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    q: Option<String>,
    after: Option<i64>,
}

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
            (Some(customer), _) => { (customer_story(state, customer, params.after.unwrap_or(0)).await?) }
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

async fn customer_story(state: &ConsoleState, customer: &str, after: i64) -> anyhow::Result<Markup> {
    let pool = &state.pool;
    type AccountRow = (Option<String>, Option<String>, bool, Option<i64>);
    let account: Option<AccountRow> = sqlx::query_as(
        "SELECT email, name, deleted, extract(epoch FROM created)::bigint FROM projection.accounts WHERE stripe_customer_id = $1",
    )
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
    let events = parts::timeline(pool, customer, None, after).await?;
    let mut subjects: Vec<String> = subscriptions.iter().map(|s| s.0.clone()).collect();
    subjects.push(customer.to_owned());
    Ok(html! {
        h2 { "Account" }
        @match &account {
            Some((email, name, deleted, created)) => {
                p { b { (name.as_deref().unwrap_or("(no name)")) } " · " (email.as_deref().unwrap_or("(no email)"))
                    @if let Some(created) = created { " · created " (super::time(*created)) }
                    @if *deleted { " · " span.bad { "deleted" } } }
            }
            None => { p.muted { "No account row (no customer event seen yet)." } }
        }
        (erasures(pool, customer).await?)
        h2 { "Subscriptions and instances" }
        div.wrap { table.subscriptions {
            tr { th { "subscription" } th { "tier" } th { "status" } th { "period end" } th { "instance" } }
            @for (id, status, tier, end) in &subscriptions {
                tr {
                    td { (layout::subscription_link(id)) }
                    td { (tier) }
                    td class=(parts::status_class(status)) { (status) }
                    td { @if let Some(end) = end { (super::time(*end)) } }
                    td { (parts::instance(pool, id).await?) }
                }
            }
            @if subscriptions.is_empty() { tr { td.muted colspan="5" { "none" } } }
        } }
        (tokens(pool, customer).await?)
        (credits_and_usage(state, customer).await?)
        (parts::events_table(&events, &format!("/console/customer?q={}&", urlencode(customer))))
        (parts::effects(pool, &subjects).await?)
        (commands(pool, customer).await?)
    })
}

/// The customer's erasures (`replay erase`): who, when, why, how many bodies; nothing when none.
async fn erasures(pool: &PgPool, customer: &str) -> sqlx::Result<Markup> {
    let rows: Vec<(i64, String, String, i64, i64)> = sqlx::query_as(
        "SELECT e.id, e.requested_by, e.reason, extract(epoch FROM e.erased_at)::bigint,
                cardinality(e.positions)::bigint
         FROM ledger.erasures e WHERE e.stripe_customer_id = $1 ORDER BY e.id",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    Ok(html! {
        @for (id, by, reason, at, bodies) in &rows {
            p.erasure { span.bad { "erased" } " · erasure " (id) " by " (by) " · " (super::time(*at)) " · “" (reason)
                "” · " (bodies) " bodies redacted" }
        }
    })
}

/// The customer's API tokens: tier, issued, expires, delivered, revoked (never the token, which
/// only the mail held, nor its hash).
async fn tokens(pool: &PgPool, customer: &str) -> sqlx::Result<Markup> {
    type Token = (String, i64, i64, Option<i64>, Option<i64>, bool);
    let rows: Vec<Token> = sqlx::query_as(
        "SELECT tier, extract(epoch FROM issued_at)::bigint, extract(epoch FROM expires_at)::bigint,
                extract(epoch FROM delivered_at)::bigint, extract(epoch FROM revoked_at)::bigint, expires_at <= now()
         FROM ledger.api_tokens WHERE stripe_customer_id = $1 ORDER BY issued_at DESC LIMIT 10",
    )
    .bind(customer)
    .fetch_all(pool)
    .await?;
    Ok(html! {
        h2 { "API tokens (latest 10)" }
        table.tokens { tr { th { "state" } th { "tier" } th { "issued" } th { "expires" } th { "delivered" } th { "revoked" } }
            @for (tier, issued, expires, delivered, revoked, expired) in &rows {
                @let (state, class) = match (revoked, expired, delivered) {
                    (Some(_), _, _) => ("revoked", "muted"),
                    (None, true, _) => ("expired", "muted"),
                    (None, false, None) => ("not delivered", "bad"),
                    (None, false, Some(_)) => ("active", "ok"),
                };
                tr { td class=(class) { (state) } td { (tier) } td { (super::time(*issued)) } td { (super::time(*expires)) }
                     td { @if let Some(t) = delivered { (super::time(*t)) } } td { @if let Some(t) = revoked { (super::time(*t)) } } }
            }
            @if rows.is_empty() { tr { td.muted colspan="6" { "none issued" } } }
        }
    })
}

/// The credit balance (the API's credit rule), the latest grants, and today's usage against
/// each limit of the customer's tier (a metric at its quota highlighted).
async fn credits_and_usage(state: &ConsoleState, customer: &str) -> anyhow::Result<Markup> {
    let mut conn = state.pool.acquire().await?;
    let balance = crate::reads::credit_account(&mut conn, customer).await.map_err(read_failed)?.balance();
    let now = state.clock.now();
    let plan = crate::reads::live_tier(&mut conn, &state.catalog, customer, now).await.map_err(read_failed)?;
    let (tier, period) = (plan.map(|(t, _)| t), plan.map_or((None, None), |(_, p)| p));
    let counters = crate::reads::counters(&mut conn, customer, now).await.map_err(read_failed)?;
    let grants: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT key, credits, extract(epoch FROM granted_for)::bigint FROM projection.credit_grants
         WHERE stripe_customer_id = $1 ORDER BY granted_for DESC, key LIMIT 20",
    )
    .bind(customer)
    .fetch_all(&mut *conn)
    .await?;
    let metrics: Vec<(&str, Vec<domain::usage::WindowCount>)> = state
        .catalog
        .quota_metrics()
        .map(|metric| (metric, domain::usage::counts(tier, metric, period, &counters, now)))
        .collect();
    Ok(html! {
        h2 { "Credits and usage (UTC)" }
        div.cards {
            div {
                p { "Balance " b.balance { (balance) } " credits" }
                table { tr { th { "grant (latest 20)" } th { "credits" } th { "at" } }
                    @for (key, credits, at) in &grants { tr { td { code { (key) } } td.n { (credits) } td { (super::time(*at)) } } }
                    @if grants.is_empty() { tr { td.muted colspan="3" { "none" } } }
                }
            }
            table { tr { th { "metric" } th { "window" } th { "used" } th { "limit (" (tier.map_or("no live tier", |t| t.name.as_str())) ")" } th { "remaining" } th { "resets" } }
                @for (metric, windows) in &metrics {
                    @for count in windows {
                        @let at_quota = count.remaining() == Some(0);
                        tr class=(if at_quota { "at-quota" } else { "" }) {
                            td { code { (metric) } @if at_quota { " " span.bad { "at quota" } } }
                            td { (count.span.window.as_str()) }
                            td.n { (count.used) }
                            td.n { @match count.limit() { Some(l) => (l), None => "unlimited" } }
                            td.n { @match count.remaining() { Some(r) => (r), None => "-" } }
                            td { (super::time(count.span.resets_at.timestamp())) }
                        }
                    }
                }
                @if metrics.is_empty() { tr { td.muted colspan="6" { "the catalog has no quota" } } }
            }
        }
    })
}

/// A failed read of the API's (its message: the database's error).
fn read_failed(error: crate::error::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{}", error.message)
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
