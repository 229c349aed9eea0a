//! The `floodgate` binary: the daemon (`floodgate run`) and the operator's CLI, over the library.

use clap::Parser;
use std::io::Write;

use tracing_subscriber::EnvFilter;

fn main() {
    let cli = floodgate::cli::Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("FLOODGATE_LOG").unwrap_or_else(|_| EnvFilter::new(level)))
        .with_writer(std::io::stderr)
        // Colours only for a terminal: a log file or journald gets plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // A closed or full stderr (a journald restart, a dropped pipe) loses log lines, never the daemon: the
        // default reports a failed write with eprintln!, which panics when stderr itself is what failed.
        .log_internal_errors(false)
        .init();
    if let Err(e) = floodgate::cli::run(cli) {
        // Broken pipe (`floodgate parse ... | head`) is not an error worth a message.
        if e.chain()
            .any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
        {
            std::process::exit(0);
        }
        let _ = writeln!(std::io::stderr(), "floodgate: error: {e:#}");
        std::process::exit(1);
    }
}
