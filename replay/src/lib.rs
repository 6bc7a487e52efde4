//! `replay`: operator and auditor tooling over the event log.
//!
//! - `rebuild`: the projector's fold from position 1 into a new schema, swapped in atomically
//!   (`--dry-run` shows the differences).
//! - `verify` ([`verify`]): dense positions, body hashes, the hash chain, optionally signatures.
//! - `backfill` ([`backfill`]): events the log lacks, from Stripe's `GET /v1/events`.
//! - `timeline`, `export` ([`audit`]): one customer's story; events as JSON Lines or CSV.
//! - `effects failed|retry|settle`: effects that failed for good, an operator's re-arm of one,
//!   and a token delivery the customer confirmed (`store::journal`).
//! - `portal-config` ([`portal`]): the Customer Portal configuration generated from the catalog.
//! - `migrate` (apply migrations with the owner role), `database-url`.

pub mod audit;
pub mod backfill;
pub mod check_catalog;
pub mod erase;
pub mod portal;
mod progress;
pub mod reconcile;
pub mod stripe_read;
pub mod verify;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::io::Write as _;

use secrecy::ExposeSecret;
use shared::config::Config;
use shared::db;

/// Command line.
#[derive(Debug, Parser)]
#[command(name = "replay", about = "Operator and auditor tooling for the stripe-ledger event log")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command's output is data another program reads (`$(replay database-url)`, an
    /// export, a timeline): it logs nothing below warn unless `RUST_LOG` says otherwise.
    pub fn output_is_data(&self) -> bool {
        matches!(
            self.command,
            Command::DatabaseUrl | Command::Export { .. } | Command::Timeline { .. } | Command::Analytics { .. }
        )
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (run with a role that may run DDL).
    Migrate,
    /// Print the database URL in use (starts the embedded cluster when DATABASE_URL is unset).
    DatabaseUrl,
    /// Rebuild the projections from position 1 with the configured catalog (CATALOG_PATH).
    Rebuild {
        /// Print what would change, and change nothing: counts per table, then one line per row
        /// with only its changed columns, old -> new.
        #[arg(long)]
        dry_run: bool,
        /// With --dry-run: the difference as one JSON document on stdout, for scripts.
        #[arg(long, requires = "dry_run")]
        json: bool,
        /// Confirm the swap (the live projections are replaced).
        #[arg(long)]
        yes: bool,
        /// Keep the replaced schema as projection_old_<time> instead of dropping it.
        #[arg(long)]
        keep_old: bool,
        /// Fold the events the live projector quarantined too (their cause fixed); by default a
        /// rebuild passes over them with the same anomaly, as the live projector did.
        #[arg(long)]
        retry_quarantined: bool,
    },
    /// Check the whole log: dense positions, body hashes, the hash chain; print the head.
    Verify {
        /// Also re-check every stored Stripe-Signature against its stored body with the
        /// STRIPE_WEBHOOK_SECRET secrets (no time tolerance: it proves origin, not freshness).
        #[arg(long)]
        signatures: bool,
        /// A head recorded earlier (`<position>:<chain hash hex>`): fail unless that row is still
        /// there with that hash (detects a truncated or rewritten tail).
        #[arg(long, value_name = "POSITION:HASH")]
        expect_head: Option<String>,
    },
    /// Print the Stripe Customer Portal configuration generated from the catalog (tier prices
    /// grouped by their Stripe products); with --apply create it and print its id for
    /// STRIPE_PORTAL_CONFIGURATION.
    PortalConfig {
        /// Create it in Stripe (idempotent per catalog).
        #[arg(long)]
        apply: bool,
    },
    /// Append the events the log lacks from Stripe's GET /v1/events (STRIPE_API_KEY,
    /// STRIPE_API_BASE); resumes an unfinished run with the same filters.
    Backfill {
        /// Only events created at or after this time (RFC 3339 or unix seconds); Stripe keeps 30 days.
        #[arg(long)]
        since: Option<String>,
        /// Only these event types (comma-separated).
        #[arg(long, value_delimiter = ',')]
        types: Vec<String>,
        /// Start a new run even if one with the same filters is unfinished.
        #[arg(long)]
        restart: bool,
    },
    /// Compare Stripe's customers and subscriptions (status=all) with the projections and print
    /// the drift; with --apply append each drifted object as a snapshot event (source reconcile).
    /// Exit 1 when there is drift. Resumes an unfinished run with the same options.
    Reconcile {
        /// Append drifted objects to the log (the projector folds them like any event).
        #[arg(long)]
        apply: bool,
        /// Only objects created at or after this time (RFC 3339 or unix seconds).
        #[arg(long)]
        since: Option<String>,
        /// Which objects (comma-separated).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "customers,subscriptions")]
        objects: Vec<reconcile::Kind>,
        /// Start a new run even if one with the same options is unfinished.
        #[arg(long)]
        restart: bool,
        /// At most this many Stripe requests per second (0: no limit).
        #[arg(long, default_value_t = 20)]
        requests_per_second: u32,
    },
    /// Check every catalog price against Stripe (exists, active, recurring for tiers, one-time for
    /// packs) and warn about active Stripe prices the catalog does not name. Exit 1 on an error.
    CheckCatalog,
    /// Print the merged story of one customer (cus_...) or subscription (sub_...): events in
    /// order, the projection changes each caused (a replay with CATALOG_PATH), the effects.
    Timeline {
        /// cus_... or sub_...
        id: String,
    },
    /// Effects that failed for good: list them, or retry one under its key.
    Effects {
        /// What to do.
        #[command(subcommand)]
        action: EffectsAction,
    },
    /// Write events (in log order) as JSON Lines with exact raw bodies, or CSV.
    Export {
        /// jsonl or csv.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: audit::Format,
        /// Stripe `created` at or after (RFC 3339 or unix seconds).
        #[arg(long)]
        from: Option<String>,
        /// Stripe `created` before (RFC 3339 or unix seconds).
        #[arg(long)]
        to: Option<String>,
        /// Only this customer's events.
        #[arg(long)]
        customer: Option<String>,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<std::path::PathBuf>,
    },
    /// Erase a customer's personal data from every stored event about them (docs/auditing.md,
    /// "Erasure"): prints what it will redact; with --yes records the erasure, redacts, revokes
    /// their tokens and rebuilds the projections. Run it as the database owner.
    Erase {
        /// cus_...
        customer: String,
        /// Why (kept in ledger.erasures, e.g. the request's reference).
        #[arg(long)]
        reason: String,
        /// Do it.
        #[arg(long)]
        yes: bool,
        /// The projector's MAIL_DIR (local development's outbox): its mail files to the customer's
        /// address are deleted too.
        #[arg(long)]
        mail_dir: Option<std::path::PathBuf>,
    },
    /// Revenue as the projections hold it (docs/analytics.md).
    Analytics {
        /// What to print.
        #[command(subcommand)]
        action: AnalyticsAction,
    },
}

