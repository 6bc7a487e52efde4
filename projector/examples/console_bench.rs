//! Console page timings (docs/benchmarks.md, "Console"): asks a running projector for each console
//! page `--rounds` times, one request at a time, and prints p50, p99 and max per page. Sample ids
//! (a customer with many events, its email and subscription, an event id, a position in the middle
//! of the log) are read from `DATABASE_URL`. Used by `scripts/bench-console`.

use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    /// The projector's base URL.
    #[arg(long, default_value = "http://127.0.0.1:3106")]
    url: String,
    /// `CONSOLE_PASSWORD`.
    #[arg(long)]
    password: String,
    /// Requests per page.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let pool = sqlx::PgPool::connect(&std::env::var("DATABASE_URL")?).await?;
    let (head,): (i64,) = sqlx::query_as("SELECT max(position) FROM ledger.events").fetch_one(&pool).await?;
    let mid = head / 2;
    let (event_id, customer): (String, String) =
        sqlx::query_as("SELECT stripe_event_id, customer_id FROM ledger.events WHERE position >= $1 AND customer_id IS NOT NULL ORDER BY position LIMIT 1")
            .bind(mid)
            .fetch_one(&pool)
            .await?;
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM projection.accounts WHERE stripe_customer_id = $1")
            .bind(&customer)
            .fetch_one(&pool)
            .await?;
    let sub: Option<String> = sqlx::query_scalar(
        "SELECT stripe_subscription_id FROM projection.subscriptions WHERE stripe_customer_id = $1 LIMIT 1",
    )
    .bind(&customer)
    .fetch_optional(&pool)
    .await?;
    let (anomalies,): (i64,) = sqlx::query_as("SELECT count(*) FROM projection.anomalies").fetch_one(&pool).await?;
    // A customers page from the middle of the list (newest first), and a part of an email.
    let (deep_created, deep_id): (f64, String) = sqlx::query_as(
        "SELECT extract(epoch FROM coalesce(created, '-infinity'))::float8, stripe_customer_id FROM projection.accounts
         ORDER BY coalesce(created, '-infinity') DESC, stripe_customer_id DESC OFFSET (SELECT count(*) / 2 FROM projection.accounts) LIMIT 1",
    )
    .fetch_one(&pool)
    .await?;
    let email_part: String = email.as_deref().and_then(|e| e.split('@').next()).unwrap_or("x").to_owned();
    println!("log head {head}; {anomalies} open anomalies; sample customer {customer}");
    let pages = [
        ("overview", "/console".to_owned()),
        ("anomalies, newest", "/console/anomalies".to_owned()),
        ("anomalies, mid-log page", format!("/console/anomalies?before={mid}&key=%7E")),
        ("failed effects", "/console/effects".to_owned()),
        ("customers, newest", "/console/customers".to_owned()),
        ("customers, mid-list page", format!("/console/customers?before={deep_created}&id={deep_id}")),
        ("customers, email part", format!("/console/customers?q={email_part}")),
        ("subscription", format!("/console/subscription/{}", sub.clone().unwrap_or_default())),
        ("customer by cus_", format!("/console/customer?q={customer}")),
        ("customer by email", format!("/console/customer?q={}", email.unwrap_or_default().replace('@', "%40"))),
        ("customer by sub_", format!("/console/customer?q={}", sub.unwrap_or_default())),
        ("customer by evt_", format!("/console/customer?q={event_id}")),
        ("event", format!("/console/event/{mid}")),
        ("event raw bytes", format!("/console/event/{mid}/raw")),
    ];
    let client = reqwest::Client::new();
    println!("{:<26} {:>9} {:>9} {:>9}", "page", "p50 ms", "p99 ms", "max ms");
    for (name, path) in pages {
        let mut times = Vec::with_capacity(args.rounds);
        for _ in 0..args.rounds {
            let started = Instant::now();
            let response =
                client.get(format!("{}{path}", args.url)).basic_auth("operator", Some(&args.password)).send().await?;
            anyhow::ensure!(response.status() == 200, "{path}: {}", response.status());
            response.bytes().await?;
            times.push(started.elapsed());
        }
        times.sort();
        let at = |q: f64| times[((times.len() as f64 - 1.0) * q).round() as usize];
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("{name:<26} {:>9.1} {:>9.1} {:>9.1}", ms(at(0.5)), ms(at(0.99)), ms(at(1.0)));
    }
    Ok(())
}
