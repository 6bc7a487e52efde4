//! Load generator for `POST /webhooks/stripe`: posts N signed, realistic events (Stripe's example
//! subscription in a `customer.subscription.updated` envelope, ~3 KB, pretty-printed like Stripe's)
//! and prints throughput and latency percentiles.
//!
//! Closed loop (as fast as C clients go):   loadgen --events 50000 --concurrency 64
//! Open loop (a steady rate, C in flight):   loadgen --events 60000 --rate 2000 --concurrency 256
//!
//! Every request is signed when it is sent, as Stripe does, so verification cost is included.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use tokio::sync::Semaphore;

#[derive(Debug, Parser)]
struct Args {
    /// Webhook URL.
    #[arg(long, default_value = "http://127.0.0.1:3005/webhooks/stripe")]
    url: String,
    /// Signing secret (the dev default matches a no-configuration ingest).
    #[arg(long, default_value = shared::config::DEV_WEBHOOK_SECRET)]
    secret: String,
    /// Events to post.
    #[arg(long, default_value_t = 20_000)]
    events: usize,
    /// Most requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Steady rate in events/s (open loop); unset: closed loop, as fast as possible.
    #[arg(long)]
    rate: Option<u64>,
}

const TEMPLATE: &str = include_str!("../../tests/fixtures/stripe-objects.json");

fn body(template: &serde_json::Value, run: &str, n: usize, now: i64) -> Vec<u8> {
    let mut subscription = template["resources"]["subscription"].clone();
    subscription["id"] = format!("sub_{run}{n:08}").into();
    subscription["customer"] = format!("cus_{run}{:08}", n / 3).into();
    let mut event = template["resources"]["event"].clone();
    event["id"] = format!("evt_{run}{n:08}").into();
    event["type"] = "customer.subscription.updated".into();
    event["created"] = now.into();
    event["data"] = serde_json::json!({ "object": subscription, "previous_attributes": { "status": "trialing" } });
    serde_json::to_vec_pretty(&event).expect("serializable")
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let template: serde_json::Value = serde_json::from_str(TEMPLATE)?;
    let run = format!("{:x}", SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() % 0xffff_ffff);
    let now = unix_now();
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new((0..args.events).map(|n| body(&template, &run, n, now)).collect());
    let avg = bodies.iter().map(Vec::len).sum::<usize>() / bodies.len().max(1);
    let client = reqwest::Client::builder().pool_max_idle_per_host(args.concurrency).build()?;
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let mut tasks = Vec::with_capacity(args.events);
    let started = Instant::now();
    let mut ticker = args.rate.map(|rate| {
        let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        t
    });
    for n in 0..args.events {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        let permit = permits.clone().acquire_owned().await?;
        let (client, url, secret, bodies) = (client.clone(), args.url.clone(), args.secret.clone(), bodies.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let body = &bodies[n];
            let signature = domain::signature::sign_header(&secret, unix_now(), body);
            let sent = Instant::now();
            let result = client.post(&url).header("stripe-signature", signature).body(body.clone()).send().await;
            let latency = sent.elapsed();
            (result.map(|r| r.status().as_u16()).unwrap_or(0), latency)
        }));
    }
    let mut latencies = Vec::with_capacity(args.events);
    let mut failures = 0usize;
    for task in tasks {
        let (status, latency) = task.await?;
        if status == 200 {
            latencies.push(latency);
        } else {
            failures += 1;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "events={} ok={} failed={} concurrency={} rate={} body_bytes_avg={avg}",
        args.events,
        latencies.len(),
        failures,
        args.concurrency,
        args.rate.map_or("max".to_owned(), |r| r.to_string())
    );
    println!(
        "elapsed={:.2}s throughput={:.0} events/s",
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency_ms p50={:.2} p90={:.2} p99={:.2} max={:.2}",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    );
    anyhow::ensure!(failures == 0, "{failures} requests were not acknowledged");
    Ok(())
}
