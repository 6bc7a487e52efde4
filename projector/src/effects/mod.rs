//! Effects: the dispatcher carries out what the fold asked for, exactly once (`docs/effects.md`).
//!
//! - pure decisions (what an instance or a token needs now, retry delays): `domain::plan`.
//! - [`provisioner`]: the HTTP client of the Dokku-style provisioner.
//! - [`mail`]: SMTP (`SMTP_URL`) or `.eml` files (`MAIL_DIR`).
//! - [`dispatcher`]: the loop: leadership, reconcile, call, journal in `ledger.effects`.

pub mod dispatcher;
pub mod mail;
pub mod provisioner;

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Where the dispatcher reads the time: grace deadlines and token expiry depend on it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests of deadlines).
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How effects are carried out.
#[derive(Debug, Clone)]
pub struct EffectSettings {
    /// The provisioner (None: instances are not provisioned; their intents wait, visibly).
    pub provisioner: Option<provisioner::ProvisionerConfig>,
    /// How mails leave.
    pub mail: mail::MailConfig,
    /// Where admin alerts go (None: logged and journaled as skipped).
    pub admin_email: Option<String>,
    /// Attempts before an effect is failed.
    pub max_attempts: u32,
    /// First retry delay (doubles per attempt, at most [`plan::MAX_BACKOFF`]).
    pub backoff: Duration,
    /// Calls (provisioner, SMTP) in flight at once.
    pub concurrency: usize,
    /// How often the dispatcher looks for due work without a wake-up.
    pub poll_interval: Duration,
    /// How often a pass compares every instance and token (a sweep) instead of the pending ones.
    pub sweep_interval: Duration,
}
