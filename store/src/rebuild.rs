//! Rebuild: the same fold from position 1 into a new schema, swapped in atomically.
//!
//! 1. Fold the whole log in memory, page by page (no lock: the live projector keeps running); one
//!    task reads and decodes the next pages while the fold works on the current one. The intents
//!    the fold raises are staged, in batches, in a temporary table of the connection that will
//!    swap (memory holds the projections, not every intent of the log).
//! 2. In one transaction: `LOCK TABLE projection.checkpoint IN ACCESS EXCLUSIVE MODE` (waits for a
//!    live batch to finish and holds the next one back), fold the events that arrived meanwhile,
//!    create `projection_build` with the live tables' definitions but no indexes, COPY every row
//!    in, then create the live tables' indexes and key constraints (same names), journal the
//!    intents (`ON CONFLICT DO NOTHING`: keys already journaled are not issued again), rename
//!    `projection` to `projection_old_<build>` and `projection_build` to `projection`, create the
//!    views and triggers of the old tables on the new ones, notify every replica's access cache
//!    to drop what it read from the old tables, commit.
//!    A live batch blocked on the lock re-resolves `projection.checkpoint` after the commit, finds
//!    a new `build_id`, empties its cache and reads the new tables.
//! 3. Drop the old schema (unless asked to keep it).

use std::collections::BTreeMap;
use std::fmt::Debug;

use anyhow::Context;
use chrono::Utc;
use domain::catalog::Catalog;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};

use crate as store;
use crate::CHECKPOINT;
use domain::fold::{Decoded, FoldConfig};
use domain::state::{Anomaly, Intent, Projections};

/// Events read per page while folding the log.
const PAGE: i64 = 5_000;

/// Pages read and decoded ahead of the fold.
const READ_AHEAD: usize = 2;

/// Intents held in memory before they are staged.
const STAGE_AT: usize = 50_000;

/// A fold of the log.
#[derive(Debug)]
pub struct Folded {
    /// The projections.
    pub state: Projections,
    /// Last position folded.
    pub position: i64,
    /// Intents raised and not staged yet, with their positions.
    pub intents: Vec<(i64, Intent)>,
    /// Where the other intents are: a connection's temporary table (`store::stage_intents`).
    stage: Option<Stage>,
    /// Events the live projector quarantined, by position: passed over here too, with the same
    /// anomaly, so a rebuild neither fails on them nor differs from the live tables.
    quarantined: BTreeMap<i64, Anomaly>,
    /// Fold the quarantined events like any other (their cause was fixed).
    retry_quarantined: bool,
}

#[derive(Debug)]
struct Stage {
    conn: PoolConnection<Postgres>,
    /// Intents staged so far.
    ord: i64,
}

impl Folded {
    /// Nothing folded yet.
    fn empty() -> Self {
        Self {
            state: Projections::default(),
            position: 0,
            intents: Vec::new(),
            stage: None,
            quarantined: BTreeMap::new(),
            retry_quarantined: false,
        }
    }

    /// Keeps the events of `quarantined` out of the fold and their anomalies in the state
    /// (unless they are retried).
    fn quarantine(&mut self, quarantined: Vec<Anomaly>) {
        if self.retry_quarantined {
            return;
        }
        for anomaly in quarantined {
            self.state.anomalies.insert(anomaly.key.clone(), anomaly.clone());
            self.quarantined.insert(anomaly.position, anomaly);
        }
    }
}

/// The events the live projector quarantined (`quarantined` anomalies), with their anomalies.
async fn quarantined(executor: impl sqlx::PgExecutor<'_>) -> sqlx::Result<Vec<Anomaly>> {
    let rows = sqlx::query!(
        "SELECT key, kind, detail, position FROM projection.anomalies WHERE kind = $1 ORDER BY position",
        crate::QUARANTINED
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|r| Anomaly { key: r.key, kind: r.kind, detail: r.detail, position: r.position }).collect())
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
        let rows = page(&mut *conn, folded.position, upto).await?;
        let Some(last) = rows.last().map(|(position, _)| *position) else { break };
        let kept = rows.iter().filter(|(position, _)| !folded.quarantined.contains_key(position));
        let (_, intents) =
            folded.state.fold_batch(kept.map(|(position, raw)| (*position, raw.as_slice())), catalog, config);
        folded.intents.extend(intents);
        folded.position = last;
        progress(last, upto);
    }
    Ok(())
}