/// `replay analytics ...`.
#[derive(Debug, Subcommand)]
pub enum AnalyticsAction {
    /// MRR and its movements per day and currency, as `GET /v1/analytics/mrr` answers them.
    Mrr {
        /// First day (YYYY-MM-DD, UTC).
        #[arg(long)]
        from: chrono::NaiveDate,
        /// Last day (YYYY-MM-DD, UTC), included.
        #[arg(long)]
        to: chrono::NaiveDate,
        /// CSV (a header, then one line per currency and day) instead of aligned text.
        #[arg(long)]
        csv: bool,
    },
}

/// `replay effects ...`.
#[derive(Debug, Subcommand)]
pub enum EffectsAction {
    /// List effects whose last attempt failed for good.
    Failed,
    /// Make a failed effect pending again: the dispatcher repeats it with the same idempotency key.
    Retry {
        /// Its key, as `replay effects failed` prints it.
        key: String,
    },
    /// A token whose delivery a crash interrupted did reach the customer: mark it delivered (its
    /// mail journaled as settled by an operator), so it is no longer flagged.
    Settle {
        /// The token mail's key (`email:token:...`), as `replay effects failed` prints it.
        key: String,
    },
}

/// How the operators' commands read Stripe: the configured base and key, 8 attempts per request,
/// at most 20 requests per second (under test mode's 25/s read limit).
fn read_settings(config: &Config, api_key: secrecy::SecretString) -> stripe_read::ReadSettings {
    stripe_read::ReadSettings {
        api_base: config.stripe_api_base.clone(),
        api_key,
        max_attempts: 8,
        backoff: Duration::from_millis(500),
        requests_per_second: 20,
    }
}

