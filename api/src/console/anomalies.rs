//! Anomalies: the fold's open anomalies, newest first, each with the event that raised it.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{ConsoleState, PAGE, layout, urlencode};

/// `?before=<position>&key=<key>`: the page after the row (position, key).
#[derive(Debug, Default, Deserialize)]
pub struct Cursor {
    before: Option<i64>,
    key: Option<String>,
}

/// Key, kind, detail, position, received, and the customer and subscription of the event.
type Row = (String, String, String, i64, Option<i64>, Option<String>, Option<String>);

/// `GET /console/anomalies`.
pub async fn page(State(state): State<ConsoleState>, Query(cursor): Query<Cursor>) -> Response {
    match render(&state, cursor).await {
        Ok(page) => page.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState, cursor: Cursor) -> anyhow::Result<Markup> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT a.key, a.kind, a.detail, a.position, extract(epoch FROM e.received_at)::bigint, e.customer_id, e.subscription_id
         FROM projection.anomalies a LEFT JOIN ledger.events e ON e.position = a.position
         WHERE (a.position, a.key) < ($1, $2)
         ORDER BY a.position DESC, a.key DESC LIMIT $3",
    )
    .bind(cursor.before.unwrap_or(i64::MAX))
    .bind(cursor.key.unwrap_or_else(|| "\u{10FFFF}".to_owned()))
    .bind(PAGE)
    .fetch_all(&state.pool)
    .await?;
    let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| (r.3, r.0.clone()))).flatten();
    let body = html! {
        p.muted { "What the fold could not project faithfully. An anomaly disappears when a later event, a fetched fact or a rebuild with a fixed catalog settles it." }
        div.wrap { table {
            tr { th { "kind" } th { "object (key)" } th { "customer, subscription" } th { "detail" } th { "position" } th { "first seen" } th { "event" } }
            @for (key, kind, detail, position, seen, customer, subscription) in &rows {
                tr.bad {
                    td { code { (kind) } }
                    td { code { (key) } }
                    td { @if let Some(c) = customer { (layout::customer_link(c)) br; }
                         @if let Some(s) = subscription { (layout::subscription_link(s)) } }
                    td { (detail) }
                    td.n { (layout::event_link(*position)) }
                    td { @if let Some(at) = seen { (super::time(*at)) } }
                    td { a href={ "/console/event/" (position) "/raw" } { "raw" } }
                }
            }
            @if rows.is_empty() { tr { td.muted colspan="7" { "no open anomaly" } } }
        } }
        @if let Some((position, key)) = next {
            p.more { a href={ "/console/anomalies?before=" (position) "&key=" (urlencode(&key)) } { "older →" } }
        }
    };
    layout::page(state, "Anomalies", body).await
}
