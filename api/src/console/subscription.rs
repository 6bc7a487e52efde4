//! Subscription: the row the fold keeps, its instance (wanted and observed) with the provisioner's
//! last answer, the events about it in log order (bodies pretty-printed) and its effects.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleState, layout, parts};

/// `?after=<position>`: the events after it.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    after: Option<i64>,
}

/// The subscription's row.
#[derive(sqlx::FromRow)]
struct Row {
    stripe_customer_id: Option<String>,
    price_id: Option<String>,
    tier: String,
    status: String,
    current_period_end: Option<i64>,
    cancel_at_period_end: bool,
    grace_until: Option<i64>,
    entitled_until: Option<i64>,
    deleted: bool,
}

/// `GET /console/subscription/{id}`.
pub async fn page(State(state): State<ConsoleState>, Path(id): Path<String>, Query(params): Query<Params>) -> Response {
    match render(&state, &id, params.after.unwrap_or(0)).await {
        Ok(Some(page)) => page.into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no subscription {id} is known")).into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState, id: &str, after: i64) -> anyhow::Result<Option<Markup>> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT stripe_customer_id, price_id, tier, status, extract(epoch FROM current_period_end)::bigint AS current_period_end,
                cancel_at_period_end, extract(epoch FROM grace_until)::bigint AS grace_until,
                extract(epoch FROM least(entitled_until, '9999-01-01'))::bigint AS entitled_until, deleted
         FROM projection.subscriptions WHERE stripe_subscription_id = $1",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let customer = row.stripe_customer_id.clone().unwrap_or_default();
    let events = parts::timeline(&state.pool, &customer, Some(id), after).await?;
    let body = html! {
        table {
            tr { th { "customer" } td { @if !customer.is_empty() { (layout::customer_link(&customer)) } } }
            tr { th { "status" } td { span class=(parts::status_class(&row.status)) { (row.status) }
                @if row.deleted { " · " span.bad { "deleted" } } @if row.cancel_at_period_end { " · cancels at period end" } } }
            tr { th { "tier, price" } td { (row.tier) " · " code { (row.price_id.as_deref().unwrap_or("-")) } } }
            tr { th { "period end" } td { (opt_time(row.current_period_end)) } }
            tr { th { "grace until" } td { (opt_time(row.grace_until)) } }
            tr { th { "instance" } td { (parts::instance(&state.pool, id).await?) } }
            tr { th { "entitles until" } td { @match row.entitled_until {
                None => span.muted { "not entitled" },
                Some(t) if t >= 253_370_764_800 => "open-ended",
                Some(t) => (super::time(t)),
            } } }
        }
        (parts::events_table(&events, &format!("/console/subscription/{}?", super::urlencode(id))))
        (parts::effects(&state.pool, &[id.to_owned()]).await?)
    };
    Ok(Some(layout::page(state, &format!("Subscription {id}"), body).await?))
}

fn opt_time(t: Option<i64>) -> Markup {
    html! { @match t { Some(t) => (super::time(t)), None => span.muted { "-" } } }
}
