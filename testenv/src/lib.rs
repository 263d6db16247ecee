//! The real test environment of etcd-snapshot-operator: etcd 3.4 and 3.5, SeaweedFS S3 and a real
//! kube-apiserver, started on 127.0.0.1 with ports picked at run time, and stopped again when the
//! handle is dropped.
//!
//! The binaries are installed by `scripts/install-test-deps.sh` (which `make test` runs) into the
//! cache directory (`$ESO_CACHE`, default `~/.cache/etcd-snapshot-operator`), under `bin/`.
//!
//! Every child process is started under `setpriv --pdeathsig KILL`, so even a test binary that is
//! killed outright leaves nothing running. Start environments from the test's own thread (not from
//! a short-lived helper thread): the death signal follows the thread that spawned the child.

mod apiserver;
pub mod cluster;
mod etcd;
mod host_state;
mod process;
mod s3;
mod tls;

pub use apiserver::{ApiServer, ApiServerOptions, ApiUser};
pub use cluster::Cluster;
pub use etcd::{EtcdCluster, EtcdOptions, EtcdVersion};
pub use host_state::HostState;
pub use process::{Proc, free_port};
pub use s3::{S3Options, S3Server};
pub use tls::TlsFiles;

use std::path::PathBuf;

/// Anything that stops the test environment from starting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary the environment needs is not installed.
    #[error("{0} is not installed: run `make test-deps` (scripts/install-test-deps.sh) first")]
    Missing(String),
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A server did not come up; carries the tail of its log.
    #[error("{0}")]
    Start(String),
    /// Certificate generation failed.
    #[error("generating test certificates: {0}")]
    Cert(#[from] rcgen::Error),
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The cache directory that holds the installed test binaries (outside the repository).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("ESO_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("etcd-snapshot-operator")
}

/// Path of a binary installed into `$ESO_CACHE/bin` by `scripts/install-test-deps.sh`.
pub fn bin(name: &str) -> Result<PathBuf> {
    let path = cache_dir().join("bin").join(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(Error::Missing(path.display().to_string()))
    }
}

/// `kubectl` 1.35, installed into `$ESO_CACHE/bin` by `scripts/install-helm-kubectl.sh` (never the
/// one on `PATH`: the tests must not depend on whatever a machine happens to ship).
pub fn kubectl() -> Result<PathBuf> {
    bin("kubectl")
}

/// `helm` v4, installed into `$ESO_CACHE/bin` by `scripts/install-helm-kubectl.sh`.
pub fn helm() -> Result<PathBuf> {
    bin("helm")
}

/// Whether to keep temporary directories (logs, data) after a run, for debugging.
pub(crate) fn keep_temp() -> bool {
    std::env::var_os("ESO_KEEP_TESTENV").is_some()
}

/// A temporary directory, kept when `ESO_KEEP_TESTENV` is set.
pub(crate) fn temp_dir(prefix: &str) -> Result<tempfile::TempDir> {
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(io_err("creating a temporary directory"))?;
    if keep_temp() {
        dir.disable_cleanup(true);
        eprintln!("testenv: keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// The source tree the tests run from: the workspace root (the folder holding `Cargo.lock`)
/// above the `CARGO_MANIFEST_DIR` that cargo sets when it runs a test or a binary.
///
/// Read at run time on purpose: cargo reuses a workspace member's compiled artifacts when the same
/// sources sit at another path (a CI clone sharing the target directory), so a path baked in with
/// `env!` can name another checkout, or one that is gone.
pub fn repo_root() -> std::path::PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    start
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map_or(start.clone(), std::path::Path::to_path_buf)
}
