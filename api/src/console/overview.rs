//! Overview: the log head, lag, this instance's role, readiness, the catalog, the last 24 hours of
//! events (by type and per hour, charted), open anomalies, failed effects, commands today by
//! outcome and usage today; a search that leads to any customer.

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
    /// Billing commands today: our status, the error code (`ok` for a success), how many.
    commands_today: Vec<(i32, String, i64)>,
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
                div.v.ok[lag_events == 0].bad[lag_events != 0] { (lag_events) " events" }
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
                div.v.ok[o.failed_effects == 0].bad[o.failed_effects != 0] { a href="/console/effects" { (o.failed_effects) } }
                div.l { "effects failed for good" }
            }
            div.card {
                div.v.ok[o.waiting_instances == 0].bad[o.waiting_instances != 0] { (o.waiting_instances) }
                div.l { "instances waiting for a provisioner" }
            }
            @let open_anomalies: i64 = o.anomalies.iter().map(|(_, n)| n).sum();
            div.card {
                div.v.ok[open_anomalies == 0].bad[open_anomalies != 0] { a href="/console/anomalies" { (open_anomalies) } }
                div.l { "open anomalies" }
            }
        }
        form method="get" action="/console/customers" {
            input type="search" name="q" placeholder="find a customer: cus_…, sub_…, evt_…, an email or a name";
            " " button type="submit" { "Find" } " " a href="/console/customers" { "all customers, newest first" }
        }
        h2 { "Events per hour, last 24 h (by Stripe's created)" }
        (chart(&o.per_hour, o.since))
        div.panels {
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
                    @for (k, n) in &o.anomalies { tr.bad { td { code { (k) } } td.n { (n) } } }
                    @if o.anomalies.is_empty() { tr { td.muted colspan="2" { "none" } } }
                }
            }
            div {
                h2 { "Billing commands today (UTC)" }
                table.commands { tr { th { "answer" } th { "outcome" } th { "commands" } }
                    @for (status, code, n) in &o.commands_today {
                        tr class=(if *status >= 500 { "bad" } else { "" }) { td.n { (status) } td { code { (code) } } td.n { (n) } }
                    }
                    @if o.commands_today.is_empty() { tr { td.muted colspan="3" { "none" } } }
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
    let commands_today = sqlx::query_as(
        "SELECT response_status, coalesce(response #>> '{error,code}', 'ok'), count(*) FROM ledger.commands
         WHERE at >= date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let usage_today = sqlx::query_as(
        // Each customer's day, hours or minutes of today (whichever windows their metric has:
        // each of them adds up to the day), summed per metric.
        "WITH today AS (
           SELECT stripe_customer_id, metric, quota_window, sum(used) AS used FROM ledger.usage_counters
           WHERE day = (now() AT TIME ZONE 'UTC')::date AND quota_window IN ('day', 'hour', 'minute') GROUP BY 1, 2, 3)
         SELECT metric, sum(used)::bigint FROM (
           SELECT DISTINCT ON (stripe_customer_id, metric) metric, used FROM today
           ORDER BY stripe_customer_id, metric, array_position(ARRAY['day', 'hour', 'minute'], quota_window)) t
         GROUP BY 1 ORDER BY 1",
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

/// 24 bars, one per hour, as inline SVG (no script, no image request) spanning the page: the
/// count on the y axis (0, half, the top), the UTC hour on the x axis, both titled.
fn chart(per_hour: &[(i64, i64)], since: i64) -> Markup {
    let mut counts = [0i64; 24];
    for (hour, n) in per_hour {
        if let Some(slot) = usize::try_from(*hour).ok().and_then(|h| counts.get_mut(h)) {
            *slot += n;
        }
    }
    let top = super::charts::nice_top(counts.iter().copied().max().unwrap_or(0));
    let (left, width, height, slot) = (64i64, 960i64, 160i64, 37i64);
    let y = |n: i64| 10 + height - n * height / top;
    html! {
        svg width="100%" viewBox={ "0 0 " (width) " " (height + 70) } role="img" aria-label="events per hour, last 24 hours" {
            @for tick in [0, top / 2, top] {
                line x1=(left) y1=(y(tick)) x2=(width) y2=(y(tick)) stroke="#e3e6ea" {}
                text x=(left - 6) y=(y(tick) + 4) font-size="12" fill="#5b6472" text-anchor="end" { (tick) }
            }
            @for (i, n) in counts.iter().enumerate() {
                @let x = left + 4 + i as i64 * slot;
                @let bar = (*n * height / top).max(i64::from(*n > 0));
                rect x=(x) y=(10 + height - bar) width=(slot - 8) height=(bar) fill="#3b6fd8" { title { (n) " events" } }
                @if i % 3 == 0 {
                    text x=(x) y=(height + 30) font-size="12" fill="#5b6472" { (hour_label(since + i as i64 * 3600)) }
                }
            }
            line x1=(left) y1=(10 + height) x2=(width) y2=(10 + height) stroke="#9aa3b2" {}
            line x1=(left) y1="10" x2=(left) y2=(10 + height) stroke="#9aa3b2" {}
            text x=(left + (width - left) / 2) y=(height + 60) font-size="13" fill="#1d2330" text-anchor="middle" {
                "hour (UTC) the events were created in Stripe, from " (super::time(since)) " to now"
            }
            text x="14" y=(10 + height / 2) font-size="13" fill="#1d2330" text-anchor="middle"
                transform={ "rotate(-90 14 " (10 + height / 2) ")" } { "events per hour" }
        }
    }
}

/// `14:00` for the hour starting at `unix`.
fn hour_label(unix: i64) -> String {
    chrono::DateTime::from_timestamp(unix, 0).map_or_else(String::new, |t| t.format("%H:%M").to_string())
}