/// The next page of the log after `after`, up to `upto`: (position, raw body).
async fn page(executor: impl sqlx::PgExecutor<'_>, after: i64, upto: i64) -> sqlx::Result<Vec<(i64, Vec<u8>)>> {
    let rows = sqlx::query!(
        "SELECT position, raw_body FROM ledger.events WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3",
        after,
        upto,
        PAGE
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|r| (r.position, r.raw_body)).collect())
}

/// Folds the whole log as it is now, passing over the events the live projector quarantined
/// ([`fold_log_retrying_quarantined`] folds them too).
pub async fn fold_log(
    pool: &PgPool,
    catalog: &Catalog,
    config: &FoldConfig,
    progress: &mut dyn FnMut(i64, i64),
) -> anyhow::Result<Folded> {
    fold_whole_log(pool, catalog, config, false, progress).await
}

/// [`fold_log`] folding the quarantined events like any other, once their cause is fixed
/// (`replay rebuild --retry-quarantined`): a row the tables still refuse fails the swap.
pub async fn fold_log_retrying_quarantined(
    pool: &PgPool,
    catalog: &Catalog,
    config: &FoldConfig,
    progress: &mut dyn FnMut(i64, i64),
) -> anyhow::Result<Folded> {
    fold_whole_log(pool, catalog, config, true, progress).await
}

/// Folds the whole log as it is now: a reader task fetches and decodes pages (on its own
/// connection) while this one folds.
async fn fold_whole_log(
    pool: &PgPool,
    catalog: &Catalog,
    config: &FoldConfig,
    retry_quarantined: bool,
    progress: &mut dyn FnMut(i64, i64),
) -> anyhow::Result<Folded> {
    let head: i64 = sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM ledger.events"#)
        .fetch_one(pool)
        .await?;
    let mut stage = Stage { conn: pool.acquire().await?, ord: 0 };
    store::create_intent_stage(&mut stage.conn).await?;
    // A stager task COPYs full batches of intents while the fold goes on.
    let (to_stage, mut batches) = tokio::sync::mpsc::channel::<Vec<(i64, Intent)>>(1);
    let stager = tokio::spawn(async move {
        while let Some(batch) = batches.recv().await {
            store::stage_intents(&mut stage.conn, &batch, &mut stage.ord).await?;
        }
        Ok::<_, sqlx::Error>(stage)
    });
    let (pages, mut received) = tokio::sync::mpsc::channel(READ_AHEAD);
    let reader = tokio::spawn(read_decoded(pool.clone(), head, pages));
    let mut folded = Folded::empty();
    folded.retry_quarantined = retry_quarantined;
    folded.quarantine(quarantined(pool).await?);
    while let Some(page) = received.recv().await {
        let page: Vec<(i64, Decoded)> = page?;
        let Some(last) = page.last().map(|(position, _)| *position) else { break };
        let page = page.into_iter().filter(|(position, _)| !folded.quarantined.contains_key(position));
        let (_, intents) = folded.state.fold_decoded_batch(page, catalog, config);
        folded.intents.extend(intents);
        // A stager that failed has dropped its end: its error is reported below.
        if folded.intents.len() >= STAGE_AT && to_stage.send(std::mem::take(&mut folded.intents)).await.is_err() {
            break;
        }
        folded.position = last;
        progress(last, head);
    }
    drop(to_stage);
    folded.stage = Some(stager.await.context("the intent stager")?.context("staging intents")?);
    reader.await.context("the log reader")?;
    anyhow::ensure!(folded.position == head, "the log ended at {} before its head {head}", folded.position);
    Ok(folded)
}

