//! The `etcd-snapshot` command line: argument definitions and one module per subcommand.

pub mod args;
pub mod config_file;
mod crd;

pub use args::{Cli, Command};

/// Why a subcommand failed; printed as one line by `main`.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The subcommand exists in the interface but is not built yet.
    #[error("`etcd-snapshot {0}` is not implemented yet")]
    NotImplemented(&'static str),
    /// Writing to standard output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// The CRDs could not be rendered.
    #[error("rendering the CRDs: {0}")]
    Crd(#[from] serde_yaml::Error),
}

/// Run one parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Crd => crd::run(),
        Command::Controller(_) => Err(CliError::NotImplemented("controller")),
        Command::Agent(_) => Err(CliError::NotImplemented("agent")),
        Command::Save(_) => Err(CliError::NotImplemented("save")),
        Command::Ls(_) => Err(CliError::NotImplemented("ls")),
        Command::Delete(_) => Err(CliError::NotImplemented("delete")),
        Command::Prune(_) => Err(CliError::NotImplemented("prune")),
        Command::Restore(_) => Err(CliError::NotImplemented("restore")),
        Command::Verify(_) => Err(CliError::NotImplemented("verify")),
        Command::Trigger(_) => Err(CliError::NotImplemented("trigger")),
    }
}
