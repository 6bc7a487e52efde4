//! Live lag: posts realistic signed webhooks at a steady rate to a running ingest and measures,
//! per event, the time from its 200 to the projector's commit of the batch containing it
//! (the checkpoint is committed with the rows, so checkpoint >= position means "visible").
//! A watcher polls the checkpoint every 2 ms, so figures include up to ~2 ms of polling.
//! Used by `scripts/bench-live-lag`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
struct Args {
    /// Webhook URL of the running ingest.
    #[arg(long, default_value = "http://127.0.0.1:3105/webhooks/stripe")]
    url: String,
    /// Its signing secret.
    #[arg(long, default_value = "whsec_bench")]
    secret: String,
    /// Events per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// Seconds to run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Send the rest of the lifecycles of random customers among the first `existing` of a log
    /// `synthetic_log` filled (the events after its `--per-customer 3`); 0: new customers.
    #[arg(long, default_value_t = 0)]
    existing: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let url = std::env::var("DATABASE_URL").map_err(|_| anyhow::anyhow!("set DATABASE_URL"))?;
    let pool = sqlx::PgPool::connect(&url).await?;
    let total = (args.rate * args.seconds) as usize;
    let mut rng = fastrand::Rng::with_seed(7);
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis());
    let mut bodies = Vec::with_capacity(total);
    let mut n = 0u64;
    while bodies.len() < total {
        if args.existing > 0 {
            // Existing customers' ids; the event ids are random, so new events of theirs.
            let customer = rng.u64(0..args.existing);
            let events = ledger_tests::lifecycle::lifecycle(customer, &mut rng, 1_700_000_000);
            bodies.extend(events.into_iter().skip(3).map(|event| event.body));
            continue;
        }
        for event in ledger_tests::lifecycle::lifecycle(n, &mut rng, 1_700_000_000) {
            // Unique event ids per run: the generator's ids are random already; customers per run.
            let text = String::from_utf8(event.body)?.replace("_life", &format!("_{run}"));
            bodies.push(text.into_bytes());
        }
        n += 1;
    }
    bodies.truncate(total);
    let ids: Vec<String> =
        bodies.iter().map(|b| domain::envelope::decode(b).map(|e| e.id)).collect::<Result<_, _>>()?;

    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let visible: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let watcher = {
        let (pool, visible, stop) = (pool.clone(), visible.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM ledger.events")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            while !stop.is_cancelled() {
                let checkpoint: i64 = sqlx::query_scalar(
                    "SELECT coalesce((SELECT position FROM projection.checkpoint WHERE name = 'main'), 0)",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                if checkpoint > seen {
                    let now = Instant::now();
                    let newly: Vec<String> = sqlx::query_scalar(
                        "SELECT stripe_event_id FROM ledger.events WHERE position > $1 AND position <= $2",
                    )
                    .bind(seen)
                    .bind(checkpoint)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                    let mut visible = visible.lock().await;
                    for id in newly {
                        visible.insert(id, now);
                    }
                    seen = checkpoint;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    let client = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for (body, id) in bodies.into_iter().zip(ids.iter().cloned()) {
        ticker.tick().await;
        let (client, url, secret, acked) = (client.clone(), args.url.clone(), args.secret.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
            let signature = domain::signature::sign_header(&secret, now, &body);
            let response = client.post(&url).header("stripe-signature", signature).body(body).send().await;
            if response.is_ok_and(|r| r.status() == 200) {
                acked.lock().await.insert(id, Instant::now());
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let sent_for = started.elapsed().as_secs_f64();
    // Wait (bounded) for the projector to show every acknowledged event.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (a, v) = (acked.lock().await.len(), visible.lock().await.len());
        if v >= a || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    watcher.await?;
    let (acked, visible) = (acked.lock().await, visible.lock().await);
    let mut lags: Vec<f64> = acked
        .iter()
        .filter_map(|(id, at)| visible.get(id).map(|v| v.saturating_duration_since(*at).as_secs_f64() * 1000.0))
        .collect();
    lags.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lags.get(((lags.len() as f64 * p).ceil() as usize).clamp(1, lags.len().max(1)) - 1).copied().unwrap_or(0.0)
    };
    println!(
        "rate={} events/s for {sent_for:.1}s: acknowledged={} visible={} (missing={})",
        args.rate,
        acked.len(),
        lags.len(),
        acked.len() - lags.len()
    );
    println!(
        "lag_ms (200 -> projection committed) p50={:.1} p90={:.1} p99={:.1} max={:.1}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        lags.last().copied().unwrap_or(0.0)
    );
    anyhow::ensure!(lags.len() == acked.len(), "some acknowledged events never became visible");
    Ok(())
}
