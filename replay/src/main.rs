use clap::Parser;

/// mimalloc instead of glibc's allocator: a rebuild allocates and frees across its reader, decoder
/// and fold threads, and spent ~20 % of its CPU in glibc malloc (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let cli = replay::Cli::parse();
    let config = shared::config::Config::from_env()?;
    shared::telemetry::init(config.log_format);
    replay::run(cli, config).await
}
