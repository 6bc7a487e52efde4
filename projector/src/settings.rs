//! One way from the validated [`Config`] to everything the projector needs: the binary and the
//! tests build it here (the catalog and the fold's rules come from [`Config`] itself, so `replay`
//! folds alike without the projector's settings).

use std::net::SocketAddr;
use std::time::Duration;

use domain::catalog::Catalog;
use secrecy::SecretString;
use shared::config::{Config, ProjectorConfig, Roles};
use shared::db::PoolSettings;

use crate::effects::EffectSettings;
use crate::effects::mail::{self, MailConfig};
use crate::effects::provisioner::ProvisionerConfig;
use crate::runner::RunnerSettings;
use api::console::ConsoleSettings;

/// The projector's settings.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// `PROJECTOR_ADDR`: the public API.
    pub addr: SocketAddr,
    /// `PROJECTOR_ADMIN_ADDR`: the console and `/metrics`.
    pub admin_addr: SocketAddr,
    /// The price catalog (`CATALOG_PATH`, or the shipped example).
    pub catalog: Catalog,
    /// Batches and fold rules.
    pub runner: RunnerSettings,
    /// How intents are carried out.
    pub effects: EffectSettings,
    /// The pool of the runner and the dispatcher (`DATABASE_MAX_CONNECTIONS`).
    pub pool: PoolSettings,
    /// Connections of each of the HTTP API's own pools (half of `DATABASE_MAX_CONNECTIONS`, at
    /// least 2): one for `/v1/access`, one for billing commands; neither takes a connection from
    /// the fold, and commands waiting on Stripe never hold up access checks.
    pub api_connections: u32,
    /// `/v1/access` answers kept per replica (`ACCESS_CACHE_ROWS`; 0: every check reads).
    pub access_cache_rows: usize,
    /// The billing API: its keys and Stripe.
    pub billing: BillingSettings,
    /// The operator console.
    pub console: ConsoleSettings,
    /// `PROJECTOR_ROLES`: what this process runs.
    pub roles: Roles,
}

/// The billing API's settings.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// `BILLING_API_KEY` (the development key while `DATABASE_URL` is unset).
    pub api_keys: Vec<SecretString>,
    /// `STRIPE_API_BASE` and `STRIPE_API_KEY` (None: no key, commands answer 503).
    pub stripe: Option<(String, SecretString)>,
    /// How long one Stripe call may take.
    pub stripe_timeout: Duration,
    /// `STRIPE_PORTAL_CONFIGURATION`: named by every portal session.
    pub portal_configuration: Option<String>,
    /// `BILLING_REDIRECT_ORIGINS`.
    pub redirects: shared::config::RedirectOrigins,
    /// `BILLING_TOKEN_COMMANDS_PER_MINUTE`.
    pub token_commands_per_minute: u32,
}

impl Default for BillingSettings {
    /// No keys, no Stripe, no redirect allowed, 30 commands a minute per token.
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            stripe: None,
            stripe_timeout: shared::stripe_api::TIMEOUT,
            portal_configuration: None,
            redirects: shared::config::RedirectOrigins::default(),
            token_commands_per_minute: 30,
        }
    }
}

impl ProjectorSettings {
    /// The settings of `config` and `projector`; fails when the catalog cannot be read or is
    /// invalid.
    pub fn from_config(config: &Config, projector: &ProjectorConfig) -> anyhow::Result<Self> {
        let catalog = config.catalog()?;
        Ok(Self {
            addr: projector.projector_addr,
            admin_addr: projector.projector_admin_addr,
            catalog,
            runner: RunnerSettings {
                batch_size: projector.projector_batch_size,
                cache_rows: projector.projector_cache_rows,
                fold: config.fold_config(),
            },
            effects: effect_settings(projector),
            pool: PoolSettings {
                max_connections: config.database_max_connections,
                statement_timeout: Some(Duration::from_secs(120)),
                idle_in_transaction_timeout: Some(Duration::from_secs(60)),
                ..PoolSettings::default()
            },
            api_connections: (config.database_max_connections / 2).max(2),
            access_cache_rows: projector.access_cache_rows,
            billing: BillingSettings {
                api_keys: projector.billing_api_keys.clone(),
                stripe: config.stripe_api_key.clone().map(|key| (config.stripe_api_base.clone(), key)),
                stripe_timeout: shared::stripe_api::TIMEOUT,
                portal_configuration: projector.stripe_portal_configuration.clone(),
                redirects: projector.redirect_origins.clone(),
                token_commands_per_minute: projector.token_commands_per_minute,
            },
            console: ConsoleSettings {
                access: projector.console.clone(),
                webhook_secrets: config.webhook_secrets.clone(),
            },
            roles: projector.roles,
        })
    }
}

fn effect_settings(config: &ProjectorConfig) -> EffectSettings {
    EffectSettings {
        provisioner: config.provisioner_url.clone().map(|url| ProvisionerConfig {
            url,
            api_key: config.provisioner_api_key.clone(),
            timeout: config.provisioner_timeout,
        }),
        mail: MailConfig {
            smtp_url: config.smtp_url.clone(),
            from: config.mail_from.clone().unwrap_or_else(|| mail::DEFAULT_FROM.to_owned()),
            dir: config.mail_dir.clone(),
        },
        admin_email: config.admin_email.clone(),
        dashboard_url: config.dashboard_url.clone(),
        max_attempts: config.effect_max_attempts,
        backoff: config.effect_backoff,
        concurrency: config.effect_concurrency,
        poll_interval: Duration::from_secs(1),
        sweep_interval: config.effect_sweep,
    }
}
