//! Effects: the dispatcher carries out what the fold asked for, exactly once (`docs/effects.md`).
//!
//! - pure decisions (what an instance or a token needs now, retry delays): `domain::plan`.
//! - [`provisioner`]: the HTTP client of the Dokku-style provisioner.
//! - [`mail`]: SMTP (`SMTP_URL`) or `.eml` files (`MAIL_DIR`).
//! - [`dispatcher`]: the loop: leadership, reconcile, call, journal in `ledger.effects`.

pub mod dispatcher;
pub mod mail;
pub mod provisioner;

use std::time::Duration;

/// How effects are carried out.
#[derive(Debug, Clone)]
pub struct EffectSettings {
    /// The provisioner (None: instances are not provisioned; their intents wait, visibly).
    pub provisioner: Option<provisioner::ProvisionerConfig>,
    /// How mails leave.
    pub mail: mail::MailConfig,
    /// Where admin alerts go (None: logged and journaled as skipped).
    pub admin_email: Option<String>,
    /// `DASHBOARD_URL`, linked from the welcome mail (None: no link).
    pub dashboard_url: Option<String>,
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
