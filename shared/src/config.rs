//! The typed configuration of the public contract's environment variables.
//!
//! Every binary loads one [`Config`] at start-up with [`Config::from_env`]. Each variable has an
//! embedded default so the binaries run with no configuration at all; a value that is set but
//! invalid stops start-up with an error naming the variable. Secrets are [`SecretString`]s and
//! print as `[REDACTED]` in `Debug` output.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

/// The signing secret used when neither `STRIPE_WEBHOOK_SECRET` nor `DATABASE_URL` is set: local
/// development only. With `DATABASE_URL` set, a missing secret is an error (see
/// [`Config::require_webhook_secrets`]), so a deployment can never run on this secret by mistake.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_stripe_ledger_local_development_only";

/// The billing API key accepted while `DATABASE_URL` is unset and `BILLING_API_KEY` is not given
/// (local development only, like [`DEV_WEBHOOK_SECRET`]).
pub const DEV_BILLING_API_KEY: &str = "sl_billing_local_development_only";

/// Shortest `BILLING_API_KEY` accepted: a key an attacker can guess is no key.
const MIN_BILLING_KEY_LEN: usize = 24;

/// Default largest accepted webhook body: Stripe events are a few KiB, rarely above 100 KiB.
pub const DEFAULT_BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// An invalid variable: start-up stops with this message.
#[derive(Debug, thiserror::Error)]
#[error("invalid {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    fn new(var: &'static str, reason: impl Into<String>) -> Self {
        Self { var, reason: reason.into() }
    }
}

/// Log output format (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, one line per event (default).
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where the events come from.
#[derive(Debug, Clone)]
pub enum DatabaseSource {
    /// `DATABASE_URL` is set.
    Url(SecretString),
    /// `DATABASE_URL` is unset: a local cluster under this directory is started or reused.
    Embedded {
        /// `LEDGER_DATA_DIR`, default `./.data`.
        data_dir: PathBuf,
    },
}

/// Who may open the operator console (`GET /console` on `PROJECTOR_ADMIN_ADDR`, docs/console.md).
#[derive(Debug, Clone)]
pub enum ConsoleAccess {
    /// `CONSOLE_PASSWORD` is set: HTTP Basic, user `operator`.
    Password(SecretString),
    /// Local development (`DATABASE_URL` unset, no password, the admin listener on loopback):
    /// served without a password.
    Open,
    /// A deployment without `CONSOLE_PASSWORD`: not served (404).
    Off,
}

/// Where checkout and portal sessions may redirect the buyer (`BILLING_REDIRECT_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RedirectOrigins {
    /// The allowed origins (scheme, host, port), as the variable lists them.
    pub origins: Vec<url::Origin>,
    /// Local development (`DATABASE_URL` unset): `http://localhost` and `http://127.0.0.1` on any
    /// port too.
    pub local: bool,
}

impl RedirectOrigins {
    /// Parses the variable's comma-separated origins (`https://app.example.com`, a port if not the
    /// scheme's default, nothing after the host).
    pub fn parse(list: &str, local: bool) -> Result<Self, ConfigError> {
        let var = "BILLING_REDIRECT_ORIGINS";
        let mut origins = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let url =
                url::Url::parse(item).map_err(|e| ConfigError::new(var, format!("`{item}` is not a URL: {e}")))?;
            if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                return Err(ConfigError::new(var, format!("`{item}` is not an http(s) origin")));
            }
            if url.path() != "/" || url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
                return Err(ConfigError::new(var, format!("`{item}` has more than scheme, host and port")));
            }
            if url.scheme() == "http" && !local {
                return Err(ConfigError::new(var, format!("`{item}`: redirects go to https:// origins")));
            }
            origins.push(url.origin());
        }
        Ok(Self { origins, local })
    }

    /// Whether `target` (a redirect URL) is on an allowed origin. Origins are compared whole,
    /// after parsing: `https://app.example.com.evil.test` and `https://app.example.com@evil.test`
    /// start with an allowed origin's text and are not on it.
    pub fn allows(&self, target: &str) -> bool {
        let Ok(url) = url::Url::parse(target) else { return false };
        if !matches!(url.scheme(), "https" | "http") {
            return false;
        }
        let local = self.local
            && url.scheme() == "http"
            && matches!(
                url.host(),
                Some(url::Host::Domain("localhost")) | Some(url::Host::Ipv4(std::net::Ipv4Addr::LOCALHOST))
            );
        local || self.origins.contains(&url.origin())
    }
}

