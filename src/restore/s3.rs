//! S3 as a restore source. The object's body is streamed through the checks in one pass (sha256
//! of the stored bytes, decryption, decompression, etcd's trailing sha256) into the plain
//! snapshot; the hash is compared with the one recorded in the object's metadata once the whole
//! body has gone by, and nothing is returned (the data dir is not touched) unless it matched. A
//! k3s `.zip` is downloaded into the work dir first (it needs seeking) and checked like a local
//! file.

use super::check::{check_local, check_stream, compare};
use super::prepared::{Decrypt, OwnedTarget, Prepared, Recorded};
use super::version::RecordedRelease;
use super::{RestoreError, Target, blocking, sibling_name};
use crate::api::Compression;
use crate::consts::s3_metadata;
use crate::naming::validate_snapshot_name;
use crate::snapshot::crypt::EncryptionKey;
use crate::storage::s3::S3Store;
use bytes::Bytes;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Removes a downloaded file on drop unless taken over.
struct Download(Option<PathBuf>);

impl Drop for Download {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Download S3 object `name`, check it against its recorded sha256 and `recorded`, and make a
/// plain snapshot of it at `target`.
pub(super) async fn prepare(
    store: &S3Store,
    name: &str,
    mut recorded: Vec<Recorded>,
    key: Option<EncryptionKey>,
    target: Target<'_>,
) -> Result<Prepared, RestoreError> {
    validate_snapshot_name(name)?;
    let location = store.config().location(name);
    let Some(entry) = store.head(name).await? else {
        return Err(RestoreError::NotFound {
            name: name.to_string(),
            location: store.config().location(""),
        });
    };
    let decrypt = Decrypt::of(name, key);
    if let Decrypt::With(None) = decrypt {
        // Say so before downloading anything.
        return Err(RestoreError::KeyRequired {
            name: location,
            key_id: entry
                .metadata
                .get(s3_metadata::ENCRYPTION_KEY_ID)
                .filter(|id| !id.is_empty() && id.len() <= 64)
                .cloned()
                .unwrap_or_else(|| "unknown".into()),
        });
    }
    if let Some(sha256) = entry
        .sha256()
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        recorded.push(Recorded {
            sha256,
            from: "S3 object metadata".into(),
        });
    }
    let dir: PathBuf = match target {
        Target::WorkDir(d) => d.to_path_buf(),
        Target::File(f) => f
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    };
    let etcd_version = entry
        .metadata
        .get(s3_metadata::ETCD_VERSION)
        .and_then(|v| RecordedRelease::parse(v, "the S3 object metadata"));
    let compression = Compression::from_name(name);
    if compression != Compression::Zip {
        let mut prepared = stream(store, name, &location, decrypt, recorded, target).await?;
        let checks = prepared.checks_mut();
        checks.metadata = store.get_extra_metadata(name).await.ok().flatten();
        checks.recorded_etcd_version = etcd_version;
        return Ok(prepared);
    }
    // A k3s zip needs seeking: downloaded first, then checked like a local file.
    let dl_path = sibling_name(&dir.join(name), "download");
    let mut download = Download(Some(dl_path.clone()));
    // A scratch file: it is fsynced only if it becomes the caller's file (below).
    let downloaded = store.download_scratch(name, &dl_path).await?;
    // Fail on a mismatch before reading the download again.
    compare(&location, &downloaded.sha256, &recorded)?;
    let metadata = store.get_extra_metadata(name).await.ok().flatten();

    // Neither compressed nor encrypted: checked in place, the download itself is the result.
    let in_place = compression == Compression::None && !decrypt.encrypted();
    let owned_target = OwnedTarget::from(target);
    let check_target = match &owned_target {
        _ if in_place => OwnedTarget::WorkDir(dir.clone()),
        t => t.clone(),
    };
    let (display, path) = (location.clone(), dl_path.clone());
    let mut prepared = blocking(move || {
        check_local(
            &path,
            &display,
            compression,
            &decrypt,
            &recorded,
            &check_target,
        )
    })
    .await?;
    prepared.checks_mut().metadata = metadata;
    prepared.checks_mut().recorded_etcd_version = etcd_version;
    if in_place {
        match owned_target {
            OwnedTarget::WorkDir(_) => {
                download.0 = None;
                prepared.take_ownership(dl_path);
            }
            OwnedTarget::File(f) => {
                if std::fs::symlink_metadata(&f).is_ok() {
                    return Err(super::io_err("writing", &f)(std::io::Error::from(
                        std::io::ErrorKind::AlreadyExists,
                    )));
                }
                std::fs::File::open(&dl_path)
                    .and_then(|file| file.sync_all())
                    .map_err(super::io_err("syncing", &dl_path))?;
                std::fs::rename(&dl_path, &f).map_err(super::io_err("renaming to", &f))?;
                download.0 = None;
                prepared.relocate(f);
            }
        }
    }
    Ok(prepared)
}

/// Chunks in flight between the download and the checks (a few MiB at most).
const STREAM_CHUNKS: usize = 64;

/// Download and check in one pass: the body goes straight from S3 through the checks
/// ([`check_stream`]) into the plain snapshot at `target`; the stored bytes never touch the disk.
/// A download error wins over whatever the checks made of the cut-short stream.
async fn stream(
    store: &S3Store,
    name: &str,
    location: &str,
    decrypt: Decrypt,
    recorded: Vec<Recorded>,
    target: Target<'_>,
) -> Result<Prepared, RestoreError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(STREAM_CHUNKS);
    let compression = Compression::from_name(name);
    let target = OwnedTarget::from(target);
    let display = location.to_string();
    let checks = blocking(move || {
        check_stream(
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            &display,
            compression,
            &decrypt,
            &recorded,
            &target,
        )
    });
    let (downloaded, checked) = tokio::join!(store.download_stream(name, tx), checks);
    downloaded?;
    checked
}

/// The downloaded chunks as a blocking [`Read`]; the end of the channel is the end of the data.
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}
