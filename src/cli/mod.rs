//! The `etcd-snapshot` command line: argument definitions and one module per subcommand.

pub mod args;
pub mod argv;
mod common;
pub mod config_file;
mod crd;
mod delete;
pub mod logging;
pub mod ls;
mod operator;
mod prune;
pub mod restore;
mod save;
mod trigger;
mod uninstall;
mod verify;

pub use args::{Cli, Command};

use crate::retention::RetentionError;
use crate::snapshot::SnapshotError;
use crate::storage::config::S3ConfigError;
use crate::storage::local::LocalError;
use crate::storage::s3::S3Error;

/// Why a subcommand failed; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Flags that make no sense together, or a bad value.
    #[error("{0}")]
    Usage(String),
    /// Writing to standard output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// YAML rendering failed.
    #[error("rendering YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// The snapshot failed.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The S3 settings are invalid.
    #[error(transparent)]
    S3Config(#[from] S3ConfigError),
    /// An S3 operation failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// A local storage operation failed.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// A retention option is invalid.
    #[error(transparent)]
    Retention(#[from] RetentionError),
    /// Restore or verify failed.
    #[error(transparent)]
    Restore(#[from] crate::restore::RestoreError),
    /// Part of the work failed (already reported line by line).
    #[error("{0}")]
    Failed(String),
}

/// Run one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Crd => crd::run(),
        Command::Save(args) => save::run(args).await,
        Command::Ls(args) => ls::run(args).await,
        Command::Delete(args) => delete::run(args).await,
        Command::Prune(args) => prune::run(args).await,
        Command::Controller(args) => operator::controller(args).await,
        Command::Agent(args) => operator::agent(args).await,
        Command::Restore(args) => Ok(restore::run(args).await?),
        Command::Verify(args) => Ok(verify::run(args).await?),
        Command::Trigger(args) => trigger::run(args).await,
        Command::Uninstall(args) => uninstall::run(args).await,
    }
}
