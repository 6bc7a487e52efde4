use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = replay::Cli::parse();
    let config = shared::config::Config::from_env()?;
    shared::telemetry::init(config.log_format);
    replay::run(cli, config).await
}
