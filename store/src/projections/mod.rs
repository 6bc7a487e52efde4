//! The SQL image of [`Projections`]: load it, write a batch's changed rows, copy it whole into a
//! rebuild's schema, the intents and the checkpoint. The runner calls these inside one
//! transaction per batch. Each table is described once, in [`tables`].

pub mod diff;
mod tables;

use serde::Serialize;
use sqlx::PgConnection;

use self::tables::{
    Accounts, Anomalies, CreditGrants, Discounts, InstanceTargets, MrrMovements, Prices, RevenueRows, Subscriptions,
    Table, Tokens,
};
pub use self::tables::{LimitColumns, desired_from};
use std::collections::BTreeSet;

use domain::state::Reads;
use domain::state::{Changes, Intent, Projections};

/// The tables of the projection schema, in creation order (the checkpoint first).
pub const TABLES: [&str; 11] = [
    "checkpoint",
    Accounts::NAME,
    Subscriptions::NAME,
    InstanceTargets::NAME,
    Tokens::NAME,
    CreditGrants::NAME,
    Anomalies::NAME,
    Prices::NAME,
    RevenueRows::NAME,
    MrrMovements::NAME,
    Discounts::NAME,
];

/// Tables of the projection schema the fold does not write: triggers keep them from the fold's
/// tables (`projection.mrr_days`, migration 0034); a rebuild creates them empty beside the fold's
/// and fills them from the new rows.
pub const DERIVED_TABLES: [&str; 1] = ["mrr_days"];

/// Anomaly kind of an event the live projector could not write and passed over; a rebuild passes
/// over the same events (`rebuild`).
pub const QUARANTINED: &str = "quarantined";

/// The channel the projection tables' triggers (migration 0021) and a rebuild's swap notify
/// about writes that can change a `/v1/access` answer; the API's caches listen on it.
pub const ACCESS_CHANNEL: &str = "ledger_access";

/// Rows per COPY message when a rebuild copies whole tables.
const COPY_CHUNK: usize = 10_000;

/// Runs `$call::<Table>` for every projection table, in [`TABLES`] order.
macro_rules! each_table {
    ($call:ident ( $($arg:expr),* )) => {{
        $call::<Accounts>($($arg),*).await?;
        $call::<Subscriptions>($($arg),*).await?;
        $call::<InstanceTargets>($($arg),*).await?;
        $call::<Tokens>($($arg),*).await?;
        $call::<CreditGrants>($($arg),*).await?;
        $call::<Anomalies>($($arg),*).await?;
        $call::<Prices>($($arg),*).await?;
        $call::<RevenueRows>($($arg),*).await?;
        $call::<MrrMovements>($($arg),*).await?;
        $call::<Discounts>($($arg),*).await?;
    }};
}

/// Reads every projection row.
pub async fn load(conn: &mut PgConnection) -> sqlx::Result<Projections> {
    let mut p = Projections::default();
    each_table!(load_table(&mut *conn, &mut p));
    p.reindex();
    Ok(p)
}

