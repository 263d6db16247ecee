//! The local snapshot directory: files are 0600 in a 0700 directory, written under a hidden
//! temporary name and renamed only when complete, fsynced and verified. Beside the snapshots:
//! `.metadata/<name>` (the extra metadata as JSON, as k3s) and `.checksums/<name>` (a
//! `sha256sum`-format line with the sha256 of the stored bytes).

use crate::consts::{AGENT_LOCK_FILE, METADATA_DIR};
use crate::naming::{NameError, validate_snapshot_name};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;

/// Hidden directory of sha256sum-format files, one per snapshot.
pub const CHECKSUM_DIR: &str = ".checksums";
/// Marker in the names of temporary files of snapshots being written.
pub const PARTIAL_MARKER: &str = ".partial-";

/// Local storage errors.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The snapshot name is not a safe file name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The file system is full.
    #[error("no space left on device writing {path}")]
    NoSpace {
        /// File being written.
        path: String,
    },
    /// Any other I/O failure.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Path concerned.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The metadata file is not valid JSON.
    #[error("metadata file {path} is not a JSON object of strings: {reason}")]
    BadMetadata {
        /// File.
        path: String,
        /// Parser message.
        reason: String,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> LocalError + 'a {
    move |source| {
        if source.raw_os_error() == Some(28) || source.kind() == ErrorKind::StorageFull {
            LocalError::NoSpace {
                path: path.display().to_string(),
            }
        } else {
            LocalError::Io {
                op,
                path: path.display().to_string(),
                source,
            }
        }
    }
}

/// A snapshot file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// File name (the snapshot name).
    pub name: String,
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub modified: SystemTime,
}

/// A local snapshot directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    dir: PathBuf,
}