/// Shortest `CONSOLE_PASSWORD` accepted.
pub const MIN_CONSOLE_PASSWORD_LEN: usize = 16;

/// Everything the binaries read from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`, or the embedded cluster when unset.
    pub database: DatabaseSource,
    /// `DATABASE_MAX_CONNECTIONS` (default 16): pool size per process.
    pub database_max_connections: u32,
    /// `STRIPE_WEBHOOK_SECRET`, comma-separated for rotation; empty when unset with `DATABASE_URL` set.
    pub webhook_secrets: Vec<SecretString>,
    /// True when [`DEV_WEBHOOK_SECRET`] is in use.
    pub dev_webhook_secret: bool,
    /// `BILLING_API_KEY`, comma-separated for rotation: the product backend's keys for the billing
    /// API. Empty when unset with `DATABASE_URL` set (the backend is then refused).
    pub billing_api_keys: Vec<SecretString>,
    /// `CONSOLE_PASSWORD`: who may open the operator console.
    pub console: ConsoleAccess,
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
    /// `INGEST_ADDR` (default 127.0.0.1:3005).
    pub ingest_addr: SocketAddr,
    /// `PROJECTOR_ADDR` (default 127.0.0.1:3006): the public API.
    pub projector_addr: SocketAddr,
    /// `INGEST_ADMIN_ADDR` (default 127.0.0.1:3008): ingest's `/metrics`.
    pub ingest_admin_addr: SocketAddr,
    /// `PROJECTOR_ADMIN_ADDR` (default 127.0.0.1:3007): the console and `/metrics`.
    pub projector_admin_addr: SocketAddr,
    /// `BILLING_REDIRECT_ORIGINS` (comma-separated origins): where checkout and portal sessions
    /// may send the buyer back to.
    pub redirect_origins: RedirectOrigins,
    /// `BILLING_TOKEN_COMMANDS_PER_MINUTE` (default 30): commands one customer token may make a
    /// minute, per replica.
    pub token_commands_per_minute: u32,
    /// `CATALOG_PATH`: the price catalog (unset: the embedded example catalog, for local use).
    pub catalog_path: Option<PathBuf>,
    /// `PROJECTOR_BATCH_SIZE` (default 500): events folded per transaction.
    pub projector_batch_size: usize,
    /// `PROJECTOR_CACHE_ROWS` (default 50000): rows the live projector keeps between batches.
    pub projector_cache_rows: usize,
    /// `ACCESS_CACHE_ROWS` (default 100000; 0: off): `/v1/access` answers each replica keeps until
    /// a write changes them.
    pub access_cache_rows: usize,
    /// `GRACE_PERIOD_DAYS` (default 7): how long a failed payment keeps an instance running.
    pub grace_period: Duration,
    /// `PROVISIONER_URL`.
    pub provisioner_url: Option<String>,
    /// `PROVISIONER_API_KEY`.
    pub provisioner_api_key: Option<SecretString>,
    /// `SMTP_URL` (may carry credentials).
    pub smtp_url: Option<SecretString>,
    /// `MAIL_FROM`.
    pub mail_from: Option<String>,
    /// `ADMIN_EMAIL`.
    pub admin_email: Option<String>,
    /// `MAIL_DIR` (default `./.data/mail`): where mails go as `.eml` files when `SMTP_URL` is unset.
    pub mail_dir: PathBuf,
    /// `EFFECT_MAX_ATTEMPTS` (default 6): attempts before an effect is failed and an admin alerted.
    pub effect_max_attempts: u32,
    /// `EFFECT_BACKOFF_MS` (default 1000): the first retry delay; it doubles per attempt (max 5 min).
    pub effect_backoff: Duration,
    /// `EFFECT_SWEEP_SECS` (default 300): how often the dispatcher compares every instance and token
    /// with what is wanted (between sweeps it looks only at what is pending; 0: every pass).
    pub effect_sweep: Duration,
    /// `EFFECT_CONCURRENCY` (default 8): provisioner calls and mails in flight at once.
    pub effect_concurrency: usize,
    /// `PROVISIONER_TIMEOUT_SECS` (default 10): one provisioner request's timeout.
    pub provisioner_timeout: Duration,
    /// `STRIPE_API_KEY` (backfill).
    pub stripe_api_key: Option<SecretString>,
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`).
    pub stripe_api_base: String,
    /// `STRIPE_PORTAL_CONFIGURATION`: the portal configuration every portal session names
    /// (`replay portal-config --apply` prints it); unset: Stripe's default configuration.
    pub stripe_portal_configuration: Option<String>,
    /// `MIGRATE_ON_START` (default true): binaries apply pending migrations at start-up; false:
    /// they only check that none is pending (`replay migrate` applies them with the owner role).
    pub migrate_on_start: bool,
    /// `STRIPE_LIVEMODE`: `true` projects live-mode events only, `false` test-mode only; unset:
    /// both (the projector warns when `DATABASE_URL` is set).
    pub stripe_livemode: Option<bool>,
    /// `ALLOW_INSECURE_HTTP` (default false): accept plain `http://` for `STRIPE_API_BASE` and
    /// `PROVISIONER_URL` with `DATABASE_URL` set. Local development (no `DATABASE_URL`) always may.
    pub allow_insecure_http: bool,
    /// `ALLOW_INSECURE_SMTP` (default false): accept an `SMTP_URL` without TLS with `DATABASE_URL`
    /// set (token mails carry secrets). Local development always may.
    pub allow_insecure_smtp: bool,
    /// `LOG_FORMAT`: `pretty` (default) or `json`.
    pub log_format: LogFormat,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(std::env::vars())
    }

    /// Builds the config from explicit variables (tests pass their own; nothing reads or sets the
    /// process environment here).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self::read(vars, &RefCell::default())
    }

    /// Every variable the config reads, on either side of `DATABASE_URL`: what `.env.example` and
    /// the README's table must list (a test keeps them in sync).
    pub fn variables() -> BTreeSet<String> {
        let asked = RefCell::default();
        // Results do not matter here, only the names asked for on the way.
        let _ = Self::read(Vec::<(String, String)>::new(), &asked);
        let _ = Self::read([("DATABASE_URL", "postgres://u@h/d")], &asked);
        asked.into_inner()
    }

    fn read<I, K, V>(vars: I, asked: &RefCell<BTreeSet<String>>) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars: HashMap<String, String> = vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        // An empty variable counts as unset, as shells and compose files often export `X=`.
        let get = |name: &str| {
            asked.borrow_mut().insert(name.to_owned());
            vars.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
        };

        let database = match get("DATABASE_URL") {
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::new("DATABASE_URL", "must start with postgres:// or postgresql://"));
                }
                DatabaseSource::Url(SecretString::from(url.to_owned()))
            }
            None => DatabaseSource::Embedded {
                data_dir: get("LEDGER_DATA_DIR").map_or_else(|| PathBuf::from(".data"), PathBuf::from),
            },
        };

        let (webhook_secrets, dev_webhook_secret) = match get("STRIPE_WEBHOOK_SECRET") {
            Some(list) => (parse_list(list, "STRIPE_WEBHOOK_SECRET")?, false),
            None if matches!(database, DatabaseSource::Embedded { .. }) => {
                (vec![SecretString::from(DEV_WEBHOOK_SECRET)], true)
            }
            None => (Vec::new(), false),
        };

        let projector_addr = parse_addr(get("PROJECTOR_ADDR"), "PROJECTOR_ADDR", "127.0.0.1:3006")?;
        let projector_admin_addr = parse_addr(get("PROJECTOR_ADMIN_ADDR"), "PROJECTOR_ADMIN_ADDR", "127.0.0.1:3007")?;
        // Development conveniences (the development billing key, an open console) exist only for
        // a listener on loopback: `DATABASE_URL` unset on a reachable address is not development.
        let billing_api_keys = match get("BILLING_API_KEY") {
            Some(list) => {
                let keys = parse_list(list, "BILLING_API_KEY")?;
                if keys.iter().any(|k| k.expose_secret().len() < MIN_BILLING_KEY_LEN) {
                    return Err(ConfigError::new(
                        "BILLING_API_KEY",
                        format!("every key must be at least {MIN_BILLING_KEY_LEN} characters"),
                    ));
                }
                keys
            }
            None if matches!(database, DatabaseSource::Embedded { .. }) && projector_addr.ip().is_loopback() => {
                vec![SecretString::from(DEV_BILLING_API_KEY)]
            }
            None => Vec::new(),
        };

        let console = match get("CONSOLE_PASSWORD") {
            Some(password) if password.len() < MIN_CONSOLE_PASSWORD_LEN => {
                return Err(ConfigError::new(
                    "CONSOLE_PASSWORD",
                    format!("must be at least {MIN_CONSOLE_PASSWORD_LEN} characters"),
                ));
            }
            Some(password) => ConsoleAccess::Password(SecretString::from(password.to_owned())),
            None if matches!(database, DatabaseSource::Embedded { .. }) && projector_admin_addr.ip().is_loopback() => {
                ConsoleAccess::Open
            }
            None => ConsoleAccess::Off,
        };

        let tolerance_secs: u64 =
            parse_number(get("STRIPE_WEBHOOK_TOLERANCE_SECS"), "STRIPE_WEBHOOK_TOLERANCE_SECS", 300)?;
        if tolerance_secs == 0 {
            return Err(ConfigError::new("STRIPE_WEBHOOK_TOLERANCE_SECS", "must be at least 1"));
        }
        let ingest_body_limit: usize =
            parse_number(get("INGEST_BODY_LIMIT_BYTES"), "INGEST_BODY_LIMIT_BYTES", DEFAULT_BODY_LIMIT_BYTES)?;
        if ingest_body_limit < 1024 {
            return Err(ConfigError::new("INGEST_BODY_LIMIT_BYTES", "must be at least 1024"));
        }
        let ingest_max_batch: usize = parse_number(get("INGEST_MAX_BATCH"), "INGEST_MAX_BATCH", 512)?;
        if !(1..=10_000).contains(&ingest_max_batch) {
            return Err(ConfigError::new("INGEST_MAX_BATCH", "must be between 1 and 10000"));
        }
        let ingest_appenders: usize = parse_number(get("INGEST_APPENDERS"), "INGEST_APPENDERS", 1)?;
        if !(1..=64).contains(&ingest_appenders) {
            return Err(ConfigError::new("INGEST_APPENDERS", "must be between 1 and 64"));
        }
        let projector_batch_size: usize = parse_number(get("PROJECTOR_BATCH_SIZE"), "PROJECTOR_BATCH_SIZE", 500)?;
        if !(1..=100_000).contains(&projector_batch_size) {
            return Err(ConfigError::new("PROJECTOR_BATCH_SIZE", "must be between 1 and 100000"));
        }
        let projector_cache_rows: usize = parse_number(get("PROJECTOR_CACHE_ROWS"), "PROJECTOR_CACHE_ROWS", 50_000)?;
        if projector_cache_rows > 10_000_000 {
            return Err(ConfigError::new("PROJECTOR_CACHE_ROWS", "must be at most 10000000"));
        }
        let access_cache_rows: usize = parse_number(get("ACCESS_CACHE_ROWS"), "ACCESS_CACHE_ROWS", 100_000)?;
        if access_cache_rows > 10_000_000 {
            return Err(ConfigError::new("ACCESS_CACHE_ROWS", "must be at most 10000000"));
        }
        let grace_days: u64 = parse_number(get("GRACE_PERIOD_DAYS"), "GRACE_PERIOD_DAYS", 7)?;
        if grace_days > 3650 {
            return Err(ConfigError::new("GRACE_PERIOD_DAYS", "must be at most 3650"));
        }
        let database_max_connections: u32 =
            parse_number(get("DATABASE_MAX_CONNECTIONS"), "DATABASE_MAX_CONNECTIONS", 16)?;
        if database_max_connections < 2 {
            return Err(ConfigError::new("DATABASE_MAX_CONNECTIONS", "must be at least 2"));
        }

        let effect_max_attempts: u32 = parse_number(get("EFFECT_MAX_ATTEMPTS"), "EFFECT_MAX_ATTEMPTS", 6)?;
        if !(1..=100).contains(&effect_max_attempts) {
            return Err(ConfigError::new("EFFECT_MAX_ATTEMPTS", "must be between 1 and 100"));
        }
        let effect_concurrency: usize = parse_number(get("EFFECT_CONCURRENCY"), "EFFECT_CONCURRENCY", 8)?;
        if !(1..=256).contains(&effect_concurrency) {
            return Err(ConfigError::new("EFFECT_CONCURRENCY", "must be between 1 and 256"));
        }
        let effect_backoff_ms: u64 = parse_number(get("EFFECT_BACKOFF_MS"), "EFFECT_BACKOFF_MS", 1000)?;
        let effect_sweep_secs: u64 = parse_number(get("EFFECT_SWEEP_SECS"), "EFFECT_SWEEP_SECS", 300)?;
        if effect_sweep_secs > 86_400 {
            return Err(ConfigError::new("EFFECT_SWEEP_SECS", "must be at most 86400"));
        }
        let provisioner_timeout_secs: u64 =
            parse_number(get("PROVISIONER_TIMEOUT_SECS"), "PROVISIONER_TIMEOUT_SECS", 10)?;
        if provisioner_timeout_secs == 0 {
            return Err(ConfigError::new("PROVISIONER_TIMEOUT_SECS", "must be at least 1"));
        }

        let allow_insecure_http = parse_bool(get("ALLOW_INSECURE_HTTP"), "ALLOW_INSECURE_HTTP", false)?;
        let allow_insecure_smtp = parse_bool(get("ALLOW_INSECURE_SMTP"), "ALLOW_INSECURE_SMTP", false)?;
        let local = matches!(database, DatabaseSource::Embedded { .. });
        let stripe_api_base = get("STRIPE_API_BASE").unwrap_or("https://api.stripe.com");
        check_http_url("STRIPE_API_BASE", stripe_api_base, local || allow_insecure_http)?;
        let provisioner_url = get("PROVISIONER_URL").map(str::to_owned);
        if let Some(url) = &provisioner_url {
            check_http_url("PROVISIONER_URL", url, local || allow_insecure_http)?;
        }
        let smtp_url = get("SMTP_URL");
        if let Some(url) = smtp_url {
            check_smtp_url(url, local || allow_insecure_smtp)?;
        }

        let redirect_origins = RedirectOrigins::parse(get("BILLING_REDIRECT_ORIGINS").unwrap_or_default(), local)?;
        let token_commands_per_minute: u32 =
            parse_number(get("BILLING_TOKEN_COMMANDS_PER_MINUTE"), "BILLING_TOKEN_COMMANDS_PER_MINUTE", 30)?;
        if !(1..=10_000).contains(&token_commands_per_minute) {
            return Err(ConfigError::new("BILLING_TOKEN_COMMANDS_PER_MINUTE", "must be between 1 and 10000"));
        }

        let stripe_livemode = match get("STRIPE_LIVEMODE") {
            None => None,
            Some(value) => Some(parse_bool(Some(value), "STRIPE_LIVEMODE", false)?),
        };
        let migrate_on_start = parse_bool(get("MIGRATE_ON_START"), "MIGRATE_ON_START", true)?;
        let log_format = match get("LOG_FORMAT") {
            None | Some("pretty") => LogFormat::Pretty,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new("LOG_FORMAT", format!("`{other}` is neither `pretty` nor `json`")));
            }
        };

        Ok(Self {
            database,
            database_max_connections,
            webhook_secrets,
            dev_webhook_secret,
            billing_api_keys,
            console,
            webhook_tolerance: Duration::from_secs(tolerance_secs),
            ingest_body_limit,
            ingest_max_batch,
            ingest_appenders,
            ingest_instance_id: get("INGEST_INSTANCE_ID").map_or_else(default_instance_id, str::to_owned),
            ingest_addr: parse_addr(get("INGEST_ADDR"), "INGEST_ADDR", "127.0.0.1:3005")?,
            projector_addr,
            ingest_admin_addr: parse_addr(get("INGEST_ADMIN_ADDR"), "INGEST_ADMIN_ADDR", "127.0.0.1:3008")?,
            projector_admin_addr,
            redirect_origins,
            token_commands_per_minute,
            catalog_path: get("CATALOG_PATH").map(PathBuf::from),
            projector_batch_size,
            projector_cache_rows,
            access_cache_rows,
            grace_period: Duration::from_secs(grace_days * 86_400),
            provisioner_url,
            provisioner_api_key: get("PROVISIONER_API_KEY").map(|v| SecretString::from(v.to_owned())),
            smtp_url: smtp_url.map(|v| SecretString::from(v.to_owned())),
            mail_from: get("MAIL_FROM").map(str::to_owned),
            admin_email: get("ADMIN_EMAIL").map(str::to_owned),
            mail_dir: get("MAIL_DIR").map_or_else(|| PathBuf::from(".data/mail"), PathBuf::from),
            effect_max_attempts,
            effect_backoff: Duration::from_millis(effect_backoff_ms),
            effect_sweep: Duration::from_secs(effect_sweep_secs),
            effect_concurrency,
            provisioner_timeout: Duration::from_secs(provisioner_timeout_secs),
            stripe_api_key: get("STRIPE_API_KEY").map(|v| SecretString::from(v.to_owned())),
            stripe_api_base: stripe_api_base.trim_end_matches('/').to_owned(),
            stripe_portal_configuration: get("STRIPE_PORTAL_CONFIGURATION").map(str::to_owned),
            migrate_on_start,
            stripe_livemode,
            allow_insecure_http,
            allow_insecure_smtp,
            log_format,
        })
    }

    /// The webhook secrets, or an error naming `STRIPE_WEBHOOK_SECRET` when there are none
    /// (ingest calls this at start-up; other binaries do not need a secret).
    pub fn require_webhook_secrets(&self) -> Result<&[SecretString], ConfigError> {
        if self.webhook_secrets.is_empty() {
            return Err(ConfigError::new(
                "STRIPE_WEBHOOK_SECRET",
                "is required when DATABASE_URL is set (comma-separate several secrets during rotation)",
            ));
        }
        Ok(&self.webhook_secrets)
    }
}

