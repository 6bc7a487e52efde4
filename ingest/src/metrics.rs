//! Prometheus metrics of one ingest instance (its own registry, so tests can run many instances).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// The ingest metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<OutcomeLabel, Counter>,
    duplicates: Counter,
    undecodable: Counter,
    rejections: Family<ReasonLabel, Counter>,
    append_seconds: Histogram,
    batch_size: Histogram,
    request_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "ingest_requests",
            "Webhook requests by outcome: appended, duplicate, rejected, unavailable, error",
            requests.clone(),
        );
        let duplicates = Counter::default();
        registry.register("ingest_duplicates", "Webhooks whose event id was already in the log", duplicates.clone());
        let undecodable = Counter::default();
        registry.register(
            "ingest_undecodable_stored",
            "Signed webhooks with an event id whose envelope could not be decoded, stored as they came",
            undecodable.clone(),
        );
        let rejections = Family::<ReasonLabel, Counter>::default();
        registry.register("ingest_rejections", "Webhooks not acknowledged, by reason", rejections.clone());
        let append_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        registry.register(
            "ingest_append_duration_seconds",
            "Time of one group-commit call to ledger.append_events, commit included",
            append_seconds.clone(),
        );
        let batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register("ingest_batch_size", "Events per group commit", batch_size.clone());
        let request_seconds = Histogram::new(exponential_buckets(0.000_25, 2.0, 14));
        registry.register(
            "ingest_request_duration_seconds",
            "Time from request to answer on POST /webhooks/stripe",
            request_seconds.clone(),
        );
        Self { registry, requests, duplicates, undecodable, rejections, append_seconds, batch_size, request_seconds }
    }
}

impl Metrics {
    /// Counts one answered webhook request.
    pub fn request(&self, outcome: &'static str, seconds: f64) {
        self.requests.get_or_create(&OutcomeLabel { outcome }).inc();
        self.request_seconds.observe(seconds);
    }

    /// Counts a duplicate delivery.
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// Counts a signed body stored although its envelope could not be decoded.
    pub fn undecodable(&self) {
        self.undecodable.inc();
    }

    /// Counts a rejection or failure by reason.
    pub fn rejection(&self, reason: &'static str) {
        self.rejections.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// Records one group commit.
    pub fn batch(&self, size: usize, seconds: f64) {
        self.batch_size.observe(size as f64);
        self.append_seconds.observe(seconds);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        shared::telemetry::encode_metrics(&self.registry)
    }
}
