//! The typed configuration of the public contract's environment variables.
//!
//! Every binary loads [`Config`] (what more than one binary reads: the database, the catalog and
//! fold rules, Stripe, transport policy, logs) and its own section: [`IngestConfig`] for ingest,
//! [`ProjectorConfig`] for the projector (`replay` needs only [`Config`]: the catalog and the fold
//! rules are there). A binary validates only what it reads, so a bad `INGEST_APPENDERS` stops
//! ingest, not the projector or `replay`. Each variable has an embedded default so the binaries run with no configuration at
//! all; a value that is set but invalid stops start-up with an error naming the variable.
//! Secrets are [`SecretString`]s and print as `[REDACTED]` in `Debug` output.

mod ingest;
mod projector;

pub use ingest::IngestConfig;
pub use projector::{ConsoleAccess, MIN_CONSOLE_PASSWORD_LEN, ProjectorConfig, RedirectOrigins, Roles};

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// The signing secret used when neither `STRIPE_WEBHOOK_SECRET` nor `DATABASE_URL` is set: local
/// development only. With `DATABASE_URL` set, a missing secret is an error (see
/// [`Config::require_webhook_secrets`]), so a deployment can never run on this secret by mistake.
pub const DEV_WEBHOOK_SECRET: &str = "whsec_stripe_ledger_local_development_only";

/// The billing API key accepted while `DATABASE_URL` is unset and `BILLING_API_KEY` is not given
/// (local development only, like [`DEV_WEBHOOK_SECRET`]).
pub const DEV_BILLING_API_KEY: &str = "sl_billing_local_development_only";

