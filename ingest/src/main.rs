use ingest::{Application, IngestSettings};
use shared::config::{Config, DEV_WEBHOOK_SECRET};
use shared::db::{self, PoolSettings};
use std::io::Write;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    shared::telemetry::init(config.log_format);
    let ingest = shared::config::IngestConfig::from_env(&config)?;
    let settings = IngestSettings::from_config(&config, &ingest)?;
    let url = db::resolve_url(&config).await?;
    let pool = db::connect_lazy(
        &url,
        PoolSettings {
            max_connections: config.database_max_connections,
            acquire_timeout: Duration::from_secs(2),
            // A webhook answers within Stripe's timeout or not at all; a stuck appender must not
            // hold the global append lock.
            statement_timeout: Some(Duration::from_secs(15)),
            idle_in_transaction_timeout: Some(Duration::from_secs(10)),
            ..Default::default()
        },
    )?;
    let shutdown = shared::shutdown::on_signal();
    if db::prepare_when_reachable(&pool, config.migrate_on_start, &shutdown).await? == db::Prepared::Stopped {
        return Ok(());
    }
    let app = Application::build(settings, pool).await?;
    if config.dev_webhook_secret {
        let (addr, admin) = (app.local_addr(), app.admin_addr());
        // Not println!: a closed stdout (a detached terminal, a pipe whose reader left) must not
        // take the service down, so write errors are ignored.
        let _ = writeln!(
            std::io::stdout().lock(),
            "\nstripe-ledger ingest (local development)\n  webhook URL:    http://{addr}/webhooks/stripe\n  signing secret: {DEV_WEBHOOK_SECRET}\n  send a signed sample event:  scripts/send-sample-event http://{addr}/webhooks/stripe\n  metrics: http://{admin}/metrics   readiness: http://{addr}/readyz\n"
        );
    }
    app.run_until_stopped(shutdown).await
}
