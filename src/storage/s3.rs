//! The S3 store: snapshots are objects `<folder>/<name>`; beside them `<folder>/.metadata/<name>`
//! holds the extra metadata as JSON (as k3s). Uploads are multipart, fed as the bytes arrive,
//! with a bounded number of parts in memory; the sha256 of the stored bytes is recorded in the
//! object's user metadata once known.
//!
//! Decisions:
//! - The bucket is checked with ListObjectsV2 (max-keys 1, under the folder), not HeadBucket:
//!   Cloudflare R2 answers 400 to HeadBucket (k3s #13166), and listing is the permission we need.
//! - The sha256 is only known after the last byte, so [`S3Upload::finish`] rewrites the object's
//!   metadata with an in-place CopyObject (`MetadataDirective=REPLACE`). CopyObject is limited to
//!   5 GiB; larger objects (or a refused copy) get the sha256 as an object tag instead, which
//!   [`S3Store::head`] and [`S3Store::list`] read as a fallback.
//! - Request checksums are sent only where S3 requires them: many S3-compatible stores refuse the
//!   CRC trailers newer SDKs add by default. Integrity is end to end: the sha256 of the stored
//!   bytes, checked on download.
//! - `skip-ssl-verify` cannot be expressed in the SDK's TLS settings, so it uses our own small
//!   connector (hyper-util + hyper-rustls, aws-lc-rs) whose certificate verifier accepts any
//!   certificate; handshake signatures are still checked. Only used for HTTPS endpoints.
//! - Small operations get the configured timeout for the whole operation (retries included);
//!   UploadPart and the download stream get it per attempt or per read, so large snapshots never
//!   time out as a whole (k3s #4205, #5833, #9985).
//! - Credentials never appear in an error: S3 answers about credentials become
//!   [`S3Error::AccessDenied`] without the server's message, and every other reason text is
//!   scrubbed of the configured keys.

use crate::consts::{METADATA_DIR, SUFFIX_ZIP, SUFFIX_ZSTD, s3_metadata};
use crate::naming::validate_snapshot_name;
use crate::storage::config::S3Config;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{MetadataDirective, Tag, Tagging};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::AsyncWriteExt;

/// Size of an upload part (S3's minimum, except for the last part: the least memory per part).
pub const PART_SIZE: usize = 5 * 1024 * 1024;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: i32 = 10_000;
/// The first this many parts are [`PART_SIZE`]: 1,700 × 5 MiB = 8.9 GB holds a snapshot of
/// etcd's largest quota (8 GiB) uncompressed, so every real snapshot has small flat parts.
pub const SMALL_PARTS: i32 = 1_700;
/// Parts after the first [`SMALL_PARTS`] start at this size...
pub const LARGE_PART_SIZE: usize = 64 * 1024 * 1024;
/// ...and double after every this many parts, so 10,000 parts hold more than S3's 5 TiB object
/// limit.
pub const PARTS_PER_SIZE_STEP: i32 = 1_000;
/// S3's largest part.
pub const MAX_PART_SIZE: usize = 5 * 1024 * 1024 * 1024;
/// Parts uploading at once; with the part being filled, at most three parts are in memory.
pub const MAX_PARTS_IN_FLIGHT: usize = 2;
/// HeadObject requests in flight while listing.
pub const HEAD_CONCURRENCY: usize = 8;
/// Largest object CopyObject accepts; above it the sha256 is recorded as an object tag.
pub const COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;
/// Longest wait for a TCP (and TLS) connection, capped by the configured timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per request (the first try and two retries).
pub const ATTEMPTS: u32 = 3;

/// Name of the probe object of [`S3Store::preflight`], under `<folder>/.metadata/`.
pub const PREFLIGHT_PROBE: &str = ".etcd-snapshot-preflight";

/// A step of [`S3Store::preflight`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreflightStep {
    /// ListObjectsV2 on the folder.
    List,
    /// PutObject of the probe.
    Write,
    /// GetObject of the probe.
    Read,
    /// DeleteObject of the probe.
    Delete,
}