/// Shortest `BILLING_API_KEY` accepted: a key an attacker can guess is no key.
pub(crate) const MIN_BILLING_KEY_LEN: usize = 24;

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
    pub(crate) fn new(var: &'static str, reason: impl Into<String>) -> Self {
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

/// What more than one binary reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `DATABASE_URL`, or the embedded cluster when unset.
    pub database: DatabaseSource,
    /// `DATABASE_MAX_CONNECTIONS` (default 16): pool size per process.
    pub database_max_connections: u32,
    /// `STRIPE_WEBHOOK_SECRET`, comma-separated for rotation; empty when unset with `DATABASE_URL`
    /// set (ingest verifies with it, the console and `replay verify --signatures` check with it).
    pub webhook_secrets: Vec<SecretString>,
    /// True when [`DEV_WEBHOOK_SECRET`] is in use.
    pub dev_webhook_secret: bool,
    /// `CATALOG_PATH`: the price catalog (unset: the embedded example catalog, for local use).
    pub catalog_path: Option<PathBuf>,
    /// `GRACE_PERIOD_DAYS` (default 7): how long a failed payment keeps an instance running.
    pub grace_period: Duration,
    /// `STRIPE_LIVEMODE`: `true` projects live-mode events only, `false` test-mode only; unset:
    /// both (the projector warns when `DATABASE_URL` is set).
    pub stripe_livemode: Option<bool>,
    /// `STRIPE_API_KEY`.
    pub stripe_api_key: Option<SecretString>,
    /// `STRIPE_API_BASE` (default `https://api.stripe.com`).
    pub stripe_api_base: String,
    /// `MIGRATE_ON_START` (default true): binaries apply pending migrations at start-up; false:
    /// they only check that none is pending (`replay migrate` applies them with the owner role).
    pub migrate_on_start: bool,
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
        Self::read(&Vars::new(vars, &RefCell::default()))
    }

    /// Every variable any binary reads, on either side of `DATABASE_URL`: what `.env.example` and
    /// the README's table must list (a test keeps them in sync).
    pub fn variables() -> BTreeSet<String> {
        let asked = RefCell::default();
        for given in [vec![], vec![("DATABASE_URL", "postgres://u@h/d")]] {
            let vars = Vars::new(given, &asked);
            // Results do not matter here, only the names asked for on the way.
            if let Ok(common) = Self::read(&vars) {
                let _ = IngestConfig::read(&vars, &common);
                let _ = ProjectorConfig::read(&vars, &common);
            }
        }
        asked.into_inner()
    }

    fn read(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        let database = database(vars)?;
        let local = matches!(database, DatabaseSource::Embedded { .. });
        let (webhook_secrets, dev_webhook_secret) = match vars.get("STRIPE_WEBHOOK_SECRET") {
            Some(list) => (parse_list(list, "STRIPE_WEBHOOK_SECRET")?, false),
            None if local => (vec![SecretString::from(DEV_WEBHOOK_SECRET)], true),
            None => (Vec::new(), false),
        };
        let grace_days: u64 = vars.number("GRACE_PERIOD_DAYS", 7, 0..=3650, "must be at most 3650")?;
        let database_max_connections: u32 =
            vars.number("DATABASE_MAX_CONNECTIONS", 16, 2..=u32::MAX, "must be at least 2")?;
        let allow_insecure_http = vars.bool("ALLOW_INSECURE_HTTP", false)?;
        let allow_insecure_smtp = vars.bool("ALLOW_INSECURE_SMTP", false)?;
        let stripe_api_base = vars.get("STRIPE_API_BASE").unwrap_or("https://api.stripe.com");
        check_http_url("STRIPE_API_BASE", stripe_api_base, local || allow_insecure_http)?;
        let stripe_livemode = match vars.get("STRIPE_LIVEMODE") {
            None => None,
            Some(_) => Some(vars.bool("STRIPE_LIVEMODE", false)?),
        };
        Ok(Self {
            database,
            database_max_connections,
            webhook_secrets,
            dev_webhook_secret,
            catalog_path: vars.get("CATALOG_PATH").map(PathBuf::from),
            grace_period: Duration::from_secs(grace_days * 86_400),
            stripe_livemode,
            stripe_api_key: vars.get("STRIPE_API_KEY").map(|v| SecretString::from(v.to_owned())),
            stripe_api_base: stripe_api_base.trim_end_matches('/').to_owned(),
            migrate_on_start: vars.bool("MIGRATE_ON_START", true)?,
            allow_insecure_http,
            allow_insecure_smtp,
            log_format: log_format(vars)?,
        })
    }

    /// Whether this is local development (`DATABASE_URL` unset: the embedded cluster).
    pub fn is_local(&self) -> bool {
        matches!(self.database, DatabaseSource::Embedded { .. })
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

    /// The price catalog (`CATALOG_PATH`, or the shipped example), read and checked.
    pub fn catalog(&self) -> anyhow::Result<domain::catalog::Catalog> {
        use anyhow::Context as _;
        domain::catalog::Catalog::from_path(self.catalog_path.as_deref()).context("invalid CATALOG_PATH")
    }

    /// The fold's rules (`GRACE_PERIOD`, `STRIPE_LIVEMODE`): the projector and `replay` fold alike.
    pub fn fold_config(&self) -> domain::fold::FoldConfig {
        domain::fold::FoldConfig {
            grace_period_secs: i64::try_from(self.grace_period.as_secs()).unwrap_or(i64::MAX),
            livemode: self.stripe_livemode,
        }
    }
}

/// The variables as given, and every name asked for on the way ([`Config::variables`]).
pub(crate) struct Vars<'a> {
    map: HashMap<String, String>,
    asked: &'a RefCell<BTreeSet<String>>,
}

impl<'a> Vars<'a> {
    fn new<I, K, V>(vars: I, asked: &'a RefCell<BTreeSet<String>>) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Self { map: vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect(), asked }
    }

