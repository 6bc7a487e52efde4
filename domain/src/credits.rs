//! The credit balance: grants (facts from Stripe, folded into `projection.credit_grants`) minus
//! debits (facts from the product, `POST /v1/usage` metric `credits`, in `ledger.usage`).
//!
//! The one rule, in time order: a debit subtracts (never below zero), a pack grant adds, and a
//! cycle grant first caps what is left at that moment to its tier's rollover cap, then adds. A
//! customer who spent their credits carries over only what they still have. Grants sort by (time,
//! key), so shuffled deliveries and a rebuild give the same balance; debits are never rebuilt.
//!
//! Debits enter as a cumulative curve: each grant carries how much was consumed before it, and
//! the total consumed so far closes the walk. One indexed look-up per grant, however many debits.

use chrono::{DateTime, Utc};

/// One grant, with the consumption recorded before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// `invoice:in_...` or `checkout:cs_...`: breaks ties between grants of one second.
    pub key: String,
    /// Period start of a cycle, else the event time.
    pub at: DateTime<Utc>,
    /// Credits granted.
    pub credits: u64,
    /// Cycle grants cap the carried balance first; packs (`None`) just add.
    pub rollover_cap: Option<u64>,
    /// Credits debited strictly before `at` (cumulative).
    pub consumed_before: u64,
}

/// The balance after every grant and `consumed_total` credits of debits.
pub fn balance(grants: &[Grant], consumed_total: u64) -> u64 {
    let mut ordered: Vec<&Grant> = grants.iter().collect();
    ordered.sort_by(|a, b| (a.at, &a.key).cmp(&(b.at, &b.key)));
    let mut left = 0u64;
    let mut consumed = 0u64;
    for grant in ordered {
        // A grant folded late may sort before debits that were checked without it: the curve
        // is cumulative, so never step backwards.
        let before = grant.consumed_before.max(consumed);
        left = left.saturating_sub(before - consumed);
        consumed = before;
        if let Some(cap) = grant.rollover_cap {
            left = left.min(cap);
        }
        left = left.saturating_add(grant.credits);
    }
    left.saturating_sub(consumed_total.saturating_sub(consumed))
}

/// A customer's grants with the consumption before each, and its debits so far (the API reads it
/// from `projection.credit_grants` and `ledger.usage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditAccount {
    /// Grants, each with what was consumed before it.
    pub grants: Vec<Grant>,
    /// Every credit consumed.
    pub consumed: u64,
    /// Where the latest debit sits among the grants.
    pub last_debit: Option<DateTime<Utc>>,
}

impl CreditAccount {
    /// The balance now ([`balance`]).
    pub fn balance(&self) -> u64 {
        balance(&self.grants, self.consumed)
    }

