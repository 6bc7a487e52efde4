use anyhow::Context;
use std::sync::Arc;

use projector::effects::mail::{self, MailConfig};
use projector::effects::provisioner::ProvisionerConfig;
use projector::effects::{EffectSettings, SystemClock};
use projector::fold::FoldConfig;
use projector::runner::RunnerSettings;
use shared::catalog::Catalog;
use shared::config::Config;
use shared::db::{self, PoolSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init(config.log_format);
    let catalog = match &config.catalog_path {
        Some(path) => Catalog::load(path).context("invalid CATALOG_PATH")?,
        None => {
            tracing::warn!("CATALOG_PATH is unset: using the example catalog (catalog.example.toml)");
            Catalog::parse(projector::EXAMPLE_CATALOG).context("the embedded example catalog")?
        }
    };
    if config.stripe_livemode.is_none() && matches!(config.database, shared::config::DatabaseSource::Url(_)) {
        tracing::warn!("STRIPE_LIVEMODE is unset: test-mode and live-mode events are both projected");
    }
    let url = db::resolve_url(&config).await?;
    let pool = db::connect_lazy(
        &url,
        PoolSettings {
            max_connections: 12,
            statement_timeout: Some(std::time::Duration::from_secs(120)),
            idle_in_transaction_timeout: Some(std::time::Duration::from_secs(60)),
            ..Default::default()
        },
    )?;
    let shutdown = shared::shutdown::on_signal();
    if db::prepare_when_reachable(&pool, config.migrate_on_start, &shutdown).await? == db::Prepared::Stopped {
        return Ok(());
    }
    let settings = RunnerSettings { batch_size: config.projector_batch_size, fold: FoldConfig::from_config(&config) };
    let effects = EffectSettings {
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
        max_attempts: config.effect_max_attempts,
        backoff: config.effect_backoff,
        concurrency: config.effect_concurrency,
        poll_interval: std::time::Duration::from_secs(1),
    };
    let app =
        projector::Application::build(config.projector_addr, pool, catalog, settings, effects, Arc::new(SystemClock))
            .await?;
    app.run_until_stopped(shutdown).await
}
