//! Overview: the log head, lag, this instance's role, readiness, the catalog, the last 24 hours of
//! events (by type and per hour), open anomalies, failed effects, commands and usage today.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::{ConsoleState, layout};

/// What the overview shows.
struct Overview {
    head: Option<(i64, i64)>,
    checkpoint: i64,
    /// `received_at` of the oldest event not folded yet.
    oldest_waiting: Option<i64>,
    by_type: Vec<(String, i64)>,
    per_hour: Vec<(i64, i64)>,
    anomalies: Vec<(String, i64)>,
    failed_effects: i64,
    /// Instances wanted running that no provisioner call has touched (none without
    /// `PROVISIONER_URL` ever will).
    waiting_instances: i64,
    commands_today: i64,
    usage_today: Vec<(String, i64)>,
    since: i64,
}

/// `GET /console`.
pub async fn page(State(state): State<ConsoleState>) -> Response {
    match render(&state).await {
        Ok(page) => page.into_response(),
        Err(e) => super::unavailable(&e),
    }
}

async fn render(state: &ConsoleState) -> anyhow::Result<Markup> {
    let o = read(state).await?;
    let ready = state.readiness.check().await;
    let fold = state.health.fold().await?;
    let hash = state.health.catalog_hash();
    let short_hash = &hash[..12.min(hash.len())];
    let head = o.head.map_or(0, |(p, _)| p);
    let lag_events = (head - o.checkpoint).max(0);
    let lag_seconds = o.oldest_waiting.map_or(0, |at| (chrono::Utc::now().timestamp() - at).max(0));
    let body = html! {
        div.cards {
            div.card { div.v { (head) } div.l { "log head" @if let Some((_, at)) = o.head { " · " (super::time(at)) } } }
            div.card {
                div.v class=(if lag_events == 0 { "ok" } else { "bad" }) { (lag_events) " events" }
                div.l { "projector lag · " (lag_seconds) " s · checkpoint " (o.checkpoint) }
            }
            div.card {
                @match (&fold.leader, fold.leads_here) {
                    (Some(_), true) => { div.v.ok { "active" } div.l { "this instance folds" } }
                    (Some(holder), false) => { div.v { "standby" } div.l { "folding: " code { (holder) } } }
                    (None, _) => { div.v.bad { "no leader" } div.l { "no projector folds the log" } }
                }
            }
            div.card {
                @match &ready {
                    Ok(()) if fold.catalog_mismatch => { div.v.bad { "another catalog" } }
                    Ok(()) if fold.settings_mismatch => { div.v.bad { "rebuild needed" } }
                    Ok(()) => { div.v.ok { "ready" } }
                    Err(_) => { div.v.bad { "not ready" } }
                }
                div.l { "/readyz · catalog " code { (short_hash) } }
            }
            div.card {
                div.v class=(if o.failed_effects == 0 { "ok" } else { "bad" }) { a href="/console/effects" { (o.failed_effects) } }
                div.l { "effects failed for good" }
            }
            div.card {
                div.v class=(if o.waiting_instances == 0 { "ok" } else { "bad" }) { (o.waiting_instances) }
                div.l { "instances waiting for a provisioner" }
            }
            div.card { div.v { (o.commands_today) } div.l { "billing commands today (UTC)" } }
        }
        h2 { "Events per hour, last 24 h (by Stripe's created)" }
        (chart(&o.per_hour, o.since))
        div.cards {
            div {
                h2 { "Events by type, last 24 h" }
                table { tr { th { "type" } th { "events" } }
                    @for (t, n) in &o.by_type { tr { td { code { (t) } } td.n { (n) } } }
                    @if o.by_type.is_empty() { tr { td.muted colspan="2" { "none" } } }
                }
            }
            div {
                h2 { a href="/console/anomalies" { "Open anomalies" } }
                table { tr { th { "kind" } th { "open" } }
                    @for (k, n) in &o.anomalies { tr { td { code { (k) } } td.n { (n) } } }
                    @if o.anomalies.is_empty() { tr { td.muted colspan="2" { "none" } } }
                }
            }
            div {
                h2 { "Usage today (UTC)" }
                table { tr { th { "metric" } th { "counted" } }
                    @for (m, n) in &o.usage_today { tr { td { code { (m) } } td.n { (n) } } }
                    @if o.usage_today.is_empty() { tr { td.muted colspan="2" { "none" } } }
                }
            }
        }
    };
    layout::page(state, "Overview", body).await
}

