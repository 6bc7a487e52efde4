use std::sync::Arc;

use domain::clock::SystemClock;
use projector::ProjectorSettings;
use shared::config::Config;
use shared::db;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init(config.log_format);
    let projector = shared::config::ProjectorConfig::from_env(&config)?;
    let settings = ProjectorSettings::from_config(&config, &projector)?;
    if config.stripe_livemode.is_none() && matches!(config.database, shared::config::DatabaseSource::Url(_)) {
        tracing::warn!("STRIPE_LIVEMODE is unset: test-mode and live-mode events are both projected");
    }
    let url = db::resolve_url(&config).await?;
    let pool = db::connect_lazy(&url, settings.pool)?;
    let shutdown = shared::shutdown::on_signal();
    if db::prepare_when_reachable(&pool, config.migrate_on_start, &shutdown).await? == db::Prepared::Stopped {
        return Ok(());
    }
    let app = projector::Application::build(settings, pool, Arc::new(SystemClock)).await?;
    app.run_until_stopped(shutdown).await
}
