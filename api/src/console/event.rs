//! Event: one event's envelope, its exact body, its signature's status, its chain hash and what it
//! changed (the intents and anomalies it raised); `/raw` serves the exact stored bytes.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use domain::signature::{self, Tolerance};
use maud::{Markup, html};
use sha2::{Digest, Sha256};

use super::{ConsoleState, layout};

/// The stored row.
#[derive(sqlx::FromRow)]
struct Stored {
    stripe_event_id: String,
    event_type: String,
    api_version: Option<String>,
    livemode: bool,
    created: i64,
    received_at: i64,
    source: String,
    received_by: String,
    object_type: Option<String>,
    object_id: Option<String>,
    customer_id: Option<String>,
    subscription_id: Option<String>,
    raw_body: Vec<u8>,
    stripe_signature: Option<String>,
    chain_hash: Vec<u8>,
}

async fn stored(state: &ConsoleState, position: i64) -> sqlx::Result<Option<Stored>> {
    sqlx::query_as(
        "SELECT stripe_event_id, event_type, api_version, livemode, extract(epoch FROM created)::bigint AS created,
                extract(epoch FROM received_at)::bigint AS received_at, source, received_by, object_type, object_id,
                customer_id, subscription_id, raw_body, stripe_signature, chain_hash
         FROM ledger.events WHERE position = $1",
    )
    .bind(position)
    .fetch_optional(&state.pool)
    .await
}

/// `GET /console/event/{position}`.
pub async fn page(State(state): State<ConsoleState>, Path(position): Path<i64>) -> Response {
    match render(&state, position).await {
        Ok(Some(page)) => page.into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no event at position {position}")).into_response(),
        Err(e) => super::unavailable(&e),
    }
}

/// `GET /console/event/{position}/raw`: the exact bytes as stored (what Stripe signed), as text
/// the browser never interprets (`nosniff`).
pub async fn raw(State(state): State<ConsoleState>, Path(position): Path<i64>) -> Response {
    match stored(&state, position).await {
        Ok(Some(event)) => ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], event.raw_body).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no event at position {position}")).into_response(),
        Err(e) => super::unavailable(&e.into()),
    }
}

async fn render(state: &ConsoleState, position: i64) -> anyhow::Result<Option<Markup>> {
    let Some(e) = stored(state, position).await? else { return Ok(None) };
    let raised: Vec<(String, String, String)> =
        sqlx::query_as("SELECT key, kind, detail FROM ledger.intents WHERE position = $1 ORDER BY key")
            .bind(position)
            .fetch_all(&state.pool)
            .await?;
    let anomalies: Vec<(String, String, String)> =
        sqlx::query_as("SELECT key, kind, detail FROM projection.anomalies WHERE position = $1 ORDER BY key")
            .bind(position)
            .fetch_all(&state.pool)
            .await?;
    let body = html! {
        table {
            tr { th { "event" } td { code { (e.stripe_event_id) } } }
            tr { th { "type" } td { code { (e.event_type) } } }
            tr { th { "object" } td { (e.object_type.as_deref().unwrap_or("-")) " " code { (e.object_id.as_deref().unwrap_or("")) } } }
            tr { th { "customer" } td { @if let Some(c) = &e.customer_id { (layout::customer_link(c)) } } }
            tr { th { "subscription" } td { @if let Some(s) = &e.subscription_id { (layout::subscription_link(s)) } } }
            tr { th { "created (Stripe)" } td { (super::time(e.created)) } }
            tr { th { "received" } td { (super::time(e.received_at)) " by " (e.received_by) " · source " b { (e.source) } } }
            tr { th { "API version, mode" } td { (e.api_version.as_deref().unwrap_or("-")) " · " (if e.livemode { "live" } else { "test" }) } }
            tr { th { "signature" } td { (signature_status(state, &e)) } }
            tr { th { "chain hash" } td { code { (hex::encode(&e.chain_hash)) } } }
            tr { th { "body" } td { (e.raw_body.len()) " bytes · sha256 " code { (hex::encode(Sha256::digest(&e.raw_body))) } " · "
                a href={ "/console/event/" (position) "/raw" } { "exact bytes" } } }
        }
        h2 { "What it changed" }
        table { tr { th { "raised" } th { "key" } th { "detail" } }
            @for (key, kind, detail) in &raised { tr { td { "intent " (kind) } td { code { (key) } } td { (detail) } } }
            @for (key, kind, detail) in &anomalies { tr { td.bad { "anomaly " (kind) } td { code { (key) } } td { (detail) } } }
            @if raised.is_empty() && anomalies.is_empty() {
                tr { td.muted colspan="3" { "no intent and no open anomaly (row changes are in the projections: a rebuild folds the same)" } }
            }
        }
        h2 { "Body (pretty-printed; " a href={ "/console/event/" (position) "/raw" } { "the exact bytes" } ")" }
        pre { (layout::pretty_json(&e.raw_body)) }
    };
    Ok(Some(layout::page(state, &format!("Event {position}"), body).await?))
}

/// Whether the stored `Stripe-Signature` verifies against the body with the configured secrets.
fn signature_status(state: &ConsoleState, e: &Stored) -> Markup {
    let Some(header) = &e.stripe_signature else {
        return html! { span.muted { "none (source " (e.source) ": unsigned, Stripe's answer to our request)" } };
    };
    if state.webhook_secrets.is_empty() {
        return html! { span.muted { "stored; not checked (no STRIPE_WEBHOOK_SECRET here)" } };
    }
    match signature::verify(header, &e.raw_body, &state.webhook_secrets, Tolerance::Disabled, 0) {
        Ok(v) => {
            html! { span.ok { "verifies" } " with secret " (v.secret_index + 1) ", signed " (super::time(v.timestamp)) }
        }
        Err(error) => {
            html! { span.bad { "does not verify with the configured secrets" } " (" (error.reason()) "; a rotated secret?)" }
        }
    }
}
