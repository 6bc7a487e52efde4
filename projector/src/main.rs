use anyhow::Context;
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
    let url = db::resolve_url(&config).await?;
    let pool = db::connect_lazy(&url, PoolSettings { max_connections: 6, ..Default::default() })?;
    db::migrate(&pool).await?;
    let settings = RunnerSettings {
        batch_size: config.projector_batch_size,
        fold: FoldConfig { grace_period_secs: i64::try_from(config.grace_period.as_secs()).unwrap_or(i64::MAX) },
    };
    let app = projector::Application::build(config.projector_addr, pool, catalog, settings).await?;
    app.run_until_stopped(shared::shutdown::on_signal()).await
}