async fn read(state: &ConsoleState) -> anyhow::Result<Overview> {
    let pool = &state.pool;
    let since = chrono::Utc::now().timestamp() - 24 * 3600;
    let head = layout::head(state).await?;
    let checkpoint: i64 =
        sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM projection.checkpoint").fetch_one(pool).await?;
    let oldest_waiting: Option<i64> =
        sqlx::query_scalar("SELECT extract(epoch FROM received_at)::bigint FROM ledger.events WHERE position = $1 + 1")
            .bind(checkpoint)
            .fetch_optional(pool)
            .await?;
    // Index-only scans of (created, event_type): by type over the window, then 24 range counts
    // (cheaper than grouping every row by its hour).
    let by_type = sqlx::query_as(
        "SELECT event_type, count(*) FROM ledger.events
         WHERE created >= to_timestamp($1) AND created < to_timestamp($1 + 86400) GROUP BY 1 ORDER BY 2 DESC, 1",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let per_hour = sqlx::query_as(
        "SELECT h::bigint, (SELECT count(*) FROM ledger.events
                            WHERE created >= to_timestamp($1 + h * 3600) AND created < to_timestamp($1 + (h + 1) * 3600))
         FROM generate_series(0, 23) h",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    let anomalies = sqlx::query_as("SELECT kind, count(*) FROM projection.anomalies GROUP BY 1 ORDER BY 2 DESC, 1")
        .fetch_all(pool)
        .await?;
    let failed_effects: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger.effect_failures").fetch_one(pool).await?;
    let waiting_instances: i64 =
        sqlx::query_scalar("SELECT count(*) FROM projection.instances WHERE status = 'waiting_for_provisioner'")
            .fetch_one(pool)
            .await?;
    let commands_today: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ledger.commands WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'")
            .fetch_one(pool)
            .await?;
    let usage_today = sqlx::query_as(
        "SELECT metric, sum(used)::bigint FROM ledger.usage_counters
         WHERE day = (now() AT TIME ZONE 'UTC')::date GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(Overview {
        head,
        checkpoint,
        oldest_waiting: oldest_waiting.filter(|_| head.is_some_and(|(p, _)| p > checkpoint)),
        by_type,
        per_hour,
        anomalies,
        failed_effects,
        waiting_instances,
        commands_today,
        usage_today,
        since,
    })
}

/// 24 bars, one per hour, as inline SVG (no script, no image request).
fn chart(per_hour: &[(i64, i64)], since: i64) -> Markup {
    let mut counts = [0i64; 24];
    for (hour, n) in per_hour {
        if let Some(slot) = usize::try_from(*hour).ok().and_then(|h| counts.get_mut(h)) {
            *slot += n;
        }
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h) = (24 * 20, 110);
    html! {
        svg width="100%" height="140" viewBox={ "0 0 " (w) " " (h + 30) } role="img" aria-label="events per hour" {
            @for (i, n) in counts.iter().enumerate() {
                @let bar = (*n * h / max).max(if *n > 0 { 1 } else { 0 });
                rect x=(i * 20 + 2) y=(h - bar) width="16" height=(bar) fill="#3b6fd8" { title { (n) " events" } }
            }
            line x1="0" y1=(h) x2=(w) y2=(h) stroke="#9aa3b2" {}
            text x="0" y=(h + 22) font-size="11" fill="#5b6472" { (super::time(since)) }
            text x=(w) y=(h + 22) font-size="11" fill="#5b6472" text-anchor="end" { "now · max " (max) "/h" }
        }
    }
}
