//! `etcd-snapshot`: parse the command line (with `--config FILE` merged in) and dispatch.

use clap::Parser;
use etcd_snapshot::cli::{self, Cli, config_file};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let mut argv: Vec<String> = std::env::args().collect();
    if let Some(path) = config_file::config_path(&argv) {
        argv = match config_file::load_and_merge(argv, &path) {
            Ok(merged) => merged,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    }
    let cli = Cli::parse_from(argv);
    let default_level = match cli.command {
        cli::Command::Controller(_) | cli::Command::Agent(_) => "info",
        _ => "warn",
    };
    if let Err(e) = init_logging(cli.log_level.as_deref().unwrap_or(default_level)) {
        eprintln!("error: --log-level: {e}");
        return ExitCode::FAILURE;
    }
    match cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr so that command output on stdout stays clean. A filter that does not parse
/// is an error, not a silent fallback.
fn init_logging(filter: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    Ok(())
}
