//! Pure decisions of the dispatcher: no I/O, the time is an argument.

use std::time::Duration;

use crate::catalog::Limits;
use chrono::{DateTime, Utc};

use crate::keys::{EffectKey, EffectKind, Outcome};
use crate::state::Desired;

/// Longest wait between two attempts of one effect.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long an API token is valid.
pub const TOKEN_LIFETIME: chrono::TimeDelta = chrono::TimeDelta::days(30);
/// A live token of a paying customer is renewed (expiry pushed back) this long before it expires.
pub const TOKEN_RENEW_BEFORE: chrono::TimeDelta = chrono::TimeDelta::days(10);

/// Instance status as the dispatcher observed it (`ledger.instances_observed.status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceStatus {
    /// `POST /provision` in progress (or interrupted).
    Provisioning,
    /// Up with the recorded limits.
    Running,
    /// `PUT /update` in progress (or interrupted).
    Updating,
    /// `DELETE /deprovision` in progress (or interrupted).
    Deprovisioning,
    /// Torn down.
    Deprovisioned,
    /// The operation under `key` failed for good (an admin was alerted).
    Failed,
}

impl InstanceStatus {
    /// Stored value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Provisioning => "provisioning",
            Self::Running => "running",
            Self::Updating => "updating",
            Self::Deprovisioning => "deprovisioning",
            Self::Deprovisioned => "deprovisioned",
            Self::Failed => "failed",
        }
    }

    /// Parses a stored value.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "provisioning" => Self::Provisioning,
            "running" => Self::Running,
            "updating" => Self::Updating,
            "deprovisioning" => Self::Deprovisioning,
            "deprovisioned" => Self::Deprovisioned,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// What the fold wants for one subscription's instance, with what decides it over time.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The subscription.
    pub subscription: String,
    /// Desired state (`projection.instance_targets`).
    pub desired: Desired,
    /// Tier to size for.
    pub tier: String,
    /// Limits to size for.
    pub limits: Option<Limits>,
    /// The subscription's grace deadline, if a payment failed and none came since.
    pub grace_until: Option<DateTime<Utc>>,
    /// Key of the subscription's latest instance intent (updates and teardowns go under it).
    pub latest_key: Option<EffectKey>,
    /// Key of the subscription's first instance intent: the identity of "this subscription's
    /// instance" when it is created, whatever intents come after.
    pub first_key: Option<EffectKey>,
}

/// The instance as last observed (`ledger.instances_observed`).
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// Status.
    pub status: InstanceStatus,
    /// App name the provisioner gave (None until provisioned).
    pub app_name: Option<String>,
    /// Limits it runs with.
    pub limits: Option<Limits>,
    /// Key of the operation in progress or last done.
    pub key: EffectKey,
    /// Attempts of that operation so far.
    pub attempts: i32,
    /// Set when a grace deadline tore it down.
    pub torn_down_by_grace: Option<DateTime<Utc>>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A call to make to the provisioner.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceOp {
    /// `POST /provision`.
    Provision {
        /// Idempotency key.
        key: EffectKey,
    },
    /// `PUT /update`.
    Update {
        /// Idempotency key.
        key: EffectKey,
        /// The app.
        app_name: String,
    },
    /// `DELETE /deprovision`.
    Deprovision {
        /// Idempotency key.
        key: EffectKey,
        /// The app.
        app_name: String,
        /// The grace deadline that asks for it (None: the subscription ended).
        grace: Option<DateTime<Utc>>,
    },
}

impl InstanceOp {
    /// The idempotency key.
    pub fn key(&self) -> &EffectKey {
        match self {
            Self::Provision { key } | Self::Update { key, .. } | Self::Deprovision { key, .. } => key,
        }
    }

    /// The status while the call is under way.
    pub fn pending_status(&self) -> InstanceStatus {
        match self {
            Self::Provision { .. } => InstanceStatus::Provisioning,
            Self::Update { .. } => InstanceStatus::Updating,
            Self::Deprovision { .. } => InstanceStatus::Deprovisioning,
        }
    }

    /// Journal kind.
    pub fn kind(&self) -> EffectKind {
        match self {
            Self::Provision { .. } => EffectKind::Provision,
            Self::Update { .. } => EffectKind::Update,
            Self::Deprovision { .. } => EffectKind::Deprovision,
        }
    }
}

