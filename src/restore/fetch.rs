//! Fetch a snapshot and check it before anything touches a data dir: the sha256 of the stored
//! bytes against the recorded one, the compression against the name, and etcd's trailing
//! sha256 as the decompressed bytes go by. Each file is read once (a k3s `.zip` twice: it is a
//! seekable format, so it is hashed first and then opened as an archive).

use super::check::check_local;
use super::prepared::{Decrypt, OwnedTarget, Prepared, Recorded, Target};
use super::version::RecordedRelease;
use super::{RestoreError, s3};
use crate::api::Compression;
use crate::naming::{NameError, SnapshotName};
use crate::snapshot::crypt::EncryptionKey;
use crate::storage::local::LocalDir;
use crate::storage::s3::S3Store;
use std::path::{Path, PathBuf};

/// A command-line snapshot argument, read once: an explicit path (absolute, or starting with
/// `./` or `../`) or a snapshot name, checked here (no `/`, no `..`, not hidden).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spec {
    /// A file named by its path.
    Path(PathBuf),
    /// A snapshot name (in the snapshot directory, or in S3).
    Name(SnapshotName),
}

impl Spec {
    /// Read a command-line snapshot argument.
    pub fn parse(spec: &str) -> Result<Spec, NameError> {
        if Source::is_explicit_path(spec) {
            Ok(Spec::Path(PathBuf::from(spec)))
        } else {
            SnapshotName::new(spec).map(Spec::Name)
        }
    }
}

/// Where a snapshot comes from.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    /// A file named by its path. Its recorded checksum is read from `.checksums/<file name>`
    /// beside it, if there is one.
    Path(PathBuf),
    /// A snapshot name in a local snapshot directory (names that would leave it are refused).
    Local {
        /// The snapshot directory.
        dir: &'a LocalDir,
        /// The snapshot name.
        name: String,
    },
    /// An object in S3, downloaded into the work dir; its recorded checksum is in its metadata.
    S3 {
        /// The store.
        store: &'a S3Store,
        /// The snapshot (object) name, without the folder.
        name: String,
    },
}

impl<'a> Source<'a> {
    /// Read a command-line snapshot argument: an explicit path (absolute, or starting with `./`
    /// or `../`) is a file; anything else is a snapshot name, in S3 when a store is given, else
    /// in `dir`. Names are checked: no `/`, no `..`, not hidden.
    pub fn resolve(
        spec: &str,
        dir: &'a LocalDir,
        s3: Option<&'a S3Store>,
    ) -> Result<Source<'a>, RestoreError> {
        Ok(Source::of(&Spec::parse(spec)?, dir, s3))
    }

    /// The source of a parsed argument: a name is in S3 when a store is given, else in `dir`.
    pub fn of(spec: &Spec, dir: &'a LocalDir, s3: Option<&'a S3Store>) -> Source<'a> {
        match (spec, s3) {
            (Spec::Path(path), _) => Source::Path(path.clone()),
            (Spec::Name(name), Some(store)) => Source::S3 {
                store,
                name: name.to_string(),
            },
            (Spec::Name(name), None) => Source::Local {
                dir,
                name: name.to_string(),
            },
        }
    }

    /// Whether a command-line snapshot argument names a file rather than a snapshot: absolute,
    /// or starting with `./` or `../`.
    pub fn is_explicit_path(spec: &str) -> bool {
        spec.starts_with('/') || spec.starts_with("./") || spec.starts_with("../")
    }

    /// The snapshot's file or object name (which tells its compression).
    pub fn name(&self) -> String {
        match self {
            Source::Path(p) => p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            Source::Local { name, .. } | Source::S3 { name, .. } => name.clone(),
        }
    }
}

/// Options of [`prepare_with`] and [`super::verify_with`].
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// An extra hash the stored bytes must have (e.g. an ETCDSnapshotFile's `status.sha256`).
    pub expected_sha256: Option<String>,
    /// The key to decrypt an encrypted (`.enc`) snapshot with.
    pub encryption_key: Option<EncryptionKey>,
    /// The etcd release the caller recorded for the snapshot (an ETCDSnapshotFile's
    /// `status.etcdVersion`); the version rule takes it when it is newer than the data's own.
    pub recorded_etcd_version: Option<RecordedRelease>,
}