fn parse_bool(value: Option<&str>, var: &'static str, default: bool) -> Result<bool, ConfigError> {
    match value.map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some("false" | "0" | "no" | "off") => Ok(false),
        Some(other) => Err(ConfigError::new(var, format!("`{other}` is neither true nor false"))),
    }
}

/// Outbound HTTP carries API keys: `https://` always, plain `http://` only where allowed.
fn check_http_url(var: &'static str, url: &str, insecure_allowed: bool) -> Result<(), ConfigError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    if !url.starts_with("http://") {
        return Err(ConfigError::new(var, "must be an https:// URL"));
    }
    if insecure_allowed {
        return Ok(());
    }
    Err(ConfigError::new(
        var,
        "plain http:// would send the API key in clear text: use https://, or set ALLOW_INSECURE_HTTP=true",
    ))
}

/// SMTP carries token mails: implicit TLS (`smtps://`) or required STARTTLS (`?tls=required`),
/// anything else only where allowed. (lettre's `smtp://` without `tls=` is plain text, and
/// `tls=opportunistic` falls back to plain text when a man in the middle strips STARTTLS.)
fn check_smtp_url(url: &str, insecure_allowed: bool) -> Result<(), ConfigError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let tls_required = rest
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|pair| pair.eq_ignore_ascii_case("tls=required")));
    match scheme {
        "smtps" => Ok(()),
        "smtp" if tls_required || insecure_allowed => Ok(()),
        "smtp" => Err(ConfigError::new(
            "SMTP_URL",
            "SMTP without required TLS sends tokens in clear text: use smtps:// or ?tls=required, or set ALLOW_INSECURE_SMTP=true",
        )),
        _ => Err(ConfigError::new("SMTP_URL", "must be an smtp:// or smtps:// URL")),
    }
}