/// Key of a teardown asked for by a grace deadline.
pub fn grace_key(subscription: &str, deadline: DateTime<Utc>) -> EffectKey {
    EffectKey::Grace { subscription: subscription.to_owned(), deadline: deadline.timestamp() }
}

/// Key of the re-provisioning of an instance a grace deadline tore down, once paid again.
pub fn restore_key(subscription: &str, deadline: DateTime<Utc>) -> EffectKey {
    EffectKey::Restore { subscription: subscription.to_owned(), deadline: deadline.timestamp() }
}

/// True when the grace deadline of a running subscription has passed.
pub fn grace_expired(target: &Target, now: DateTime<Utc>) -> bool {
    target.desired == Desired::Running && target.grace_until.is_some_and(|deadline| now >= deadline)
}

/// What an instance needs now, if anything. An operation that failed for good under a key is not
/// retried under the same key: a new intent (or an operator) moves it on.
pub fn plan_instance(target: &Target, observed: Option<&Observed>, now: DateTime<Utc>) -> Option<InstanceOp> {
    let app = observed.filter(|o| o.status != InstanceStatus::Deprovisioned).and_then(|o| o.app_name.clone());
    let failed_under = |key: &EffectKey| observed.is_some_and(|o| o.status == InstanceStatus::Failed && o.key == *key);
    let op = match (target.desired, app) {
        (Desired::Running, Some(app_name)) if grace_expired(target, now) => {
            let deadline = target.grace_until?;
            InstanceOp::Deprovision { key: grace_key(&target.subscription, deadline), app_name, grace: Some(deadline) }
        }
        (Desired::Running, None) if grace_expired(target, now) => return None,
        (Desired::Running, None) => InstanceOp::Provision { key: create_key(target, observed)? },
        (Desired::Running, Some(app_name)) => {
            if observed.and_then(|o| o.limits) == target.limits {
                return None;
            }
            InstanceOp::Update { key: target.latest_key.clone()?, app_name }
        }
        (Desired::Deprovisioned, Some(app_name)) => {
            InstanceOp::Deprovision { key: target.latest_key.clone()?, app_name, grace: None }
        }
        // Ended while a create was unconfirmed (sent, no answer recorded): the app may exist.
        // Re-send the create under its own key to learn its name (the provisioner deduplicates),
        // then the next pass tears it down. Nothing leaks and the row does not stay `provisioning`.
        (Desired::Deprovisioned, None) if unconfirmed_create(observed).is_some() => {
            InstanceOp::Provision { key: unconfirmed_create(observed)?.clone() }
        }
        // Never provisioned, or already gone. An `absent` target (tier unknown after a catalog
        // change) never tears a running instance down: a catalog mistake must not cost a customer.
        (Desired::Deprovisioned, None) | (Desired::Absent, _) => return None,
    };
    (!failed_under(op.key())).then_some(op)
}

/// The key of a create that was sent and never confirmed (no app recorded), if any.
fn unconfirmed_create(observed: Option<&Observed>) -> Option<&EffectKey> {
    observed
        .filter(|o| o.app_name.is_none() && matches!(o.status, InstanceStatus::Provisioning | InstanceStatus::Failed))
        .map(|o| &o.key)
}

/// Under which key an instance is created. One subscription's instance has one identity across
/// intents: a create that was sent and never confirmed is re-sent under its own key (a timeout,
/// a crash or a lost answer must not become a second app when an upgrade arrives meanwhile); a
/// first create goes under the subscription's first instance intent; only a grace teardown
/// starts a new instance (`restore:<sub>:<deadline>`).
fn create_key(target: &Target, observed: Option<&Observed>) -> Option<EffectKey> {
    if let Some(deadline) = observed.and_then(|o| o.torn_down_by_grace) {
        return Some(restore_key(&target.subscription, deadline));
    }
    if let Some(key) = unconfirmed_create(observed) {
        return Some(key.clone());
    }
    target.first_key.clone().or_else(|| target.latest_key.clone())
}