/// Reads the rows of `keys`: on the same rows, exactly [`Projections::select`] (the live runner's
/// per-batch loading, see [`domain::window`]). One statement, one round trip: [`LOAD_KEYS`].
pub async fn load_keys(conn: &mut PgConnection, keys: &Reads) -> sqlx::Result<Projections> {
    let list = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<String>>();
    let (mut low, mut high, mut unbounded) = (Vec::new(), Vec::new(), Vec::new());
    for prefix in &keys.anomaly_prefixes {
        match prefix_end(prefix) {
            Some(end) => {
                low.push(prefix.clone());
                high.push(end);
            }
            None => unbounded.push(prefix.clone()),
        }
    }
    let rows: Vec<(i32, String)> = sqlx::query_as(&LOAD_KEYS)
        .bind(list(&keys.accounts))
        .bind(list(&keys.subscriptions))
        .bind(list(&keys.instances))
        .bind(list(&keys.tokens))
        .bind(list(&keys.credit_grants))
        .bind(list(&keys.anomalies))
        .bind(list(&keys.customer_subscriptions))
        .bind(low)
        .bind(high)
        .bind(unbounded)
        .bind(list(&keys.prices))
        .bind(list(&keys.revenue))
        .bind(list(&keys.mrr_movements))
        .bind(list(&keys.discounts))
        .fetch_all(&mut *conn)
        .await?;
    let mut by_table: [Vec<String>; 10] = Default::default();
    for (table, row) in rows {
        if let Some(rows) = usize::try_from(table).ok().and_then(|t| by_table.get_mut(t)) {
            rows.push(row);
        }
    }
    let [accounts, subscriptions, instances, tokens, grants, anomalies, prices, revenue, movements, discounts] =
        by_table;
    let mut p = Projections::default();
    insert_rows::<Accounts>(&mut p, accounts)?;
    insert_rows::<Subscriptions>(&mut p, subscriptions)?;
    insert_rows::<InstanceTargets>(&mut p, instances)?;
    insert_rows::<Tokens>(&mut p, tokens)?;
    insert_rows::<CreditGrants>(&mut p, grants)?;
    insert_rows::<Anomalies>(&mut p, anomalies)?;
    insert_rows::<Prices>(&mut p, prices)?;
    insert_rows::<RevenueRows>(&mut p, revenue)?;
    insert_rows::<MrrMovements>(&mut p, movements)?;
    insert_rows::<Discounts>(&mut p, discounts)?;
    p.reindex();
    Ok(p)
}

/// The statement of [`load_keys`]: `(table number, row as JSON)` of each table's rows whose key
/// is in its array (`$1`..`$6`, tables in [`TABLES`] order after the checkpoint), subscriptions
/// also by customer (`$7`), anomalies also by key prefix: a range scan of `anomalies_key_c_idx`
/// per prefix from `$8` to `$9` (see [`prefix_end`]), and a scan for prefixes with no end (`$10`:
/// empty, or all U+10FFFF; skipped when there are none), prices by id (`$11`), revenue rows by
/// customer (`$12`), movements by key (`$13`), discounts by id (`$14`).
static LOAD_KEYS: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let by_key = |n: usize, name: &str, key: &str| {
        format!("SELECT {} AS t, to_jsonb(r)::text FROM projection.{name} r WHERE {key} = ANY(${n}::text[])", n - 1)
    };
    [
        by_key(1, Accounts::NAME, Accounts::KEY),
        by_key(2, Subscriptions::NAME, Subscriptions::KEY) + " OR stripe_customer_id = ANY($7::text[])",
        by_key(3, InstanceTargets::NAME, InstanceTargets::KEY),
        by_key(4, Tokens::NAME, Tokens::KEY),
        by_key(5, CreditGrants::NAME, CreditGrants::KEY),
        by_key(6, Anomalies::NAME, Anomalies::KEY),
        format!(
            r#"SELECT 5, to_jsonb(a)::text FROM unnest($8::text[], $9::text[]) AS p (low, high)
               JOIN projection.{} a ON (a.key COLLATE "C") >= p.low AND (a.key COLLATE "C") < p.high
                 AND starts_with(a.key, p.low)"#,
            Anomalies::NAME
        ),
        format!(
            "SELECT 5, to_jsonb(a)::text FROM projection.{} a WHERE cardinality($10::text[]) > 0
               AND EXISTS (SELECT 1 FROM unnest($10::text[]) AS p (low) WHERE starts_with(a.key, p.low))",
            Anomalies::NAME
        ),
        format!(
            "SELECT 6, to_jsonb(r)::text FROM projection.{} r WHERE {} = ANY($11::text[])",
            Prices::NAME,
            Prices::KEY
        ),
        format!(
            "SELECT 7, to_jsonb(r)::text FROM projection.{} r WHERE {} = ANY($12::text[])",
            RevenueRows::NAME,
            RevenueRows::KEY
        ),
        format!(
            "SELECT 8, to_jsonb(r)::text FROM projection.{} r WHERE {} = ANY($13::text[])",
            MrrMovements::NAME,
            MrrMovements::KEY
        ),
        format!(
            "SELECT 9, to_jsonb(r)::text FROM projection.{} r WHERE {} = ANY($14::text[])",
            Discounts::NAME,
            Discounts::KEY
        ),
    ]
    .join("\nUNION ALL\n")
});

