//! Data dir handling: restore into a staging dir beside the data dir, move the old data dir
//! aside (never delete it), rename the new one into place; and membership reset of an existing
//! data dir.

use super::prepared::Prepared;
use super::tools::Tools;
use super::version::DataVersion;
use super::{RestoreError, data_version_of, io_err, sibling_name, unix_now};
use std::fs::TryLockError;
use std::io::ErrorKind;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where the restored data went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The data dir now holding the single-member cluster.
    pub data_dir: PathBuf,
    /// Where the previous data dir was moved (`<data-dir>-old-<unix>`), if there was one.
    pub old_data_dir: Option<PathBuf>,
}

/// A directory of ours, removed with everything in it when dropped. It only ever
/// holds files this program created (downloads, decompressed copies, staging data dirs).
#[derive(Debug)]
pub(crate) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Create `<in_dir>/.<what>-<pid>-<nanos>` (0700).
    pub(crate) fn create(in_dir: &Path, what: &str) -> Result<ScratchDir, RestoreError> {
        let path = sibling_name(&in_dir.join("etcd-snapshot"), what);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(in_dir)
            .map_err(io_err("creating", in_dir))?;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err("creating", &path))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A path that a tool is about to create; removed on drop unless [`StagedDir::disarm`]ed.
struct StagedDir(Option<PathBuf>);

impl StagedDir {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Restore the plain (decompressed, checked) snapshot `snapshot` into `data_dir` as a
/// single-member cluster `member_name=peer_url`, raising the revision by `bump` and marking it
/// compacted when `bump` is `Some` (see [`super::DEFAULT_BUMP_REVISION`]).
///
/// Refused before anything is touched when the snapshot holds data of a newer etcd minor
/// version than `tools`, or `tools` cannot bump. The snapshot is restored into a staging dir
/// beside `data_dir` first (etcd's trailing hash is checked again by the tool); only when that
/// succeeded is the current `data_dir`, if any, moved to `<data_dir>-old-<unix seconds>` and the
/// staging dir renamed into place. If that rename fails the old data dir is moved back. The old
/// data dir is never deleted. etcd must not be running on `data_dir` (refused if it holds the
/// database lock).
pub fn restore_into(
    tools: &Tools,
    snapshot: &Path,
    data_dir: &Path,
    member_name: &str,
    peer_url: &str,
    bump: Option<u64>,
) -> Result<Restored, RestoreError> {
    let data = data_version_of(snapshot, None)?;
    restore_with(
        tools,
        snapshot,
        data_dir,
        (member_name, peer_url),
        false,
        (&data, bump),
    )
}

/// [`restore_into`] of a snapshot that passed every check of [`super::prepare`] (its recorded
/// etcd version counts too). When the plain file is our own copy, written as its bytes went
/// through etcd's trailing-sha256 check, the tool is not asked to hash the whole snapshot a
/// second time (`--skip-hash-check`; it still strips the trailer, which it finds by the size: a
/// multiple of 512 plus 32). A snapshot used in place (a plain file of the snapshot dir, which
/// could change after the check) is hashed by the tool again.
pub fn restore_prepared_into(
    tools: &Tools,
    prepared: &Prepared,
    data_dir: &Path,
    member_name: &str,
    peer_url: &str,
    bump: Option<u64>,
) -> Result<Restored, RestoreError> {
    let checked = prepared.is_own_copy() && prepared.checks().snapshot_size % 512 == 32;
    let data = data_version_of(
        prepared.path(),
        prepared.checks().recorded_etcd_version.as_ref(),
    )?;
    restore_with(
        tools,
        prepared.path(),
        data_dir,
        (member_name, peer_url),
        checked,
        (&data, bump),
    )
}

fn restore_with(
    tools: &Tools,
    snapshot: &Path,
    data_dir: &Path,
    (member_name, peer_url): (&str, &str),
    hash_checked: bool,
    (data, bump): (&DataVersion, Option<u64>),
) -> Result<Restored, RestoreError> {
    tools.check(data, bump.is_some())?;
    refuse_if_running(data_dir)?;
    let staging = staging_dir(data_dir, "restoring")?;
    let mut guard = StagedDir(Some(staging.clone()));
    tools.restore(
        snapshot,
        &staging,
        member_name,
        peer_url,
        hash_checked,
        bump,
    )?;
    let restored = swap_in(&staging, data_dir)?;
    guard.disarm();
    Ok(restored)
}

/// Reset the membership of the existing etcd data in `data_dir` to the single member
/// `member_name=peer_url`, keeping all keys, raising the revision by `bump` and marking it
/// compacted when `bump` is `Some`.
///
/// etcd must be stopped first, cleanly (SIGTERM), so that everything it applied is in its
/// database file: this copies `member/snap/db`, checks its etcd version against `tools`,
/// restores the copy with `--skip-hash-check` into a staging dir beside `data_dir`, moves
/// `data_dir` aside to `<data_dir>-old-<unix seconds>` and renames the staging dir into place.
/// Refused when `data_dir/member` is missing or a running etcd holds the database lock.
pub fn cluster_reset(
    tools: &Tools,
    data_dir: &Path,
    member_name: &str,
    peer_url: &str,
    bump: Option<u64>,
) -> Result<Restored, RestoreError> {
    let db = existing_db(data_dir)?;
    refuse_if_running(data_dir)?;
    let parent = parent_of(data_dir);
    let scratch = ScratchDir::create(&parent, "reset")?;
    let copy = scratch.path().join("db");
    std::fs::copy(&db, &copy).map_err(io_err("copying", &db))?;
    let data = data_version_of(&copy, None)?;
    tools.check(&data, bump.is_some())?;
    let staging = scratch.path().join("data");
    tools.restore(&copy, &staging, member_name, peer_url, true, bump)?;
    swap_in(&staging, data_dir)
}

/// The database file of the etcd data in `data_dir` (`member/snap/db`); refused, naming what
/// is missing, when there is none.
pub(crate) fn existing_db(data_dir: &Path) -> Result<PathBuf, RestoreError> {
    let member = data_dir.join("member");
    let db = member.join("snap").join("db");
    for needed in [&member, &db] {
        if std::fs::symlink_metadata(needed).is_err() {
            return Err(RestoreError::DataDirMissing {
                path: data_dir.display().to_string(),
                missing: needed.display().to_string(),
            });
        }
    }
    Ok(db)
}

/// The directory `data_dir` lives in (created if missing).
fn parent_of(data_dir: &Path) -> PathBuf {
    match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// A fresh path beside `data_dir` for the tool to create (same file system, so a rename moves it).
fn staging_dir(data_dir: &Path, what: &str) -> Result<PathBuf, RestoreError> {
    let parent = parent_of(data_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&parent)
        .map_err(io_err("creating", &parent))?;
    Ok(sibling_name(data_dir, what))
}

/// Move `data_dir` aside (if it exists) and rename `staging` into its place; on failure, put
/// the old one back.
fn swap_in(staging: &Path, data_dir: &Path) -> Result<Restored, RestoreError> {
    let old = move_aside(data_dir)?;
    if let Err(e) = std::fs::rename(staging, data_dir) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, data_dir);
        }
        return Err(io_err("moving the restored data into", data_dir)(e));
    }
    if let Ok(dir) = std::fs::File::open(parent_of(data_dir)) {
        let _ = dir.sync_all();
    }
    Ok(Restored {
        data_dir: data_dir.to_path_buf(),
        old_data_dir: old,
    })
}

