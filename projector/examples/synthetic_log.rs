//! Fills the log of `DATABASE_URL` with a synthetic history: the first `--per-customer` events of
//! a realistic lifecycle (signup, checkout, trial, paid cycles, plan changes, packs, failed and
//! recovered payments, cancellations; both API shapes) for each of `--customers` customers,
//! appended through the real append path in batches. Used by `scripts/bench-rebuild`.

use std::time::Instant;

use bytes::Bytes;
use clap::Parser;
use shared::log::{NewEvent, Source, append_events};

#[derive(Debug, Parser)]
struct Args {
    /// Customers.
    #[arg(long, default_value_t = 100_000)]
    customers: u64,
    /// Events per customer (the start of its lifecycle).
    #[arg(long, default_value_t = 10)]
    per_customer: usize,
    /// Number of the first customer (a second run with another range adds other customers).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// When the lifecycles start, unix seconds.
    #[arg(long, default_value_t = 1_700_000_000)]
    t0: i64,
    /// Events per append call.
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("set DATABASE_URL"))?;
    let pool = sqlx::PgPool::connect(&url).await?;
    shared::db::migrate(&pool).await?;
    let started = Instant::now();
    let mut rng = fastrand::Rng::with_seed(42);
    let mut pending = Vec::with_capacity(args.batch);
    let mut total = 0usize;
    for n in args.first..args.first + args.customers {
        for event in ledger_tests::lifecycle::lifecycle(n, &mut rng, args.t0).into_iter().take(args.per_customer) {
            pending.push(NewEvent::decode(Bytes::from(event.body), None)?);
            if pending.len() == args.batch {
                append_events(&pool, &pending, Source::Backfill, "synthetic").await?;
                total += pending.len();
                pending.clear();
            }
        }
    }
    append_events(&pool, &pending, Source::Backfill, "synthetic").await?;
    total += pending.len();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "appended {total} events for {} customers in {seconds:.1}s ({:.0} events/s)",
        args.customers,
        total as f64 / seconds
    );
    Ok(())
}