/// The least string above every string that starts with `prefix`, in code point order (`None`:
/// no such string, e.g. an empty prefix).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// Writes the rows named in `changes` as they are in `state`: per table with changes, one upsert
/// of the present rows (and a delete of the keys the state no longer holds, e.g. a resolved
/// anomaly).
pub async fn write_changes(conn: &mut PgConnection, state: &Projections, changes: &Changes) -> sqlx::Result<()> {
    each_table!(write_table(&mut *conn, state, changes));
    Ok(())
}

/// Copies every row of `state` into the empty tables of `schema` (a rebuild's), with COPY.
pub async fn copy_all(conn: &mut PgConnection, schema: &str, state: &Projections) -> sqlx::Result<()> {
    each_table!(copy_table(&mut *conn, schema, state));
    Ok(())
}

// Not compile-checked: table and column names come from the descriptions (the columns are the
// row image's JSON keys). What is written is read back by the round-trip test of the store.

async fn load_table<T: Table>(conn: &mut PgConnection, p: &mut Projections) -> sqlx::Result<()> {
    let sql = format!("SELECT to_jsonb(t)::text FROM projection.{} t", T::NAME);
    let rows: Vec<String> = sqlx::query_scalar(&sql).fetch_all(&mut *conn).await?;
    insert_rows::<T>(p, rows)
}

/// Adds rows read as JSON text to `p`.
fn insert_rows<T: Table>(p: &mut Projections, rows: Vec<String>) -> sqlx::Result<()> {
    let map = T::rows_mut(p);
    for text in rows {
        let row: T::Row = serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        let (key, value) = T::value(row);
        map.insert(key, value);
    }
    Ok(())
}

async fn write_table<T: Table>(conn: &mut PgConnection, state: &Projections, changes: &Changes) -> sqlx::Result<()> {
    let rows = T::rows(state);
    let (present, gone): (Vec<&String>, Vec<&String>) = T::changed(changes).iter().partition(|k| rows.contains_key(*k));
    if !gone.is_empty() {
        let sql = format!("DELETE FROM projection.{} WHERE {} = ANY($1)", T::NAME, T::KEY);
        sqlx::query(&sql).bind(&gone).execute(&mut *conn).await?;
    }
    let images: Vec<T::Row> =
        present.iter().filter_map(|k| rows.get_key_value(*k)).map(|(k, v)| T::row(k, v)).collect();
    let Some(columns) = images.first().map(columns).transpose()? else { return Ok(()) };
    // One upsert per table: the rows arrive as one JSON array, typed by the table's own row type.
    let updates: Vec<String> = columns.iter().filter(|c| *c != T::KEY).map(|c| format!("{c} = EXCLUDED.{c}")).collect();
    let sql = format!(
        "INSERT INTO projection.{table} SELECT * FROM json_populate_recordset(NULL::projection.{table}, $1::text::json)
         ON CONFLICT ({key}) DO UPDATE SET {updates}",
        table = T::NAME,
        key = T::KEY,
        updates = updates.join(", ")
    );
    let json = serde_json::to_string(&images).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    sqlx::query(&sql).bind(json).execute(&mut *conn).await?;
    Ok(())
}