impl LocalDir {
    /// The directory `dir` (made absolute against the current directory).
    pub fn new(dir: &Path) -> LocalDir {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|cwd| cwd.join(dir))
                .unwrap_or_else(|_| dir.to_path_buf())
        };
        LocalDir { dir }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Create the directory (0700) if it does not exist.
    pub fn ensure(&self) -> Result<(), LocalError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io("creating snapshot directory", &self.dir))
    }

    /// Try to take the directory's agent lock: an exclusive lock on [`AGENT_LOCK_FILE`] (mode
    /// 0600, created if needed). `Ok(None)` while another process holds it. The lock goes when
    /// the returned file is dropped or the process ends, however it ends (even SIGKILL), so two
    /// agents of one node never work on the directory at once (a rollout starts the new pod
    /// while the old one is still stopping).
    pub fn try_lock_agent(&self) -> Result<Option<std::fs::File>, LocalError> {
        let path = self.dir.join(AGENT_LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io("opening", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io("locking", &path)(e)),
        }
    }

    /// Path of snapshot `name`, refusing names that would leave the directory.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, LocalError> {
        validate_snapshot_name(name)?;
        Ok(self.dir.join(name))
    }

    /// `file:///abs/path/name`.
    pub fn location(&self, name: &str) -> String {
        format!("file://{}", self.dir.join(name).display())
    }

    /// Start writing snapshot `name` under a temporary name.
    pub async fn create(&self, name: &str) -> Result<LocalWriter, LocalError> {
        let final_path = self.path_of(name)?;
        self.ensure()?;
        let temp = self.dir.join(format!(
            ".{name}{PARTIAL_MARKER}{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        ));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io("creating", &temp))?;
        Ok(LocalWriter {
            file: Some(tokio::fs::File::from_std(file)),
            temp,
            final_path,
            written: 0,
        })
    }

    /// Snapshot files in the directory, oldest first by name order of no importance: hidden
    /// files, temporary files and directories are skipped.
    pub fn list(&self) -> Result<Vec<LocalEntry>, LocalError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("listing", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io("listing", &self.dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if validate_snapshot_name(&name).is_err() {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            out.push(LocalEntry {
                name,
                path,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// The entry for `name`, if the file exists.
    pub fn get(&self, name: &str) -> Result<Option<LocalEntry>, LocalError> {
        let path = self.path_of(name)?;
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(Some(LocalEntry {
                name: name.to_string(),
                path,
                size: meta.len(),
                modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Delete snapshot `name` with its metadata and checksum files. `false` if it did not exist.
    pub fn delete(&self, name: &str) -> Result<bool, LocalError> {
        let path = self.path_of(name)?;
        let existed = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == ErrorKind::NotFound => false,
            Err(e) => return Err(io("deleting", &path)(e)),
        };
        for side in [self.metadata_path(name)?, self.checksum_path(name)?] {
            match std::fs::remove_file(&side) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("deleting", &side)(e)),
            }
        }
        Ok(existed)
    }

    fn side_dir(&self, sub: &str) -> Result<PathBuf, LocalError> {
        let dir = self.dir.join(sub);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io("creating", &dir))?;
        Ok(dir)
    }

    fn metadata_path(&self, name: &str) -> Result<PathBuf, LocalError> {
        validate_snapshot_name(name)?;
        Ok(self.dir.join(METADATA_DIR).join(name))
    }

    fn checksum_path(&self, name: &str) -> Result<PathBuf, LocalError> {
        validate_snapshot_name(name)?;
        Ok(self.dir.join(CHECKSUM_DIR).join(name))
    }

    /// Write the extra metadata of `name` (nothing when empty).
    pub fn write_metadata(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), LocalError> {
        if metadata.is_empty() {
            return Ok(());
        }
        let path = self.metadata_path(name)?;
        self.side_dir(METADATA_DIR)?;
        let json = serde_json::to_vec(metadata).unwrap_or_default();
        write_private(&path, &json)
    }

    /// The extra metadata of `name`, if any.
    pub fn read_metadata(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, LocalError> {
        let path = self.metadata_path(name)?;
        match std::fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice(&data)
                    .map(Some)
                    .map_err(|e| LocalError::BadMetadata {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Record the sha256 of `name` (as `sha256sum` would print it).
    pub fn write_checksum(&self, name: &str, sha256: &str) -> Result<(), LocalError> {
        let path = self.checksum_path(name)?;
        self.side_dir(CHECKSUM_DIR)?;
        write_private(&path, format!("{sha256}  {name}\n").as_bytes())
    }

    /// The recorded sha256 of `name`, if any.
    pub fn read_checksum(&self, name: &str) -> Result<Option<String>, LocalError> {
        let path = self.checksum_path(name)?;
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .split_whitespace()
                .next()
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_ascii_lowercase)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    /// Remove temporary files left by an interrupted snapshot. Returns how many were removed.
    pub fn remove_partials(&self) -> Result<usize, LocalError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("listing", &self.dir)(e)),
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') && name.contains(PARTIAL_MARKER) {
                let path = entry.path();
                std::fs::remove_file(&path).map_err(io("removing", &path))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), LocalError> {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, data).map_err(io("writing", &tmp))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io("chmod", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming", path))
}

/// A snapshot file being written under its temporary name. Dropped without
/// [`LocalWriter::commit`], the temporary file is removed.
#[derive(Debug)]
pub struct LocalWriter {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    final_path: PathBuf,
    written: u64,
}

impl LocalWriter {
    /// Append bytes.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), LocalError> {
        let temp = self.temp.clone();
        let Some(file) = self.file.as_mut() else {
            return Err(io("writing", &temp)(std::io::Error::other(
                "file already closed",
            )));
        };
        file.write_all(data).await.map_err(io("writing", &temp))?;
        self.written += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flush and fsync the data (the file keeps its temporary name).
    pub async fn sync(&mut self) -> Result<(), LocalError> {
        let temp = self.temp.clone();
        if let Some(file) = self.file.as_mut() {
            file.flush().await.map_err(io("writing", &temp))?;
            file.sync_all().await.map_err(io("syncing", &temp))?;
        }
        Ok(())
    }

    /// Give the file its final name and fsync the directory. Returns the final path.
    pub async fn commit(mut self) -> Result<PathBuf, LocalError> {
        self.sync().await?;
        self.file = None;
        std::fs::rename(&self.temp, &self.final_path).map_err(io("renaming", &self.final_path))?;
        if let Some(parent) = self.final_path.parent()
            && let Ok(dir) = std::fs::File::open(parent)
        {
            let _ = dir.sync_all();
        }
        // Nothing left to clean up.
        self.temp = PathBuf::new();
        Ok(self.final_path.clone())
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn one_agent_at_a_time_holds_the_directory_lock() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = LocalDir::new(tmp.path());
        let first = dir.try_lock_agent().expect("lock").expect("free");
        assert!(
            dir.try_lock_agent().expect("lock").is_none(),
            "held by the first"
        );
        let mode = std::fs::metadata(tmp.path().join(AGENT_LOCK_FILE))
            .expect("lock file")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        assert!(dir.list().expect("list").is_empty(), "not a snapshot");
        drop(first);
        assert!(dir.try_lock_agent().expect("lock").is_some(), "released");
    }

    #[tokio::test]
    async fn committed_file_is_private_and_listed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = LocalDir::new(&tmp.path().join("snaps"));
        let mut w = dir.create("on-demand-n-1").await.expect("create");
        w.write(b"hello").await.expect("write");
        assert!(
            dir.list().expect("list").is_empty(),
            "temp file must not be listed"
        );
        let path = w.commit().await.expect("commit");
        assert_eq!(
            std::fs::metadata(&path).expect("stat").mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(dir.path()).expect("stat").mode() & 0o777,
            0o700
        );
        let list = dir.list().expect("list");
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].name, "on-demand-n-1");
        assert_eq!(list[0].size, 5);
    }

    #[tokio::test]
    async fn dropped_writer_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = LocalDir::new(tmp.path());
        let mut w = dir.create("x-n-1").await.expect("create");
        w.write(b"partial").await.expect("write");
        drop(w);
        assert_eq!(std::fs::read_dir(tmp.path()).expect("read").count(), 0);
    }

    #[test]
    fn path_traversal_is_refused() {
        let dir = LocalDir::new(Path::new("/var/lib/snaps"));
        for bad in ["../etc/shadow", "a/b", "..", ".metadata"] {
            assert!(dir.path_of(bad).is_err(), "{bad}");
            assert!(dir.delete(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sidecars_round_trip_and_go_with_the_snapshot() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = LocalDir::new(tmp.path());
        std::fs::write(tmp.path().join("s-n-1"), b"x").expect("write");
        let meta = BTreeMap::from([("cluster".to_string(), "prod".to_string())]);
        dir.write_metadata("s-n-1", &meta).expect("metadata");
        dir.write_checksum("s-n-1", &"ab".repeat(32))
            .expect("checksum");
        assert_eq!(dir.read_metadata("s-n-1").expect("read"), Some(meta));
        assert_eq!(
            dir.read_checksum("s-n-1").expect("read"),
            Some("ab".repeat(32))
        );
        assert_eq!(
            dir.list().expect("list").len(),
            1,
            "sidecars are not snapshots"
        );
        assert!(dir.delete("s-n-1").expect("delete"));
        assert!(!dir.delete("s-n-1").expect("delete again"));
        assert_eq!(dir.read_metadata("s-n-1").expect("read"), None);
        assert_eq!(dir.read_checksum("s-n-1").expect("read"), None);
    }

    #[test]
    fn partials_are_cleaned_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = LocalDir::new(tmp.path());
        std::fs::write(tmp.path().join(".a-n-1.partial-1-2"), b"x").expect("write");
        std::fs::write(tmp.path().join("a-n-1"), b"x").expect("write");
        assert_eq!(dir.remove_partials().expect("cleanup"), 1);
        assert_eq!(dir.list().expect("list").len(), 1);
    }
}
