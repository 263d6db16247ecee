//! `etcd-snapshot`: prepare the command line (flags before the subcommand, `--config FILE`),
//! parse it, set up logging, and run the subcommand on a tokio runtime.

use clap::Parser;
use etcd_snapshot::cli::{self, Cli, argv, logging};
use std::process::ExitCode;

fn main() -> ExitCode {
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
    // The agent runs on one thread (blocking work, such as compression and file I/O, still goes
    // to tokio's blocking pool): it holds every record of its node in memory, and each thread
    // that allocates may get a malloc arena of its own, so a thread per core (the multi-thread
    // runtime's default) cost 10 MiB of fragmentation at 10,000 records on 2 cores, and grows
    // with the node's cores; its snapshots are bound by etcd's stream, not by the CPU (BENCHMARKS.md).
    let runtime = if matches!(cli.command, cli::Command::Agent(_)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
