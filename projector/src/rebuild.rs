//! Rebuild: the same fold from position 1 into a new schema, swapped in atomically.
//!
//! 1. Fold the whole log in memory, page by page (no lock: the live projector keeps running).
//! 2. In one transaction: `LOCK TABLE projection.checkpoint IN ACCESS EXCLUSIVE MODE` (waits for a
//!    live batch to finish and holds the next one back), fold the events that arrived meanwhile,
//!    create `projection_build` with the live tables' definitions, COPY every row in, journal the
//!    intents (`ON CONFLICT DO NOTHING`: keys already journaled are not issued again), rename
//!    `projection` to `projection_old_<build>` and `projection_build` to `projection`, commit.
//!    A live batch blocked on the lock re-resolves `projection.checkpoint` after the commit, finds
//!    a new `build_id` and reloads its working copy from the new tables.
//! 3. Drop the old schema (unless asked to keep it).

use std::collections::BTreeMap;
use std::fmt::{Debug, Write as _};

use anyhow::Context;
use chrono::{DateTime, Utc};
use shared::catalog::{Catalog, Limits};
use sqlx::{Connection, PgConnection, PgPool};

use crate::fold::{FoldConfig, Intent, Projections, Version};
use crate::runner::CHECKPOINT;
use crate::store;

/// Events read per page while folding the log.
const PAGE: i64 = 5_000;

/// The tables of the projection schema, in creation order.
const TABLES: [&str; 8] =
    ["checkpoint", "accounts", "subscriptions", "instance_targets", "tokens", "credit_grants", "credits", "anomalies"];

/// A fold of the log.
#[derive(Debug, Clone)]
pub struct Folded {
    /// The projections.
    pub state: Projections,
    /// Last position folded.
    pub position: i64,
    /// Intents raised, with their positions.
    pub intents: Vec<(i64, Intent)>,
}

/// Folds events `(after, upto]` onto `folded`, reporting progress as (position, upto).
pub async fn fold_more(
    conn: &mut PgConnection,
    folded: &mut Folded,
    upto: i64,
    catalog: &Catalog,
    config: &FoldConfig,
    progress: &mut dyn FnMut(i64, i64),
) -> anyhow::Result<()> {
    while folded.position < upto {
        let rows = sqlx::query!(
            "SELECT position, raw_body FROM ledger.events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3",
            folded.position,
            upto,
            PAGE
        )
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last().map(|r| r.position) else { break };
        let (_, intents) =
            folded.state.fold_batch(rows.iter().map(|r| (r.position, r.raw_body.as_slice())), catalog, config);
        folded.intents.extend(intents);
        folded.position = last;
        progress(last, upto);
    }
    Ok(())
}

/// Folds the whole log as it is now.
pub async fn fold_log(
    pool: &PgPool,
    catalog: &Catalog,
    config: &FoldConfig,
    progress: &mut dyn FnMut(i64, i64),
) -> anyhow::Result<Folded> {
    let mut conn = pool.acquire().await?;
    let head: i64 = sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM ledger.events"#)
        .fetch_one(&mut *conn)
        .await?;
    let mut folded = Folded { state: Projections::default(), position: 0, intents: Vec::new() };
    fold_more(&mut conn, &mut folded, head, catalog, config, progress).await?;
    Ok(folded)
}

/// How one table would change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDiff {
    /// Table name.
    pub table: &'static str,
    /// Rows only in the rebuild.
    pub added: usize,
    /// Rows in both, different.
    pub changed: usize,
    /// Rows only in the live tables.
    pub removed: usize,
    /// A few examples, one line each.
    pub examples: Vec<String>,
}

fn diff_map<T: PartialEq + Debug>(
    table: &'static str,
    live: &BTreeMap<String, T>,
    rebuilt: &BTreeMap<String, T>,
) -> TableDiff {
    let mut d = TableDiff { table, added: 0, changed: 0, removed: 0, examples: Vec::new() };
    let mut example = |line: String| {
        if d.examples.len() < 3 {
            d.examples.push(line);
        }
    };
    for (key, new) in rebuilt {
        match live.get(key) {
            None => {
                d.added += 1;
                example(format!("+ {key}: {new:?}"));
            }
            Some(old) if old != new => {
                d.changed += 1;
                example(format!("~ {key}: {old:?} -> {new:?}"));
            }
            Some(_) => {}
        }
    }
    for (key, old) in live {
        if !rebuilt.contains_key(key) {
            d.removed += 1;
            example(format!("- {key}: {old:?}"));
        }
    }
    d
}

