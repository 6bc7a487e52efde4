//! Load for the benchmark examples: `connections` clients send requests for a while; latency
//! percentiles and throughput.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Builds request `i` on a worker's client.
pub type Build = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// What a load run measured.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Requests answered.
    pub requests: usize,
    /// Requests per second.
    pub per_second: f64,
    /// Median latency, ms.
    pub p50: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Slowest, ms.
    pub max: f64,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, usize>,
}

/// `connections` workers send `build(client, i)` (each its own `i`s) for `seconds`; every answer
/// must be 200.
pub async fn load(connections: usize, seconds: u64, build: Build) -> Measured {
    load_accepting(connections, seconds, build, &[200]).await
}

/// [`load`], where every answer must have one of the `accepted` statuses (each counted).
pub async fn load_accepting(connections: usize, seconds: u64, build: Build, accepted: &'static [u16]) -> Measured {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let workers: Vec<_> = (0..connections as u64)
        .map(|w| {
            let build = build.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut latencies = Vec::new();
                let mut statuses = BTreeMap::<u16, usize>::new();
                let mut i = w;
                while Instant::now() < deadline {
                    let at = Instant::now();
                    let response = build(&client, i).send().await.expect("request");
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    assert!(accepted.contains(&status.as_u16()), "{status}: {body}");
                    *statuses.entry(status.as_u16()).or_default() += 1;
                    latencies.push(at.elapsed());
                    i += connections as u64;
                }
                (latencies, statuses)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut statuses = BTreeMap::new();
    for worker in workers {
        let (mine, counted) = worker.await.expect("worker");
        latencies.extend(mine);
        for (status, n) in counted {
            *statuses.entry(status).or_default() += n;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3;
    Measured {
        requests: latencies.len(),
        per_second: latencies.len() as f64 / elapsed,
        p50: pct(0.5),
        p99: pct(0.99),
        max: pct(1.0),
        statuses,
    }
}
