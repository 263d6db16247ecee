//! What a prepared restore source is made of, shared by the fetching ([`super::fetch`]), the
//! checking ([`super::check`]) and the S3 reading ([`super::s3`]) modules: where the plain snapshot
//! goes, what was checked, and whether the stored bytes are encrypted.

use super::version::RecordedRelease;
use crate::api::Compression;
use crate::naming::is_encrypted_name;
use crate::snapshot::crypt::EncryptionKey;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where the plain (decompressed, checked) snapshot goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// A file of ours in this directory, removed when the [`Prepared`] is dropped. A local
    /// uncompressed snapshot is used where it is, not copied.
    WorkDir(&'a Path),
    /// Exactly this file (0600), which must not exist yet. It appears only once every check has
    /// passed; it stays after the [`Prepared`] is dropped.
    File(&'a Path),
}

/// A recorded sha256 that the stored bytes matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The hash (lowercase hex).
    pub sha256: String,
    /// Where it was recorded (`.checksums/<name>`, S3 object metadata, the caller).
    pub from: String,
}

/// Everything that was checked. A [`Prepared`] exists only when every check passed.
#[derive(Debug, Clone)]
pub struct Checks {
    /// The snapshot: its path or S3 location.
    pub source: String,
    /// Compression of the stored bytes (from the name, confirmed by the content).
    pub compression: Compression,
    /// Size of the stored bytes.
    pub stored_size: u64,
    /// sha256 of the stored bytes (lowercase hex).
    pub stored_sha256: String,
    /// Recorded hashes the stored bytes matched; empty when none was recorded (k3s records none).
    pub recorded: Vec<Recorded>,
    /// Size of the plain snapshot, etcd's 32-byte trailing sha256 included (which matched).
    pub snapshot_size: u64,
    /// Id of the key the stored bytes were encrypted with (every segment authenticated), when
    /// they were encrypted.
    pub encryption_key_id: Option<String>,
    /// Extra metadata stored beside the snapshot (what cluster state it came from), if any.
    pub metadata: Option<BTreeMap<String, String>>,
    /// The etcd release recorded for the snapshot (S3 object metadata, or the caller's record),
    /// if any.
    pub recorded_etcd_version: Option<RecordedRelease>,
}

/// A plain etcd snapshot that passed every check, ready for `snapshot restore`.
#[derive(Debug)]
pub struct Prepared {
    path: PathBuf,
    checks: Checks,
    owned: Option<PathBuf>,
}

impl Prepared {
    /// A checked snapshot at `path`; `owned` is removed when this is dropped.
    pub(super) fn new(path: PathBuf, checks: Checks, owned: Option<PathBuf>) -> Prepared {
        Prepared {
            path,
            checks,
            owned,
        }
    }

    /// The plain snapshot file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the plain snapshot is a file of ours (written as it was checked, removed on
    /// drop), not a snapshot used where it is.
    pub fn is_own_copy(&self) -> bool {
        self.owned.is_some()
    }

    /// What was checked.
    pub fn checks(&self) -> &Checks {
        &self.checks
    }

    pub(super) fn checks_mut(&mut self) -> &mut Checks {
        &mut self.checks
    }

    /// The plain snapshot at `path` is ours: remove it on drop.
    pub(super) fn take_ownership(&mut self, path: PathBuf) {
        self.path = path.clone();
        self.owned = Some(path);
    }

    /// The plain snapshot was moved to `path`, which the caller keeps.
    pub(super) fn relocate(&mut self, path: PathBuf) {
        self.path = path;
        self.owned = None;
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        if let Some(path) = self.owned.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Whether the stored bytes are to be decrypted (an `.enc` name), and with which key.
#[derive(Debug, Clone)]
pub(super) enum Decrypt {
    /// Not encrypted.
    No,
    /// Encrypted; decrypt with this key, or fail asking for one.
    With(Option<EncryptionKey>),
}

impl Decrypt {
    /// From the snapshot's name and the key given.
    pub(super) fn of(name: &str, key: Option<EncryptionKey>) -> Decrypt {
        if is_encrypted_name(name) {
            Decrypt::With(key)
        } else {
            Decrypt::No
        }
    }

    /// Whether the stored bytes are encrypted.
    pub(super) fn encrypted(&self) -> bool {
        matches!(self, Decrypt::With(_))
    }
}

/// [`Target`] with owned paths, for blocking tasks.
#[derive(Debug, Clone)]
pub(super) enum OwnedTarget {
    /// See [`Target::WorkDir`].
    WorkDir(PathBuf),
    /// See [`Target::File`].
    File(PathBuf),
}

impl From<Target<'_>> for OwnedTarget {
    fn from(t: Target<'_>) -> Self {
        match t {
            Target::WorkDir(d) => OwnedTarget::WorkDir(d.to_path_buf()),
            Target::File(f) => OwnedTarget::File(f.to_path_buf()),
        }
    }
}