/// Per table: what replacing `live` by `rebuilt` would add, change and remove. Snapshot versions
/// are compared too: positions are stable, so a rebuild of an unchanged log changes nothing.
pub fn diff(live: &Projections, rebuilt: &Projections) -> Vec<TableDiff> {
    vec![
        diff_map("accounts", &live.accounts, &rebuilt.accounts),
        diff_map("subscriptions", &live.subscriptions, &rebuilt.subscriptions),
        diff_map("instances", &live.instances, &rebuilt.instances),
        diff_map("tokens", &live.tokens, &rebuilt.tokens),
        diff_map("credit_grants", &live.credit_grants, &rebuilt.credit_grants),
        diff_map("credits", &live.credits, &rebuilt.credits),
        diff_map("anomalies", &live.anomalies, &rebuilt.anomalies),
    ]
}

/// The outcome of a swap.
#[derive(Debug, Clone)]
pub struct Swapped {
    /// The checkpoint of the new tables.
    pub position: i64,
    /// The new build id.
    pub build_id: String,
    /// Intents journaled now (keys not journaled before).
    pub new_intents: u64,
    /// The old schema, if kept.
    pub old_schema: Option<String>,
}

/// Swaps `folded` in as the projections (see the module docs for the protocol).
pub async fn swap_in(
    pool: &PgPool,
    mut folded: Folded,
    catalog: &Catalog,
    config: &FoldConfig,
    keep_old: bool,
) -> anyhow::Result<Swapped> {
    let build_id = format!("rebuild-{}", Utc::now().format("%Y%m%dT%H%M%S%.3fZ"));
    let old_schema = format!("projection_old_{}", Utc::now().format("%Y%m%d%H%M%S%3f"));
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    // Dynamic identifiers and COPY below: plain (not compile-checked) statements by necessity.
    sqlx::query("SET LOCAL lock_timeout = '30s'").execute(&mut *tx).await?;
    sqlx::query("LOCK TABLE projection.checkpoint IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await?;
    let head: i64 = sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM ledger.events"#)
        .fetch_one(&mut *tx)
        .await?;
    fold_more(&mut tx, &mut folded, head, catalog, config, &mut |_, _| {}).await?;

    sqlx::query("DROP SCHEMA IF EXISTS projection_build CASCADE").execute(&mut *tx).await?;
    sqlx::query("CREATE SCHEMA projection_build").execute(&mut *tx).await?;
    for table in TABLES {
        sqlx::query(&format!("CREATE TABLE projection_build.{table} (LIKE projection.{table} INCLUDING ALL)"))
            .execute(&mut *tx)
            .await?;
    }
    copy_all(&mut tx, &folded.state).await?;
    sqlx::query(
        "INSERT INTO projection_build.checkpoint (name, position, catalog_hash, build_id) VALUES ($1, $2, $3, $4)",
    )
    .bind(CHECKPOINT)
    .bind(folded.position)
    .bind(catalog.hash())
    .bind(&build_id)
    .execute(&mut *tx)
    .await?;
    let new_intents = store::record_intents(&mut tx, &folded.intents).await?;
    // Views name their tables by identity, not by name: the projection schema's own views
    // (projection.instances) are created again over the new tables, and views elsewhere over
    // projection relations (audit.*, an operator's reports) are re-pointed at them; otherwise
    // dropping the old schema would drop them too.
    let views: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, pg_get_viewdef(c.oid) FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'v' AND (n.nspname = 'projection' OR c.oid IN (
           SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
           JOIN pg_class t ON t.oid = d.refobjid
           WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass
             AND t.relnamespace = 'projection'::regnamespace))
         ORDER BY n.nspname <> 'projection', c.oid",
    )
    .fetch_all(&mut *tx)
    .await?;
    sqlx::query(&format!("ALTER SCHEMA projection RENAME TO {old_schema}")).execute(&mut *tx).await?;
    sqlx::query("ALTER SCHEMA projection_build RENAME TO projection").execute(&mut *tx).await?;
    for (schema, name, definition) in views {
        let verb = if schema == "projection" { "CREATE VIEW" } else { "CREATE OR REPLACE VIEW" };
        sqlx::query(&format!("{verb} \"{schema}\".\"{name}\" AS {definition}")).execute(&mut *tx).await?;
    }
    sqlx::query("GRANT USAGE ON SCHEMA projection TO ledger_projector").execute(&mut *tx).await?;
    sqlx::query("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA projection TO ledger_projector")
        .execute(&mut *tx)
        .await?;
    tx.commit().await.context("committing the swap")?;
    let old_schema = if keep_old {
        Some(old_schema)
    } else {
        sqlx::query(&format!("DROP SCHEMA {old_schema} CASCADE")).execute(&mut *conn).await?;
        None
    };
    Ok(Swapped { position: folded.position, build_id, new_intents, old_schema })
}

/// COPY text-format field.
fn field(out: &mut String, value: Option<&str>) {
    match value {
        None => out.push_str("\\N"),
        Some(v) => {
            for c in v.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    c => out.push(c),
                }
            }
        }
    }
}

fn row(out: &mut String, fields: &[Option<String>]) {
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        field(out, f.as_deref());
    }
    out.push('\n');
}

