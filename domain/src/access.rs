//! The access decision: what a customer's API token is granted (`GET /v1/access`), from its row,
//! its customer's entitling subscription and the day's usage, and until when that answer holds.
//! The API reads the row, caches the answer until then, and checks a required tier against it.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::catalog::{Catalog, Limit, Quota, Tier};
use crate::usage;

/// The longest a cached answer is used without being read again, whatever the notifications say.
pub const MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

/// What a known token's row decides, whatever tier a caller asks for: kept in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The rank of the tier access is granted at (None: denied).
    pub rank: Option<usize>,
    /// Denied, or granted with its body.
    pub outcome: Outcome,
}

/// What a token gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// 401 with this result label.
    Denied(&'static str),
    /// 200 with this JSON body.
    Granted(Bytes),
}

/// A token's row as the check reads it (the API reads it in one statement).
#[derive(Debug, Clone)]
pub struct TokenState {
    /// Its customer.
    pub customer: String,
    /// When it expires.
    pub expires_at: DateTime<Utc>,
    /// Revoked by the dispatcher.
    pub revoked: bool,
    /// The live subscription's tier and status (see the query).
    pub live: Option<(String, String)>,
    /// That subscription's billing period (`current_period_start`, `current_period_end`).
    pub period: (Option<i64>, Option<i64>),
    /// The earliest grace deadline of the customer's subscriptions still ahead: a live
    /// subscription may stop being live then.
    pub next_grace_end: Option<DateTime<Utc>>,
    /// The customer's current usage counters (`ledger.current_counters`).
    pub counters: Vec<usage::Counter>,
}

/// The answer for `token` at `now`, and until when it holds unless a write changes it: the token's
/// expiry, the next grace deadline, the next reset of a quota window it shows, [`MAX_AGE`].
pub fn decide(token: &TokenState, catalog: &Catalog, now: DateTime<Utc>) -> (Answer, DateTime<Utc>) {
    let tier = token.live.as_ref().and_then(|(tier, _)| catalog.tier(tier));
    let mut valid_until = (now + MAX_AGE).min(usage::next_reset(tier, token.period, now));
    let denied = |result| Answer { rank: None, outcome: Outcome::Denied(result) };
    let answer = if token.revoked {
        denied("revoked")
    } else if token.expires_at <= now {
        denied("expired")
    } else {
        valid_until = valid_until.min(token.expires_at);
        if let Some(grace_end) = token.next_grace_end.filter(|end| *end > now) {
            valid_until = valid_until.min(grace_end);
        }
        match &token.live {
            None => denied("no_live_subscription"),
            Some((tier, status)) => {
                let tier_limits = catalog.tier(tier);
                let body = json!({
                    "customer": token.customer,
                    "tier": tier,
                    "limits": tier_limits.map_or(Value::Null, limits),
                    "status": status,
                    "expires_at": token.expires_at.to_rfc3339(),
                    "usage": usage::standing(catalog, tier_limits, token.period, &token.counters, now),
                });
                Answer { rank: catalog.rank(tier), outcome: Outcome::Granted(Bytes::from(body.to_string())) }
            }
        }
    };
    (answer, valid_until)
}

/// Every limit of `tier` as the catalog writes it: the instance's (`agents`, `memory_mb`, `cpu`)
/// and every quota (`<metric>_per_<window>`), whole numbers as JSON integers, `-1` unlimited.
pub fn limits(tier: &Tier) -> Value {
    let number = |limit: Limit| match limit {
        Limit::Unlimited => json!(-1),
        Limit::Max(v) if v.fract() == 0.0 && v.abs() < 9.0e15 => json!(v as i64),
        Limit::Max(v) => json!(v),
    };
    let mut out = serde_json::Map::new();
    let l = &tier.limits;
    for (name, limit) in [("agents", l.agents), ("memory_mb", l.memory_mb), ("cpu", l.cpu)] {
        out.insert(name.to_owned(), number(limit));
    }
    for (metric, windows) in &tier.quotas {
        for (window, quota) in windows {
            let value = match quota {
                Quota::Unlimited => json!(-1),
                Quota::Max(n) => json!(n),
            };
            out.insert(window.limit_name(metric), value);
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn token(live: Option<(&str, &str)>) -> TokenState {
        TokenState {
            customer: "cus_a".to_owned(),
            expires_at: at(3_600),
            revoked: false,
            live: live.map(|(t, s)| (t.to_owned(), s.to_owned())),
            next_grace_end: None,
            period: (None, None),
            counters: vec![usage::Counter {
                metric: "api_calls".to_owned(),
                window: "day".to_owned(),
                starts_at: usage::span(crate::catalog::Window::Day, at(0), (None, None)).starts_at,
                used: 7,
            }],
        }
    }

    #[test]
    fn a_live_token_is_granted_at_its_tier_until_the_earliest_thing_that_can_end_it() {
        let catalog = Catalog::example().expect("catalog");
        let (answer, until) = decide(&token(Some(("professional", "active"))), &catalog, at(0));
        assert_eq!(answer.rank, catalog.rank("professional"));
        let Outcome::Granted(body) = &answer.outcome else { panic!("granted: {answer:?}") };
        let body: serde_json::Value = serde_json::from_slice(body).expect("json");
        assert_eq!((body["customer"].as_str(), body["tier"].as_str()), (Some("cus_a"), Some("professional")));
        assert_eq!(until, at(0) + MAX_AGE, "nothing ends sooner than the longest a cached answer lives");

        let mut soon = token(Some(("professional", "past_due")));
        soon.expires_at = at(50);
        assert_eq!(decide(&soon, &catalog, at(0)).1, at(50), "the token expires first");
        soon.next_grace_end = Some(at(20));
        assert_eq!(decide(&soon, &catalog, at(0)).1, at(20), "the grace period ends first");
        let midnight = usage::resets_at(usage::day(at(0)));
        assert_eq!(decide(&soon, &catalog, midnight - chrono::TimeDelta::seconds(5)).1, midnight, "a new usage day");
    }

    #[test]
    fn revoked_expired_and_unpaid_tokens_are_denied_with_their_reason() {
        let catalog = Catalog::example().expect("catalog");
        let result = |t: &TokenState, now| match decide(t, &catalog, now).0.outcome {
            Outcome::Denied(result) => result,
            Outcome::Granted(_) => "granted",
        };
        let mut revoked = token(Some(("starter", "active")));
        revoked.revoked = true;
        assert_eq!(result(&revoked, at(0)), "revoked");
        assert_eq!(result(&token(Some(("starter", "active"))), at(3_600)), "expired");
        assert_eq!(result(&token(None), at(0)), "no_live_subscription");
        assert_eq!(decide(&token(None), &catalog, at(0)).0.rank, None);
    }
}
