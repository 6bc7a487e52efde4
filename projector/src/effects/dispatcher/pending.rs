//! What the instance and token passes look at: the subjects pending (`ledger.pending_subjects`,
//! marked by the intents the fold journals), or everything in a full sweep, which runs when this
//! dispatcher starts leading, after a rebuild swapped the projections, and every
//! `EFFECT_SWEEP_SECS` (what becomes due with time alone, such as a grace deadline).

use std::collections::BTreeSet;

use sqlx::PgPool;

/// The subjects a pass looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything (a full sweep).
    All,
    /// The pending subjects (and, for tokens, those due with time, found through indexes).
    Pending,
}

/// Pending subjects of one kind (`instance` or `token`), each with the mark it was read with.
#[derive(Debug, Default)]
pub(super) struct Pending {
    kind: &'static str,
    marks: Vec<(String, i64)>,
}

impl Pending {
    /// Reads the pending subjects of `kind`.
    pub(super) async fn read(pool: &PgPool, kind: &'static str) -> sqlx::Result<Self> {
        let marks = sqlx::query_as("SELECT subject, seq FROM ledger.pending_subjects WHERE kind = $1")
            .bind(kind)
            .fetch_all(pool)
            .await?;
        Ok(Self { kind, marks })
    }

    /// The subjects read.
    pub(super) fn subjects(&self) -> impl Iterator<Item = &String> {
        self.marks.iter().map(|(subject, _)| subject)
    }

    /// Forgets the subjects read that are not in `still`: they were found in sync. A subject marked
    /// again since it was read keeps its newer mark. In chunks, skipping rows another transaction
    /// holds (the runner marking them again): the dispatcher never waits for the runner, so the
    /// two never deadlock, and the runner waits at most for one chunk.
    pub(super) async fn settle(self, pool: &PgPool, still: &BTreeSet<String>) -> sqlx::Result<u64> {
        let done: Vec<&(String, i64)> = self.marks.iter().filter(|(subject, _)| !still.contains(subject)).collect();
        let mut forgotten = 0;
        for chunk in done.chunks(SETTLE_CHUNK) {
            let (subjects, seqs): (Vec<&str>, Vec<i64>) = chunk.iter().map(|(s, q)| (s.as_str(), *q)).unzip();
            let deleted = sqlx::query(
                "DELETE FROM ledger.pending_subjects p WHERE (p.kind, p.subject) IN (
                   SELECT q.kind, q.subject FROM ledger.pending_subjects q
                   JOIN unnest($2::text[], $3::bigint[]) AS d (subject, seq) ON q.subject = d.subject AND q.seq = d.seq
                   WHERE q.kind = $1
                   FOR UPDATE OF q SKIP LOCKED)",
            )
            .bind(self.kind)
            .bind(&subjects)
            .bind(&seqs)
            .execute(pool)
            .await?;
            forgotten += deleted.rows_affected();
        }
        Ok(forgotten)
    }
}

/// Marks forgotten per statement.
const SETTLE_CHUNK: usize = 5_000;

/// Subjects per page of a sweep.
const SWEEP_PAGE: usize = 10_000;

/// The candidates of a pass, a page at a time, so that a sweep holds one page in memory: the
/// pending ones (one page), or every subject `sweep` selects (SQL: ids above `$1`, in order, at
/// most `$2`).
pub(super) struct Pages {
    pending: Option<Vec<String>>,
    sweep: Option<&'static str>,
    after: String,
}

impl Pages {
    /// The pages of `scope`.
    pub(super) fn new(scope: Scope, pending: Vec<String>, sweep: &'static str) -> Self {
        match scope {
            Scope::Pending => Self { pending: Some(pending), sweep: None, after: String::new() },
            Scope::All => Self { pending: None, sweep: Some(sweep), after: String::new() },
        }
    }

    /// The next page, or None after the last (none at all when nothing is pending).
    pub(super) async fn next(&mut self, pool: &PgPool) -> sqlx::Result<Option<Vec<String>>> {
        let Some(sql) = self.sweep else { return Ok(self.pending.take().filter(|page| !page.is_empty())) };
        let page: Vec<String> =
            sqlx::query_scalar(sql).bind(&self.after).bind(SWEEP_PAGE as i64).fetch_all(pool).await?;
        if page.len() < SWEEP_PAGE {
            self.sweep = None;
        }
        match page.last() {
            Some(last) => self.after.clone_from(last),
            None => return Ok(None),
        }
        Ok(Some(page))
    }
}

/// What one subject needs.
#[derive(Debug)]
pub(super) enum Due<W> {
    /// This work, now.
    Now(W),
    /// Work, but not yet (a retry's backoff, an address still missing): it stays pending.
    Later,
    /// Nothing: in sync as far as the plan goes.
    Nothing,
}