fn t(secs: Option<i64>) -> Option<String> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0)).map(|d| d.to_rfc3339())
}

fn n<T: ToString>(v: Option<T>) -> Option<String> {
    v.map(|v| v.to_string())
}

fn limits(l: Option<Limits>) -> [Option<String>; 4] {
    store::limit_columns(l).map(n)
}

fn version(v: Option<Version>) -> [Option<String>; 3] {
    let (created, rank, position) = store::version_columns(v);
    [n(created), n(rank), n(position)]
}

async fn copy(conn: &mut PgConnection, table: &str, columns: &str, data: String) -> anyhow::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut sink = conn.copy_in_raw(&format!("COPY projection_build.{table} ({columns}) FROM STDIN")).await?;
    sink.send(data.into_bytes()).await?;
    sink.finish().await?;
    Ok(())
}

async fn copy_all(conn: &mut PgConnection, p: &Projections) -> anyhow::Result<()> {
    let s = |v: &str| Some(v.to_owned());
    let b = |v: bool| Some(if v { "t" } else { "f" }.to_owned());

    let mut data = String::new();
    for a in p.accounts.values() {
        let [vc, vr, vp] = version(a.version);
        row(&mut data, &[s(&a.stripe_customer_id), a.email.clone(), a.name.clone(), b(a.deleted), vc, vr, vp]);
    }
    copy(
        conn,
        "accounts",
        "stripe_customer_id, email, name, deleted, version_created, version_rank, version_position",
        data,
    )
    .await?;

    let mut data = String::new();
    for r in p.subscriptions.values() {
        let [la, lm, lmem, lc] = limits(r.limits);
        let [vc, vr, vp] = version(r.version);
        row(
            &mut data,
            &[
                s(&r.stripe_subscription_id),
                r.stripe_customer_id.clone(),
                r.price_id.clone(),
                s(&r.tier),
                s(&r.status),
                t(r.current_period_end),
                t(r.trial_end),
                b(r.cancel_at_period_end),
                t(r.canceled_at),
                t(r.ended_at),
                b(r.deleted),
                t(r.last_paid_at),
                t(r.last_payment_failed_at),
                t(r.grace_until),
                la,
                lm,
                lmem,
                lc,
                vc,
                vr,
                vp,
            ],
        );
    }
    copy(
        conn,
        "subscriptions",
        "stripe_subscription_id, stripe_customer_id, price_id, tier, status, current_period_end, trial_end, \
         cancel_at_period_end, canceled_at, ended_at, deleted, last_paid_at, last_payment_failed_at, grace_until, \
         limit_agents, limit_messages_per_day, limit_memory_mb, limit_cpu, version_created, version_rank, version_position",
        data,
    )
    .await?;

    let mut data = String::new();
    for i in p.instances.values() {
        let [la, lm, lmem, lc] = limits(i.limits);
        row(
            &mut data,
            &[
                s(&i.stripe_subscription_id),
                i.stripe_customer_id.clone(),
                s(i.desired.as_str()),
                s(&i.tier),
                la,
                lm,
                lmem,
                lc,
            ],
        );
    }
    copy(
        conn,
        "instance_targets",
        "stripe_subscription_id, stripe_customer_id, desired, tier, limit_agents, limit_messages_per_day, limit_memory_mb, limit_cpu",
        data,
    )
    .await?;

    let mut data = String::new();
    for tk in p.tokens.values() {
        row(&mut data, &[s(&tk.stripe_customer_id), b(tk.wanted), tk.tier.clone()]);
    }
    copy(conn, "tokens", "stripe_customer_id, wanted, tier", data).await?;

    let mut data = String::new();
    for g in p.credit_grants.values() {
        row(&mut data, &[s(&g.key), s(&g.stripe_customer_id), n(Some(g.credits)), n(g.rollover_cap), t(Some(g.at))]);
    }
    copy(conn, "credit_grants", "key, stripe_customer_id, credits, rollover_cap, granted_for", data).await?;

    let mut data = String::new();
    for (customer, balance) in &p.credits {
        row(&mut data, &[s(customer), n(Some(*balance))]);
    }
    copy(conn, "credits", "stripe_customer_id, balance", data).await?;

    let mut data = String::new();
    for a in p.anomalies.values() {
        row(&mut data, &[s(&a.key), s(&a.kind), s(&a.detail), n(Some(a.position))]);
    }
    copy(conn, "anomalies", "key, kind, detail, position", data).await?;
    Ok(())
}

/// Prints a diff as the CLI shows it.
pub fn render_diff(diffs: &[TableDiff]) -> String {
    let mut out = String::new();
    for d in diffs {
        let _ = writeln!(out, "{:<14} +{:<7} ~{:<7} -{:<7}", d.table, d.added, d.changed, d.removed);
        for e in &d.examples {
            let line: String = e.chars().take(220).collect();
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}
