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
    /// again since it was read keeps its newer mark.
    pub(super) async fn settle(self, pool: &PgPool, still: &BTreeSet<String>) -> sqlx::Result<u64> {
        let (subjects, seqs): (Vec<String>, Vec<i64>) =
            self.marks.into_iter().filter(|(subject, _)| !still.contains(subject)).unzip();
        if subjects.is_empty() {
            return Ok(0);
        }
        let done = sqlx::query(
            "DELETE FROM ledger.pending_subjects p USING unnest($2::text[], $3::bigint[]) AS d (subject, seq)
             WHERE p.kind = $1 AND p.subject = d.subject AND p.seq = d.seq",
        )
        .bind(self.kind)
        .bind(&subjects)
        .bind(&seqs)
        .execute(pool)
        .await?;
        Ok(done.rows_affected())
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