/// When attempt `attempts + 1` of an effect is due, given the last attempt at `last_at`.
pub fn next_attempt_at(last_at: DateTime<Utc>, attempts: u32, base: Duration, key: &EffectKey) -> DateTime<Utc> {
    if attempts == 0 {
        return last_at;
    }
    last_at + chrono::TimeDelta::from_std(backoff(attempts, base, key)).unwrap_or(chrono::TimeDelta::MAX)
}

/// Delay after `attempts` failed attempts: exponential, capped, with "equal jitter" (half fixed,
/// half spread) drawn from the key and the attempt so every process computes the same value.
pub fn backoff(attempts: u32, base: Duration, key: &EffectKey) -> Duration {
    let exponential = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20)).min(MAX_BACKOFF);
    let spread = fnv1a(key.to_string().as_bytes(), attempts) as f64 / u64::MAX as f64;
    exponential / 2 + exponential.mul_f64(spread / 2.0)
}

fn fnv1a(bytes: &[u8], salt: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes.iter().chain(&salt.to_le_bytes()) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// How a provisioner or mail answer is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done.
    Succeeded,
    /// Try again later (timeout, connection error, 5xx, 429).
    Retry,
    /// Will not get better by retrying (other 4xx).
    Failed,
}

/// The verdict of an HTTP status (None: no answer at all, a timeout or connection error).
pub fn verdict(status: Option<u16>) -> Verdict {
    match status {
        None => Verdict::Retry,
        Some(s) if (200..300).contains(&s) => Verdict::Succeeded,
        Some(429) => Verdict::Retry,
        Some(s) if s >= 500 => Verdict::Retry,
        Some(_) => Verdict::Failed,
    }
}

/// The journal outcome of an attempt: a retryable failure on the last allowed attempt fails.
pub fn outcome(verdict: Verdict, attempt: u32, max_attempts: u32) -> Outcome {
    match verdict {
        Verdict::Succeeded => Outcome::Succeeded,
        Verdict::Retry if attempt < max_attempts => Outcome::Retry,
        Verdict::Retry | Verdict::Failed => Outcome::Failed,
    }
}

/// A live token as stored (`ledger.api_tokens`, unrevoked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveToken {
    /// Its key (the issuing effect).
    pub key: EffectKey,
    /// Tier it grants.
    pub tier: String,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Whether its email went out.
    pub delivered: bool,
}

/// What a customer's token needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenOp {
    /// Issue a token with this tier (revoking a dead live one, expired or undelivered, first).
    Issue {
        /// Tier.
        tier: String,
    },
    /// Revoke the live token.
    Revoke,
    /// Change the tier of the live token.
    Retier {
        /// New tier.
        tier: String,
    },
    /// Push the expiry back to now + [`TOKEN_LIFETIME`].
    Renew,
}

