//! `replay`: operator tooling over the event log.
//!
//! Today: `rebuild` (the projector's fold from position 1 into a new schema, swapped in
//! atomically; `--dry-run` shows the differences), `migrate` (apply migrations with the owner
//! role) and `database-url` (print the URL the binaries use, starting the embedded cluster if
//! needed). Verify, backfill, timeline and export come with their issues.

use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use projector::fold::FoldConfig;
use secrecy::ExposeSecret;
use shared::catalog::Catalog;
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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (run with a role that may run DDL).
    Migrate,
    /// Print the database URL in use (starts the embedded cluster when DATABASE_URL is unset).
    DatabaseUrl,
    /// Rebuild the projections from position 1 with the configured catalog (CATALOG_PATH).
    Rebuild {
        /// Print per table what would be added, changed and removed, with examples; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Confirm the swap (the live projections are replaced).
        #[arg(long)]
        yes: bool,
        /// Keep the replaced schema as projection_old_<time> instead of dropping it.
        #[arg(long)]
        keep_old: bool,
    },
}

/// Runs one command.
pub async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    let url = db::resolve_url(&config).await?;
    match cli.command {
        Command::Migrate => {
            let pool = db::connect_lazy(&url, db::PoolSettings { max_connections: 2, ..Default::default() })?;
            db::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::DatabaseUrl => println!("{}", url.expose_secret()),
        Command::Rebuild { dry_run, yes, keep_old } => {
            let pool = db::connect_lazy(&url, db::PoolSettings { max_connections: 2, ..Default::default() })?;
            db::migrate(&pool).await?;
            rebuild(&pool, &config, dry_run, yes, keep_old).await?;
        }
    }
    Ok(())
}

async fn rebuild(pool: &sqlx::PgPool, config: &Config, dry_run: bool, yes: bool, keep_old: bool) -> anyhow::Result<()> {
    use projector::rebuild;
    let catalog = match &config.catalog_path {
        Some(path) => Catalog::load(path)?,
        None => {
            eprintln!("CATALOG_PATH is unset: rebuilding with the example catalog");
            Catalog::parse(projector::EXAMPLE_CATALOG)?
        }
    };
    if !dry_run && !yes {
        anyhow::bail!(
            "`replay rebuild` replaces the live projections with a fold of the whole log using catalog {}; \
             run it with --dry-run to see the differences, or with --yes to do it",
            catalog.hash()
        );
    }
    let fold = FoldConfig { grace_period_secs: i64::try_from(config.grace_period.as_secs()).unwrap_or(i64::MAX) };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} events  {per_sec}  eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let folded = rebuild::fold_log(pool, &catalog, &fold, &mut |at, head| {
        bar.set_length(u64::try_from(head).unwrap_or(0));
        bar.set_position(u64::try_from(at).unwrap_or(0));
    })
    .await?;
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "folded {} events in {seconds:.2}s ({:.0} events/s) with catalog {}",
        folded.position,
        folded.position as f64 / seconds.max(1e-9),
        catalog.hash()
    );
    let mut conn = pool.acquire().await?;
    let live = projector::store::load(&mut conn).await?;
    drop(conn);
    let diffs = rebuild::diff(&live, &folded.state);
    print!("{}", rebuild::render_diff(&diffs));
    if dry_run {
        println!("dry run: nothing was changed");
        return Ok(());
    }
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
