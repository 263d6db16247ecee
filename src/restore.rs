//! Restore and cluster reset, without Kubernetes (the API server may be down).
//!
//! ```text
//! fetch (path | name in the snapshot dir | S3 object)
//!   -> sha256 of the stored bytes, compared with the recorded one (.checksums/<name>, S3 metadata)
//!   -> decrypt (.enc: every segment authenticated, wrong key named by its id)
//!   -> decompress (.zst streamed, k3s .zip), etcd's trailing sha256 checked as the bytes go by
//!   -> the etcd version of the data (its `meta` bucket; S3 metadata or the record if newer)
//!      against the tool: never data of a newer etcd minor than the tool, etcdctl only for 3.4
//!   -> etcdutl (3.5+) / etcdctl (3.4 data) snapshot restore into a staging dir beside the data
//!      dir, with `--bump-revision N --mark-compacted` unless the bump is turned off
//!   -> the current data dir is moved aside to <data-dir>-old-<unix> (never deleted)
//!   -> the staging dir is renamed into place
//! ```
//!
//! Every check runs before anything touches the data dir, and the old data dir is only moved
//! once the new one has been fully restored. Whatever fails leaves the data dir as it was and no
//! files of ours behind.

mod bolt;
mod check;
mod datadir;
mod fetch;
mod prepared;
mod s3;
mod tools;
mod version;

pub use bolt::BoltError;
pub use datadir::{Restored, cluster_reset, restore_into, restore_prepared_into};
pub(crate) use datadir::{ScratchDir, existing_db};
pub use fetch::{PrepareOptions, Source, Spec, prepare, prepare_with};
pub use prepared::{Checks, Prepared, Recorded, Target};
pub use tools::{SnapshotStatus, ToolKind, Toolbox, Tools};
pub use version::{BUMP_SINCE, DataVersion, Minor, RecordedRelease, Release, read_data_version};

/// How far `restore` raises etcd's revision by default (`--bump-revision`), the amount etcd's
/// own recovery guide for Kubernetes uses. It must exceed the revisions the cluster wrote after
/// the snapshot was taken, so that no revision number a watcher or cache has seen comes back
/// with other contents: 10^9 covers 1,000 writes a second for 11 days (a busy cluster writes
/// tens to hundreds), and costs nothing (revisions are 64-bit: 9 × 10^9 such bumps fit).
pub const DEFAULT_BUMP_REVISION: u64 = 1_000_000_000;

use crate::naming::NameError;
use crate::snapshot::crypt::CryptError;
use crate::storage::config::S3ConfigError;
use crate::storage::local::LocalError;
use crate::storage::s3::S3Error;
use std::path::{Path, PathBuf};