/// What a customer's token needs now: `wanted` is the tier when the customer has a running,
/// not grace-expired subscription.
pub fn plan_token(wanted: Option<&str>, live: Option<&LiveToken>, now: DateTime<Utc>) -> Option<TokenOp> {
    match (wanted, live) {
        (None, None) => None,
        (None, Some(_)) => Some(TokenOp::Revoke),
        (Some(tier), None) => Some(TokenOp::Issue { tier: tier.to_owned() }),
        (Some(tier), Some(token)) if !token.delivered || token.expires_at <= now => {
            Some(TokenOp::Issue { tier: tier.to_owned() })
        }
        (Some(tier), Some(token)) if token.tier != tier => Some(TokenOp::Retier { tier: tier.to_owned() }),
        (Some(_), Some(token)) if token.expires_at - now < TOKEN_RENEW_BEFORE => Some(TokenOp::Renew),
        (Some(_), Some(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use crate::catalog::Limit;

    use super::*;

    fn k(text: &str) -> EffectKey {
        text.parse().expect("a key")
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).expect("valid")
    }

    fn limits(agents: f64) -> Option<Limits> {
        Some(Limits {
            agents: Limit::Max(agents),
            messages_per_day: Limit::Unlimited,
            memory_mb: Limit::Max(512.0),
            cpu: Limit::Max(0.5),
        })
    }

    fn target(desired: Desired, agents: f64, grace: Option<i64>) -> Target {
        Target {
            subscription: "sub_1".into(),
            desired,
            tier: "starter".into(),
            limits: limits(agents),
            grace_until: grace.map(at),
            latest_key: Some(k("instance:sub_1:7")),
            first_key: Some(k("instance:sub_1:2")),
        }
    }

    fn observed(status: InstanceStatus, app: Option<&str>, agents: f64, key: &str) -> Observed {
        Observed {
            status,
            app_name: app.map(str::to_owned),
            limits: limits(agents),
            key: k(key),
            attempts: 1,
            torn_down_by_grace: None,
            updated_at: at(0),
        }
    }

    #[test]
    fn a_new_running_target_is_provisioned_under_its_first_intent_key() {
        let op = plan_instance(&target(Desired::Running, 1.0, None), None, at(100));
        assert_eq!(op, Some(InstanceOp::Provision { key: k("instance:sub_1:2") }));
    }

    #[test]
    fn an_interrupted_provisioning_is_resent_with_the_same_key() {
        let o = observed(InstanceStatus::Provisioning, None, 1.0, "instance:sub_1:4");
        let op = plan_instance(&target(Desired::Running, 1.0, None), Some(&o), at(100));
        assert_eq!(op, Some(InstanceOp::Provision { key: k("instance:sub_1:4") }), "not the newer intent's key");
    }

    #[test]
    fn an_ended_subscription_with_an_unconfirmed_create_confirms_it_then_tears_it_down() {
        let o = observed(InstanceStatus::Provisioning, None, 1.0, "instance:sub_1:4");
        let ended = target(Desired::Deprovisioned, 1.0, None);
        assert_eq!(plan_instance(&ended, Some(&o), at(0)), Some(InstanceOp::Provision { key: k("instance:sub_1:4") }));
        let confirmed = observed(InstanceStatus::Running, Some("app"), 1.0, "instance:sub_1:4");
        assert_eq!(
            plan_instance(&ended, Some(&confirmed), at(0)),
            Some(InstanceOp::Deprovision { key: k("instance:sub_1:7"), app_name: "app".into(), grace: None })
        );
    }

    #[test]
    fn matching_instances_need_nothing_and_other_limits_an_update() {
        let o = observed(InstanceStatus::Running, Some("app"), 1.0, "instance:sub_1:3");
        assert_eq!(plan_instance(&target(Desired::Running, 1.0, None), Some(&o), at(100)), None);
        let op = plan_instance(&target(Desired::Running, 5.0, None), Some(&o), at(100));
        assert_eq!(op, Some(InstanceOp::Update { key: k("instance:sub_1:7"), app_name: "app".into() }));
    }

    #[test]
    fn grace_keeps_running_until_the_deadline_then_tears_down_once_and_restores_after_payment() {
        let running = observed(InstanceStatus::Running, Some("app"), 1.0, "instance:sub_1:3");
        let t = target(Desired::Running, 1.0, Some(1_000));
        assert_eq!(plan_instance(&t, Some(&running), at(999)), None);
        let op = plan_instance(&t, Some(&running), at(1_000));
        assert_eq!(
            op,
            Some(InstanceOp::Deprovision {
                key: k("grace:sub_1:1000"),
                app_name: "app".into(),
                grace: Some(at(1_000))
            })
        );
        let mut gone = observed(InstanceStatus::Deprovisioned, Some("app"), 1.0, "grace:sub_1:1000");
        gone.torn_down_by_grace = Some(at(1_000));
        assert_eq!(plan_instance(&t, Some(&gone), at(5_000)), None, "torn down once");
        let paid = target(Desired::Running, 1.0, None);
        assert_eq!(
            plan_instance(&paid, Some(&gone), at(5_000)),
            Some(InstanceOp::Provision { key: k("restore:sub_1:1000") })
        );
    }

    #[test]
    fn an_ended_subscription_is_deprovisioned_and_an_unknown_tier_tears_nothing_down() {
        let running = observed(InstanceStatus::Running, Some("app"), 1.0, "instance:sub_1:3");
        let op = plan_instance(&target(Desired::Deprovisioned, 1.0, None), Some(&running), at(0));
        assert_eq!(
            op,
            Some(InstanceOp::Deprovision { key: k("instance:sub_1:7"), app_name: "app".into(), grace: None })
        );
        assert_eq!(plan_instance(&target(Desired::Absent, 1.0, None), Some(&running), at(0)), None);
        assert_eq!(plan_instance(&target(Desired::Deprovisioned, 1.0, None), None, at(0)), None);
    }

    #[test]
    fn a_failed_create_waits_for_the_operator_even_when_a_new_intent_arrives() {
        // It may have created the app (timeouts until the last attempt): a new key could make a
        // second one. `replay effects retry` re-sends it under its own key.
        let failed = observed(InstanceStatus::Failed, None, 1.0, "instance:sub_1:7");
        assert_eq!(plan_instance(&target(Desired::Running, 1.0, None), Some(&failed), at(0)), None);
        let mut newer = target(Desired::Running, 2.0, None);
        newer.latest_key = Some(k("instance:sub_1:9"));
        assert_eq!(plan_instance(&newer, Some(&failed), at(0)), None);
        let failed_update = observed(InstanceStatus::Failed, Some("app"), 1.0, "instance:sub_1:7");
        assert_eq!(
            plan_instance(&newer, Some(&failed_update), at(0)),
            Some(InstanceOp::Update { key: k("instance:sub_1:9"), app_name: "app".into() }),
            "an update of a known app moves on under the new intent"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_deterministically() {
        let base = Duration::from_secs(1);
        for attempt in 1..=12 {
            let d = backoff(attempt, base, &k("grace:a:1"));
            let full = base.saturating_mul(1 << (attempt - 1)).min(MAX_BACKOFF);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} within [{:?}, {full:?}]", full / 2);
            assert_eq!(d, backoff(attempt, base, &k("grace:a:1")), "the same everywhere");
        }
        assert_ne!(backoff(3, base, &k("grace:a:1")), backoff(3, base, &k("grace:b:1")), "spread across keys");
        assert_eq!(next_attempt_at(at(10), 0, base, &k("grace:a:1")), at(10));
    }

    #[test]
    fn statuses_map_to_verdicts_and_the_last_attempt_fails() {
        assert_eq!(verdict(Some(200)), Verdict::Succeeded);
        assert_eq!(verdict(Some(201)), Verdict::Succeeded);
        assert_eq!(verdict(None), Verdict::Retry);
        assert_eq!(verdict(Some(429)), Verdict::Retry);
        assert_eq!(verdict(Some(503)), Verdict::Retry);
        assert_eq!(verdict(Some(400)), Verdict::Failed);
        assert_eq!(verdict(Some(422)), Verdict::Failed);
        assert_eq!(outcome(Verdict::Retry, 2, 3), Outcome::Retry);
        assert_eq!(outcome(Verdict::Retry, 3, 3), Outcome::Failed);
        assert_eq!(outcome(Verdict::Failed, 1, 3), Outcome::Failed);
    }

    #[test]
    fn tokens_are_issued_renewed_retiered_replaced_and_revoked() {
        let now = at(1_000_000);
        let live = |tier: &str, expires: DateTime<Utc>, delivered: bool| LiveToken {
            key: k("token:cus_1:3"),
            tier: tier.into(),
            expires_at: expires,
            delivered,
        };
        assert_eq!(plan_token(Some("basic"), None, now), Some(TokenOp::Issue { tier: "basic".into() }));
        assert_eq!(plan_token(None, None, now), None);
        let fresh = live("basic", now + TOKEN_LIFETIME, true);
        assert_eq!(plan_token(Some("basic"), Some(&fresh), now), None);
        assert_eq!(plan_token(None, Some(&fresh), now), Some(TokenOp::Revoke));
        assert_eq!(plan_token(Some("premium"), Some(&fresh), now), Some(TokenOp::Retier { tier: "premium".into() }));
        let ageing = live("basic", now + chrono::TimeDelta::days(2), true);
        assert_eq!(plan_token(Some("basic"), Some(&ageing), now), Some(TokenOp::Renew));
        let expired = live("basic", now, true);
        assert_eq!(plan_token(Some("basic"), Some(&expired), now), Some(TokenOp::Issue { tier: "basic".into() }));
        let undelivered = live("basic", now + TOKEN_LIFETIME, false);
        assert_eq!(plan_token(Some("basic"), Some(&undelivered), now), Some(TokenOp::Issue { tier: "basic".into() }));
    }
}
