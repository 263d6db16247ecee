//! `etcd-snapshot`: prepare the command line (flags before the subcommand, `--config FILE`),
//! parse it, set up logging and dispatch.

use clap::Parser;
use etcd_snapshot::cli::{self, Cli, argv, logging};
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let prepared = match argv::prepare(std::env::args().collect()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for warning in &prepared.warnings {
        eprintln!("warning: {warning}");
    }
    let cli = Cli::parse_from(prepared.argv);
    let operator = matches!(
        cli.command,
        cli::Command::Controller(_) | cli::Command::Agent(_)
    );
    let filter = match (&cli.log_level, cli.debug, operator) {
        (Some(level), _, _) => level.as_str(),
        (None, true, _) => logging::DEBUG_FILTER,
        (None, false, true) => "info",
        (None, false, false) => logging::CLI_FILTER,
    };
    let settings = logging::LogSettings {
        filter,
        operator,
        file: cli.log_file.as_deref(),
        also_stderr: cli.also_log_to_stderr,
    };
    if let Err(e) = logging::init(&settings) {
        eprintln!("error: {e}");
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
