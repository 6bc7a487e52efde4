//! The SQL image of [`Projections`]: load it, write a batch's changed rows, the intents and the
//! checkpoint. The runner calls these inside one transaction per batch.

use chrono::{DateTime, Utc};
use shared::catalog::{Limit, Limits};
use sqlx::PgConnection;

use crate::fold::{
    Account, Anomaly, Changes, CreditGrant, Desired, Instance, Intent, Projections, SubscriptionRow, TokenWant, Version,
};

fn ts(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
}

fn secs(t: Option<DateTime<Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp())
}

/// Limits as the four `limit_*` columns (-1 = unlimited); the COPY writer uses it too.
pub(crate) fn limit_columns(limits: Option<Limits>) -> [Option<f64>; 4] {
    match limits {
        None => [None; 4],
        Some(l) => {
            [Some(l.agents.into()), Some(l.messages_per_day.into()), Some(l.memory_mb.into()), Some(l.cpu.into())]
        }
    }
}

fn limit(value: f64) -> Limit {
    if value == -1.0 { Limit::Unlimited } else { Limit::Max(value) }
}

pub(crate) fn limits_from(columns: [Option<f64>; 4]) -> Option<Limits> {
    match columns {
        [Some(agents), Some(messages), Some(memory), Some(cpu)] => Some(Limits {
            agents: limit(agents),
            messages_per_day: limit(messages),
            memory_mb: limit(memory),
            cpu: limit(cpu),
        }),
        _ => None,
    }
}

/// A version as its three columns; the COPY writer uses it too.
pub(crate) fn version_columns(v: Option<Version>) -> (Option<i64>, Option<i16>, Option<i64>) {
    match v {
        Some(v) => (Some(v.created), Some(i16::from(v.rank)), Some(v.position)),
        None => (None, None, None),
    }
}

fn version_from(created: Option<i64>, rank: Option<i16>, position: Option<i64>) -> Option<Version> {
    Some(Version { created: created?, rank: u8::try_from(rank?).unwrap_or(0), position: position? })
}

pub(crate) fn desired_from(text: &str) -> Desired {
    match text {
        "running" => Desired::Running,
        "deprovisioned" => Desired::Deprovisioned,
        _ => Desired::Absent,
    }
}

/// Reads every projection row.
pub async fn load(conn: &mut PgConnection) -> sqlx::Result<Projections> {
    let mut p = Projections::default();
    for r in sqlx::query!(
        "SELECT stripe_customer_id, email, name, deleted, version_created, version_rank, version_position FROM projection.accounts"
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let version = version_from(r.version_created, r.version_rank, r.version_position);
        p.accounts.insert(
            r.stripe_customer_id.clone(),
            Account { stripe_customer_id: r.stripe_customer_id, email: r.email, name: r.name, deleted: r.deleted, version },
        );
    }
    for r in sqlx::query!("SELECT * FROM projection.subscriptions").fetch_all(&mut *conn).await? {
        let row = SubscriptionRow {
            stripe_subscription_id: r.stripe_subscription_id.clone(),
            stripe_customer_id: r.stripe_customer_id,
            price_id: r.price_id,
            tier: r.tier,
            limits: limits_from([r.limit_agents, r.limit_messages_per_day, r.limit_memory_mb, r.limit_cpu]),
            status: r.status,
            current_period_end: secs(r.current_period_end),
            trial_end: secs(r.trial_end),
            cancel_at_period_end: r.cancel_at_period_end,
            canceled_at: secs(r.canceled_at),
            ended_at: secs(r.ended_at),
            deleted: r.deleted,
            last_paid_at: secs(r.last_paid_at),
            last_payment_failed_at: secs(r.last_payment_failed_at),
            grace_until: secs(r.grace_until),
            version: version_from(r.version_created, r.version_rank, r.version_position),
        };
        p.subscriptions.insert(r.stripe_subscription_id, row);
    }
    for r in sqlx::query!("SELECT * FROM projection.instance_targets").fetch_all(&mut *conn).await? {
        let row = Instance {
            stripe_subscription_id: r.stripe_subscription_id.clone(),
            stripe_customer_id: r.stripe_customer_id,
            desired: desired_from(&r.desired),
            tier: r.tier,
            limits: limits_from([r.limit_agents, r.limit_messages_per_day, r.limit_memory_mb, r.limit_cpu]),
        };
        p.instances.insert(r.stripe_subscription_id, row);
    }
    for r in
        sqlx::query!("SELECT stripe_customer_id, wanted, tier FROM projection.tokens").fetch_all(&mut *conn).await?
    {
        let row = TokenWant { stripe_customer_id: r.stripe_customer_id.clone(), wanted: r.wanted, tier: r.tier };
        p.tokens.insert(r.stripe_customer_id, row);
    }
    for r in
        sqlx::query!("SELECT key, stripe_customer_id, credits, rollover_cap, granted_for FROM projection.credit_grants")
            .fetch_all(&mut *conn)
            .await?
    {
        let grant = CreditGrant {
            key: r.key.clone(),
            stripe_customer_id: r.stripe_customer_id,
            credits: u64::try_from(r.credits).unwrap_or(0),
            rollover_cap: r.rollover_cap.map(|c| u64::try_from(c).unwrap_or(0)),
            at: r.granted_for.timestamp(),
        };
        p.credit_grants.insert(r.key, grant);
    }
    for r in sqlx::query!("SELECT stripe_customer_id, balance FROM projection.credits").fetch_all(&mut *conn).await? {
        p.credits.insert(r.stripe_customer_id, r.balance);
    }
    for r in sqlx::query!("SELECT key, kind, detail, position FROM projection.anomalies").fetch_all(&mut *conn).await? {
        p.anomalies.insert(r.key.clone(), Anomaly { key: r.key, kind: r.kind, detail: r.detail, position: r.position });
    }
    p.reindex();
    Ok(p)
}