fn stripe_key(config: &Config, command: &str) -> anyhow::Result<secrecy::SecretString> {
    config.stripe_api_key.clone().ok_or_else(|| {
        anyhow::anyhow!("STRIPE_API_KEY is required for {command} (a restricted key with read access is enough)")
    })
}

/// Parses RFC 3339 or unix seconds.
pub fn parse_time(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(secs) = text.parse::<i64>() {
        return chrono::DateTime::from_timestamp(secs, 0).ok_or_else(|| anyhow::anyhow!("`{text}` is out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.to_utc())
        .with_context(|| format!("`{text}` is neither RFC 3339 nor unix seconds"))
}

/// Runs one command; the exit code is non-zero when `verify` finds a break.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<ExitCode> {
    let url = db::resolve_url(&config).await?;
    // verify, rebuild and export stream the whole log: long statements are their normal.
    let settings = db::PoolSettings {
        max_connections: config.database_max_connections,
        slow_statement: Duration::from_secs(3600),
        ..Default::default()
    };
    let pool = || db::connect_lazy(&url, settings);
    // Every command that reads the database first checks (or applies) the migrations.
    let prepared = || async {
        let pool = pool()?;
        db::prepare(&pool, config.migrate_on_start).await?;
        anyhow::Ok(pool)
    };
    match cli.command {
        Command::Migrate => {
            db::migrate(&pool()?).await?;
            println!("migrations applied");
        }
        Command::DatabaseUrl => println!("{}", url.expose_secret()),
        Command::Rebuild { dry_run, json, yes, keep_old, retry_quarantined } => {
            let mode = match (dry_run, json) {
                (true, true) => Rebuild::DryRunJson,
                (true, false) => Rebuild::DryRun,
                (false, _) => Rebuild::Swap { yes, keep_old },
            };
            rebuild(&prepared().await?, &config, mode, retry_quarantined).await?
        }
        Command::Verify { signatures, expect_head } => {
            let secrets = if signatures { Some(config.require_webhook_secrets()?.to_vec()) } else { None };
            return verify_cmd(&prepared().await?, secrets, expect_head.as_deref()).await;
        }
        Command::PortalConfig { apply } => portal_config_cmd(&config, apply).await?,
        Command::Backfill { since, types, restart } => {
            let api_key = config.stripe_api_key.clone().ok_or_else(|| {
                anyhow::anyhow!("STRIPE_API_KEY is required for backfill (a restricted key with read access to events)")
            })?;
            let settings = backfill::Settings {
                read: read_settings(&config, api_key),
                since: since.as_deref().map(parse_time).transpose()?,
                types,
                page_size: 100,
                restart,
            };
            backfill_cmd(&prepared().await?, &settings).await?;
        }
        Command::Reconcile { apply, since, mut objects, restart, requests_per_second } => {
            objects.sort();
            objects.dedup();
            let mut read = read_settings(&config, stripe_key(&config, "reconcile")?);
            read.requests_per_second = requests_per_second;
            let since = since.as_deref().map(parse_time).transpose()?;
            let settings = reconcile::Settings { read, objects, since, apply, page_size: 100, restart };
            let catalog = config.catalog()?;
            return reconcile_cmd(&prepared().await?, &settings, &catalog).await;
        }
        Command::CheckCatalog => return check_catalog_cmd(&config).await,
        Command::Timeline { id } => {
            if !(id.starts_with("cus_") || id.starts_with("sub_")) {
                anyhow::bail!("timeline takes a customer (cus_...) or subscription (sub_...) id, not `{id}`");
            }
            let lines = audit::timeline(&prepared().await?, &id, &config.catalog()?, &config.fold_config()).await?;
            let mut out = std::io::stdout().lock();
            for line in lines {
                writeln!(out, "{line}")?;
            }
        }
        Command::Effects { action } => effects_cmd(&prepared().await?, action).await?,
        Command::Erase { customer, reason, yes, mail_dir } => {
            let erasure = Erasure { customer: &customer, reason: &reason, yes, mail_dir: mail_dir.as_deref() };
            erase_cmd(&prepared().await?, &config, &erasure).await?
        }
        Command::Export { format, from, to, customer, output } => {
            let filter = audit::Filter {
                from: from.as_deref().map(parse_time).transpose()?,
                to: to.as_deref().map(parse_time).transpose()?,
                customer,
            };
            export_cmd(&prepared().await?, &filter, format, output).await?;
        }
        Command::Analytics { action: AnalyticsAction::Mrr { from, to, csv } } => {
            anyhow::ensure!(from <= to, "--from must be on or before --to");
            let days = store::revenue::daily(&prepared().await?, from, to).await?;
            mrr_report(&days, csv, &mut std::io::stdout().lock())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `replay analytics mrr`: per currency and day, MRR at the day's end, paying customers and the
/// day's movements (minor units), as CSV or aligned text.
fn mrr_report(
    days: &std::collections::BTreeMap<String, Vec<store::revenue::Day>>,
    csv: bool,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<()> {
    const HEADER: [&str; 9] =
        ["date", "currency", "mrr", "customers", "new", "expansion", "reactivation", "contraction", "churn"];
    let rows = days.iter().flat_map(|(currency, days)| days.iter().map(move |d| (currency, d)));
    if csv {
        let mut w = csv::Writer::from_writer(out);
        w.write_record(HEADER)?;
        for (currency, d) in rows {
            let numbers = [d.mrr, d.customers, d.new, d.expansion, d.reactivation, d.contraction, d.churn];
            let mut record = vec![d.date.to_string(), currency.clone()];
            record.extend(numbers.iter().map(i64::to_string));
            w.write_record(&record)?;
        }
        w.flush()?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<10} {:<4} {:>12} {:>9} {:>10} {:>10} {:>12} {:>11} {:>10}",
        HEADER[0], "cur", HEADER[2], HEADER[3], HEADER[4], HEADER[5], HEADER[6], HEADER[7], HEADER[8]
    )?;
    for (currency, d) in rows {
        writeln!(
            out,
            "{:<10} {:<4} {:>12} {:>9} {:>10} {:>10} {:>12} {:>11} {:>10}",
            d.date, currency, d.mrr, d.customers, d.new, d.expansion, d.reactivation, d.contraction, d.churn
        )?;
    }
    Ok(())
}

/// `replay portal-config [--apply]`.
async fn portal_config_cmd(config: &Config, apply: bool) -> anyhow::Result<()> {
    let key = config.stripe_api_key.clone().context("STRIPE_API_KEY is required for portal-config")?;
    let stripe = shared::stripe_api::StripeApi::new(&config.stripe_api_base, key, shared::stripe_api::TIMEOUT)?;
    let catalog = config.catalog()?;
    let form = portal::form(&stripe, &catalog).await?;
    for (key, value) in form.pairs() {
        println!("{key}={value}");
    }
    if apply {
        let id = portal::apply(&stripe, &catalog, &form).await?;
        println!("created portal configuration {id}: set STRIPE_PORTAL_CONFIGURATION={id}");
    }
    Ok(())
}

/// `replay check-catalog`: exit 1 when an error is found.
async fn check_catalog_cmd(config: &Config) -> anyhow::Result<ExitCode> {
    let catalog = config.catalog()?;
    let mut reader = stripe_read::Reader::new(read_settings(config, stripe_key(config, "check-catalog")?))?;
    let findings = check_catalog::run(&mut reader, &catalog, &mut |line| eprintln!("{line}")).await?;
    for finding in &findings {
        println!("{}", finding.line);
    }
    let errors = findings.iter().filter(|f| f.error).count();
    println!("catalog {}: {errors} errors, {} warnings", catalog.hash(), findings.len() - errors);
    Ok(if errors == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `replay effects failed|retry|settle`.
async fn effects_cmd(pool: &sqlx::PgPool, action: EffectsAction) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match action {
        EffectsAction::Failed => {
            let failed = store::journal::failed(pool).await?;
            for f in &failed {
                let error = f.error.as_deref().unwrap_or("-");
                writeln!(out, "{}  {}  attempt {}  {}  {error}", f.at.to_rfc3339(), f.key, f.attempt, f.kind)?;
            }
            writeln!(out, "{} failed effects", failed.len())?;
        }
        EffectsAction::Retry { key } => {
            let what = store::journal::rearm(pool, &key).await?;
            writeln!(out, "{key} re-armed ({what:?}): the active dispatcher retries it with the same key")?;
        }
        EffectsAction::Settle { key } => {
            store::journal::settle(pool, &key, "an operator").await?;
            writeln!(out, "{key} settled: its token is marked delivered and no longer flagged")?;
        }
    }
    Ok(())
}

/// `replay export`: to `output`, or stdout.
async fn export_cmd(
    pool: &sqlx::PgPool,
    filter: &audit::Filter,
    format: audit::Format,
    output: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let n = match output {
        Some(path) => {
            let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            audit::export(pool, filter, format, &mut out).await?
        }
        None => audit::export(pool, filter, format, &mut std::io::stdout().lock()).await?,
    };
    eprintln!("exported {n} events");
    Ok(())
}

/// What `replay erase` was asked.
#[derive(Clone, Copy)]
struct Erasure<'a> {
    customer: &'a str,
    reason: &'a str,
    yes: bool,
    mail_dir: Option<&'a std::path::Path>,
}

async fn erase_cmd(pool: &sqlx::PgPool, config: &Config, asked: &Erasure<'_>) -> anyhow::Result<()> {
    let Erasure { customer, reason, yes, mail_dir } = *asked;
    if !customer.starts_with("cus_") {
        anyhow::bail!("erase takes a customer id (cus_...), not `{customer}`");
    }
    if reason.trim().is_empty() {
        anyhow::bail!("--reason is required: it is kept with the erasure");
    }
    let plan = erase::plan(&mut *pool.acquire().await?, customer).await?;
    let mut out = std::io::stdout().lock();
    if plan.events == 0 {
        anyhow::bail!("no stored event is about {customer}");
    }
    let positions: Vec<String> = plan.redactions.iter().map(|(p, _)| p.to_string()).collect();
    writeln!(
        out,
        "{customer}: {} events, {} with personal data to redact: positions {}",
        plan.events,
        plan.redactions.len(),
        positions.join(", ")
    )?;
    if !yes {
        writeln!(
            out,
            "nothing was changed: run with --yes to record the erasure, redact, revoke the tokens and rebuild"
        )?;
        return Ok(());
    }
    let actor = std::env::var("USER").unwrap_or_else(|_| "replay".to_owned());
    let requested_by: String =
        sqlx::query_scalar("SELECT current_user || ' (' || $1 || ')'").bind(&actor).fetch_one(pool).await?;
    let address = erase::address(pool, customer).await?;
    let (id, done) = erase::apply(pool, customer, reason, &requested_by).await?;
    writeln!(
        out,
        "erasure {id} recorded by {requested_by}: {} bodies redacted, tokens revoked",
        done.redactions.len()
    )?;
    if let (Some(dir), Some(address)) = (mail_dir, address) {
        let deleted = erase::delete_mail_files(dir, &address)
            .with_context(|| format!("deleting the mail files of {customer} in {}", dir.display()))?;
        writeln!(out, "{deleted} mail files to the customer's address deleted from {}", dir.display())?;
    }
    drop(out);
    rebuild(pool, config, Rebuild::Swap { yes: true, keep_old: false }, false).await
}

async fn verify_cmd(
    pool: &sqlx::PgPool,
    secrets: Option<Vec<secrecy::SecretString>>,
    expect_head: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let total: i64 =
        sqlx::query_scalar!(r#"SELECT coalesce(max(position), 0) AS "n!" FROM ledger.events"#).fetch_one(pool).await?;
    let bar = progress::bar("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}");
    bar.set_length(u64::try_from(total).unwrap_or(0));
    let started = Instant::now();
    let with_signatures = secrets.is_some();
    let report = verify::walk(pool, secrets, &mut |at| bar.set_position(u64::try_from(at).unwrap_or(0))).await?;
    bar.finish_and_clear();
    let (head, hash) = &report.head;
    let hash = hash.as_deref().map_or_else(|| "-".to_owned(), hex::encode);
    let mut out = std::io::stdout().lock();
    if let Some(broken) = &report.broken {
        writeln!(out, "BROKEN at position {}: {}", broken.position, broken.what)?;
        writeln!(out, "checked {} events before it; last good head: {head}:{hash}", report.checked)?;
        return Ok(ExitCode::FAILURE);
    }
    let signatures = if with_signatures { ", every webhook signature verified" } else { "" };
    writeln!(
        out,
        "verified {} events in {:.2}s: positions dense, body hashes and hash chain intact{signatures}",
        report.checked,
        started.elapsed().as_secs_f64()
    )?;
    if !report.redacted.is_empty() {
        let skipped =
            if with_signatures { " (their signatures, made over the original bytes, not checked)" } else { "" };
        writeln!(
            out,
            "{} bodies redacted by {} erasures, each as its erasure recorded{skipped}: positions {}",
            report.redacted.len(),
            report.erasures,
            report.redacted.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
        )?;
    }
    writeln!(out, "head {head}:{hash}")?;
    if let Some(expected) = expect_head {
        let (position, want) = expected
            .split_once(':')
            .and_then(|(p, h)| Some((p.parse::<i64>().ok()?, h.to_ascii_lowercase())))
            .ok_or_else(|| anyhow::anyhow!("--expect-head takes <position>:<hex chain hash>"))?;
        let stored: Option<Vec<u8>> =
            sqlx::query_scalar!("SELECT chain_hash FROM ledger.events WHERE position = $1", position)
                .fetch_optional(pool)
                .await?;
        match stored {
            None => {
                writeln!(out, "BROKEN: the recorded head {position} is gone: the log was truncated")?;
                return Ok(ExitCode::FAILURE);
            }
            Some(h) if hex::encode(&h) != want => {
                writeln!(
                    out,
                    "BROKEN: position {position} has another chain hash than recorded: the log was rewritten"
                )?;
                return Ok(ExitCode::FAILURE);
            }
            Some(_) => writeln!(out, "the recorded head {position} is intact")?,
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn reconcile_cmd(
    pool: &sqlx::PgPool,
    settings: &reconcile::Settings,
    catalog: &domain::catalog::Catalog,
) -> anyhow::Result<ExitCode> {
    let bar = progress::spinner();
    let report = reconcile::Report {
        line: &mut |line| progress::report(&bar, &line),
        progress: &mut |s| {
            bar.set_message(format!("compared {}  drifted {}  appended {}", s.compared, s.drifted, s.appended))
        },
    };
    let summary = reconcile::run(pool, settings, catalog, report).await;
    bar.finish_and_clear();
    let summary = summary?;
    let kinds: Vec<String> = summary.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!(
        "reconcile run {}{}: compared {}, newer here {}, drifted {} ({}), appended {}",
        summary.run,
        if summary.resumed { " (resumed)" } else { "" },
        summary.compared,
        summary.newer_here,
        summary.drifted,
        if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") },
        summary.appended
    );
    Ok(if summary.drifted == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn backfill_cmd(pool: &sqlx::PgPool, settings: &backfill::Settings) -> anyhow::Result<()> {
    let bar = progress::spinner();
    let summary = backfill::run(
        pool,
        settings,
        &mut |s| bar.set_message(format!("fetched {}  new {}  already present {}", s.fetched, s.appended, s.present)),
        &mut |line| progress::report(&bar, &line),
    )
    .await;
    bar.finish_and_clear();
    let summary = summary?;
    println!(
        "backfill run {}{}: fetched {}, new {}, already present {}",
        summary.run,
        if summary.resumed { " (resumed)" } else { "" },
        summary.fetched,
        summary.appended,
        summary.present
    );
    Ok(())
}

/// What `replay rebuild` does once the log is folded.
#[derive(Debug, Clone, Copy)]
enum Rebuild {
    /// Print the difference, change nothing.
    DryRun,
    /// The difference as JSON on stdout, change nothing.
    DryRunJson,
    /// Swap the fold in (only with `yes`).
    Swap { yes: bool, keep_old: bool },
}

async fn rebuild(pool: &sqlx::PgPool, config: &Config, mode: Rebuild, retry_quarantined: bool) -> anyhow::Result<()> {
    use store::rebuild;
    let catalog = config.catalog()?;
    let keep_old = match mode {
        Rebuild::Swap { yes: false, .. } => anyhow::bail!(
            "`replay rebuild` replaces the live projections with a fold of the whole log using catalog {}; \
             run it with --dry-run to see the differences, or with --yes to do it",
            catalog.hash()
        ),
        Rebuild::Swap { keep_old, .. } => keep_old,
        Rebuild::DryRun | Rebuild::DryRunJson => false,
    };
    let fold = config.fold_config();
    let bar = progress::bar("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}");
    let started = Instant::now();
    let mut progress = |at: i64, head: i64| {
        bar.set_length(u64::try_from(head).unwrap_or(0));
        bar.set_position(u64::try_from(at).unwrap_or(0));
    };
    let folded = match retry_quarantined {
        false => rebuild::fold_log(pool, &catalog, &fold, &mut progress).await?,
        true => rebuild::fold_log_retrying_quarantined(pool, &catalog, &fold, &mut progress).await?,
    };
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    let folded_line = format!(
        "folded {} events in {seconds:.2}s ({:.0} events/s) with catalog {}",
        folded.position,
        folded.position as f64 / seconds.max(1e-9),
        catalog.hash()
    );
    if matches!(mode, Rebuild::DryRun | Rebuild::DryRunJson) {
        let mut conn = pool.acquire().await?;
        let live = store::load(&mut conn).await?;
        drop(conn);
        let diff = store::diff::diff(&live, &folded.state);
        let mut out = std::io::stdout().lock();
        if matches!(mode, Rebuild::DryRunJson) {
            eprintln!("{folded_line}");
            serde_json::to_writer_pretty(&mut out, &diff)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{folded_line}")?;
            write!(out, "{}", diff.render())?;
            writeln!(out, "dry run: nothing was changed")?;
        }
        return Ok(());
    }
    println!("{folded_line}");
    let swapped = rebuild::swap_in(pool, folded, &catalog, &fold, keep_old).await?;
    println!(
        "swapped in {} at position {} in {:.2}s; {} new intents journaled{}",
        swapped.build_id,
        swapped.position,
        started.elapsed().as_secs_f64(),
        swapped.new_intents,
        swapped.old_schema.map(|s| format!("; old tables kept in {s}")).unwrap_or_default()
    );
    Ok(())
}
