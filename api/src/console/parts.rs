//! Fragments several pages show: a timeline of events with their bodies, the effects on some
//! subjects, an instance with the provisioner's last answer, the style of a status.

use maud::{Markup, html};
use sqlx::PgPool;

use super::{PAGE, layout};

/// One event of the timeline: position, id, type, created, source, what it raised (intents,
/// anomalies), and its body.
pub type EventRow = (i64, String, String, i64, String, Vec<String>, Vec<String>, Vec<u8>);

/// The events of `customer` after `after` in log order (those about `subscription` only, when
/// given), a page of them.
pub async fn timeline(
    pool: &PgPool,
    customer: &str,
    subscription: Option<&str>,
    after: i64,
) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as(
        "SELECT e.position, e.stripe_event_id, e.event_type, extract(epoch FROM e.created)::bigint, e.source,
                coalesce((SELECT array_agg(i.key ORDER BY i.key) FROM ledger.intents i WHERE i.position = e.position), '{}'),
                coalesce((SELECT array_agg(a.key ORDER BY a.key) FROM projection.anomalies a WHERE a.position = e.position), '{}'),
                e.raw_body
         FROM ledger.events e
         WHERE e.customer_id = $1 AND e.position > $2
           AND ($4::text IS NULL OR e.subscription_id = $4 OR e.object_id = $4)
         ORDER BY e.position LIMIT $3",
    )
    .bind(customer)
    .bind(after)
    .bind(PAGE)
    .bind(subscription)
    .fetch_all(pool)
    .await
}

/// The events, each with what it raised and its body (pretty-printed, folded), and a link to the
/// next page (`more` followed by `after=<position>`).
pub fn events_table(events: &[EventRow], more: &str) -> Markup {
    let next = (events.len() as i64 == PAGE).then(|| events.last().map(|e| e.0)).flatten();
    html! {
        h2 { "Events, in log order" }
        div.wrap { table.events {
            tr { th { "position" } th { "created" } th { "type and body" } th { "source" } th { "what it raised" } th {} }
            @for (position, id, kind, created, source, intents, anomalies, body) in events {
                tr {
                    td.n { (layout::event_link(*position)) }
                    td { (super::time(*created)) }
                    td { code { (kind) } br; span.muted { (id) }
                         details { summary { "body" } pre { (layout::pretty_json(body)) } } }
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
            p.more { a href={ (more) "after=" (position) } { "later events →" } }
        }
    }
}

/// The latest journal rows of effects on `subjects` (customer and subscriptions).
pub async fn effects(pool: &PgPool, subjects: &[String]) -> sqlx::Result<Markup> {
    let rows: Vec<(String, String, i32, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT e.key, e.kind, e.attempt, e.outcome, e.error, extract(epoch FROM e.at)::bigint
         FROM unnest($1::text[]) s(subject)
         CROSS JOIN LATERAL (SELECT * FROM ledger.effects x WHERE x.subject = s.subject ORDER BY x.id DESC LIMIT 50) e
         ORDER BY e.id DESC LIMIT 50",
    )
    .bind(subjects)
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

/// The instance of `subscription`: its state (what the provisioner last reported, against what
/// the fold wants), then the last provisioner call and its answer.
pub async fn instance(pool: &PgPool, subscription: &str) -> sqlx::Result<Markup> {
    let wanted: Option<(String, Option<String>, i32, Option<i64>)> = sqlx::query_as(
        "SELECT desired, status, attempts, extract(epoch FROM observed_at)::bigint
         FROM projection.instances WHERE stripe_subscription_id = $1",
    )
    .bind(subscription)
    .fetch_optional(pool)
    .await?;
    /// Kind, request, HTTP status, outcome, error, when.
    type Call = (String, String, Option<i32>, String, Option<String>, i64);
    let last_call: Option<Call> = sqlx::query_as(
        "SELECT kind, request, response_status, outcome, error, extract(epoch FROM at)::bigint FROM ledger.effects
         WHERE subject = $1 AND subject_type = 'subscription' AND kind IN ('provision', 'update', 'deprovision')
           AND outcome <> 'sending'
         ORDER BY id DESC LIMIT 1",
    )
    .bind(subscription)
    .fetch_optional(pool)
    .await?;
    Ok(html! {
        @match &wanted {
            Some((desired, status, attempts, observed)) => {
                span class=(instance_class(status.as_deref())) { (status.as_deref().unwrap_or("none")) }
                span.muted { " · wanted " (desired)
                    @if *attempts > 0 { " · " (attempts) " failed calls in a row" }
                    @if let Some(at) = observed { " · reported " (super::time(*at)) } }
            }
            None => { span.muted { "no instance" } }
        }
        br;
        @match &last_call {
            Some((kind, request, status, outcome, error, at)) => {
                "last provisioner answer: "
                span class=(if outcome == "failed" || outcome == "retry" { "bad" } else { "ok" }) {
                    (outcome) @match (error, status) {
                        (Some(e), _) => { " · " (e) }
                        (None, Some(s)) => { " · HTTP " (s) }
                        (None, None) => {}
                    } }
                br; span.muted { code { (kind) } " " (request) " · " (super::time(*at)) }
            }
            None => { span.muted { "no provisioner call yet" } }
        }
    })
}

fn instance_class(status: Option<&str>) -> &'static str {
    match status {
        Some("running") => "ok",
        Some("failed") | Some("waiting_for_provisioner") => "bad",
        _ => "",
    }
}

/// The style of a subscription status: good, bad, or plain.
pub fn status_class(status: &str) -> &'static str {
    match status {
        "active" | "trialing" => "ok",
        "past_due" | "unpaid" | "incomplete_expired" => "bad",
        _ => "",
    }
}
