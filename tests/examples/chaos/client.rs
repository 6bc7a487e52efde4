//! A client that behaves like Stripe's webhook sender: every delivery is signed when sent, and
//! every non-2xx answer, timeout or dropped connection is retried with jittered exponential
//! backoff. An event counts as acknowledged only once a 2xx came back.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ledger_tests::lifecycle;

/// One delivery: an event's id and its exact bytes (a duplicate delivery has the same bytes).
#[derive(Clone)]
pub struct Delivery {
    /// `evt_...`.
    pub id: String,
    /// The raw body.
    pub body: Arc<Vec<u8>>,
}

/// The lifecycles of `customers`, shuffled, with `duplicates` (a fraction) of the events delivered
/// a second time at a random later point. Returns the deliveries and the number of distinct events.
pub fn deliveries(customers: u64, duplicates: f64, seed: u64) -> (Vec<Delivery>, usize) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut all = Vec::new();
    for n in 0..customers {
        for event in lifecycle::lifecycle(n, &mut rng, 1_750_000_000) {
            let value: serde_json::Value = serde_json::from_slice(&event.body).expect("lifecycle JSON");
            let id = value["id"].as_str().expect("event id").to_owned();
            all.push(Delivery { id, body: Arc::new(event.body) });
        }
    }
    let events = all.len();
    let repeats: Vec<Delivery> = all.iter().filter(|_| rng.f64() < duplicates).cloned().collect();
    all.extend(repeats);
    rng.shuffle(&mut all);
    (all, events)
}

/// What the sender saw.
#[derive(Default)]
pub struct Progress {
    /// Deliveries that got a 2xx.
    pub delivered: AtomicUsize,
    /// Requests sent (first tries and retries).
    pub requests: AtomicU64,
    /// Requests that ended without an answer (refused, reset, timed out).
    pub dropped: AtomicU64,
    /// Deliveries given up after the attempt limit (Stripe would go on for three days).
    pub gave_up: AtomicU64,
    /// Non-2xx answers by status.
    pub refused: Mutex<BTreeMap<u16, u64>>,
    /// Event ids acknowledged with a 2xx.
    pub acknowledged: Mutex<HashSet<String>>,
}

const MAX_ATTEMPTS: u32 = 200;

/// Sends every delivery with `concurrency` in flight; returns when each was acknowledged or given up.
pub async fn send_all(
    url: String,
    secret: String,
    deliveries: Vec<Delivery>,
    concurrency: usize,
    progress: Arc<Progress>,
) {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        let (deliveries, next, progress) = (deliveries.clone(), next.clone(), progress.clone());
        workers.spawn(async move {
            let mut rng = fastrand::Rng::with_seed(worker as u64);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(delivery) = deliveries.get(i) else { break };
                deliver(&client, &url, &secret, delivery, &progress, &mut rng).await;
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

async fn deliver(
    client: &reqwest::Client,
    url: &str,
    secret: &str,
    delivery: &Delivery,
    progress: &Progress,
    rng: &mut fastrand::Rng,
) {
    for attempt in 0..MAX_ATTEMPTS {
        progress.requests.fetch_add(1, Ordering::Relaxed);
        let signature = domain::signature::sign_header(secret, chrono::Utc::now().timestamp(), &delivery.body);
        let sent = client
            .post(url)
            .header("Stripe-Signature", signature)
            .header("Content-Type", "application/json; charset=utf-8")
            .body(delivery.body.to_vec())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {
                progress.acknowledged.lock().expect("lock").insert(delivery.id.clone());
                progress.delivered.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(response) => {
                *progress.refused.lock().expect("lock").entry(response.status().as_u16()).or_default() += 1;
            }
            Err(_) => {
                progress.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(backoff(attempt, rng)).await;
    }
    progress.gave_up.fetch_add(1, Ordering::Relaxed);
}

/// 50 ms doubling to at most 2 s, with full jitter.
fn backoff(attempt: u32, rng: &mut fastrand::Rng) -> Duration {
    let cap = 50u64.saturating_mul(1 << attempt.min(6)).min(2_000);
    Duration::from_millis(rng.u64(cap / 2..=cap))
}

/// A one-line summary.
pub fn summary(progress: &Progress, started: Instant) -> String {
    let delivered = progress.delivered.load(Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    format!(
        "deliveries acknowledged {delivered} in {seconds:.1} s ({:.0}/s); requests {}; refused {:?}; dropped {}; given up {}",
        delivered as f64 / seconds.max(1e-9),
        progress.requests.load(Ordering::Relaxed),
        progress.refused.lock().expect("lock"),
        progress.dropped.load(Ordering::Relaxed),
        progress.gave_up.load(Ordering::Relaxed),
    )
}