    /// Where a debit made at `now` sits among the grants: at `now`, but never before the previous
    /// debit (the curve only grows, even if the clock steps back) nor before a grant this balance
    /// counted (a debit spends what it was checked against, even a grant dated ahead).
    pub fn applies_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let latest_grant = self.grants.iter().map(|g| g.at).max();
        [Some(now), self.last_debit, latest_grant].into_iter().flatten().max().unwrap_or(now)
    }

    /// Adds a debit at `at` (from [`Self::applies_at`]): grants dated after it see it before them.
    pub fn add_debit(&mut self, at: DateTime<Utc>, quantity: u64) {
        self.consumed = self.consumed.saturating_add(quantity);
        for grant in self.grants.iter_mut().filter(|g| g.at > at) {
            grant.consumed_before = self.consumed;
        }
        self.last_debit = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(seconds, 0).single().expect("time")
    }

    #[test]
    fn a_debit_never_sits_before_the_last_debit_or_a_counted_grant_and_later_grants_see_it() {
        let grant = |key: &str, t, credits| Grant {
            key: key.to_owned(),
            at: at(t),
            credits,
            rollover_cap: None,
            consumed_before: 0,
        };
        let mut account = CreditAccount {
            grants: vec![grant("a", 100, 50), grant("b", 300, 20)],
            consumed: 0,
            last_debit: Some(at(200)),
        };
        assert_eq!(account.balance(), 70);
        // The clock stepped back to 150: the debit still sits after the grant dated ahead (300).
        assert_eq!(account.applies_at(at(150)), at(300));
        account.last_debit = Some(at(400));
        assert_eq!(account.applies_at(at(350)), at(400), "never before the previous debit");
        assert_eq!(account.applies_at(at(500)), at(500));
        // A debit at 200 comes before grant b: b sees it as consumed before it.
        account.add_debit(at(200), 30);
        assert_eq!((account.consumed, account.last_debit), (30, Some(at(200))));
        assert_eq!(account.grants[1].consumed_before, 30);
        assert_eq!(account.grants[0].consumed_before, 0);
        assert_eq!(account.balance(), 40);
    }

    /// What the walk must equal: every grant and debit merged in time order (debits of the same
    /// second after the grants), applied one by one.
    fn replayed(grants: &[(i64, u64, Option<u64>)], debits: &[(i64, u64)]) -> u64 {
        let mut steps: Vec<(i64, u8, usize)> = grants.iter().enumerate().map(|(i, g)| (g.0, 0, i)).collect();
        steps.extend(debits.iter().enumerate().map(|(i, d)| (d.0, 1, i)));
        steps.sort();
        steps.iter().fold(0u64, |left, &(_, kind, i)| match kind {
            0 => {
                let (_, credits, cap) = grants[i];
                cap.map_or(left, |cap| left.min(cap)).saturating_add(credits)
            }
            _ => left.saturating_sub(debits[i].1),
        })
    }

    fn curve(grants: &[(i64, u64, Option<u64>)], debits: &[(i64, u64)]) -> u64 {
        balance(&with_curve(grants, debits), debits.iter().map(|d| d.1).sum())
    }

    fn with_curve(grants: &[(i64, u64, Option<u64>)], debits: &[(i64, u64)]) -> Vec<Grant> {
        let consumed = |t: i64| debits.iter().filter(|d| d.0 < t).map(|d| d.1).sum::<u64>();
        grants
            .iter()
            .enumerate()
            .map(|(i, &(t, credits, rollover_cap))| Grant {
                key: format!("g{i:03}"),
                at: at(t),
                credits,
                rollover_cap,
                consumed_before: consumed(t),
            })
            .collect()
    }

    #[test]
    fn rollover_caps_what_is_left_after_consumption_not_what_was_granted() {
        // 1,000 a cycle, cap 2,000: unused credits roll over up to the cap.
        let cycles = [(100, 1_000, Some(2_000)), (200, 1_000, Some(2_000)), (300, 1_000, Some(2_000))];
        assert_eq!(curve(&cycles, &[]), 3_000, "1000, min(1000,2000)+1000, min(2000,2000)+1000");
        // 900 spent in the second cycle: 1,100 left, under the cap, carried whole.
        assert_eq!(curve(&cycles, &[(250, 900)]), 2_100);
        // A pack of 5,000 before the third cycle: 6,100 capped to 2,000, then +1,000.
        let with_pack = [cycles[0], cycles[1], (260, 5_000, None), cycles[2]];
        assert_eq!(curve(&with_pack, &[(250, 900)]), 3_000);
        // Spent after the last grant: subtracted from the end.
        assert_eq!(curve(&with_pack, &[(250, 900), (400, 2_999)]), 1);
        assert_eq!(curve(&[], &[]), 0);
    }

    #[test]
    fn a_grant_folded_late_never_makes_the_balance_negative() {
        // A pack spent in full; a cycle grant with cap 0 dated before the spend arrives later.
        let grants = [(100, 500, None), (150, 10, Some(0))];
        assert_eq!(curve(&grants, &[(200, 500)]), 0);
        assert_eq!(replayed(&grants, &[(200, 500)]), 0);
    }

    fn grants() -> impl Strategy<Value = Vec<(i64, u64, Option<u64>)>> {
        prop::collection::vec((0i64..50, 0u64..5_000, prop::option::of(0u64..3_000)), 0..12)
    }

    fn debits() -> impl Strategy<Value = Vec<(i64, u64)>> {
        prop::collection::vec((0i64..50, 1u64..2_000), 0..24)
    }

    proptest! {
        #[test]
        fn the_curve_walk_equals_applying_every_step_in_time_order(grants in grants(), debits in debits()) {
            prop_assert_eq!(curve(&grants, &debits), replayed(&grants, &debits));
        }

        #[test]
        fn the_order_grants_are_known_in_does_not_matter(grants in grants(), debits in debits(), seed in any::<u64>()) {
            let known = with_curve(&grants, &debits);
            let mut shuffled = known.clone();
            let n = shuffled.len().max(1);
            for i in 0..shuffled.len() {
                shuffled.swap(i, (seed as usize).wrapping_mul(i + 7) % n);
            }
            let total = debits.iter().map(|d| d.1).sum();
            prop_assert_eq!(balance(&shuffled, total), balance(&known, total));
        }
    }
}
