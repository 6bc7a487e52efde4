//! What only the projector reads (and `replay`, which folds, rebuilds and dispatches as it does).

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use super::{
    Config, ConfigError, DEV_BILLING_API_KEY, MIN_BILLING_KEY_LEN, Vars, check_http_url, check_smtp_url, parse_list,
};

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

/// What one projector process runs (`PROJECTOR_ROLES`, a comma list of `fold`, `effects`, `api`;
/// default all three): API-only replicas beside one fold+effects leader, for example. Each role
/// that needs leadership (the fold, the dispatcher) still takes its own lock: several processes
/// with the same role are one active and hot standbys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    /// The runner: folds the log into the projections.
    pub fold: bool,
    /// The dispatcher: carries out the intents.
    pub effects: bool,
    /// The product API (`/v1/...` on `PROJECTOR_ADDR`).
    pub api: bool,
}

impl Default for Roles {
    fn default() -> Self {
        Self { fold: true, effects: true, api: true }
    }
}

impl Roles {
    /// Parses `fold,effects,api` (any non-empty subset, any order).
    pub fn parse(list: &str) -> Result<Self, ConfigError> {
        let mut roles = Self { fold: false, effects: false, api: false };
        for role in list.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            match role {
                "fold" => roles.fold = true,
                "effects" => roles.effects = true,
                "api" => roles.api = true,
                other => {
                    let reason = format!("`{other}` is not a role (fold, effects, api)");
                    return Err(ConfigError::new("PROJECTOR_ROLES", reason));
                }
            }
        }
        if roles == (Self { fold: false, effects: false, api: false }) {
            return Err(ConfigError::new("PROJECTOR_ROLES", "names no role (fold, effects, api)"));
        }
        Ok(roles)
    }
}

/// Shortest `CONSOLE_PASSWORD` accepted.
pub const MIN_CONSOLE_PASSWORD_LEN: usize = 16;

/// The projector's own variables.
#[derive(Debug, Clone)]
pub struct ProjectorConfig {
    /// `PROJECTOR_ROLES` (default `fold,effects,api`).
    pub roles: Roles,
    /// `PROJECTOR_ADDR` (default 127.0.0.1:3006): the public API.
    pub projector_addr: SocketAddr,
    /// `PROJECTOR_ADMIN_ADDR` (default 127.0.0.1:3007): the console and `/metrics`.
    pub projector_admin_addr: SocketAddr,
    /// `BILLING_API_KEY`, comma-separated for rotation: the product backend's keys for the billing
    /// API. Empty when unset with `DATABASE_URL` set (the backend is then refused).
    pub billing_api_keys: Vec<SecretString>,
    /// `CONSOLE_PASSWORD`: who may open the operator console.
    pub console: ConsoleAccess,
    /// `BILLING_REDIRECT_ORIGINS` (comma-separated origins): where checkout and portal sessions
    /// may send the buyer back to.
    pub redirect_origins: RedirectOrigins,
    /// `BILLING_TOKEN_COMMANDS_PER_MINUTE` (default 30): commands one customer token may make a
    /// minute, per replica.
    pub token_commands_per_minute: u32,
    /// `STRIPE_PORTAL_CONFIGURATION`: the portal configuration every portal session names
    /// (`replay portal-config --apply` prints it); unset: Stripe's default configuration.
    pub stripe_portal_configuration: Option<String>,
    /// `PROJECTOR_BATCH_SIZE` (default 500): events folded per transaction.
    pub projector_batch_size: usize,
    /// `PROJECTOR_CACHE_ROWS` (default 50000): rows the live projector keeps between batches.
    pub projector_cache_rows: usize,
    /// `ACCESS_CACHE_ROWS` (default 100000; 0: off): `/v1/access` answers each replica keeps until
    /// a write changes them.
    pub access_cache_rows: usize,
    /// `PROVISIONER_URL`.
    pub provisioner_url: Option<String>,
    /// `PROVISIONER_API_KEY`.
    pub provisioner_api_key: Option<SecretString>,
    /// `PROVISIONER_TIMEOUT_SECS` (default 10): one provisioner request's timeout.
    pub provisioner_timeout: Duration,
    /// `SMTP_URL` (may carry credentials).
    pub smtp_url: Option<SecretString>,
    /// `MAIL_FROM`.
    pub mail_from: Option<String>,
    /// `ADMIN_EMAIL`.
    pub admin_email: Option<String>,
    /// `DASHBOARD_URL`: where customers follow their instance, linked from the welcome mail
    /// (unset: no link).
    pub dashboard_url: Option<String>,
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
}

/// The listeners and who may use them: the addresses, the backend's keys, the console.
struct Access {
    projector_addr: SocketAddr,
    projector_admin_addr: SocketAddr,
    billing_api_keys: Vec<SecretString>,
    console: ConsoleAccess,
}

impl ProjectorConfig {
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

