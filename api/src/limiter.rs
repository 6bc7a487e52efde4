//! How many commands a customer token may make: at most `BILLING_TOKEN_COMMANDS_PER_MINUTE` a
//! minute (a GCRA bucket per customer, from `governor`) and [`IN_FLIGHT`] at once. A token looping
//! previews with fresh keys would otherwise hold command-pool connections across its Stripe
//! calls, spend the shared account's Stripe rate limit and grow `ledger.commands`. The backend
//! key is not limited here (it acts for everyone; its own callers are the product's business).
//! The limit is per replica: N replicas allow N times as much (docs/security.md).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use governor::clock::{Clock as _, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use super::auth::Caller;
use super::error::{ApiError, Code};

/// Commands one customer token may have in flight at once.
pub const IN_FLIGHT: usize = 2;

/// The policy's name in the `RateLimit-Policy` and `RateLimit` headers.
const POLICY: &str = "commands";

type Buckets = RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The per-customer limits, shared by every command handler of a replica.
#[derive(Clone)]
pub struct CommandLimiter {
    per_minute: NonZeroU32,
    buckets: Arc<Buckets>,
    in_flight: Arc<Mutex<HashMap<String, usize>>>,
    admitted: Arc<AtomicU64>,
    refused: Counter,
}

/// A command in flight: its slot is given back when this is dropped.
#[derive(Debug)]
pub struct InFlight {
    customer: Option<String>,
    slots: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let Some(customer) = self.customer.take() else { return };
        let mut slots = lock(&self.slots);
        if let Some(n) = slots.get_mut(&customer) {
            *n -= 1;
            if *n == 0 {
                slots.remove(&customer);
            }
        }
    }
}

fn lock(slots: &Mutex<HashMap<String, usize>>) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
    // The map holds plain counts: a panic elsewhere leaves it consistent.
    slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl CommandLimiter {
    /// `per_minute` commands a minute per customer token (burst: all of them); registers
    /// `api_commands_rate_limited_total`.
    pub fn new(per_minute: u32, registry: &mut Registry) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let refused = Counter::default();
        registry.register("api_commands_rate_limited", "Customer-token commands refused with 429", refused.clone());
        let buckets =
            RateLimiter::dashmap(Quota::per_minute(per_minute)).with_middleware::<StateInformationMiddleware>();
        Self { per_minute, buckets: Arc::new(buckets), in_flight: Arc::default(), admitted: Arc::default(), refused }
    }

    /// Admits a command of `caller`, or 429 `rate_limited` with `Retry-After`, `RateLimit-Policy`
    /// and `RateLimit`. Keep the [`InFlight`] until the command has answered.
    pub fn admit(&self, caller: &Caller) -> Result<InFlight, ApiError> {
        let Caller::Customer(customer) = caller else {
            return Ok(InFlight { customer: None, slots: self.in_flight.clone() });
        };
        {
            let mut slots = lock(&self.in_flight);
            let n = slots.entry(customer.clone()).or_default();
            if *n >= IN_FLIGHT {
                drop(slots);
                return Err(self.refuse(customer, 1, format!("at most {IN_FLIGHT} commands in flight at once")));
            }
            *n += 1;
        }
        let slot = InFlight { customer: Some(customer.clone()), slots: self.in_flight.clone() };
        if self.admitted.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            // Forget customers whose bucket is full again: memory stays bounded by recent callers.
            self.buckets.retain_recent();
        }
        match self.buckets.check_key(customer) {
            Ok(_) => Ok(slot),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.buckets.clock().now());
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                let message = format!("at most {} commands a minute per customer token", self.per_minute);
                Err(self.refuse(customer, seconds.max(1), message))
            }
        }
    }

    /// 429 with nothing left until `retry_after` seconds from now.
    fn refuse(&self, customer: &str, retry_after: u64, message: String) -> ApiError {
        self.refused.inc();
        tracing::info!(customer, retry_after, "command refused: rate limited");
        let fields = domain::usage::rate_limit_fields(POLICY, u64::from(self.per_minute.get()), 60, 0, retry_after);
        let error = ApiError::new(Code::RateLimited, message).header("retry-after", retry_after.to_string());
        fields.into_iter().fold(error, |error, (name, value)| error.header(name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(error: &'a ApiError, name: &str) -> Option<&'a str> {
        error.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_token_gets_its_minutes_worth_then_429_with_the_headers_and_the_backend_is_not_counted() {
        let limiter = CommandLimiter::new(3, &mut Registry::default());
        let token = Caller::Customer("cus_1".into());
        for _ in 0..3 {
            drop(limiter.admit(&token).expect("within the minute's quota"));
        }
        let refused = limiter.admit(&token).expect_err("the fourth in a minute");
        assert_eq!((refused.status, refused.code), (axum::http::StatusCode::TOO_MANY_REQUESTS, Code::RateLimited));
        let retry: u64 = header(&refused, "retry-after").and_then(|v| v.parse().ok()).expect("Retry-After");
        assert!((1..=20).contains(&retry), "a cell comes back every 20 s: {retry}");
        assert_eq!(header(&refused, "ratelimit-policy"), Some("\"commands\";q=3;w=60"));
        assert_eq!(header(&refused, "ratelimit"), Some(format!("\"commands\";r=0;t={retry}").as_str()));
        assert!(limiter.admit(&Caller::Customer("cus_2".into())).is_ok(), "each customer has its own bucket");
        for _ in 0..10 {
            assert!(limiter.admit(&Caller::Backend).is_ok());
        }
    }

    #[test]
    fn two_commands_in_flight_and_a_third_waits_for_one_to_answer() {
        let limiter = CommandLimiter::new(100, &mut Registry::default());
        let token = Caller::Customer("cus_1".into());
        let first = limiter.admit(&token).expect("first");
        let _second = limiter.admit(&token).expect("second");
        assert_eq!(limiter.admit(&token).map_err(|e| e.code).err(), Some(Code::RateLimited));
        drop(first);
        assert!(limiter.admit(&token).is_ok(), "a slot came back");
    }
}
