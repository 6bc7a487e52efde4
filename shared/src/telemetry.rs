//! One function builds the tracing subscriber for every binary.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// The filter used when `RUST_LOG` is unset.
const DEFAULT_FILTER: &str = "info,sqlx=warn,tower_http=warn";

/// Installs the global subscriber: JSON lines or human-readable text, filtered by `RUST_LOG`.
/// Safe to call more than once (later calls are ignored), so tests can call it freely.
pub fn init(format: LogFormat) {
    init_with(format, DEFAULT_FILTER);
}

/// [`init`] with `default_filter` when `RUST_LOG` is unset (`warn` for a command whose output is
/// data: nothing on stderr unless something is wrong).
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Logs go to stderr: stdout belongs to command output (`replay database-url`, the dev banner).
    // Colours only on a terminal: a log file or a pipe gets plain text.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(terminal);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
}

/// Content type of the Prometheus/OpenMetrics text served on `/metrics`.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders a metrics registry as OpenMetrics text.
pub fn encode_metrics(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    prometheus_client::encoding::text::encode(&mut out, registry).expect("encoding into a String");
    out
}
