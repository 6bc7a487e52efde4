use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's allocator: a rebuild allocates and frees across its reader, decoder
/// and fold threads, and spent ~20 % of its CPU in glibc malloc (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A failure prints its message and causes on one line, never a backtrace (whatever
/// `RUST_BACKTRACE` says), and exits 1; a mistyped argument is clap's message, exit 2.
fn main() -> ExitCode {
    let cli = replay::Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[tokio::main]
async fn run(cli: replay::Cli) -> anyhow::Result<ExitCode> {
    let config = shared::config::Config::from_env()?;
    let default_filter = if cli.output_is_data() { "warn" } else { "info,sqlx=warn" };
    shared::telemetry::init_with(config.log_format, default_filter);
    replay::run(cli, config).await
}