    /// `name`'s value; an empty variable counts as unset, as shells and compose files often
    /// export `X=`.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.asked.borrow_mut().insert(name.to_owned());
        self.map.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A whole number in `range` (else `outside`, the error's reason), `default` when unset.
    pub(crate) fn number<T>(
        &self,
        name: &'static str,
        default: T,
        range: std::ops::RangeInclusive<T>,
        outside: &str,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd,
    {
        let value = match self.get(name) {
            None => default,
            Some(text) => text
                .parse()
                .map_err(|_| ConfigError::new(name, format!("`{text}` is not a non-negative whole number")))?,
        };
        if !range.contains(&value) {
            return Err(ConfigError::new(name, outside));
        }
        Ok(value)
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`), `default` when unset.
    pub(crate) fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(ConfigError::new(name, format!("`{other}` is neither true nor false"))),
        }
    }

    /// A socket address, `default` when unset.
    pub(crate) fn addr(&self, name: &'static str, default: &str) -> Result<SocketAddr, ConfigError> {
        let text = self.get(name).unwrap_or(default);
        text.parse()
            .map_err(|_| ConfigError::new(name, format!("`{text}` is not a socket address such as 127.0.0.1:3005")))
    }
}

fn database(vars: &Vars<'_>) -> Result<DatabaseSource, ConfigError> {
    Ok(match vars.get("DATABASE_URL") {
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            DatabaseSource::Url(SecretString::from(url.to_owned()))
        }
        Some(_) => return Err(ConfigError::new("DATABASE_URL", "must start with postgres:// or postgresql://")),
        None => DatabaseSource::Embedded {
            data_dir: vars.get("LEDGER_DATA_DIR").map_or_else(|| PathBuf::from(".data"), PathBuf::from),
        },
    })
}

fn log_format(vars: &Vars<'_>) -> Result<LogFormat, ConfigError> {
    match vars.get("LOG_FORMAT") {
        None | Some("pretty") => Ok(LogFormat::Pretty),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(ConfigError::new("LOG_FORMAT", format!("`{other}` is neither `pretty` nor `json`"))),
    }
}

/// Outbound HTTP carries API keys: `https://` always, plain `http://` only where allowed.
pub(crate) fn check_http_url(var: &'static str, url: &str, insecure_allowed: bool) -> Result<(), ConfigError> {
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
pub(crate) fn check_smtp_url(url: &str, insecure_allowed: bool) -> Result<(), ConfigError> {
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
pub(crate) fn parse_list(list: &str, var: &'static str) -> Result<Vec<SecretString>, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// Every section, as the binaries read them together.
    #[derive(Debug)]
    struct All {
        common: Config,
        ingest: IngestConfig,
        projector: ProjectorConfig,
    }

    fn config(vars: &[(&str, &str)]) -> Result<All, ConfigError> {
        let pairs = || vars.iter().map(|(k, v)| (*k, *v));
        let common = Config::from_vars(pairs())?;
        let ingest = IngestConfig::from_vars(pairs(), &common)?;
        let projector = ProjectorConfig::from_vars(pairs(), &common)?;
        Ok(All { common, ingest, projector })
    }

    #[test]
    fn no_variables_gives_the_embedded_defaults() {
        let config = config(&[]).expect("defaults are valid");
        assert!(
            matches!(config.common.database, DatabaseSource::Embedded { ref data_dir } if data_dir == &PathBuf::from(".data"))
        );
        assert!(config.common.dev_webhook_secret);
        assert_eq!(config.common.webhook_secrets.len(), 1);
        assert_eq!(config.ingest.webhook_tolerance, Duration::from_secs(300));
        assert_eq!(config.ingest.ingest_addr, "127.0.0.1:3005".parse().expect("valid"));
        assert_eq!(config.projector.projector_addr, "127.0.0.1:3006".parse().expect("valid"));
        assert_eq!(config.ingest.ingest_body_limit, 1024 * 1024);
        assert_eq!(config.common.stripe_api_base, "https://api.stripe.com");
        assert_eq!(config.projector.mail_dir, PathBuf::from(".data/mail"));
        assert_eq!(config.projector.effect_max_attempts, 6);
        assert_eq!(config.projector.effect_backoff, Duration::from_secs(1));
        assert_eq!(config.projector.provisioner_timeout, Duration::from_secs(10));
        assert_eq!(config.projector.access_cache_rows, 100_000);
        assert_eq!(self::config(&[("ACCESS_CACHE_ROWS", "0")]).expect("off is valid").projector.access_cache_rows, 0);
        assert!(config.common.migrate_on_start);
        assert!(!self::config(&[("MIGRATE_ON_START", "false")]).expect("valid").common.migrate_on_start);
    }

    #[test]
    fn a_database_url_without_a_secret_is_refused_by_ingest() {
        let config = config(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid");
        assert!(!config.common.dev_webhook_secret);
        let err = config.common.require_webhook_secrets().expect_err("no secret");
        assert_eq!(err.var, "STRIPE_WEBHOOK_SECRET");
    }

    #[test]
    fn the_console_is_open_locally_off_when_deployed_without_a_password_and_needs_a_long_one() {
        assert!(matches!(config(&[]).expect("valid").projector.console, ConsoleAccess::Open));
        let deployed = config(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid");
        assert!(matches!(deployed.projector.console, ConsoleAccess::Off));
        let with =
            config(&[("DATABASE_URL", "postgres://u@h/db"), ("CONSOLE_PASSWORD", "sixteen-chars-ok")]).expect("valid");
        assert!(
            matches!(with.projector.console, ConsoleAccess::Password(ref p) if p.expose_secret() == "sixteen-chars-ok")
        );
        let local = config(&[("CONSOLE_PASSWORD", "sixteen-chars-ok")]).expect("valid");
        assert!(matches!(local.projector.console, ConsoleAccess::Password(_)), "a password is asked for locally too");
        assert_eq!(config(&[("CONSOLE_PASSWORD", "short")]).expect_err("too short").var, "CONSOLE_PASSWORD");
        let exposed = config(&[("PROJECTOR_ADMIN_ADDR", "0.0.0.0:3007")]).expect("valid");
        assert!(
            matches!(exposed.projector.console, ConsoleAccess::Off),
            "open only while the admin listener is on loopback"
        );
    }

    #[test]
    fn billing_keys_rotate_are_long_and_the_development_key_needs_the_embedded_database() {
        let local = config(&[]).expect("valid");
        let keys: Vec<&str> = local.projector.billing_api_keys.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(keys, [DEV_BILLING_API_KEY]);
        let deployed = config(&[("DATABASE_URL", "postgres://u@h/db")]).expect("valid");
        assert!(deployed.projector.billing_api_keys.is_empty(), "no development key beside a real database");
        let exposed = config(&[("PROJECTOR_ADDR", "0.0.0.0:3006")]).expect("valid");
        assert!(exposed.projector.billing_api_keys.is_empty(), "no development key on a listener others can reach");
        let two = "a-billing-key-of-24-chars,another-billing-key-24-chars";
        let rotated = config(&[("DATABASE_URL", "postgres://u@h/db"), ("BILLING_API_KEY", two)]).expect("valid");
        assert_eq!(rotated.projector.billing_api_keys.len(), 2);
        let short = config(&[("BILLING_API_KEY", "short")]).expect_err("too short");
        assert_eq!(short.var, "BILLING_API_KEY");
    }

    #[test]
    fn each_binary_validates_only_what_it_reads() {
        let bad_ingest = [("INGEST_APPENDERS", "0")];
        let common = Config::from_vars(bad_ingest).expect("common");
        assert_eq!(IngestConfig::from_vars(bad_ingest, &common).expect_err("ingest").var, "INGEST_APPENDERS");
        ProjectorConfig::from_vars(bad_ingest, &common).expect("a bad ingest variable does not stop the projector");
        let bad_projector = [("EFFECT_CONCURRENCY", "0")];
        let common = Config::from_vars(bad_projector).expect("common");
        assert_eq!(
            ProjectorConfig::from_vars(bad_projector, &common).expect_err("projector").var,
            "EFFECT_CONCURRENCY"
        );
        IngestConfig::from_vars(bad_projector, &common).expect("nor a projector variable ingest");
        let everything = Config::variables();
        for name in ["DATABASE_URL", "INGEST_APPENDERS", "EFFECT_CONCURRENCY", "BILLING_REDIRECT_ORIGINS", "LOG_FORMAT"]
        {
            assert!(everything.contains(name), "{name} is listed for the README and .env.example");
        }
    }

    #[test]
    fn roles_are_a_comma_list_of_fold_effects_and_api_all_by_default() {
        assert_eq!(config(&[]).expect("valid").projector.roles, Roles::default());
        let api = config(&[("PROJECTOR_ROLES", "api")]).expect("valid").projector.roles;
        assert_eq!(api, Roles { fold: false, effects: false, api: true });
        let leader = config(&[("PROJECTOR_ROLES", " effects , fold ")]).expect("valid").projector.roles;
        assert_eq!(leader, Roles { fold: true, effects: true, api: false });
        for bad in ["worker", ",", "api,console"] {
            assert_eq!(config(&[("PROJECTOR_ROLES", bad)]).expect_err(bad).var, "PROJECTOR_ROLES");
        }
    }

    #[test]
    fn several_secrets_are_split_on_commas() {
        let config = config(&[("STRIPE_WEBHOOK_SECRET", "whsec_a, whsec_b")]).expect("valid");
        let secrets: Vec<&str> = config.common.webhook_secrets.iter().map(|s| s.expose_secret()).collect();
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