/// Reads `(0, head]` page by page and decodes each body, until the fold stops listening: one task
/// fetches the next page while this one decodes the last, so PostgreSQL, the decoding and the
/// fold all work at once.
async fn read_decoded(pool: PgPool, head: i64, pages: tokio::sync::mpsc::Sender<anyhow::Result<Vec<(i64, Decoded)>>>) {
    let (raw_pages, mut fetched) = tokio::sync::mpsc::channel(READ_AHEAD);
    let fetcher = tokio::spawn(async move {
        let mut after = 0;
        while after < head {
            let rows = page(&pool, after, head).await;
            let last = rows.as_ref().ok().and_then(|rows| rows.last().map(|(position, _)| *position));
            if raw_pages.send(rows).await.is_err() {
                return;
            }
            let Some(last) = last else { return };
            after = last;
        }
    });
    while let Some(rows) = fetched.recv().await {
        let decoded = rows
            .map(|rows| rows.into_iter().map(|(position, raw)| (position, domain::stripe::decode(&raw))).collect())
            .map_err(anyhow::Error::from);
        if pages.send(decoded).await.is_err() {
            break;
        }
    }
    fetcher.abort();
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
    // The staged intents are in a temporary table of the fold's connection: swap on it.
    let (mut conn, mut staged) = match folded.stage.take() {
        Some(stage) => (stage.conn, Some(stage.ord)),
        None => (pool.acquire().await?, None),
    };
    let mut tx = conn.begin().await?;
    // Dynamic identifiers and COPY below: plain (not compile-checked) statements by necessity.
    sqlx::query("SET LOCAL lock_timeout = '30s'").execute(&mut *tx).await?;
    sqlx::query("LOCK TABLE projection.checkpoint IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await?;
    let head: i64 = sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "head!" FROM ledger.events"#)
        .fetch_one(&mut *tx)
        .await?;
    // Events the live projector quarantined since the fold began are passed over too.
    folded.quarantine(quarantined(&mut *tx).await?);
    fold_more(&mut tx, &mut folded, head, catalog, config, &mut |_, _| {}).await?;

    build_tables(&mut tx, &folded, catalog, config, &build_id).await?;
    let new_intents = match staged.as_mut() {
        Some(ord) => {
            store::stage_intents(&mut tx, &folded.intents, ord).await?;
            store::record_staged_intents(&mut tx).await?
        }
        None => store::record_intents(&mut tx, &folded.intents).await?,
    };
    // Views name their tables by identity, not by name: the projection schema's own views
    // (projection.instances) are created again over the new tables, and views elsewhere over
    // projection relations (audit.*, an operator's reports) are re-pointed at them; otherwise
    // dropping the old schema would drop them too.
    let views: Vec<String> = sqlx::query_scalar(
        "SELECT format('%s %I.%I AS %s',
                       CASE WHEN n.nspname = 'projection' THEN 'CREATE VIEW' ELSE 'CREATE OR REPLACE VIEW' END,
                       n.nspname, c.relname, pg_get_viewdef(c.oid))
         FROM pg_class c
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
    // Triggers too (the access cache's notifications, migration 0021): their definitions name
    // `projection.<table>`, which after the rename is the new table.
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT pg_get_triggerdef(t.oid) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'projection'::regnamespace AND NOT t.tgisinternal ORDER BY t.oid",
    )
    .fetch_all(&mut *tx)
    .await?;
    let grants = live_grants(&mut tx).await?;
    sqlx::query(&format!("ALTER SCHEMA projection RENAME TO {}", quoted(&old_schema))).execute(&mut *tx).await?;
    sqlx::query("ALTER SCHEMA projection_build RENAME TO projection").execute(&mut *tx).await?;
    store::revenue::fill_days(&mut tx).await?;
    for statement in views {
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    for definition in triggers {
        sqlx::query(&definition).execute(&mut *tx).await?;
    }
    // Every replica's cached access answers were read from the old tables.
    sqlx::query("SELECT pg_notify($1, '*')").bind(crate::ACCESS_CHANNEL).execute(&mut *tx).await?;
    for grant in grants {
        sqlx::query(&grant).execute(&mut *tx).await?;
    }
    tx.commit().await.context("committing the swap")?;
    let old_schema = if keep_old {
        Some(old_schema)
    } else {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", quoted(&old_schema))).execute(&mut *conn).await?;
        None
    };
    Ok(Swapped { position: folded.position, build_id, new_intents, old_schema })
}

/// The privileges the live `projection` schema and its tables and views grant, as `GRANT`
/// statements to run on the new ones: what the migrations granted (and an operator since), read
/// from the catalogs' ACLs, so a grant a later migration adds survives every rebuild. The owner's
/// own privileges are not grants.
async fn live_grants(conn: &mut PgConnection) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar(
        r"SELECT format('GRANT %s ON SCHEMA projection TO %s%s', a.privilege_type,
                        COALESCE(quote_ident(r.rolname), 'PUBLIC'),
                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
          FROM pg_namespace n CROSS JOIN LATERAL aclexplode(n.nspacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
          WHERE n.nspname = 'projection' AND a.grantee <> n.nspowner
          UNION ALL
          SELECT format('GRANT %s ON projection.%I TO %s%s', a.privilege_type, c.relname,
                        COALESCE(quote_ident(r.rolname), 'PUBLIC'),
                        CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
          FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a LEFT JOIN pg_roles r ON r.oid = a.grantee
          WHERE c.relnamespace = 'projection'::regnamespace AND c.relkind IN ('r', 'v', 'm')
            AND a.grantee <> c.relowner",
    )
    .fetch_all(&mut *conn)
    .await
}

/// Creates `projection_build` like the live schema and fills it with `folded`: the rows, their
/// indexes, and a checkpoint recording the catalog, the fold settings and `build_id`.
async fn build_tables(
    tx: &mut PgConnection,
    folded: &Folded,
    catalog: &Catalog,
    config: &FoldConfig,
    build_id: &str,
) -> anyhow::Result<()> {
    sqlx::query("DROP SCHEMA IF EXISTS projection_build CASCADE").execute(&mut *tx).await?;
    sqlx::query("CREATE SCHEMA projection_build").execute(&mut *tx).await?;
    for table in store::TABLES.iter().chain(&store::DERIVED_TABLES) {
        let table = quoted(table);
        let sql =
            format!("CREATE TABLE projection_build.{table} (LIKE projection.{table} INCLUDING ALL EXCLUDING INDEXES)");
        sqlx::query(&sql).execute(&mut *tx).await?;
    }
    store::copy_all(&mut *tx, "projection_build", &folded.state).await?;
    index_like_live(&mut *tx).await?;
    sqlx::query(
        "INSERT INTO projection_build.checkpoint (name, position, catalog_hash, build_id, fold_settings_hash)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(CHECKPOINT)
    .bind(folded.position)
    .bind(catalog.hash())
    .bind(build_id)
    .bind(config.hash())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// `name` as a quoted SQL identifier, as PostgreSQL's `quote_ident` writes one (an embedded `"`
/// doubled): the dynamic statements of the swap never splice a bare name.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Gives the build tables the live tables' indexes and key constraints, under the same names.
/// They are built after the rows are in: one sorted build per index costs less than keeping every
/// index up to date row by row during the COPY (measured in docs/benchmarks.md).
async fn index_like_live(conn: &mut PgConnection) -> sqlx::Result<()> {
    // Primary, unique and exclusion constraints are added as constraints; other indexes by their
    // definition, pointed at the build table (qualified or not, depending on the search path).
    let statements: Vec<String> = sqlx::query_scalar(
        r"SELECT CASE WHEN con.oid IS NOT NULL
                   THEN format('ALTER TABLE projection_build.%I ADD CONSTRAINT %I %s',
                               t.relname, con.conname, pg_get_constraintdef(con.oid))
                   ELSE regexp_replace(pg_get_indexdef(i.indexrelid),
                                       ' ON (ONLY )?(projection\.)?(\S+) USING ', ' ON \1projection_build.\3 USING ')
                 END
          FROM pg_index i
          JOIN pg_class t ON t.oid = i.indrelid
          LEFT JOIN pg_constraint con
            ON con.conindid = i.indexrelid AND con.conrelid = t.oid AND con.contype IN ('p', 'u', 'x')
          WHERE t.relnamespace = 'projection'::regnamespace AND t.relkind = 'r'
          ORDER BY t.relname, i.indexrelid",
    )
    .fetch_all(&mut *conn)
    .await?;
    for statement in statements {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    Ok(())
}