/// A comma-separated list of secrets (several during a rotation).
fn parse_list(list: &str, var: &'static str) -> Result<Vec<SecretString>, ConfigError> {
    let mut secrets = Vec::new();
    for (index, part) in list.split(',').enumerate() {
        let part = part.trim();
        if part.is_empty() {
            return Err(ConfigError::new(var, format!("entry {} of the comma-separated list is empty", index + 1)));
        }
        secrets.push(SecretString::from(part.to_owned()));
    }
    Ok(secrets)
}

fn parse_number<T: std::str::FromStr>(value: Option<&str>, var: &'static str, default: T) -> Result<T, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => {
            text.parse().map_err(|_| ConfigError::new(var, format!("`{text}` is not a non-negative whole number")))
        }
    }
}

fn parse_addr(value: Option<&str>, var: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
    let text = value.unwrap_or(default);
    text.parse().map_err(|_| ConfigError::new(var, format!("`{text}` is not a socket address such as 127.0.0.1:3005")))
}

fn default_instance_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{host}:{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_vars(vars.iter().map(|(k, v)| (*k, *v)))
    }

    #[test]
    fn no_variables_gives_the_embedded_defaults() {
        let config = config(&[]).expect("defaults are valid");
        assert!(
            matches!(config.database, DatabaseSource::Embedded { ref data_dir } if data_dir == &PathBuf::from(".data"))
        );
        assert!(config.dev_webhook_secret);
        assert_eq!(config.webhook_secrets.len(), 1);
        assert_eq!(config.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(config.ingest_addr, "127.0.0.1:3005".parse().expect("valid"));
        assert_eq!(config.projector_addr, "127.0.0.1:3006".parse().expect("valid"));
        assert_eq!(config.ingest_body_limit, 1024 * 1024);
        assert_eq!(config.stripe_api_base, "https://api.stripe.com");
        assert_eq!(config.mail_dir, PathBuf::from(".data/mail"));
        assert_eq!(config.effect_max_attempts, 6);
        assert_eq!(config.effect_backoff, Duration::from_secs(1));
        assert_eq!(config.provisioner_timeout, Duration::from_secs(10));
        assert_eq!(config.access_cache_rows, 100_000);
        assert_eq!(self::config(&[("ACCESS_CACHE_ROWS", "0")]).expect("off is valid").access_cache_rows, 0);
        assert!(config.migrate_on_start);
        assert!(!self::config(&[("MIGRATE_ON_START", "false")]).expect("valid").migrate_on_start);
    }

    #[test]
    fn a_database_url_without_a_secret_is_refused_by_ingest() {
        let config = config(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid");
        assert!(!config.dev_webhook_secret);
        let err = config.require_webhook_secrets().expect_err("no secret");
        assert_eq!(err.var, "STRIPE_WEBHOOK_SECRET");
    }

    #[test]
    fn the_console_is_open_locally_off_when_deployed_without_a_password_and_needs_a_long_one() {
        assert!(matches!(config(&[]).expect("valid").console, ConsoleAccess::Open));
        let deployed = config(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid");
        assert!(matches!(deployed.console, ConsoleAccess::Off));
        let with =
            config(&[("DATABASE_URL", "postgres://u@h/db"), ("CONSOLE_PASSWORD", "sixteen-chars-ok")]).expect("valid");
        assert!(matches!(with.console, ConsoleAccess::Password(ref p) if p.expose_secret() == "sixteen-chars-ok"));
        let local = config(&[("CONSOLE_PASSWORD", "sixteen-chars-ok")]).expect("valid");
        assert!(matches!(local.console, ConsoleAccess::Password(_)), "a password is asked for locally too");
        assert_eq!(config(&[("CONSOLE_PASSWORD", "short")]).expect_err("too short").var, "CONSOLE_PASSWORD");
        let exposed = config(&[("PROJECTOR_ADMIN_ADDR", "0.0.0.0:3007")]).expect("valid");
        assert!(matches!(exposed.console, ConsoleAccess::Off), "open only while the admin listener is on loopback");
    }

    #[test]
    fn billing_keys_rotate_are_long_and_the_development_key_needs_the_embedded_database() {
        let local = config(&[]).expect("valid");
        let keys: Vec<&str> = local.billing_api_keys.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(keys, [DEV_BILLING_API_KEY]);
        let deployed = config(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid");
        assert!(deployed.billing_api_keys.is_empty(), "no development key beside a real database");
        let exposed = config(&[("PROJECTOR_ADDR", "0.0.0.0:3006")]).expect("valid");
        assert!(exposed.billing_api_keys.is_empty(), "no development key on a listener others can reach");
        let two = "a-billing-key-of-24-chars,another-billing-key-24-chars";
        let rotated = config(&[("DATABASE_URL", "postgres://u@h/db"), ("BILLING_API_KEY", two)]).expect("valid");
        assert_eq!(rotated.billing_api_keys.len(), 2);
        let short = config(&[("BILLING_API_KEY", "short")]).expect_err("too short");
        assert_eq!(short.var, "BILLING_API_KEY");
    }

    #[test]
    fn several_secrets_are_split_on_commas() {
        let config = config(&[("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")]).expect("valid");
        let secrets: Vec<&str> = config.webhook_secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, ["whsec_a", "whsec_b"]);
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases: &[(&str, &str)] = &[
            ("STRIPE_WEBHOOK_SECRET", "whsec_a,,whsec_b"),
            ("STRIPE_WEBHOOK_TOLERANCE_SECS", "five"),
            ("STRIPE_WEBHOOK_TOLERANCE_SECS", "0"),
            ("INGEST_ADDR", "localhost"),
            ("PROJECTOR_ADDR", "3006"),
            ("INGEST_BODY_LIMIT_BYTES", "-1"),
            ("INGEST_MAX_BATCH", "0"),
            ("INGEST_APPENDERS", "0"),
            ("PROJECTOR_BATCH_SIZE", "0"),
            ("PROJECTOR_CACHE_ROWS", "20000000"),
            ("ACCESS_CACHE_ROWS", "20000000"),
            ("ACCESS_CACHE_ROWS", "many"),
            ("GRACE_PERIOD_DAYS", "a week"),
            ("GRACE_PERIOD_DAYS", "213503982334601"),
            ("DATABASE_URL", "mysql://x"),
            ("DATABASE_MAX_CONNECTIONS", "1"),
            ("STRIPE_API_BASE", "api.stripe.com"),
            ("PROVISIONER_URL", "ftp://x"),
            ("ALLOW_INSECURE_HTTP", "perhaps"),
            ("STRIPE_LIVEMODE", "live"),
            ("SMTP_URL", "http://mx"),
            ("LOG_FORMAT", "xml"),
            ("EFFECT_MAX_ATTEMPTS", "0"),
            ("EFFECT_BACKOFF_MS", "soon"),
            ("EFFECT_SWEEP_SECS", "86401"),
            ("PROVISIONER_TIMEOUT_SECS", "0"),
            ("MIGRATE_ON_START", "maybe"),
            ("EFFECT_CONCURRENCY", "0"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, *var, "{var}={value}");
            assert!(err.to_string().starts_with(&format!("invalid {var}: ")), "{err}");
        }
    }

    #[test]
    fn plain_http_and_smtp_are_refused_outside_local_development_unless_allowed() {
        let db = ("DATABASE_URL", "postgres://u@h/db");
        for (var, value) in [("STRIPE_API_BASE", "http://stripe.internal"), ("PROVISIONER_URL", "http://prov:8080")] {
            let err = config(&[db, (var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.reason.contains("ALLOW_INSECURE_HTTP"), "{err}");
            config(&[db, (var, value), ("ALLOW_INSECURE_HTTP", "true")]).expect("explicitly allowed");
            config(&[(var, value)]).expect("local development");
            config(&[db, (var, &value.replace("http://", "https://"))]).expect("https");
        }
        for plain in ["smtp://u:p@mx:587", "smtp://mx:587?tls=opportunistic"] {
            let err = config(&[db, ("SMTP_URL", plain)]).expect_err(plain);
            assert!(err.reason.contains("ALLOW_INSECURE_SMTP"), "{err}");
            config(&[db, ("SMTP_URL", plain), ("ALLOW_INSECURE_SMTP", "yes")]).expect("explicitly allowed");
        }
        for secure in ["smtps://u:p@mx", "smtp://u:p@mx:587?tls=required"] {
            config(&[db, ("SMTP_URL", secure)]).expect(secure);
        }
    }

    #[test]
    fn redirects_go_only_to_listed_origins_compared_whole_and_locally_to_loopback() {
        let deployed = RedirectOrigins::parse("https://app.example.com, https://billing.example.com:8443", false)
            .expect("origins");
        assert!(deployed.allows("https://app.example.com/billing/done?session={CHECKOUT_SESSION_ID}"));
        assert!(deployed.allows("https://billing.example.com:8443/"));
        for refused in [
            "https://app.example.com.evil.test/ok",
            "https://app.example.com@evil.test/ok",
            "http://app.example.com/ok",
            "https://billing.example.com/ok",
            "http://localhost:3000/ok",
            "javascript:alert(1)",
            "/relative",
        ] {
            assert!(!deployed.allows(refused), "{refused}");
        }
        assert!(!RedirectOrigins::default().allows("https://app.example.com/"), "unset: every redirect refused");
        let local = RedirectOrigins::parse("", true).expect("local");
        assert!(local.allows("http://localhost:5173/ok") && local.allows("http://127.0.0.1:8080/"));
        assert!(!local.allows("http://localhost.evil.test/") && !local.allows("https://app.example.com/"));
        for bad in ["app.example.com", "https://app.example.com/path", "ftp://x.test", "http://app.example.com"] {
            let error = RedirectOrigins::parse(bad, false).expect_err(bad);
            assert_eq!(error.var, "BILLING_REDIRECT_ORIGINS");
        }
    }

    #[test]
    fn debug_output_redacts_secrets() {
        let config = config(&[
            ("DATABASE_URL", "postgres://user:hunter2@db/ledger"),
            ("STRIPE_WEBHOOK_SECRET", "whsec_topsecret"),
            ("STRIPE_API_KEY", "sk_live_topsecret"),
            ("PROVISIONER_API_KEY", "prov_topsecret"),
            ("SMTP_URL", "smtps://u:mailsecret@mx"),
        ])
        .expect("valid");
        let debug = format!("{config:?}");
        for secret in ["hunter2", "whsec_topsecret", "sk_live_topsecret", "prov_topsecret", "mailsecret"] {
            assert!(!debug.contains(secret), "{secret} leaked into {debug}");
        }
        assert!(debug.contains("REDACTED"));
    }
}
