use shared::config::Config;
use shared::db::{self, PoolSettings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init(config.log_format);
    let url = db::resolve_url(&config).await?;
    let pool = db::connect_lazy(&url, PoolSettings { max_connections: 4, ..Default::default() })?;
    db::migrate(&pool).await?;
    let app = projector::Application::build(config.projector_addr, pool).await?;
    app.run_until_stopped(shared::shutdown::on_signal()).await
}