impl PreflightStep {
    /// The S3 action.
    pub fn action(self) -> &'static str {
        match self {
            PreflightStep::List => "ListObjects",
            PreflightStep::Write => "PutObject",
            PreflightStep::Read => "GetObject",
            PreflightStep::Delete => "DeleteObject",
        }
    }

    /// What the operator cannot do without it.
    pub fn consequence(self) -> &'static str {
        match self {
            PreflightStep::List => "S3 sync and S3 retention cannot see the stored snapshots",
            PreflightStep::Write => "snapshots cannot be uploaded",
            PreflightStep::Read => "snapshots cannot be downloaded for verify or restore",
            PreflightStep::Delete => "retention cannot prune",
        }
    }
}

mod client;
mod error;
mod no_verify;
mod upload;

pub use error::S3Error;
use error::{error_chain_text, is_not_found, unreachable_hint, untrusted_certificate};
pub use upload::S3Upload;

/// A snapshot object found in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Entry {
    /// Snapshot name (the key without the folder).
    pub name: String,
    /// Object key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// S3's last-modified time.
    pub last_modified: Option<SystemTime>,
    /// User metadata, keys lowercase; the sha256 tag is merged in under
    /// [`s3_metadata::SHA256`] when the metadata lacks it.
    pub metadata: BTreeMap<String, String>,
}

impl S3Entry {
    /// The recorded sha256 of the stored bytes, if any.
    pub fn sha256(&self) -> Option<&str> {
        self.metadata.get(s3_metadata::SHA256).map(String::as_str)
    }
}

/// A finished download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// sha256 (hex) of the bytes written.
    pub sha256: String,
}

/// Content type of a snapshot object, from its suffix.
pub fn content_type(name: &str) -> &'static str {
    if name.ends_with(SUFFIX_ZSTD) {
        "application/zstd"
    } else if name.ends_with(SUFFIX_ZIP) {
        "application/zip"
    } else {
        "application/octet-stream"
    }
}

/// Size of part number `part` (1-based): [`PART_SIZE`] for the first [`SMALL_PARTS`], then
/// [`LARGE_PART_SIZE`] doubled every [`PARTS_PER_SIZE_STEP`], at most [`MAX_PART_SIZE`].
pub fn part_size(part: i32) -> usize {
    if part <= SMALL_PARTS {
        return PART_SIZE;
    }
    let step = ((part - SMALL_PARTS - 1) / PARTS_PER_SIZE_STEP).min(16) as u32;
    (LARGE_PART_SIZE << step).min(MAX_PART_SIZE)
}

/// `key` percent-encoded for `x-amz-copy-source` (`/` kept).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn to_system_time(t: Option<&DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

/// The configured secrets, removed from any text that goes into an error.
#[derive(Clone, Default)]
struct Secrets(Vec<String>);

impl Secrets {
    fn of(cfg: &S3Config) -> Secrets {
        let all = [&cfg.access_key, &cfg.secret_key, &cfg.session_token];
        Secrets(
            all.into_iter()
                .flatten()
                .filter(|s| s.len() >= 4)
                .cloned()
                .collect(),
        )
    }

    fn scrub(&self, text: String) -> String {
        self.0
            .iter()
            .fold(text, |t, s| t.replace(s.as_str(), "<redacted>"))
    }
}

struct Inner {
    client: Client,
    cfg: S3Config,
    secrets: Secrets,
}