    pub(crate) fn read(vars: &Vars<'_>, common: &Config) -> Result<Self, ConfigError> {
        let Access { projector_addr, projector_admin_addr, billing_api_keys, console } = access(vars, common)?;
        let insecure_http = common.is_local() || common.allow_insecure_http;
        let provisioner_url = vars.get("PROVISIONER_URL").map(str::to_owned);
        if let Some(url) = &provisioner_url {
            check_http_url("PROVISIONER_URL", url, insecure_http)?;
        }
        let dashboard_url = vars.get("DASHBOARD_URL").map(str::to_owned);
        if let Some(url) = &dashboard_url {
            check_http_url("DASHBOARD_URL", url, insecure_http)?;
        }
        let smtp_url = vars.get("SMTP_URL");
        if let Some(url) = smtp_url {
            check_smtp_url(url, common.is_local() || common.allow_insecure_smtp)?;
        }
        let timeout_secs: u64 = vars.number("PROVISIONER_TIMEOUT_SECS", 10, 1..=u64::MAX, "must be at least 1")?;
        let backoff_ms: u64 = vars.number("EFFECT_BACKOFF_MS", 1000, 0..=u64::MAX, "")?;
        let sweep_secs: u64 = vars.number("EFFECT_SWEEP_SECS", 300, 0..=86_400, "must be at most 86400")?;
        Ok(Self {
            roles: vars.get("PROJECTOR_ROLES").map_or(Ok(Roles::default()), Roles::parse)?,
            projector_addr,
            projector_admin_addr,
            billing_api_keys,
            console,
            redirect_origins: RedirectOrigins::parse(
                vars.get("BILLING_REDIRECT_ORIGINS").unwrap_or_default(),
                common.is_local(),
            )?,
            token_commands_per_minute: vars.number(
                "BILLING_TOKEN_COMMANDS_PER_MINUTE",
                30,
                1..=10_000,
                "must be between 1 and 10000",
            )?,
            stripe_portal_configuration: vars.get("STRIPE_PORTAL_CONFIGURATION").map(str::to_owned),
            projector_batch_size: vars.number(
                "PROJECTOR_BATCH_SIZE",
                500,
                1..=100_000,
                "must be between 1 and 100000",
            )?,
            projector_cache_rows: vars.number(
                "PROJECTOR_CACHE_ROWS",
                50_000,
                0..=10_000_000,
                "must be at most 10000000",
            )?,
            access_cache_rows: vars.number("ACCESS_CACHE_ROWS", 100_000, 0..=10_000_000, "must be at most 10000000")?,
            provisioner_url,
            provisioner_api_key: vars.get("PROVISIONER_API_KEY").map(|v| SecretString::from(v.to_owned())),
            provisioner_timeout: Duration::from_secs(timeout_secs),
            smtp_url: smtp_url.map(|v| SecretString::from(v.to_owned())),
            mail_from: vars.get("MAIL_FROM").map(str::to_owned),
            admin_email: vars.get("ADMIN_EMAIL").map(str::to_owned),
            dashboard_url,
            mail_dir: vars.get("MAIL_DIR").map_or_else(|| PathBuf::from(".data/mail"), PathBuf::from),
            effect_max_attempts: vars.number("EFFECT_MAX_ATTEMPTS", 6, 1..=100, "must be between 1 and 100")?,
            effect_backoff: Duration::from_millis(backoff_ms),
            effect_sweep: Duration::from_secs(sweep_secs),
            effect_concurrency: vars.number("EFFECT_CONCURRENCY", 8, 1..=256, "must be between 1 and 256")?,
        })
    }
}

/// The listeners, the backend's keys and the console. Development conveniences (the development
/// billing key, an open console) exist only locally and for a listener on loopback: `DATABASE_URL`
/// unset on a reachable address is not development.
fn access(vars: &Vars<'_>, common: &Config) -> Result<Access, ConfigError> {
    let projector_addr = vars.addr("PROJECTOR_ADDR", "127.0.0.1:3006")?;
    let projector_admin_addr = vars.addr("PROJECTOR_ADMIN_ADDR", "127.0.0.1:3007")?;
    let billing_api_keys = match vars.get("BILLING_API_KEY") {
        Some(list) => {
            let keys = parse_list(list, "BILLING_API_KEY")?;
            if keys.iter().any(|k| k.expose_secret().len() < MIN_BILLING_KEY_LEN) {
                let reason = format!("every key must be at least {MIN_BILLING_KEY_LEN} characters");
                return Err(ConfigError::new("BILLING_API_KEY", reason));
            }
            keys
        }
        None if common.is_local() && projector_addr.ip().is_loopback() => {
            vec![SecretString::from(DEV_BILLING_API_KEY)]
        }
        None => Vec::new(),
    };
    let console = match vars.get("CONSOLE_PASSWORD") {
        Some(password) if password.len() < MIN_CONSOLE_PASSWORD_LEN => {
            let reason = format!("must be at least {MIN_CONSOLE_PASSWORD_LEN} characters");
            return Err(ConfigError::new("CONSOLE_PASSWORD", reason));
        }
        Some(password) => ConsoleAccess::Password(SecretString::from(password.to_owned())),
        None if common.is_local() && projector_admin_addr.ip().is_loopback() => ConsoleAccess::Open,
        None => ConsoleAccess::Off,
    };
    Ok(Access { projector_addr, projector_admin_addr, billing_api_keys, console })
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
