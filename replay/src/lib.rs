//! `replay`: operator tooling over the event log.
//!
//! Today: `migrate` (apply migrations with the owner role) and `database-url` (print the URL the
//! binaries use, starting the embedded cluster if needed). Rebuild, verify, backfill, timeline and
//! export come with their issues.

use clap::{Parser, Subcommand};
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

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply pending migrations (run with a role that may run DDL).
    Migrate,
    /// Print the database URL in use (starts the embedded cluster when DATABASE_URL is unset).
    DatabaseUrl,
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
    }
    Ok(())
}
