//! Failed effects: effects failed for good and not settled since (`ledger.effect_failures`), with a
//! Retry button that does what `replay effects retry <key>` does, recorded as the operator's.

use axum::Form;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use subtle::ConstantTimeEq as _;

use super::{ConsoleState, OPERATOR, PAGE, layout, urlencode};

/// `?before=<journal id>`, and the outcome of a retry just made.
#[derive(Debug, Default, Deserialize)]
pub struct Params {
    before: Option<i64>,
    retried: Option<String>,
    refused: Option<String>,
}

/// The Retry form.
#[derive(Debug, Deserialize)]
pub struct Retry {
    key: String,
    csrf: String,
}

type Row = (i64, String, String, String, String, i32, Option<String>, i64, i64);

/// `GET /console/effects`.
pub async fn page(State(state): State<ConsoleState>, Query(params): Query<Params>) -> Response {
    match render(&state, params).await {
        Ok(page) => page.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState, params: Params) -> anyhow::Result<Markup> {
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT f.id, f.key, f.kind, f.subject_type, f.subject, f.attempt, f.error, extract(epoch FROM f.at)::bigint,
                (SELECT count(*) FROM ledger.effects e WHERE e.key = f.key AND e.attempt > 0)
         FROM ledger.effect_failures f WHERE f.id < $1 ORDER BY f.id DESC LIMIT $2",
    )
    .bind(params.before.unwrap_or(i64::MAX))
    .bind(PAGE)
    .fetch_all(&state.pool)
    .await?;
    let next = (rows.len() as i64 == PAGE).then(|| rows.last().map(|r| r.0)).flatten();
    let body = html! {
        @if let Some(key) = &params.retried {
            p.flash { "Re-armed " code { (key) } ": the dispatcher repeats it with the same idempotency key on its next pass." }
        }
        @if let Some(reason) = &params.refused { p.flash.bad { (reason) } }
        p.muted { "Fix the cause first (the provisioner, the address, the key), then retry: the same call under the same idempotency key, journaled as re-armed by " (OPERATOR) "." }
        div.wrap { table {
            tr { th { "key" } th { "kind" } th { "subject" } th { "attempts" } th { "last error" } th { "failed at" } th {} }
            @for (_, key, kind, subject_type, subject, _, error, at, attempts) in &rows {
                tr {
                    td { code { (key) } }
                    td { (kind) }
                    td { (layout::subject_link(subject_type, subject)) }
                    td.n { (attempts) }
                    td { (error.as_deref().unwrap_or("-")) }
                    td { (super::time(*at)) }
                    td {
                        form.inline method="post" action="/console/effects/retry" {
                            input type="hidden" name="key" value=(key);
                            input type="hidden" name="csrf" value=(state.csrf.as_str());
                            button type="submit" { "Retry" }
                        }
                    }
                }
            }
            @if rows.is_empty() { tr { td.muted colspan="7" { "no effect has failed for good" } } }
        } }
        @if let Some(id) = next { p.more { a href={ "/console/effects?before=" (id) } { "older →" } } }
    };
    layout::page(state, "Failed effects", body).await
}

/// `POST /console/effects/retry`: re-arms `key` (CSRF-checked), then back to the list.
pub async fn retry(State(state): State<ConsoleState>, Form(form): Form<Retry>) -> Response {
    if !bool::from(form.csrf.as_bytes().ct_eq(state.csrf.as_bytes())) {
        tracing::warn!("console: a retry without this console's CSRF token was refused");
        return (StatusCode::FORBIDDEN, "this form did not come from this console").into_response();
    }
    let target = match store::journal::rearm_by(&state.pool, &form.key, OPERATOR).await {
        Ok(rearmed) => {
            tracing::info!(key = form.key, ?rearmed, actor = OPERATOR, "console: effect re-armed");
            format!("/console/effects?retried={}", urlencode(&form.key))
        }
        Err(e) => format!("/console/effects?refused={}", urlencode(&format!("{e:#}"))),
    };
    (StatusCode::SEE_OTHER, [(header::LOCATION, target)]).into_response()
}
