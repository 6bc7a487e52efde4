//! The invariants checked at the end of a run, each printed with its figure.

use std::collections::{HashMap, HashSet};

use ledger_tests::provisioner::FakeProvisioner;
use ledger_tests::smtp::SmtpServer;
use sqlx::PgPool;

/// One checked invariant.
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Held.
    pub ok: bool,
}

fn check(what: impl Into<String>, ok: bool) -> Check {
    Check { what: what.into(), ok }
}

/// The log: acknowledged events all stored, no id twice, positions dense from 1.
pub async fn log(pool: &PgPool, acknowledged: &HashSet<String>) -> Vec<Check> {
    let stored: Vec<String> =
        sqlx::query_scalar("SELECT stripe_event_id FROM ledger.events").fetch_all(pool).await.expect("ids");
    let distinct: HashSet<&str> = stored.iter().map(String::as_str).collect();
    let missing = acknowledged.iter().filter(|id| !distinct.contains(id.as_str())).count();
    let (min, max, count): (Option<i64>, Option<i64>, i64) =
        sqlx::query_as("SELECT min(position), max(position), count(*) FROM ledger.events")
            .fetch_one(pool)
            .await
            .expect("positions");
    vec![
        check(format!("acknowledged events missing from the log: {missing} of {}", acknowledged.len()), missing == 0),
        check(
            format!("duplicated event ids in the log: {}", stored.len() - distinct.len()),
            stored.len() == distinct.len(),
        ),
        check(
            format!("positions dense: {count} rows, positions {}..={}", min.unwrap_or(0), max.unwrap_or(0)),
            min == Some(1) && max == Some(count),
        ),
    ]
}

/// The outside world: each provisioner key's work done once, one app per subscription at most,
/// and the apps that exist are exactly those the journal observed running.
pub async fn provisioner(pool: &PgPool, fake: &FakeProvisioner) -> Vec<Check> {
    let calls = fake.calls();
    let mut per_key: HashMap<&str, usize> = HashMap::new();
    for call in &calls {
        *per_key.entry(call.idempotency_key.as_deref().unwrap_or("")).or_default() += 1;
    }
    let resent = per_key.values().filter(|n| **n > 1).count();
    let by_subscription = fake.live_apps_by_subscription();
    let doubled = by_subscription.values().filter(|apps| apps.len() > 1).count();
    let live: HashSet<String> = fake.live_apps().into_iter().collect();
    let running: HashSet<String> = sqlx::query_scalar(
        "SELECT app_name FROM ledger.instances_observed WHERE status = 'running' AND app_name IS NOT NULL",
    )
    .fetch_all(pool)
    .await
    .expect("observed")
    .into_iter()
    .collect();
    let unkeyed = per_key.get("").copied().unwrap_or(0);
    vec![
        check(format!("provisioner calls without an Idempotency-Key: {unkeyed}"), unkeyed == 0),
        check(
            format!(
                "provisioner: {} calls under {} keys; {resent} keys sent more than once (answered from the \
                 provisioner's idempotency record, work done once)",
                calls.len(),
                per_key.len()
            ),
            true,
        ),
        check(format!("subscriptions with more than one live app: {doubled}"), doubled == 0),
        check(
            format!(
                "live apps {} = apps the journal observed running {} (differences: {})",
                live.len(),
                running.len(),
                live.symmetric_difference(&running).count()
            ),
            live == running,
        ),
    ]
}