/// Why a snapshot could not be fetched, checked, restored or verified. Each variant is one line.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The snapshot does not exist where it was looked for.
    #[error("snapshot {name:?} not found in {location}")]
    NotFound {
        /// Name or path as given.
        name: String,
        /// Where it was looked for (a directory, an S3 location).
        location: String,
    },
    /// The stored bytes do not hash to the recorded sha256.
    #[error(
        "checksum mismatch for {name}: recorded sha256 {expected} ({recorded_in}) but the stored bytes hash to {actual}; the file is corrupt or not the recorded snapshot"
    )]
    ChecksumMismatch {
        /// The snapshot.
        name: String,
        /// The recorded hash.
        expected: String,
        /// The hash of the stored bytes.
        actual: String,
        /// Where the recorded hash came from.
        recorded_in: String,
    },
    /// etcd's trailing sha256 does not match the database: the snapshot is corrupt.
    #[error(
        "etcd hash mismatch in {name}: the trailing sha256 {expected} does not match the database ({actual}); the snapshot is corrupt"
    )]
    EtcdHashMismatch {
        /// The snapshot.
        name: String,
        /// Hex of the trailing 32 bytes.
        expected: String,
        /// Hex of the sha256 of the data before them.
        actual: String,
    },
    /// Too short to carry etcd's trailing sha256.
    #[error("{name} is {size} bytes, too short to be an etcd snapshot (no trailing sha256)")]
    TooShort {
        /// The snapshot.
        name: String,
        /// Size of the (decompressed) snapshot.
        size: u64,
    },
    /// The content does not match the compression the name implies.
    #[error("{name} is named as {named} but holds {found}")]
    NotCompressedAsNamed {
        /// The snapshot.
        name: String,
        /// What the name implies.
        named: &'static str,
        /// What the bytes are.
        found: &'static str,
    },
    /// The compressed data is damaged (truncated frame, bad CRC, unexpected zip layout).
    #[error("decompressing {name} ({format}): {reason}")]
    Decompress {
        /// The snapshot.
        name: String,
        /// `zstd` or `zip`.
        format: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The snapshot is encrypted and no key was given.
    #[error(
        "{name} is encrypted (key id {key_id}) and no encryption key was given: pass the key file with --encryption-key-file"
    )]
    KeyRequired {
        /// The snapshot.
        name: String,
        /// Id of the key it was encrypted with (`unknown` when it cannot be told yet).
        key_id: String,
    },
    /// Decryption failed: wrong key, or the encrypted data was changed, cut short or extended.
    #[error("decrypting {name}: {source}")]
    Decrypt {
        /// The snapshot.
        name: String,
        /// What failed (never key material).
        source: CryptError,
    },
    /// Neither etcdutl nor etcdctl can be run.
    #[error(
        "neither etcdutl (etcd 3.5+) nor etcdctl (etcd 3.4) was found: {searched}; install one or point ETCD_SNAPSHOT_ETCDUTL / ETCD_SNAPSHOT_ETCDCTL at it"
    )]
    ToolMissing {
        /// What was looked at.
        searched: String,
    },
    /// The snapshot holds data of a newer etcd minor version than any tool here (or etcd 3.5+
    /// data and only etcdctl).
    #[error(
        "the snapshot holds {data}, and no restore tool here may restore it: {tools}; use etcdutl {minor} or newer (ETCD_SNAPSHOT_ETCDUTL); nothing was changed"
    )]
    SnapshotTooNew {
        /// The data's version and how it is known.
        data: String,
        /// The data's minor version.
        minor: String,
        /// Each tool and why it may not.
        tools: String,
    },
    /// The revision bump was asked for (the default) and no tool here can do it.
    #[error(
        "cannot bump the revision: {tools} (etcdutl {since} and newer have them); point ETCD_SNAPSHOT_ETCDUTL at a newer etcdutl, or pass --no-bump-revision to restore without the bump and then restart everything that watches the API server; nothing was changed"
    )]
    BumpUnsupported {
        /// Each tool and what it lacks.
        tools: String,
        /// The first etcd release that can.
        since: String,
    },
    /// No tool found can be used at all.
    #[error("no usable etcd restore tool: {tools}; nothing was changed")]
    ToolUnusable {
        /// Each tool and why not.
        tools: String,
    },
    /// The etcd version of the data cannot be read from the database file.
    #[error("cannot tell which etcd version wrote {path}: {source}; nothing was changed")]
    DataVersion {
        /// The database file (snapshot or data dir).
        path: String,
        /// Why.
        source: BoltError,
    },
    /// The etcd tool failed; carries the last lines it printed.
    #[error("{tool} failed ({status}): {output_tail}")]
    ToolFailed {
        /// Command, e.g. `etcdutl snapshot restore`.
        tool: String,
        /// Exit status.
        status: String,
        /// Its last output lines, joined with ` | `.
        output_tail: String,
    },
    /// The etcd tool printed something this program cannot read.
    #[error("{tool} printed unexpected output ({reason}): {output}")]
    ToolOutput {
        /// Command.
        tool: String,
        /// Parser message.
        reason: String,
        /// The output (shortened).
        output: String,
    },
    /// The data dir holds no etcd data to reset.
    #[error("{path} is not an etcd data dir ({missing} is missing); nothing to reset")]
    DataDirMissing {
        /// The data dir.
        path: String,
        /// The file or directory that is missing.
        missing: String,
    },
    /// A running etcd holds the data dir's database.
    #[error("{path} is locked by a running etcd: stop etcd on this node first")]
    DataDirInUse {
        /// The locked database file.
        path: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The S3 settings are invalid.
    #[error("S3 settings: {0}")]
    S3Config(#[from] S3ConfigError),
    /// S3 failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The local snapshot directory failed.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The snapshot name is unsafe.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// A background task failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl RestoreError {
    /// PascalCase reason, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            RestoreError::NotFound { .. } => "NotFound",
            RestoreError::ChecksumMismatch { .. } => "ChecksumMismatch",
            RestoreError::EtcdHashMismatch { .. } => "HashMismatch",
            RestoreError::TooShort { .. } => "TooShort",
            RestoreError::NotCompressedAsNamed { .. } => "NotCompressedAsNamed",
            RestoreError::Decompress { .. } => "DecompressFailed",
            RestoreError::KeyRequired { .. } => "EncryptionKeyRequired",
            RestoreError::Decrypt {
                source: CryptError::WrongKey { .. },
                ..
            } => "WrongEncryptionKey",
            RestoreError::Decrypt { .. } => "DecryptFailed",
            RestoreError::ToolMissing { .. } => "ToolMissing",
            RestoreError::SnapshotTooNew { .. } => "SnapshotTooNew",
            RestoreError::BumpUnsupported { .. } => "BumpUnsupported",
            RestoreError::ToolUnusable { .. } => "ToolUnusable",
            RestoreError::DataVersion { .. } => "DataVersionUnknown",
            RestoreError::ToolFailed { .. } | RestoreError::ToolOutput { .. } => "ToolFailed",
            RestoreError::DataDirMissing { .. } => "DataDirMissing",
            RestoreError::DataDirInUse { .. } => "DataDirInUse",
            RestoreError::Io { .. } => "Io",
            RestoreError::S3Config(_) => "InvalidS3Config",
            RestoreError::S3(_) => "S3",
            RestoreError::Local(_) => "LocalStorage",
            RestoreError::Name(_) => "BadName",
            RestoreError::Usage(_) => "Usage",
            RestoreError::Internal(_) => "Internal",
        }
    }

    /// Whether the snapshot itself is bad (as opposed to the environment).
    pub fn is_corrupt_snapshot(&self) -> bool {
        matches!(
            self,
            RestoreError::ChecksumMismatch { .. }
                | RestoreError::EtcdHashMismatch { .. }
                | RestoreError::TooShort { .. }
                | RestoreError::NotCompressedAsNamed { .. }
                | RestoreError::Decompress { .. }
        ) || matches!(self, RestoreError::Decrypt { source, .. } if source.is_damage())
    }
}

