//! Progress and report lines, whatever stdout and stderr are: a command's report goes to stdout
//! (a pipe, a file, a cron mail), its progress to stderr and only on a terminal.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar or spinner (`template` in indicatif's syntax) drawn on stderr when stderr is a
/// terminal, hidden otherwise.
pub fn bar(template: &str) -> ProgressBar {
    let target =
        if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(None, target);
    bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
    bar
}

/// A spinner with a message and the elapsed time, ticking on a terminal.
pub fn spinner() -> ProgressBar {
    let bar = bar("{spinner} {msg} {elapsed}");
    if !bar.is_hidden() {
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
    }
    bar
}

/// Prints one report line on stdout, with the bar out of the way while it does.
pub fn report(bar: &ProgressBar, line: &str) {
    bar.suspend(|| println!("{line}"));
}
