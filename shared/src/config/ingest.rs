//! What only ingest reads.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

use super::{Config, ConfigError, DEFAULT_BODY_LIMIT_BYTES, Vars};

/// Ingest's own variables.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `STRIPE_WEBHOOK_TOLERANCE_SECS` (default 300): accepted distance of the signature timestamp
    /// from now, in both directions.
    pub webhook_tolerance: Duration,
    /// `INGEST_BODY_LIMIT_BYTES` (default 1 MiB): larger bodies get 413.
    pub ingest_body_limit: usize,
    /// `INGEST_MAX_BATCH` (default 512): most events one group commit carries.
    pub ingest_max_batch: usize,
    /// `INGEST_APPENDERS` (default 1): concurrent group commits per ingest instance.
    pub ingest_appenders: usize,
    /// `INGEST_INSTANCE_ID` (default `<hostname>:<pid>`): stored as `received_by`.
    pub ingest_instance_id: String,
    /// `INGEST_ADDR` (default 127.0.0.1:3005): the webhook endpoint and the probes.
    pub ingest_addr: SocketAddr,
    /// `INGEST_ADMIN_ADDR` (default 127.0.0.1:3008): `/metrics`.
    pub ingest_admin_addr: SocketAddr,
}

impl IngestConfig {
    /// Reads the process environment (`common` read first).
    pub fn from_env(common: &Config) -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars(), common)
    }

    /// From explicit variables, as [`Config::from_vars`].
    pub fn from_vars<I, K, V>(vars: I, common: &Config) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::read(&Vars::new(vars, &RefCell::default()), common)
    }

    pub(crate) fn read(vars: &Vars<'_>, _common: &Config) -> Result<Self, ConfigError> {
        let tolerance_secs: u64 =
            vars.number("STRIPE_WEBHOOK_TOLERANCE_SECS", 300, 1..=u64::MAX, "must be at least 1")?;
        Ok(Self {
            webhook_tolerance: Duration::from_secs(tolerance_secs),
            ingest_body_limit: vars.number(
                "INGEST_BODY_LIMIT_BYTES",
                DEFAULT_BODY_LIMIT_BYTES,
                1024..=usize::MAX,
                "must be at least 1024",
            )?,
            ingest_max_batch: vars.number("INGEST_MAX_BATCH", 512, 1..=10_000, "must be between 1 and 10000")?,
            ingest_appenders: vars.number("INGEST_APPENDERS", 1, 1..=64, "must be between 1 and 64")?,
            ingest_instance_id: vars.get("INGEST_INSTANCE_ID").map_or_else(default_instance_id, str::to_owned),
            ingest_addr: vars.addr("INGEST_ADDR", "127.0.0.1:3005")?,
            ingest_admin_addr: vars.addr("INGEST_ADMIN_ADDR", "127.0.0.1:3008")?,
        })
    }
}

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}