/// An `Io` error builder for `map_err`.
pub(crate) fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RestoreError {
    let path = path.display().to_string();
    move |source| RestoreError::Io { op, path, source }
}

/// What [`verify`] found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// The checks of the stored and decompressed bytes.
    pub checks: Checks,
    /// `snapshot status` of the snapshot: revision, key count, size, hash.
    pub status: SnapshotStatus,
    /// The tool that test-restored the snapshot.
    pub tool: ToolKind,
    /// The tool, with its release and path.
    pub tool_description: String,
    /// The etcd version of the snapshot's data.
    pub data_version: DataVersion,
}

/// Fetch `source` into a scratch directory under `work_dir`, check every checksum, test-restore
/// it into a temporary data dir (with a tool that may restore its etcd version) and read
/// `snapshot status`. Everything it creates is removed again, whatever the outcome.
pub async fn verify(
    tools: &Toolbox,
    source: &Source<'_>,
    expected_sha256: Option<&str>,
    work_dir: &Path,
) -> Result<VerifyReport, RestoreError> {
    let options = PrepareOptions {
        expected_sha256: expected_sha256.map(String::from),
        ..Default::default()
    };
    verify_with(tools, source, &options, work_dir).await
}

/// [`verify`] with every option of [`prepare_with`] (an expected sha256, the encryption key, a
/// recorded etcd version).
pub async fn verify_with(
    tools: &Toolbox,
    source: &Source<'_>,
    options: &PrepareOptions,
    work_dir: &Path,
) -> Result<VerifyReport, RestoreError> {
    // No usable tool at all: said before anything is fetched.
    tools.select(None, false)?;
    let scratch = datadir::ScratchDir::create(work_dir, "verify")?;
    let prepared = prepare_with(source, options, Target::WorkDir(scratch.path())).await?;
    let snapshot = prepared.path().to_path_buf();
    let recorded = prepared.checks().recorded_etcd_version.clone();
    let data_version = blocking(move || data_version_of(&snapshot, recorded.as_ref())).await?;
    let tool = tools.select(Some(&data_version), false)?.clone();
    let tool_bg = tool.clone();
    let snapshot = prepared.path().to_path_buf();
    let data_dir = scratch.path().join("data");
    let status = blocking(move || {
        tool_bg.restore(
            &snapshot,
            &data_dir,
            "verify",
            "http://127.0.0.1:2380",
            false,
            None,
        )?;
        tool_bg.status(&snapshot)
    })
    .await?;
    let checks = prepared.checks().clone();
    drop(prepared);
    drop(scratch);
    Ok(VerifyReport {
        checks,
        status,
        tool: tool.kind(),
        tool_description: tool.describe(),
        data_version,
    })
}

/// The etcd version of the database file `db` (its `meta` bucket), or the recorded one when
/// that is newer (blocking).
pub fn data_version_of(
    db: &Path,
    recorded: Option<&RecordedRelease>,
) -> Result<DataVersion, RestoreError> {
    read_data_version(db)
        .map(|v| v.with_recorded(recorded))
        .map_err(|source| RestoreError::DataVersion {
            path: db.display().to_string(),
            source,
        })
}

/// Run blocking file and process work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RestoreError> + Send + 'static,
) -> Result<T, RestoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RestoreError::Internal(format!("background task: {e}")))?
}

/// Unix seconds now (0 if the clock is before 1970).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A hidden name beside `path` that no other process picks: `.<file name>.<what>-<pid>-<nanos>`.
pub(crate) fn sibling_name(path: &Path, what: &str) -> PathBuf {
    let file = path
        .file_name()
        .map_or_else(|| "snapshot".into(), |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(".{file}.{what}-{}-{nanos}", std::process::id());
    match path.parent() {
        Some(parent) => parent.join(name),
        None => PathBuf::from(name),
    }
}