/// Writes the rows named in `changes` as they are in `state` (one statement per table).
pub async fn write_changes(conn: &mut PgConnection, state: &Projections, changes: &Changes) -> sqlx::Result<()> {
    let accounts: Vec<&Account> = changes.accounts.iter().filter_map(|k| state.accounts.get(k)).collect();
    if !accounts.is_empty() {
        let ids: Vec<&str> = accounts.iter().map(|a| a.stripe_customer_id.as_str()).collect();
        let emails: Vec<Option<&str>> = accounts.iter().map(|a| a.email.as_deref()).collect();
        let names: Vec<Option<&str>> = accounts.iter().map(|a| a.name.as_deref()).collect();
        let deleted: Vec<bool> = accounts.iter().map(|a| a.deleted).collect();
        let (vc, vr, vp): (Vec<_>, Vec<_>, Vec<_>) = accounts.iter().map(|a| version_columns(a.version)).collect();
        sqlx::query!(
            r#"INSERT INTO projection.accounts
                 (stripe_customer_id, email, name, deleted, version_created, version_rank, version_position)
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::bigint[], $6::smallint[], $7::bigint[])
               ON CONFLICT (stripe_customer_id) DO UPDATE SET email = EXCLUDED.email, name = EXCLUDED.name,
                 deleted = EXCLUDED.deleted, version_created = EXCLUDED.version_created,
                 version_rank = EXCLUDED.version_rank, version_position = EXCLUDED.version_position"#,
            &ids as &[&str],
            &emails as &[Option<&str>],
            &names as &[Option<&str>],
            &deleted,
            &vc as &[Option<i64>],
            &vr as &[Option<i16>],
            &vp as &[Option<i64>],
        )
        .execute(&mut *conn)
        .await?;
    }

    let subs: Vec<&SubscriptionRow> = changes.subscriptions.iter().filter_map(|k| state.subscriptions.get(k)).collect();
    if !subs.is_empty() {
        let ids: Vec<&str> = subs.iter().map(|s| s.stripe_subscription_id.as_str()).collect();
        let customers: Vec<Option<&str>> = subs.iter().map(|s| s.stripe_customer_id.as_deref()).collect();
        let prices: Vec<Option<&str>> = subs.iter().map(|s| s.price_id.as_deref()).collect();
        let tiers: Vec<&str> = subs.iter().map(|s| s.tier.as_str()).collect();
        let statuses: Vec<&str> = subs.iter().map(|s| s.status.as_str()).collect();
        let period_end: Vec<_> = subs.iter().map(|s| ts(s.current_period_end)).collect();
        let trial_end: Vec<_> = subs.iter().map(|s| ts(s.trial_end)).collect();
        let cancel_at_end: Vec<bool> = subs.iter().map(|s| s.cancel_at_period_end).collect();
        let canceled_at: Vec<_> = subs.iter().map(|s| ts(s.canceled_at)).collect();
        let ended_at: Vec<_> = subs.iter().map(|s| ts(s.ended_at)).collect();
        let deleted: Vec<bool> = subs.iter().map(|s| s.deleted).collect();
        let paid: Vec<_> = subs.iter().map(|s| ts(s.last_paid_at)).collect();
        let failed: Vec<_> = subs.iter().map(|s| ts(s.last_payment_failed_at)).collect();
        let grace: Vec<_> = subs.iter().map(|s| ts(s.grace_until)).collect();
        let limits: Vec<[Option<f64>; 4]> = subs.iter().map(|s| limit_columns(s.limits)).collect();
        let (vc, vr, vp): (Vec<_>, Vec<_>, Vec<_>) = subs.iter().map(|s| version_columns(s.version)).collect();
        let column = |i: usize| limits.iter().map(|l| l[i]).collect::<Vec<Option<f64>>>();
        sqlx::query!(
            r#"INSERT INTO projection.subscriptions
                 (stripe_subscription_id, stripe_customer_id, price_id, tier, status, current_period_end, trial_end,
                  cancel_at_period_end, canceled_at, ended_at, deleted, last_paid_at, last_payment_failed_at,
                  grace_until, limit_agents, limit_messages_per_day, limit_memory_mb, limit_cpu,
                  version_created, version_rank, version_position)
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
                  $7::timestamptz[], $8::bool[], $9::timestamptz[], $10::timestamptz[], $11::bool[],
                  $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::float8[], $16::float8[],
                  $17::float8[], $18::float8[], $19::bigint[], $20::smallint[], $21::bigint[])
               ON CONFLICT (stripe_subscription_id) DO UPDATE SET
                 stripe_customer_id = EXCLUDED.stripe_customer_id, price_id = EXCLUDED.price_id,
                 tier = EXCLUDED.tier, status = EXCLUDED.status, current_period_end = EXCLUDED.current_period_end,
                 trial_end = EXCLUDED.trial_end, cancel_at_period_end = EXCLUDED.cancel_at_period_end,
                 canceled_at = EXCLUDED.canceled_at, ended_at = EXCLUDED.ended_at, deleted = EXCLUDED.deleted,
                 last_paid_at = EXCLUDED.last_paid_at, last_payment_failed_at = EXCLUDED.last_payment_failed_at,
                 grace_until = EXCLUDED.grace_until, limit_agents = EXCLUDED.limit_agents,
                 limit_messages_per_day = EXCLUDED.limit_messages_per_day, limit_memory_mb = EXCLUDED.limit_memory_mb,
                 limit_cpu = EXCLUDED.limit_cpu, version_created = EXCLUDED.version_created,
                 version_rank = EXCLUDED.version_rank, version_position = EXCLUDED.version_position"#,
            &ids as &[&str],
            &customers as &[Option<&str>],
            &prices as &[Option<&str>],
            &tiers as &[&str],
            &statuses as &[&str],
            &period_end as &[Option<DateTime<Utc>>],
            &trial_end as &[Option<DateTime<Utc>>],
            &cancel_at_end,
            &canceled_at as &[Option<DateTime<Utc>>],
            &ended_at as &[Option<DateTime<Utc>>],
            &deleted,
            &paid as &[Option<DateTime<Utc>>],
            &failed as &[Option<DateTime<Utc>>],
            &grace as &[Option<DateTime<Utc>>],
            &column(0) as &[Option<f64>],
            &column(1) as &[Option<f64>],
            &column(2) as &[Option<f64>],
            &column(3) as &[Option<f64>],
            &vc as &[Option<i64>],
            &vr as &[Option<i16>],
            &vp as &[Option<i64>],
        )
        .execute(&mut *conn)
        .await?;
    }

    let instances: Vec<&Instance> = changes.instances.iter().filter_map(|k| state.instances.get(k)).collect();
    if !instances.is_empty() {
        let ids: Vec<&str> = instances.iter().map(|i| i.stripe_subscription_id.as_str()).collect();
        let customers: Vec<Option<&str>> = instances.iter().map(|i| i.stripe_customer_id.as_deref()).collect();
        let desired: Vec<&str> = instances.iter().map(|i| i.desired.as_str()).collect();
        let tiers: Vec<&str> = instances.iter().map(|i| i.tier.as_str()).collect();
        let limits: Vec<[Option<f64>; 4]> = instances.iter().map(|i| limit_columns(i.limits)).collect();
        let column = |i: usize| limits.iter().map(|l| l[i]).collect::<Vec<Option<f64>>>();
        sqlx::query!(
            r#"INSERT INTO projection.instance_targets (stripe_subscription_id, stripe_customer_id, desired, tier,
                 limit_agents, limit_messages_per_day, limit_memory_mb, limit_cpu)
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[],
                 $7::float8[], $8::float8[])
               ON CONFLICT (stripe_subscription_id) DO UPDATE SET stripe_customer_id = EXCLUDED.stripe_customer_id,
                 desired = EXCLUDED.desired, tier = EXCLUDED.tier, limit_agents = EXCLUDED.limit_agents,
                 limit_messages_per_day = EXCLUDED.limit_messages_per_day, limit_memory_mb = EXCLUDED.limit_memory_mb,
                 limit_cpu = EXCLUDED.limit_cpu"#,
            &ids as &[&str],
            &customers as &[Option<&str>],
            &desired as &[&str],
            &tiers as &[&str],
            &column(0) as &[Option<f64>],
            &column(1) as &[Option<f64>],
            &column(2) as &[Option<f64>],
            &column(3) as &[Option<f64>],
        )
        .execute(&mut *conn)
        .await?;
    }

    let tokens: Vec<&TokenWant> = changes.tokens.iter().filter_map(|k| state.tokens.get(k)).collect();
    if !tokens.is_empty() {
        let ids: Vec<&str> = tokens.iter().map(|t| t.stripe_customer_id.as_str()).collect();
        let wanted: Vec<bool> = tokens.iter().map(|t| t.wanted).collect();
        let tiers: Vec<Option<&str>> = tokens.iter().map(|t| t.tier.as_deref()).collect();
        sqlx::query!(
            r#"INSERT INTO projection.tokens (stripe_customer_id, wanted, tier)
               SELECT * FROM UNNEST($1::text[], $2::bool[], $3::text[])
               ON CONFLICT (stripe_customer_id) DO UPDATE SET wanted = EXCLUDED.wanted, tier = EXCLUDED.tier"#,
            &ids as &[&str],
            &wanted,
            &tiers as &[Option<&str>],
        )
        .execute(&mut *conn)
        .await?;
    }

    let grants: Vec<&CreditGrant> = changes.credit_grants.iter().filter_map(|k| state.credit_grants.get(k)).collect();
    if !grants.is_empty() {
        let keys: Vec<&str> = grants.iter().map(|g| g.key.as_str()).collect();
        let customers: Vec<&str> = grants.iter().map(|g| g.stripe_customer_id.as_str()).collect();
        let credits: Vec<i64> = grants.iter().map(|g| i64::try_from(g.credits).unwrap_or(i64::MAX)).collect();
        let caps: Vec<Option<i64>> =
            grants.iter().map(|g| g.rollover_cap.map(|c| i64::try_from(c).unwrap_or(i64::MAX))).collect();
        let at: Vec<Option<DateTime<Utc>>> = grants.iter().map(|g| ts(Some(g.at))).collect();
        sqlx::query!(
            r#"INSERT INTO projection.credit_grants (key, stripe_customer_id, credits, rollover_cap, granted_for)
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[])
               ON CONFLICT (key) DO NOTHING"#,
            &keys as &[&str],
            &customers as &[&str],
            &credits,
            &caps as &[Option<i64>],
            &at as &[Option<DateTime<Utc>>],
        )
        .execute(&mut *conn)
        .await?;
    }

    let credits: Vec<(&str, i64)> =
        changes.credits.iter().filter_map(|k| state.credits.get(k).map(|b| (k.as_str(), *b))).collect();
    if !credits.is_empty() {
        let (ids, balances): (Vec<&str>, Vec<i64>) = credits.into_iter().unzip();
        sqlx::query!(
            r#"INSERT INTO projection.credits (stripe_customer_id, balance)
               SELECT * FROM UNNEST($1::text[], $2::bigint[])
               ON CONFLICT (stripe_customer_id) DO UPDATE SET balance = EXCLUDED.balance"#,
            &ids as &[&str],
            &balances,
        )
        .execute(&mut *conn)
        .await?;
    }

    let (present, gone): (Vec<&String>, Vec<&String>) =
        changes.anomalies.iter().partition(|k| state.anomalies.contains_key(*k));
    if !gone.is_empty() {
        let gone: Vec<&str> = gone.iter().map(|k| k.as_str()).collect();
        sqlx::query!("DELETE FROM projection.anomalies WHERE key = ANY($1)", &gone as &[&str])
            .execute(&mut *conn)
            .await?;
    }
    let anomalies: Vec<&Anomaly> = present.iter().filter_map(|k| state.anomalies.get(*k)).collect();
    if !anomalies.is_empty() {
        let keys: Vec<&str> = anomalies.iter().map(|a| a.key.as_str()).collect();
        let kinds: Vec<&str> = anomalies.iter().map(|a| a.kind.as_str()).collect();
        let details: Vec<&str> = anomalies.iter().map(|a| a.detail.as_str()).collect();
        let positions: Vec<i64> = anomalies.iter().map(|a| a.position).collect();
        sqlx::query!(
            r#"INSERT INTO projection.anomalies (key, kind, detail, position)
               SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[])
               ON CONFLICT (key) DO UPDATE SET kind = EXCLUDED.kind, detail = EXCLUDED.detail, position = EXCLUDED.position"#,
            &keys as &[&str],
            &kinds as &[&str],
            &details as &[&str],
            &positions,
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
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
}

/// The checkpoint `name`, locked for this transaction so a second projector cannot fold the same
/// events concurrently (it waits, then sees the advanced position).
pub async fn lock_checkpoint(conn: &mut PgConnection, name: &str) -> sqlx::Result<Option<Checkpoint>> {
    let row = sqlx::query_as!(
        Checkpoint,
        "SELECT position, catalog_hash, build_id FROM projection.checkpoint WHERE name = $1 FOR UPDATE",
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
