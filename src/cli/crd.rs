//! `etcd-snapshot crd`: print the CRDs generated from the Rust types.

use super::CliError;
use std::io::Write;

/// Print both CRDs as one YAML stream (the content of `crds/`).
pub fn run() -> Result<(), CliError> {
    let yaml = crate::api::crds_yaml()?;
    std::io::stdout().lock().write_all(yaml.as_bytes())?;
    Ok(())
}