/// A connected S3 bucket folder. Cheap to clone.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Build the client and check that the bucket exists and can be listed.
    pub async fn connect(cfg: &S3Config) -> Result<S3Store, S3Error> {
        let secrets = Secrets::of(cfg);
        let client = client::build(cfg).await.map_err(|e| e.scrubbed(&secrets))?;
        let store = S3Store {
            inner: Arc::new(Inner {
                client,
                cfg: cfg.clone(),
                secrets,
            }),
        };
        store
            .client()
            .list_objects_v2()
            .bucket(&store.inner.cfg.bucket)
            .max_keys(1)
            .set_prefix(store.folder_prefix())
            .send()
            .await
            .map_err(|e| store.classify("ListObjectsV2", &store.inner.cfg.bucket, e))?;
        Ok(store)
    }

    /// The settings this store was built from.
    pub fn config(&self) -> &S3Config {
        &self.inner.cfg
    }

    fn client(&self) -> &Client {
        &self.inner.client
    }

    fn bucket(&self) -> &str {
        &self.inner.cfg.bucket
    }

    /// `folder/`, or `None` at the bucket's root.
    fn folder_prefix(&self) -> Option<String> {
        let folder = &self.inner.cfg.folder;
        (!folder.is_empty()).then(|| format!("{folder}/"))
    }

    fn key_of(&self, name: &str) -> Result<String, S3Error> {
        validate_snapshot_name(name)?;
        Ok(self.inner.cfg.object_key(name))
    }

    fn metadata_key_of(&self, name: &str) -> Result<String, S3Error> {
        validate_snapshot_name(name)?;
        Ok(self.inner.cfg.object_key(&format!("{METADATA_DIR}/{name}")))
    }

    /// Timeouts of operations whose time grows with the data (one part, a copy, a download):
    /// the configured timeout per attempt, none for the whole operation.
    fn per_attempt(&self) -> aws_sdk_s3::config::Builder {
        aws_sdk_s3::config::Builder::default()
            .timeout_config(client::per_attempt_timeouts(self.inner.cfg.timeout))
    }

    /// Start a multipart upload of snapshot `name` with these user metadata.
    pub async fn begin_upload(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<S3Upload, S3Error> {
        let key = self.key_of(name)?;
        let metadata: HashMap<String, String> = metadata
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let content_type = content_type(name);
        let out = self
            .client()
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(&key)
            .content_type(content_type)
            .set_metadata(Some(metadata.clone()))
            .send()
            .await
            .map_err(|e| self.classify("CreateMultipartUpload", &key, e))?;
        let upload_id = out.upload_id.ok_or_else(|| S3Error::Request {
            op: "CreateMultipartUpload",
            key: key.clone(),
            reason: "S3 returned no upload ID".into(),
        })?;
        tracing::debug!(%key, "S3 multipart upload started");
        Ok(S3Upload::started(
            self.clone(),
            key,
            upload_id,
            metadata,
            content_type,
        ))
    }

    /// Snapshot objects directly under the folder, sorted by name: not in sub-folders such as
    /// `.metadata/`, not empty, and with a name that passes [`validate_snapshot_name`].
    pub async fn list(&self) -> Result<Vec<S3Entry>, S3Error> {
        let prefix = self.folder_prefix();
        let mut found = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client()
                .list_objects_v2()
                .bucket(self.bucket())
                .set_prefix(prefix.clone())
                .delimiter("/")
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.classify("ListObjectsV2", self.bucket(), e))?;
            for object in out.contents() {
                let Some(key) = object.key() else { continue };
                let name = key
                    .strip_prefix(prefix.as_deref().unwrap_or(""))
                    .unwrap_or(key);
                if object.size().unwrap_or(0) <= 0 || validate_snapshot_name(name).is_err() {
                    continue;
                }
                found.push((name.to_string(), key.to_string()));
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        let mut entries: Vec<S3Entry> = futures::stream::iter(found)
            .map(|(name, key)| async move { self.head_key(name, key).await })
            .buffer_unordered(HEAD_CONCURRENCY)
            .try_filter_map(|e| async move { Ok(e.filter(|e| e.size > 0)) })
            .try_collect()
            .await?;
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The object of snapshot `name`, if it exists.
    pub async fn head(&self, name: &str) -> Result<Option<S3Entry>, S3Error> {
        let key = self.key_of(name)?;
        self.head_key(name.to_string(), key).await
    }

    async fn head_key(&self, name: String, key: String) -> Result<Option<S3Entry>, S3Error> {
        let out = match self
            .client()
            .head_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.classify("HeadObject", &key, e)),
        };
        let mut metadata: BTreeMap<String, String> = out
            .metadata()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect();
        let ours = metadata.contains_key(s3_metadata::CLUSTER_ID)
            || metadata.contains_key(s3_metadata::NODE_NAME);
        if ours
            && !metadata.contains_key(s3_metadata::SHA256)
            && let Some(sha) = self.sha256_tag(&key).await
        {
            metadata.insert(s3_metadata::SHA256.to_string(), sha);
        }
        Ok(Some(S3Entry {
            name,
            size: out.content_length().unwrap_or(0).max(0) as u64,
            last_modified: to_system_time(out.last_modified()),
            key,
            metadata,
        }))
    }

    /// The sha256 tag of an object, if it has one (any failure reads as none: tagging may not
    /// be permitted or supported).
    async fn sha256_tag(&self, key: &str) -> Option<String> {
        let out = self
            .client()
            .get_object_tagging()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
            .ok()?;
        out.tag_set()
            .iter()
            .find(|t| t.key() == s3_metadata::SHA256)
            .map(|t| t.value().to_string())
    }

    /// Delete snapshot `name` and its `.metadata/` object. `false` if the snapshot did not exist.
    pub async fn delete(&self, name: &str) -> Result<bool, S3Error> {
        let key = self.key_of(name)?;
        let meta_key = self.metadata_key_of(name)?;
        let existed = self
            .head_key(name.to_string(), key.clone())
            .await?
            .is_some();
        if existed {
            self.delete_key(&key).await?;
        }
        self.delete_key(&meta_key).await?;
        Ok(existed)
    }

    async fn delete_key(&self, key: &str) -> Result<(), S3Error> {
        match self
            .client()
            .delete_object()
            .bucket(self.bucket())
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.classify("DeleteObject", key, e)),
        }
    }

    /// Download snapshot `name` to `dest` (created, mode 0600; it must not exist), hashing while
    /// writing. `dest` is removed on failure.
    pub async fn download(&self, name: &str, dest: &Path) -> Result<Downloaded, S3Error> {
        self.download_to(name, dest, true).await
    }

    /// As [`S3Store::download`], without the final fsync: for a scratch file that is read once
    /// and removed (a restore's download), where the fsync would only cost time.
    pub async fn download_scratch(&self, name: &str, dest: &Path) -> Result<Downloaded, S3Error> {
        self.download_to(name, dest, false).await
    }

    /// Stream snapshot `name` into `tx` chunk by chunk as it arrives (no file, no hashing: the
    /// receiver does both). Returns the size. Stops early when the receiver is gone; a body
    /// shorter than S3 announced is an error.
    pub async fn download_stream(
        &self,
        name: &str,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<u64, S3Error> {
        let key = self.key_of(name)?;
        let out = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .customize()
            .config_override(self.per_attempt())
            .send()
            .await
            .map_err(|e| self.classify("GetObject", &key, e))?;
        let expected = out.content_length().filter(|n| *n >= 0).map(|n| n as u64);
        let mut body = out.body;
        let mut size = 0u64;
        while let Some(chunk) = self.next_chunk(&mut body, &key).await? {
            size += chunk.len() as u64;
            if tx.send(chunk).await.is_err() {
                return Ok(size);
            }
        }
        if let Some(expected) = expected
            && expected != size
        {
            return Err(S3Error::Request {
                op: "GetObject",
                key,
                reason: format!("received {size} bytes, S3 announced {expected}"),
            });
        }
        Ok(size)
    }

    async fn download_to(
        &self,
        name: &str,
        dest: &Path,
        sync: bool,
    ) -> Result<Downloaded, S3Error> {
        let key = self.key_of(name)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dest)
            .map_err(|source| S3Error::Io {
                op: "creating",
                path: dest.display().to_string(),
                source,
            })?;
        let result = self
            .download_into(&key, tokio::fs::File::from_std(file), dest, sync)
            .await;
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
        }
        result
    }

    async fn download_into(
        &self,
        key: &str,
        mut file: tokio::fs::File,
        dest: &Path,
        sync: bool,
    ) -> Result<Downloaded, S3Error> {
        let io = |op: &'static str| {
            move |source| S3Error::Io {
                op,
                path: dest.display().to_string(),
                source,
            }
        };
        let out = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(key)
            .customize()
            .config_override(self.per_attempt())
            .send()
            .await
            .map_err(|e| self.classify("GetObject", key, e))?;
        let expected = out.content_length().filter(|n| *n >= 0).map(|n| n as u64);
        let mut body = out.body;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = self.next_chunk(&mut body, key).await? {
            hasher.update(&chunk);
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(io("writing"))?;
        }
        file.flush().await.map_err(io("writing"))?;
        if sync {
            file.sync_all().await.map_err(io("syncing"))?;
        }
        if let Some(expected) = expected
            && expected != size
        {
            return Err(S3Error::Request {
                op: "GetObject",
                key: key.to_string(),
                reason: format!("received {size} bytes, S3 announced {expected}"),
            });
        }
        Ok(Downloaded {
            size,
            sha256: hex::encode(hasher.finalize()),
        })
    }

    /// The next chunk of a response body, waiting at most the configured timeout.
    async fn next_chunk(&self, body: &mut ByteStream, key: &str) -> Result<Option<Bytes>, S3Error> {
        let after = self.inner.cfg.timeout;
        match tokio::time::timeout(after, body.try_next()).await {
            Err(_) => Err(S3Error::Timeout {
                op: "GetObject",
                after,
            }),
            Ok(Ok(chunk)) => Ok(chunk),
            Ok(Err(e)) => {
                let secrets = &self.inner.secrets;
                tracing::debug!(error = %secrets.scrub(format!("{e:?}")), "S3 download failed");
                Err(S3Error::Request {
                    op: "GetObject",
                    key: key.to_string(),
                    reason: secrets.scrub(error_chain_text(&e)),
                })
            }
        }
    }

    /// Store the extra metadata of `name` as JSON at `<folder>/.metadata/<name>` (nothing when
    /// empty).
    pub async fn put_extra_metadata(
        &self,
        name: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Result<(), S3Error> {
        let key = self.metadata_key_of(name)?;
        if metadata.is_empty() {
            return Ok(());
        }
        let json = serde_json::to_vec(metadata).unwrap_or_default();
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .content_type("application/json")
            .body(ByteStream::from(json))
            .send()
            .await
            .map_err(|e| self.classify("PutObject", &key, e))?;
        Ok(())
    }

    /// The extra metadata of `name`, if stored.
    pub async fn get_extra_metadata(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, String>>, S3Error> {
        let key = self.metadata_key_of(name)?;
        let out = match self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(self.classify("GetObject", &key, e)),
        };
        let mut body = out.body;
        let mut data = Vec::new();
        while let Some(chunk) = self.next_chunk(&mut body, &key).await? {
            data.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&data)
            .map(Some)
            .map_err(|e| S3Error::BadMetadata {
                key,
                reason: e.to_string(),
            })
    }

    /// Check that these settings can do what the operator needs, in order: list the folder
    /// (`ListObjectsV2`), write (`PutObject`), read (`GetObject`) and delete (`DeleteObject`) a
    /// small probe object `<folder>/.metadata/.etcd-snapshot-preflight` (never listed as a
    /// snapshot). The first step that fails is returned with its error.
    pub async fn preflight(&self) -> Result<(), (PreflightStep, S3Error)> {
        let key = self
            .inner
            .cfg
            .object_key(&format!("{METADATA_DIR}/{PREFLIGHT_PROBE}"));
        self.client()
            .list_objects_v2()
            .bucket(self.bucket())
            .set_prefix(self.folder_prefix())
            .delimiter("/")
            .max_keys(1)
            .send()
            .await
            .map_err(|e| {
                (
                    PreflightStep::List,
                    self.classify("ListObjectsV2", self.bucket(), e),
                )
            })?;
        self.client()
            .put_object()
            .bucket(self.bucket())
            .key(&key)
            .body(ByteStream::from_static(
                b"etcd-snapshot-operator storage preflight\n",
            ))
            .send()
            .await
            .map_err(|e| (PreflightStep::Write, self.classify("PutObject", &key, e)))?;
        let got = self
            .client()
            .get_object()
            .bucket(self.bucket())
            .key(&key)
            .send()
            .await
            .map_err(|e| (PreflightStep::Read, self.classify("GetObject", &key, e)));
        if let Ok(out) = got {
            let mut body = out.body;
            while self
                .next_chunk(&mut body, &key)
                .await
                .map_err(|e| (PreflightStep::Read, e))?
                .is_some()
            {}
        } else if let Err(e) = got {
            // Leave no probe behind when reading is refused.
            let _ = self.delete_key(&key).await;
            return Err(e);
        }
        self.delete_key(&key)
            .await
            .map_err(|e| (PreflightStep::Delete, e))
    }

    /// Abort multipart uploads of snapshots directly under the folder that were started more
    /// than `older_than` ago (left by a crash). Returns how many were aborted.
    pub async fn abort_stale_uploads(&self, older_than: Duration) -> Result<usize, S3Error> {
        self.abort_stale_uploads_where(older_than, |_| true).await
    }

    /// As [`Self::abort_stale_uploads`], only for snapshot names `select` accepts (e.g. the
    /// names of one node, so that an agent never aborts another node's upload in flight).
    pub async fn abort_stale_uploads_where(
        &self,
        older_than: Duration,
        select: impl Fn(&str) -> bool,
    ) -> Result<usize, S3Error> {
        let prefix = self.folder_prefix();
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let (mut key_marker, mut id_marker) = (None, None);
        let mut aborted = 0;
        loop {
            let out = self
                .client()
                .list_multipart_uploads()
                .bucket(self.bucket())
                .set_prefix(prefix.clone())
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| self.classify("ListMultipartUploads", self.bucket(), e))?;
            for upload in out.uploads() {
                let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) else {
                    continue;
                };
                let name = key
                    .strip_prefix(prefix.as_deref().unwrap_or(""))
                    .unwrap_or(key);
                let started = to_system_time(upload.initiated());
                if name.contains('/') || !select(name) || started.is_none_or(|t| t >= cutoff) {
                    continue;
                }
                self.client()
                    .abort_multipart_upload()
                    .bucket(self.bucket())
                    .key(key)
                    .upload_id(id)
                    .send()
                    .await
                    .map_err(|e| self.classify("AbortMultipartUpload", key, e))?;
                tracing::info!(%key, "aborted a stale S3 multipart upload");
                aborted += 1;
            }
            if out.is_truncated() != Some(true) {
                break;
            }
            key_marker = out.next_key_marker().map(str::to_string);
            id_marker = out.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() {
                break;
            }
        }
        Ok(aborted)
    }

    /// Record `sha256` for the finished object `key`: in-place copy with replaced metadata,
    /// or an object tag when the object is too large to copy or the copy is refused.
    async fn record_sha256(
        &self,
        key: &str,
        metadata: &HashMap<String, String>,
        content_type: &str,
        size: u64,
        sha256: &str,
    ) -> Result<(), S3Error> {
        let copied = if size <= COPY_LIMIT {
            let mut metadata = metadata.clone();
            metadata.insert(s3_metadata::SHA256.to_string(), sha256.to_string());
            self.client()
                .copy_object()
                .bucket(self.bucket())
                .key(key)
                .copy_source(format!("{}/{}", self.bucket(), encode_key(key)))
                .metadata_directive(MetadataDirective::Replace)
                .set_metadata(Some(metadata))
                .content_type(content_type)
                .customize()
                .config_override(self.per_attempt())
                .send()
                .await
                .map(|_| ())
                .map_err(|e| self.classify("CopyObject", key, e))
        } else {
            Err(S3Error::Request {
                op: "CopyObject",
                key: key.to_string(),
                reason: format!("{size} bytes is over CopyObject's 5 GiB limit"),
            })
        };
        let Err(copy_error) = copied else {
            return Ok(());
        };
        if size <= COPY_LIMIT {
            tracing::warn!(%key, error = %copy_error, "recording the sha256 as a tag instead");
        }
        let tag = Tag::builder()
            .key(s3_metadata::SHA256)
            .value(sha256)
            .build()
            .map_err(|e| S3Error::Request {
                op: "PutObjectTagging",
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        let tagging = Tagging::builder()
            .tag_set(tag)
            .build()
            .map_err(|e| S3Error::Request {
                op: "PutObjectTagging",
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        self.client()
            .put_object_tagging()
            .bucket(self.bucket())
            .key(key)
            .tagging(tagging)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| {
                tracing::warn!(%key, error = %copy_error, "in-place copy failed too");
                self.classify("PutObjectTagging", key, e)
            })
    }

    /// Sort an SDK error into an [`S3Error`].
    fn classify<E>(&self, op: &'static str, key: &str, err: SdkError<E, HttpResponse>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let cfg = &self.inner.cfg;
        let secrets = &self.inner.secrets;
        match &err {
            SdkError::TimeoutError(_) => S3Error::Timeout {
                op,
                after: cfg.timeout,
            },
            SdkError::DispatchFailure(failure) => {
                if let Some(reason) = untrusted_certificate(&err) {
                    S3Error::Tls {
                        endpoint: cfg.endpoint.clone(),
                        reason,
                    }
                } else if failure.is_timeout() {
                    S3Error::Timeout {
                        op,
                        after: cfg.timeout,
                    }
                } else {
                    let cause = match failure.as_connector_error() {
                        Some(connector) => crate::net_error::Cause::of(connector),
                        None => crate::net_error::Cause::of(&err),
                    };
                    tracing::debug!(op, error = %secrets.scrub(format!("{err:?}")), "S3 request failed");
                    S3Error::Unreachable {
                        endpoint: cfg.endpoint.clone(),
                        reason: secrets.scrub(unreachable_hint(&cause)),
                    }
                }
            }
            SdkError::ServiceError(service) => {
                let status = service.raw().status().as_u16();
                let code = err.code().unwrap_or_default();
                match code {
                    "NoSuchBucket" => S3Error::NoSuchBucket {
                        bucket: cfg.bucket.clone(),
                    },
                    "NoSuchKey" | "NotFound" => S3Error::NoSuchKey {
                        key: key.to_string(),
                    },
                    "AccessDenied"
                    | "InvalidAccessKeyId"
                    | "SignatureDoesNotMatch"
                    | "InvalidToken"
                    | "ExpiredToken"
                    | "InvalidSecurity" => S3Error::AccessDenied {
                        op,
                        code: code.to_string(),
                    },
                    "" if status == 403 => S3Error::AccessDenied {
                        op,
                        code: "HTTP 403".into(),
                    },
                    _ => {
                        let message = err.message().unwrap_or_default();
                        let code = if code.is_empty() {
                            "no error code"
                        } else {
                            code
                        };
                        S3Error::Request {
                            op,
                            key: key.to_string(),
                            reason: secrets.scrub(format!("HTTP {status} {code}: {message}")),
                        }
                    }
                }
            }
            _ => {
                tracing::debug!(op, error = %secrets.scrub(format!("{err:?}")), "S3 request failed");
                S3Error::Request {
                    op,
                    key: key.to_string(),
                    reason: secrets.scrub(error_chain_text(&err)),
                }
            }
        }
    }
}

impl S3Error {
    fn scrubbed(self, secrets: &Secrets) -> S3Error {
        match self {
            S3Error::Request { op, key, reason } => S3Error::Request {
                op,
                key,
                reason: secrets.scrub(reason),
            },
            S3Error::Unreachable { endpoint, reason } => S3Error::Unreachable {
                endpoint,
                reason: secrets.scrub(reason),
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::BucketLookup;
    use crate::storage::config::Proxy;

    #[test]
    fn content_type_follows_the_suffix() {
        assert_eq!(content_type("a-n-1.zst"), "application/zstd");
        assert_eq!(content_type("a-n-1.zip"), "application/zip");
        assert_eq!(content_type("a-n-1"), "application/octet-stream");
    }

    #[test]
    fn part_size_grows_so_ten_thousand_parts_hold_five_tib() {
        assert_eq!(part_size(1), PART_SIZE);
        assert_eq!(part_size(SMALL_PARTS), PART_SIZE);
        assert_eq!(part_size(SMALL_PARTS + 1), LARGE_PART_SIZE);
        assert_eq!(
            part_size(SMALL_PARTS + PARTS_PER_SIZE_STEP + 1),
            2 * LARGE_PART_SIZE
        );
        const { assert!(PART_SIZE >= 5 * 1024 * 1024, "S3's minimum part size") };
        assert!((1..=MAX_PARTS).all(|p| part_size(p) <= MAX_PART_SIZE));
        let total: u64 = (1..=MAX_PARTS).map(|p| part_size(p) as u64).sum();
        assert!(total > 5 * 1024 * 1024 * 1024 * 1024, "{total}");
        // A snapshot of etcd's largest quota (8 GiB), even uncompressed, keeps the small parts.
        const { assert!(SMALL_PARTS as u64 * PART_SIZE as u64 >= 8 * 1024 * 1024 * 1024) };
    }

    #[test]
    fn copy_source_is_percent_encoded() {
        assert_eq!(encode_key("f/a-n-1.zst"), "f/a-n-1.zst");
        assert_eq!(encode_key("f/a b+c%"), "f/a%20b%2Bc%25");
        assert_eq!(encode_key("é"), "%C3%A9");
    }

    fn config() -> S3Config {
        S3Config {
            endpoint: "127.0.0.1:9".into(),
            endpoint_ca: None,
            skip_ssl_verify: false,
            access_key: Some("AKIDEXAMPLE".into()),
            secret_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            session_token: Some("TOKENTOKEN".into()),
            bucket: "b".into(),
            bucket_lookup: BucketLookup::Path,
            region: "us-east-1".into(),
            folder: "f".into(),
            insecure: true,
            timeout: Duration::from_secs(3),
            proxy: Proxy::None,
        }
    }

    #[test]
    fn secrets_are_scrubbed() {
        let s = Secrets::of(&config());
        assert_eq!(
            s.scrub("key wJalrXUtnFEMI/K7MDENG and TOKENTOKEN from AKIDEXAMPLE".into()),
            "key <redacted> and <redacted> from <redacted>"
        );
    }

    #[test]
    fn messages_are_one_line_and_name_the_fix() {
        let tls = S3Error::Tls {
            endpoint: "s3:443".into(),
            reason: "UnknownIssuer".into(),
        }
        .to_string();
        assert!(tls.contains("--s3-endpoint-ca") && tls.contains("etcd-s3-endpoint-ca"));
        assert!(tls.contains("skip-ssl-verify") && !tls.contains('\n'));
        let denied = S3Error::AccessDenied {
            op: "ListObjectsV2",
            code: "SignatureDoesNotMatch".into(),
        };
        assert!(denied.to_string().starts_with("S3 refused the credentials"));
        // Valid credentials without the permission are told apart from wrong credentials.
        let forbidden = S3Error::AccessDenied {
            op: "DeleteObject",
            code: "AccessDenied".into(),
        };
        assert_eq!(
            forbidden.to_string(),
            "S3 refused DeleteObject (AccessDenied): the credentials are not allowed to do it; \
             grant the permission to their user or policy"
        );
        let timeout = S3Error::Timeout {
            op: "HeadObject",
            after: Duration::from_secs(300),
        };
        assert_eq!(timeout.to_string(), "S3 HeadObject timed out after 300s");
    }

    #[test]
    fn a_bad_proxy_scheme_is_refused_without_its_password() {
        let cfg = S3Config {
            proxy: Proxy::Url("socks5://user:hunter22@proxy:1080".into()),
            ..config()
        };
        let err = client::http_client(&cfg).expect_err("socks5 is not supported");
        let text = err.to_string();
        assert!(
            !text.contains("hunter22") && text.contains("proxy:1080"),
            "{text}"
        );
    }

    #[test]
    fn a_bad_ca_is_an_error_not_a_panic() {
        let cfg = S3Config {
            endpoint_ca: Some(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            ),
            insecure: false,
            ..config()
        };
        assert!(matches!(client::http_client(&cfg), Err(S3Error::Config(_))));
    }
}
