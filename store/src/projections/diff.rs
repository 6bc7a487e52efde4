//! What replacing one image of the projections by another changes, row by row and column by
//! column, as the tables store them (each row through its table's [`Table::row`]): what
//! `replay rebuild --dry-run` prints, and `--json` for scripts.

use std::collections::BTreeMap;

use domain::state::Projections;
use serde::Serialize;
use serde_json::Value;

use super::tables::{
    Accounts, Anomalies, CreditGrants, Discounts, InstanceTargets, MrrMovements, Prices, RevenueRows, Subscriptions,
    Table, Tokens,
};

/// One table's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableCounts {
    /// The table.
    pub table: &'static str,
    /// Rows only in the new image.
    pub added: usize,
    /// Rows in both, with a column that differs.
    pub changed: usize,
    /// Rows only in the old image.
    pub removed: usize,
}

/// How a row changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the new image.
    Added,
    /// In both, different.
    Changed,
    /// Only in the old image.
    Removed,
}

/// One column of a row, before and after (`null`: absent, or no row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Column {
    /// The column's name.
    pub name: String,
    /// Before.
    pub old: Value,
    /// After.
    pub new: Value,
}

/// One row that changes: only the columns that differ (every non-null one for an added or
/// removed row).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RowChange {
    /// The table.
    pub table: &'static str,
    /// Its key.
    pub key: String,
    /// Added, changed or removed.
    pub change: Change,
    /// The columns that differ.
    pub columns: Vec<Column>,
}

/// The whole difference: counts per table, then the rows in table and key order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// Per table, in creation order.
    pub tables: Vec<TableCounts>,
    /// Every changed row.
    pub rows: Vec<RowChange>,
}

impl Diff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// One line per table, then one line per changed row with only its changed columns, old ->
    /// new (`~ subscription sub_1: tier unknown -> starter`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for t in &self.tables {
            out += &format!("{:<14} +{:<7} ~{:<7} -{:<7}\n", t.table, t.added, t.changed, t.removed);
        }
        for row in &self.rows {
            let sign = match row.change {
                Change::Added => '+',
                Change::Changed => '~',
                Change::Removed => '-',
            };
            let columns: Vec<String> = row
                .columns
                .iter()
                .map(|c| match row.change {
                    Change::Added => format!("{} {}", c.name, shown(&c.new)),
                    Change::Removed => format!("{} {}", c.name, shown(&c.old)),
                    Change::Changed => format!("{} {} -> {}", c.name, shown(&c.old), shown(&c.new)),
                })
                .collect();
            out += &format!("{sign} {} {}: {}\n", singular(row.table), row.key, columns.join(", "));
        }
        out
    }
}

/// What replacing `live` by `rebuilt` changes. Snapshot versions are compared too: positions are
/// stable, so a rebuild of an unchanged log changes nothing.
pub fn diff(live: &Projections, rebuilt: &Projections) -> Diff {
    let mut diff = Diff { tables: Vec::new(), rows: Vec::new() };
    table::<Accounts>(live, rebuilt, &mut diff);
    table::<Subscriptions>(live, rebuilt, &mut diff);
    table::<InstanceTargets>(live, rebuilt, &mut diff);
    table::<Tokens>(live, rebuilt, &mut diff);
    table::<CreditGrants>(live, rebuilt, &mut diff);
    table::<Anomalies>(live, rebuilt, &mut diff);
    table::<Prices>(live, rebuilt, &mut diff);
    table::<RevenueRows>(live, rebuilt, &mut diff);
    table::<MrrMovements>(live, rebuilt, &mut diff);
    table::<Discounts>(live, rebuilt, &mut diff);
    diff
}

fn table<T: Table>(live: &Projections, rebuilt: &Projections, diff: &mut Diff)
where
    T::Value: PartialEq,
{
    let (old, new) = (T::rows(live), T::rows(rebuilt));
    let mut counts = TableCounts { table: T::NAME, added: 0, changed: 0, removed: 0 };
    let columns = |key: &str, value: Option<&T::Value>| -> BTreeMap<String, Value> {
        match value.map(|v| serde_json::to_value(T::row(key, v))) {
            Some(Ok(Value::Object(map))) => map.into_iter().filter(|(name, _)| name != T::KEY).collect(),
            _ => BTreeMap::new(),
        }
    };
    let keys: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (before, after) = (old.get(key), new.get(key));
        let change = match (before, after) {
            (None, Some(_)) => Change::Added,
            (Some(_), None) => Change::Removed,
            (Some(b), Some(a)) if b != a => Change::Changed,
            _ => continue,
        };
        match change {
            Change::Added => counts.added += 1,
            Change::Changed => counts.changed += 1,
            Change::Removed => counts.removed += 1,
        }
        let (b, a) = (columns(key, before), columns(key, after));
        let names: std::collections::BTreeSet<&String> = b.keys().chain(a.keys()).collect();
        let columns = names
            .into_iter()
            .filter_map(|name| {
                let (old, new) =
                    (b.get(name).cloned().unwrap_or(Value::Null), a.get(name).cloned().unwrap_or(Value::Null));
                (old != new).then(|| Column { name: name.clone(), old, new })
            })
            .collect();
        diff.rows.push(RowChange { table: T::NAME, key: key.clone(), change, columns });
    }
    diff.tables.push(counts);
}

/// A value as one word where it is one: strings bare, `null` as `-`, anything else as JSON.
fn shown(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `subscriptions` -> `subscription`, `anomalies` -> `anomaly`.
fn singular(table: &str) -> String {
    match table.strip_suffix("ies") {
        Some(stem) => format!("{stem}y"),
        None => table.strip_suffix('s').unwrap_or(table).to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::state::{Account, Version};

    fn account(email: &str) -> Account {
        Account {
            stripe_customer_id: "cus_1".to_owned(),
            email: Some(email.to_owned()),
            name: Some("Ada".to_owned()),
            deleted: false,
            created: Some(1_700_000_000),
            version: Some(Version { created: 10, rank: 0, position: 3 }),
        }
    }

    #[test]
    fn a_changed_row_shows_only_its_changed_columns_old_to_new_and_the_counts() {
        let mut live = Projections::default();
        live.accounts.insert("cus_1".to_owned(), account("a@old.test"));
        let mut gone = account("g@x.test");
        gone.stripe_customer_id = "cus_gone".to_owned();
        live.accounts.insert("cus_gone".to_owned(), gone);
        let mut rebuilt = Projections::default();
        rebuilt.accounts.insert("cus_1".to_owned(), account("a@new.test"));
        let diff = diff(&live, &rebuilt);
        assert_eq!(diff.tables[0], TableCounts { table: "accounts", added: 0, changed: 1, removed: 1 });
        assert!(diff.tables[1..].iter().all(|t| t.added + t.changed + t.removed == 0));
        let text = diff.render();
        assert!(text.contains("~ account cus_1: email a@old.test -> a@new.test\n"), "{text}");
        assert!(text.contains("- account cus_gone: "), "{text}");
        assert!(!text.contains("name Ada ->"), "unchanged columns are left out: {text}");
        let json = serde_json::to_value(&diff).expect("json");
        assert_eq!(
            json["rows"][0]["columns"][0],
            serde_json::json!({ "name": "email", "old": "a@old.test", "new": "a@new.test" })
        );
        assert!(super::diff(&rebuilt, &rebuilt).is_empty());
    }
}