async fn copy_table<T: Table>(conn: &mut PgConnection, schema: &str, state: &Projections) -> sqlx::Result<()> {
    let mut rows = T::rows(state).iter().map(|(k, v)| T::row(k, v)).peekable();
    let Some(columns) = rows.peek().map(columns).transpose()? else { return Ok(()) };
    let sql = format!("COPY {schema}.{} ({}) FROM STDIN", T::NAME, columns.join(", "));
    let mut sink = conn.copy_in_raw(&sql).await?;
    while rows.peek().is_some() {
        let mut data = String::new();
        for row in rows.by_ref().take(COPY_CHUNK) {
            copy_line(&mut data, &row, &columns)?;
        }
        sink.send(data.into_bytes()).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// The column names of a row image: its JSON keys (serde's field names, flattened ones included).
fn columns<R: Serialize>(row: &R) -> sqlx::Result<Vec<String>> {
    match serde_json::to_value(row).map_err(|e| sqlx::Error::Encode(Box::new(e)))? {
        serde_json::Value::Object(map) => Ok(map.keys().cloned().collect()),
        other => Err(sqlx::Error::Encode(format!("a row image is not an object: {other}").into())),
    }
}

/// One line of COPY text format: the image's values in `columns` order.
fn copy_line<R: Serialize>(out: &mut String, row: &R, columns: &[String]) -> sqlx::Result<()> {
    let serde_json::Value::Object(map) = serde_json::to_value(row).map_err(|e| sqlx::Error::Encode(Box::new(e)))?
    else {
        return Err(sqlx::Error::Encode("a row image is not an object".into()));
    };
    for (i, column) in columns.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match map.get(column) {
            None | Some(serde_json::Value::Null) => out.push_str("\\N"),
            Some(serde_json::Value::Bool(b)) => out.push(if *b { 't' } else { 'f' }),
            Some(serde_json::Value::Number(n)) => out.push_str(&n.to_string()),
            Some(serde_json::Value::String(text)) => copy_text(out, text),
            // An array or object is a jsonb column's value: its JSON text.
            Some(json) => copy_text(out, &json.to_string()),
        }
    }
    out.push('\n');
    Ok(())
}

/// `text` as a value of COPY's text format.
fn copy_text(out: &mut String, text: &str) {
    // Most values need no escape: one scan, one copy (per character pushes were a visible part
    // of a rebuild's swap).
    if !text.bytes().any(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Creates (empty) the table a rebuild stages its intents in while it folds: temporary, so it
/// lives on the one connection that folds and then swaps, and never in the journal before the
/// swap commits.
pub async fn create_intent_stage(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query("DROP TABLE IF EXISTS pg_temp.rebuild_intents").execute(&mut *conn).await?;
    sqlx::query(
        "CREATE TEMP TABLE rebuild_intents (ord bigint, key text, kind text, detail text, position bigint,
                                            subject_type text, subject text)",
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Appends intents to the stage with COPY, numbered from `ord` on (their order is kept).
pub async fn stage_intents(conn: &mut PgConnection, intents: &[(i64, Intent)], ord: &mut i64) -> sqlx::Result<()> {
    let mut sink = conn
        .copy_in_raw(
            "COPY pg_temp.rebuild_intents (ord, key, kind, detail, position, subject_type, subject) FROM STDIN",
        )
        .await?;
    for chunk in intents.chunks(COPY_CHUNK) {
        let mut data = String::new();
        for (position, intent) in chunk {
            *ord += 1;
            let key = intent.key.to_string();
            let texts = [key.as_str(), intent.kind.as_str(), intent.detail.as_str()];
            data.push_str(&ord.to_string());
            for text in texts {
                data.push('\t');
                copy_text(&mut data, text);
            }
            data.push('\t');
            data.push_str(&position.to_string());
            for text in [intent.subject.type_str(), intent.subject.id()] {
                data.push('\t');
                copy_text(&mut data, text);
            }
            data.push('\n');
        }
        sink.send(data.into_bytes()).await?;
    }
    sink.finish().await?;
    Ok(())
}

/// Journals the staged intents (in their order: the first raise of a key wins, as in
/// [`record_intents`]) and drops the stage. Keys journaled before (all of them, when an unchanged
/// log is rebuilt) are left out by one anti-join before the insert: 0.55 s instead of 1.5 s of
/// conflict checks for 480,000 intents (docs/benchmarks.md).
pub async fn record_staged_intents(conn: &mut PgConnection) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "INSERT INTO ledger.intents (key, kind, detail, position, subject_type, subject)
         SELECT s.key, s.kind, s.detail, s.position, s.subject_type, s.subject FROM pg_temp.rebuild_intents s
         WHERE NOT EXISTS (SELECT 1 FROM ledger.intents i WHERE i.key = s.key)
         ORDER BY s.ord
         ON CONFLICT (key) DO NOTHING",
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query("DROP TABLE pg_temp.rebuild_intents").execute(&mut *conn).await?;
    Ok(done.rows_affected())
}

/// Journals intents; a key already journaled (by an earlier run or a rebuild) is left alone.
pub async fn record_intents(conn: &mut PgConnection, intents: &[(i64, Intent)]) -> sqlx::Result<u64> {
    if intents.is_empty() {
        return Ok(0);
    }
    let keys: Vec<String> = intents.iter().map(|(_, i)| i.key.to_string()).collect();
    let kinds: Vec<&str> = intents.iter().map(|(_, i)| i.kind.as_str()).collect();
    let details: Vec<&str> = intents.iter().map(|(_, i)| i.detail.as_str()).collect();
    let positions: Vec<i64> = intents.iter().map(|(p, _)| *p).collect();
    let subject_types: Vec<&str> = intents.iter().map(|(_, i)| i.subject.type_str()).collect();
    let subjects: Vec<&str> = intents.iter().map(|(_, i)| i.subject.id()).collect();
    let done = sqlx::query!(
        r#"INSERT INTO ledger.intents (key, kind, detail, position, subject_type, subject)
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[])
           ON CONFLICT (key) DO NOTHING"#,
        &keys,
        &kinds as &[&str],
        &details as &[&str],
        &positions,
        &subject_types as &[&str],
        &subjects as &[&str],
    )
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected())
}

/// A checkpoint row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Last folded position.
    pub position: i64,
    /// Catalog the rows were built with.
    pub catalog_hash: String,
    /// `live`, or the rebuild that produced the tables.
    pub build_id: String,
    /// Fold settings the rows were built with (`FoldConfig::hash`; '' before it was recorded).
    pub fold_settings_hash: String,
}