/// Rename `data_dir` to `<data_dir>-old-<unix seconds>` (with `-1`, `-2`, … if taken). `None`
/// when there is no data dir.
fn move_aside(data_dir: &Path) -> Result<Option<PathBuf>, RestoreError> {
    match std::fs::symlink_metadata(data_dir) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", data_dir)(e)),
    }
    let base = format!("{}-old-{}", data_dir.display(), unix_now());
    let mut target = PathBuf::from(&base);
    let mut n = 0;
    while std::fs::symlink_metadata(&target).is_ok() {
        n += 1;
        target = PathBuf::from(format!("{base}-{n}"));
    }
    std::fs::rename(data_dir, &target).map_err(io_err("moving aside", data_dir))?;
    Ok(Some(target))
}

/// Refuse when a running etcd holds the lock on `data_dir/member/snap/db` (bbolt `flock`s it).
fn refuse_if_running(data_dir: &Path) -> Result<(), RestoreError> {
    let db = data_dir.join("member").join("snap").join("db");
    let file = match std::fs::File::open(&db) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("opening", &db)(e)),
    };
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(RestoreError::DataDirInUse {
            path: db.display().to_string(),
        }),
        Err(TryLockError::Error(e)) => Err(io_err("checking the lock of", &db)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moving_aside_never_overwrites() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("etcd");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("marker"), b"1").expect("write");
        let first = move_aside(&data).expect("move").expect("moved");
        std::fs::create_dir(&data).expect("mkdir");
        std::fs::write(data.join("marker"), b"2").expect("write");
        let second = move_aside(&data).expect("move").expect("moved");
        assert_ne!(first, second);
        assert_eq!(std::fs::read(first.join("marker")).expect("read"), b"1");
        assert_eq!(std::fs::read(second.join("marker")).expect("read"), b"2");
        assert_eq!(move_aside(&data).expect("nothing to move"), None);
    }

    #[test]
    fn reset_of_a_dir_without_etcd_data_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let tools = Tools::find(None, Some(PathBuf::from("/bin/false"))).expect("false exists");
        let err = cluster_reset(&tools, tmp.path(), "m", "http://127.0.0.1:2380", None)
            .expect_err("no member dir");
        assert!(matches!(err, RestoreError::DataDirMissing { .. }), "{err}");
    }

    #[test]
    fn a_locked_database_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let snap = tmp.path().join("member").join("snap");
        std::fs::create_dir_all(&snap).expect("mkdir");
        std::fs::write(snap.join("db"), b"x").expect("write");
        let holder = std::fs::File::open(snap.join("db")).expect("open");
        holder.lock().expect("lock");
        let err = refuse_if_running(tmp.path()).expect_err("locked");
        assert!(matches!(err, RestoreError::DataDirInUse { .. }), "{err}");
        drop(holder);
        refuse_if_running(tmp.path()).expect("unlocked");
    }
}