/// Mails: every mail journaled as sent was received and nothing was received that the journal
/// does not know. Counted, not failed: repeats (the documented at-least-once window: a sender
/// killed between the SMTP server's 250 and the journal write), and mails received whose key the
/// next leader journaled as skipped (sent, then found no longer needed: the journal says
/// "skipped" for a mail that went out).
pub async fn mails(pool: &PgPool, smtp: &SmtpServer) -> Vec<Check> {
    let received = smtp.received();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for mail in &received {
        *per_id.entry(mail.message_id().unwrap_or("").to_owned()).or_default() += 1;
    }
    let repeats: usize = per_id.values().map(|n| n - 1).sum();
    let journal = mail_outcomes(pool).await;
    let sent = journal.iter().filter(|(_, outcome)| *outcome == "succeeded").count();
    let lost = journal.iter().filter(|(id, outcome)| *outcome == "succeeded" && !per_id.contains_key(*id)).count();
    let unknown = per_id.keys().filter(|id| !journal.contains_key(*id)).count();
    let skipped = per_id.keys().filter(|id| journal.get(*id).is_some_and(|o| o == "skipped")).count();
    vec![check(
        format!(
            "mails: {} received under {} Message-IDs; journaled as sent {sent}, of them not received {lost}; \
             received without a journal row {unknown}; repeated sends {repeats} (at-least-once window); \
             received but journaled as skipped {skipped}",
            received.len(),
            per_id.len(),
        ),
        lost == 0 && unknown == 0,
    )]
}

/// Message-ID -> the latest journal outcome of its key.
async fn mail_outcomes(pool: &PgPool) -> HashMap<String, String> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (key) key, outcome FROM ledger.effects WHERE kind IN ('email', 'alert') ORDER BY key, id DESC",
    )
    .fetch_all(pool)
    .await
    .expect("mail journal");
    rows.into_iter().map(|(key, outcome)| (domain::mail::message_id(&key), outcome)).collect()
}

/// Effects left failed for good. Every fault here is transient, so the only failures allowed are
/// the documented ones (docs/effects.md): a token mail whose sender was killed between the SMTP
/// answer and the journal write is not re-sent (the plaintext is gone; the customer may hold the
/// token), it fails with an admin alert.
pub async fn failures(pool: &PgPool) -> Vec<Check> {
    let (documented, other): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE key LIKE 'email:token:%' AND error LIKE 'delivery unknown%'),
                count(*) FILTER (WHERE NOT (key LIKE 'email:token:%' AND error LIKE 'delivery unknown%'))
         FROM (SELECT DISTINCT ON (key) key, outcome, error FROM ledger.effects ORDER BY key, id DESC) latest
         WHERE outcome = 'failed'",
    )
    .fetch_one(pool)
    .await
    .expect("failures");
    vec![check(
        format!(
            "effects failed for good: {other} unexpected; {documented} token mails of unknown delivery \
                 (their sender was killed mid-send: kept, not re-sent, admin alerted)"
        ),
        other == 0,
    )]
}

/// `replay verify` and `replay rebuild --dry-run`, run as an operator would, with the services' env.
pub fn replay(env: &[(String, String)]) -> Vec<Check> {
    let verify = run_replay(env, &["verify"]);
    let rebuild = run_replay(env, &["rebuild", "--dry-run"]);
    let differences: Vec<&str> = rebuild.1.lines().filter(|line| is_table_line(line) && !is_unchanged(line)).collect();
    print!("replay verify:\n{}replay rebuild --dry-run:\n{}", indent(&verify.1), indent(&rebuild.1));
    vec![
        check("replay verify passes", verify.0),
        check(
            format!("replay rebuild --dry-run: {} tables differ from the live projections", differences.len()),
            rebuild.0 && differences.is_empty() && rebuild.1.contains("dry run"),
        ),
    ]
}

fn run_replay(env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ledger_tests::bin::run("replay", &env, args)
}

const TABLES: [&str; 6] = ["accounts", "subscriptions", "instance_targets", "tokens", "credit_grants", "anomalies"];

fn is_table_line(line: &str) -> bool {
    line.split_whitespace().next().is_some_and(|first| TABLES.contains(&first))
}

fn is_unchanged(line: &str) -> bool {
    line.split_whitespace().skip(1).all(|field| field.len() > 1 && field[1..] == *"0")
}

fn indent(text: &str) -> String {
    text.lines().map(|line| format!("    {line}\n")).collect()
}