/// The checkpoint `name`, locked for this transaction so a second projector cannot fold the same
/// events concurrently (it waits, then sees the advanced position).
pub async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<Checkpoint>> {
    let row = sqlx::query_as!(
        Checkpoint,
        "SELECT position, catalog_hash, build_id, fold_settings_hash FROM projection.checkpoint WHERE name = $1 FOR UPDATE",
        name
    )
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row)
}

/// Saves the checkpoint (in the batch's transaction).
pub async fn save_checkpoint(
    conn: &mut PgConnection,
    name: &str,
    position: i64,
    catalog_hash: &str,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"INSERT INTO projection.checkpoint (name, position, catalog_hash) VALUES ($1, $2, $3)
           ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, catalog_hash = EXCLUDED.catalog_hash,
             updated_at = now()"#,
        name,
        position,
        catalog_hash,
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Image {
        key: &'static str,
        detail: Option<&'static str>,
        deleted: bool,
        limit: f64,
    }

    #[test]
    fn copy_lines_escape_what_copy_text_format_reserves_and_follow_the_image_columns() {
        let row = Image { key: "k\t1", detail: Some("a\\b\nc\rd"), deleted: true, limit: -1.0 };
        let columns = columns(&row).expect("an object");
        assert_eq!(columns, ["deleted", "detail", "key", "limit"]);
        let mut out = String::new();
        copy_line(&mut out, &row, &columns).expect("encoded");
        copy_line(&mut out, &Image { key: "k2", detail: None, deleted: false, limit: 2.5 }, &columns).expect("encoded");
        assert_eq!(out, "t\ta\\\\b\\nc\\rd\tk\\t1\t-1.0\nf\t\\N\tk2\t2.5\n");
    }

    #[test]
    fn a_prefix_ends_at_the_next_code_point_of_its_last_char_that_has_one() {
        assert_eq!(
            prefix_end("invoice_without_known_price:in_1:").as_deref(),
            Some("invoice_without_known_price:in_1;")
        );
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"), "surrogates are no chars");
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
        assert_eq!(prefix_end(""), None);
    }
}