/// Fetch `source`, check it and make a plain snapshot of it at `target`. `expected_sha256` is an
/// extra hash the stored bytes must have (e.g. an ETCDSnapshotFile's `status.sha256`). Nothing
/// is left behind in the target's directory when it fails.
pub async fn prepare(
    source: &Source<'_>,
    expected_sha256: Option<&str>,
    target: Target<'_>,
) -> Result<Prepared, RestoreError> {
    let options = PrepareOptions {
        expected_sha256: expected_sha256.map(String::from),
        ..Default::default()
    };
    prepare_with(source, &options, target).await
}

/// [`prepare`] with options: also decrypts an encrypted snapshot with the key given (and fails
/// with one clear error when the key is missing or wrong, or the data was tampered with).
pub async fn prepare_with(
    source: &Source<'_>,
    options: &PrepareOptions,
    target: Target<'_>,
) -> Result<Prepared, RestoreError> {
    let key = options.encryption_key.clone();
    let mut recorded = Vec::new();
    if let Some(hash) = &options.expected_sha256 {
        recorded.push(Recorded {
            sha256: hash.trim().to_ascii_lowercase(),
            from: "expected by the caller".into(),
        });
    }
    let (path, dir, name) = match source {
        Source::S3 { store, name } => {
            let mut prepared = s3::prepare(store, name, recorded, key, target).await?;
            let checks = prepared.checks_mut();
            checks.recorded_etcd_version = newer(
                checks.recorded_etcd_version.take(),
                options.recorded_etcd_version.clone(),
            );
            return Ok(prepared);
        }
        Source::Path(path) => {
            let name = source.name();
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            let dir = LocalDir::new(parent.unwrap_or(Path::new(".")));
            (path.clone(), dir, name)
        }
        Source::Local { dir, name } => {
            crate::naming::validate_snapshot_name(name)?;
            let path = dir.path_of(name)?;
            if dir.get(name)?.is_none() {
                return Err(RestoreError::NotFound {
                    name: name.clone(),
                    location: dir.path().display().to_string(),
                });
            }
            (path, (*dir).clone(), name.clone())
        }
    };
    // Beside an explicit path the sidecars are optional and may not be ours: read what is there.
    let explicit = matches!(source, Source::Path(_));
    let checksum = match dir.read_checksum(&name) {
        Ok(c) => c,
        Err(_) if explicit => None,
        Err(e) => return Err(e.into()),
    };
    if let Some(sha256) = checksum {
        recorded.push(Recorded {
            sha256,
            from: format!(".checksums/{name}"),
        });
    }
    let metadata = dir.read_metadata(&name).ok().flatten();
    let target = OwnedTarget::from(target);
    let mut prepared = super::blocking(move || {
        let compression = Compression::from_name(&name);
        let decrypt = Decrypt::of(&name, key);
        check_local(
            &path,
            &path.display().to_string(),
            compression,
            &decrypt,
            &recorded,
            &target,
        )
    })
    .await?;
    prepared.checks_mut().metadata = metadata;
    prepared.checks_mut().recorded_etcd_version = options.recorded_etcd_version.clone();
    Ok(prepared)
}

/// The newer of two recorded releases.
fn newer(a: Option<RecordedRelease>, b: Option<RecordedRelease>) -> Option<RecordedRelease> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.release > a.release { b } else { a }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_traversal_but_takes_explicit_paths() {
        let dir = LocalDir::new(Path::new("/var/lib/snaps"));
        for bad in ["..", "a/../b", "a/b", ".hidden", "..\\x"] {
            assert!(Source::resolve(bad, &dir, None).is_err(), "{bad}");
        }
        assert!(matches!(
            Source::resolve("../elsewhere/s", &dir, None),
            Ok(Source::Path(_))
        ));
        assert!(matches!(
            Source::resolve("on-demand-n-1", &dir, None),
            Ok(Source::Local { .. })
        ));
    }
}
