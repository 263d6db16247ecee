//! The snapshot data path: one etcd Maintenance.Snapshot stream, etcd's trailing sha256 checked
//! as the bytes arrive, optional zstd, optional encryption (see [`crypt`]), and the result written to a local file and/or uploaded to
//! S3 from the same stream, with bounded buffers.

pub mod crypt;
pub mod etcd;
mod pipeline;
pub mod trailer;

pub use etcd::{EtcdConfig, MemberInfo};
pub use pipeline::{CopyReport, Progress, SaveReport, SaveRequest, SnapshotRecord, save};

use crate::naming::NameError;
use crate::storage::local::LocalError;
use crate::storage::s3::S3Error;

/// Why a snapshot could not be taken or stored. Each variant is one clear line.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// An etcd endpoint is malformed.
    #[error("bad etcd endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// TLS settings for etcd are unusable.
    #[error("{0}")]
    Tls(String),
    /// etcd does not answer.
    #[error("cannot reach etcd at {endpoints}: {reason}")]
    Unreachable {
        /// The endpoints tried.
        endpoints: String,
        /// What happened.
        reason: String,
    },
    /// The snapshot stream broke off with an error.
    #[error("etcd snapshot stream failed after {received} bytes: {reason}")]
    Stream {
        /// Bytes received before the failure.
        received: u64,
        /// The error.
        reason: String,
    },
    /// The stream ended without error but before all announced bytes arrived.
    #[error(
        "etcd snapshot stream cut short: {received} bytes received, {remaining} more were announced"
    )]
    CutShort {
        /// Bytes received.
        received: u64,
        /// Bytes still announced by the last message.
        remaining: u64,
    },
    /// etcd's trailing sha256 does not match the data: the snapshot is corrupt.
    #[error(
        "snapshot hash mismatch: etcd's trailing sha256 {expected} does not match the data ({actual}); the snapshot is corrupt and was not stored"
    )]
    HashMismatch {
        /// Hex of the trailing hash.
        expected: String,
        /// Hex of the computed hash.
        actual: String,
    },
    /// The stream is too short to carry etcd's trailing hash.
    #[error("snapshot of {0} bytes is too short to be an etcd snapshot (no trailing sha256)")]
    TooShort(u64),
    /// Compression failed.
    #[error("compressing the snapshot: {0}")]
    Compress(String),
    /// Encryption failed (never carries key material).
    #[error("encrypting the snapshot: {0}")]
    Encrypt(String),
    /// The local copy failed.
    #[error(transparent)]
    Local(#[from] LocalError),
    /// The S3 copy failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The snapshot name is unsafe.
    #[error(transparent)]
    Name(#[from] NameError),
    /// Neither a local directory nor S3 was given.
    #[error("nowhere to store the snapshot: enable local storage or S3")]
    NoDestination,
    /// The save was cancelled (e.g. the agent is stopping) before the snapshot was complete.
    #[error(
        "cancelled before the snapshot was complete; its temporary file and multipart upload were discarded"
    )]
    Cancelled,
    /// An internal task failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl SnapshotError {
    /// PascalCase reason, for Event reasons and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            SnapshotError::BadEndpoint { .. } => "BadEndpoint",
            SnapshotError::Tls(_) => "EtcdTLS",
            SnapshotError::Unreachable { .. } => "EtcdUnreachable",
            SnapshotError::Stream { .. } => "StreamFailed",
            SnapshotError::CutShort { .. } => "StreamCutShort",
            SnapshotError::HashMismatch { .. } => "HashMismatch",
            SnapshotError::TooShort(_) => "TooShort",
            SnapshotError::Compress(_) => "CompressionFailed",
            SnapshotError::Encrypt(_) => "EncryptionFailed",
            SnapshotError::Local(LocalError::NoSpace { .. }) => "NoSpace",
            SnapshotError::Local(_) => "LocalStorage",
            SnapshotError::S3(_) => "S3",
            SnapshotError::Name(_) => "BadName",
            SnapshotError::NoDestination => "NoDestination",
            SnapshotError::Cancelled => "Cancelled",
            SnapshotError::Internal(_) => "Internal",
        }
    }
}
